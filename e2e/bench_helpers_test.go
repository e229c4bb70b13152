//go:build bench

package e2e

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"math/big"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/common/hexutil"
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

// beyondInsertByBlock is each block's lag minus the node's own insert of it, for the blocks both are known of.
func beyondInsertByBlock(lags []devnet.BlockLag, inserts map[uint64]time.Duration) map[uint64]time.Duration {
	out := make(map[uint64]time.Duration, len(lags))
	for _, l := range lags {
		if d, ok := inserts[l.Number]; ok {
			out[l.Number] = l.Lag - d
		}
	}
	return out
}

// lagsByBlock is each block's lag.
func lagsByBlock(lags []devnet.BlockLag) map[uint64]time.Duration {
	out := make(map[uint64]time.Duration, len(lags))
	for _, l := range lags {
		out[l.Number] = l.Lag
	}
	return out
}

// pairedDifference is path's p50 and p99 minus anchor's over the blocks both have, each with a 95% interval from a
// bootstrap that resamples blocks (a block's two values kept together): how far the difference of two percentiles
// measured on these blocks can be from what more blocks would show. The resampling is seeded: a run's report is
// reproducible from its data.
type pairedDifference struct {
	n                 int
	p50, p50Lo, p50Hi time.Duration
	p99, p99Lo, p99Hi time.Duration
}

func comparePercentiles(path, anchor map[uint64]time.Duration) (pairedDifference, bool) {
	var blocks []uint64
	for n := range path {
		if _, ok := anchor[n]; ok {
			blocks = append(blocks, n)
		}
	}
	if len(blocks) < 10 {
		return pairedDifference{}, false
	}
	slices.Sort(blocks)
	a := make([]time.Duration, len(blocks))
	b := make([]time.Duration, len(blocks))
	diff := func(sample []uint64) (d50, d99 time.Duration) {
		for i, n := range sample {
			a[i], b[i] = path[n], anchor[n]
		}
		slices.Sort(a)
		slices.Sort(b)
		at := func(s []time.Duration, p float64) time.Duration { return s[int(p/100*float64(len(s)-1))] }
		return at(a, 50) - at(b, 50), at(a, 99) - at(b, 99)
	}
	out := pairedDifference{n: len(blocks)}
	out.p50, out.p99 = diff(blocks)
	const resamples = 2000
	rng := rand.New(rand.NewPCG(1, uint64(len(blocks))))
	d50s := make([]time.Duration, resamples)
	d99s := make([]time.Duration, resamples)
	sample := make([]uint64, len(blocks))
	for r := range resamples {
		for i := range sample {
			sample[i] = blocks[rng.IntN(len(blocks))]
		}
		d50s[r], d99s[r] = diff(sample)
	}
	slices.Sort(d50s)
	slices.Sort(d99s)
	lo, hi := resamples*25/1000, resamples*975/1000
	out.p50Lo, out.p50Hi, out.p99Lo, out.p99Hi = d50s[lo], d50s[hi], d99s[lo], d99s[hi]
	return out, true
}

// With OP_REPLICATOR_BENCH_DUMP (a directory), the follow bench writes each block's figures, to look into a
// distribution's tail: lag-<path>.csv (block, lag and local insert in µs) and epochs.csv (block and its position in
// its L1 origin's epoch: 0 is the first block of an epoch, which derivation builds with the origin's deposits).
func dumpLags(t *testing.T, id string, lags []devnet.BlockLag, inserts map[uint64]time.Duration) {
	dir := os.Getenv("OP_REPLICATOR_BENCH_DUMP")
	if dir == "" {
		return
	}
	var b strings.Builder
	b.WriteString("block,lag_us,insert_us\n")
	for _, l := range lags {
		ins, ok := inserts[l.Number]
		if !ok {
			ins = -1
		}
		fmt.Fprintf(&b, "%d,%d,%d\n", l.Number, l.Lag.Microseconds(), ins.Microseconds())
	}
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "lag-"+id+".csv"), []byte(b.String()), 0o644))
}

func dumpEpochs(t *testing.T, el *devnet.EL, from, to uint64) {
	dir := os.Getenv("OP_REPLICATOR_BENCH_DUMP")
	if dir == "" {
		return
	}
	var b strings.Builder
	b.WriteString("block,seq,txs\n")
	for n := from; n <= to; n++ {
		block, err := el.BlockByNumber(t.Context(), new(big.Int).SetUint64(n))
		require.NoError(t, err)
		// The L1-info deposit's calldata (Ecotone on): selector, two fee scalars (4 bytes each), sequence number.
		data := block.Transactions()[0].Data()
		require.GreaterOrEqual(t, len(data), 20)
		fmt.Fprintf(&b, "%d,%d,%d\n", n, binary.BigEndian.Uint64(data[12:20]), len(block.Transactions()))
	}
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "epochs.csv"), []byte(b.String()), 0o644))
}

// fetchProbe is the floor of the sequencer-RPC path on this machine, measured alongside it: a bare client of the
// sequencer's op-geth (the test's own) that, for each newHeads notification, asks for the block as the websocket
// replicator does (debug_getRawBlock) and times the answer from the notification's arrival. A replicator can do no
// better than this before its own verification and the local insert.
type fetchProbe struct {
	mu    sync.Mutex
	times map[uint64]time.Duration
	stop  func()
}

func startFetchProbe(t *testing.T, ws string) *fetchProbe {
	ctx, cancel := context.WithCancel(t.Context())
	c, err := rpc.DialContext(ctx, ws)
	require.NoError(t, err)
	heads := make(chan *types.Header, 16)
	sub, err := c.Subscribe(ctx, "eth", heads, "newHeads")
	require.NoError(t, err)
	p := &fetchProbe{times: make(map[uint64]time.Duration)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case h := <-heads:
				at := time.Now()
				var raw hexutil.Bytes
				if err := c.CallContext(ctx, &raw, "debug_getRawBlock", hexutil.EncodeUint64(h.Number.Uint64())); err != nil {
					continue
				}
				took := time.Since(at)
				p.mu.Lock()
				p.times[h.Number.Uint64()] = took
				p.mu.Unlock()
			case <-sub.Err():
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	p.stop = func() {
		cancel()
		<-done
		sub.Unsubscribe()
		c.Close()
	}
	t.Cleanup(p.stop)
	return p
}

// percentiles returns the p50, p90 and p99 of the fetches of blocks from..to, and how many there were.
func (p *fetchProbe) percentiles(from, to uint64) (p50, p90, p99 time.Duration, n int) {
	p.mu.Lock()
	var xs []time.Duration
	for num, d := range p.times {
		if num >= from && num <= to {
			xs = append(xs, d)
		}
	}
	p.mu.Unlock()
	if len(xs) == 0 {
		return 0, 0, 0, 0
	}
	slices.Sort(xs)
	at := func(q float64) time.Duration { return xs[int(q/100*float64(len(xs)-1))] }
	return at(50), at(90), at(99), len(xs)
}
