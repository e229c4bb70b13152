//go:build bench

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/op-replicator/op-replicator/e2e/devnet"
)

// Helpers of the catch-up and fan-out benchmarks. They use the devnet package only (not the scenarios' helpers,
// which are being reworked into a DSL), so that the benchmarks build on either.

func benchFreePort(t *testing.T) int {
	t.Helper()
	p, err := devnet.FreePort()
	require.NoError(t, err)
	return p
}

// benchRelayArgs enables a node's relay on port, with extra flags.
func benchRelayArgs(port int, extra ...string) []string {
	return append([]string{"--replicator.relay.enabled", "--replicator.relay.port", strconv.Itoa(port)}, extra...)
}

// benchRelaySource is the --replicator.source of a relay listening on port.
func benchRelaySource(port int) string { return "relay+ws://127.0.0.1:" + strconv.Itoa(port) }

func benchFollower(t *testing.T, d *devnet.Devnet, name string, role devnet.Role, opts ...devnet.FollowerOption) *devnet.Node {
	t.Helper()
	n, err := d.AddFollower(t.Context(), name, role, opts...)
	require.NoError(t, err, "add %s", name)
	return n
}

func benchHeader(t *testing.T, el *devnet.EL, n rpc.BlockNumber) *types.Header {
	t.Helper()
	h, err := el.Header(t.Context(), n)
	require.NoError(t, err)
	return h
}

// benchMetric returns the sum of every series of the named metric at a Prometheus endpoint.
func benchMetric(ctx context.Context, url, name string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	var sum float64
	found := false
	scanner := bufio.NewScanner(resp.Body)
	for scanner.Scan() {
		line := scanner.Text()
		if !strings.HasPrefix(line, name+" ") && !strings.HasPrefix(line, name+"{") {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("metric line %q: %w", line, err)
		}
		sum, found = sum+v, true
	}
	if err := scanner.Err(); err != nil {
		return 0, err
	}
	if !found {
		return 0, fmt.Errorf("no metric %s at %s", name, url)
	}
	return sum, nil
}

// insertTimes reads, from an op-node's log, how long each unsafe block it inserted took in the engine, from the
// engine_newPayload call to the end of the forkchoice update that made it the head: insert_time of "Inserted new L2
// unsafe block" (the engine controller's ProcessPayload: the replicator's path) or total_time of "Inserted new L2
// unsafe block (synchronous)" (the gossip path).
func insertTimes(t *testing.T, logPath string) map[uint64]time.Duration {
	f, err := os.Open(logPath)
	require.NoError(t, err)
	defer f.Close()
	times := make(map[uint64]time.Duration)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		key := "insert_time"
		switch {
		case strings.Contains(line, `msg="Inserted new L2 unsafe block"`):
		case strings.Contains(line, `msg="Inserted new L2 unsafe block (synchronous)"`):
			key = "total_time"
		default:
			continue
		}
		num, ok1 := logField(line, "number")
		dur, ok2 := logField(line, key)
		if !ok1 || !ok2 {
			continue
		}
		n, err1 := strconv.ParseUint(num, 10, 64)
		d, err2 := time.ParseDuration(dur)
		if err1 == nil && err2 == nil {
			times[n] = d
		}
	}
	require.NoError(t, sc.Err())
	return times
}

// logField returns the value of key in a logfmt line.
func logField(line, key string) (string, bool) {
	i := strings.Index(line, " "+key+"=")
	if i < 0 {
		return "", false
	}
	v := line[i+len(key)+2:]
	if j := strings.IndexByte(v, ' '); j >= 0 {
		v = v[:j]
	}
	return v, true
}

// beyondInsert is each block's lag minus its local insertion time (insertTimes), for the blocks in both: what a
// path adds to the engine's own work. It returns the p50 and p99, and how many blocks they are over.
func beyondInsert(lags []devnet.BlockLag, inserts map[uint64]time.Duration) (p50, p99 time.Duration, n int) {
	var rest []time.Duration
	for _, l := range lags {
		if d, ok := inserts[l.Number]; ok {
			rest = append(rest, l.Lag-d)
		}
	}
	if len(rest) == 0 {
		return 0, 0, 0
	}
	slices.Sort(rest)
	at := func(p float64) time.Duration { return rest[int(p/100*float64(len(rest)-1))] }
	return at(50), at(99), len(rest)
}
