package devnet

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// EngineTimes is where an op-geth's time per block went since its metrics were last read, from its own timers
// (Config.EngineMetrics). op-geth keeps these as resetting timers and samples, which restart at every read, so a read
// at the start of a measurement and one at its end give the measurement's own: the median of each.
type EngineTimes struct {
	// NewPayload is op-geth's time serving one engine_newPayloadV4, from the decoded request to its answer
	// (rpc/duration); Insert the part of it inserting the block (chain/inserts: execution, validation and the
	// write); Execution the EVM's part of that (chain/execution).
	NewPayload, Insert, Execution time.Duration
	// NewPayloadP95 and NewPayloadP99 are the tail of op-geth's time serving engine_newPayloadV4.
	NewPayloadP95, NewPayloadP99 time.Duration
	// ForkchoiceUpdated is op-geth's time serving one engine_forkchoiceUpdatedV3.
	ForkchoiceUpdated time.Duration
	// Blocks is how many blocks op-geth inserted (chain/inserts' count), Calls how many engine_newPayloadV4 it
	// answered.
	Blocks, Calls int64
}

func (t EngineTimes) String() string {
	return fmt.Sprintf("%d blocks (%d newPayload calls), medians: newPayload %s (p95 %s, p99 %s), insert %s, execution %s, forkchoiceUpdated %s",
		t.Blocks, t.Calls, t.NewPayload, t.NewPayloadP95, t.NewPayloadP99, t.Insert, t.Execution, t.ForkchoiceUpdated)
}

// setMetrics records the op-geth's metrics endpoint, if it has one (port 0: none).
func (e *EL) setMetrics(port int) {
	if port != 0 {
		e.MetricsURL = httpURL(port) + "/debug/metrics/prometheus"
	}
}

// EngineTimes reads the op-geth's engine timers (Config.EngineMetrics), which restarts them.
func (e *EL) EngineTimes(ctx context.Context) (EngineTimes, error) {
	if e.MetricsURL == "" {
		return EngineTimes{}, fmt.Errorf("op-geth at %s has no metrics endpoint (Config.EngineMetrics)", e.HTTP)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.MetricsURL, nil)
	if err != nil {
		return EngineTimes{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return EngineTimes{}, fmt.Errorf("scrape %s: %w", e.MetricsURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return EngineTimes{}, fmt.Errorf("scrape %s: status %d", e.MetricsURL, resp.StatusCode)
	}
	// op-geth's exposition writes a timer as "name_count N" and "name {quantile="0.5"} ns" (with the space, which
	// the Prometheus text parser does not take everywhere op-geth writes it): read just those lines.
	medians, p95s, p99s, counts := map[string]float64{}, map[string]float64{}, map[string]float64{}, map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 3 && strings.HasPrefix(f[1], `{quantile="`):
			v, err := strconv.ParseFloat(f[2], 64)
			if err != nil {
				continue
			}
			switch f[1] {
			case `{quantile="0.5"}`:
				medians[f[0]] = v
			case `{quantile="0.95"}`:
				p95s[f[0]] = v
			case `{quantile="0.99"}`:
				p99s[f[0]] = v
			}
		case len(f) == 2 && strings.HasSuffix(f[0], "_count"):
			v, err := strconv.ParseFloat(f[1], 64)
			if err == nil {
				counts[strings.TrimSuffix(f[0], "_count")] = v
			}
		}
	}
	if err := sc.Err(); err != nil {
		return EngineTimes{}, fmt.Errorf("read %s: %w", e.MetricsURL, err)
	}
	const newPayload, forkchoice = "rpc_duration_engine_newPayloadV4_success", "rpc_duration_engine_forkchoiceUpdatedV3_success"
	ns := func(name string) time.Duration { return time.Duration(medians[name]) }
	return EngineTimes{
		NewPayload: ns(newPayload), Insert: ns("chain_inserts"), Execution: ns("chain_execution"),
		NewPayloadP95: time.Duration(p95s[newPayload]), NewPayloadP99: time.Duration(p99s[newPayload]),
		ForkchoiceUpdated: ns(forkchoice),
		Blocks:            int64(counts["chain_inserts"]), Calls: int64(counts[newPayload]),
	}, nil
}
