//go:build bench

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/op-replicator/op-replicator/e2e/devnet"
)

// Catch-up benchmarks: a fresh node started far behind the sequencer, against the engine ceiling (devnet.Engine:
// the same blocks, prefetched, replayed through the engine API into a fresh op-geth), all in one devnet run.
// Settings: OP_REPLICATOR_BENCH_CATCHUP_BLOCKS (how far behind the fresh node starts, default 500),
// OP_REPLICATOR_BENCH_UNSAFE_BLOCKS (the unsafe-only backlog, default 1000), OP_REPLICATOR_BENCH_TX_RATE (default
// 60), OP_REPLICATOR_BENCH_PPROF (a directory: a CPU profile of the replicator's op-node over its catch-up is
// written there), OP_REPLICATOR_BENCH_REPORT.

// catchUpResult is one fresh node's catch-up to a target block.
type catchUpResult struct {
	name string
	// total runs from the start of the node's processes to the target on its unsafe head; steady from the first
	// sample at or above steadyFrom (a tenth of the way) to the target.
	total, steady time.Duration
	steadyFrom    uint64
	blocks        uint64 // the target: blocks from genesis
	// safeAtTarget is the node's safe head when its unsafe head reached the target.
	safeAtTarget uint64
	// replicated is the replicator's blocks_replicated_total at the target; errors its errors_total by kind.
	replicated float64
	errors     string
	cpu        time.Duration // the op-node's CPU time up to the target
	// cpuSteady is where the machine's CPU went over the steady part.
	cpuSteady string
}

func (r catchUpResult) totalRate() float64 { return float64(r.blocks) / r.total.Seconds() }
func (r catchUpResult) steadyRate() float64 {
	return float64(r.blocks-r.steadyFrom) / r.steady.Seconds()
}

// catchUpSample is how often a catching-up node's heads are read.
const catchUpSample = 50 * time.Millisecond

// measureCatchUp adds a follower and measures how long it takes until its unsafe head is at target, whose hash must
// be want; then it stops the follower (its CPU is not left to weigh on the next measurement).
func measureCatchUp(t *testing.T, d *devnet.Devnet, name, label string, role devnet.Role, target uint64, want common.Hash,
	profile bool, opts ...devnet.FollowerOption) catchUpResult {
	t.Helper()
	res := catchUpResult{name: label, blocks: target, steadyFrom: target / 10}
	var pprofPort int
	if role == devnet.RoleReplicator {
		opts = append(opts, devnet.WithMetrics())
	}
	if profile {
		pprofPort = benchFreePort(t)
		opts = append(opts, devnet.WithNodeArgs("--pprof.enabled", "--pprof.addr", "127.0.0.1", "--pprof.port", strconv.Itoa(pprofPort)))
	}
	started := time.Now()
	n := benchFollower(t, d, name, role, opts...)
	t.Cleanup(func() { _ = n.Stop() })
	var stopProfiles func()
	if profile {
		stopProfiles = captureProfiles(t, pprofPort, name)
	}
	ticker := time.NewTicker(catchUpSample)
	defer ticker.Stop()
	var steadyAt time.Time
	var steadyCPU cpuSnapshot
	deadline := time.After(time.Duration(target)*time.Second + 2*time.Minute)
	for {
		require.NoError(t, d.Err(), "devnet fault during %s's catch-up", name)
		st, err := n.CL.SyncStatus(t.Context())
		if err == nil {
			if steadyAt.IsZero() && st.UnsafeL2.Number >= res.steadyFrom {
				steadyAt, res.steadyFrom = time.Now(), st.UnsafeL2.Number
				steadyCPU = snapshotCPU(t, d)
			}
			if st.UnsafeL2.Number >= target {
				res.total, res.steady, res.safeAtTarget = time.Since(started), time.Since(steadyAt), st.SafeL2.Number
				res.cpuSteady = cpuSince(steadyCPU, snapshotCPU(t, d))
				break
			}
		}
		select {
		case <-ticker.C:
		case <-deadline:
			t.Fatalf("%s did not reach block %d in time (last status %+v, err %v)", name, target, st, err)
		}
	}
	var err error
	res.cpu, err = n.OpNode.CPUTime()
	require.NoError(t, err)
	if role == devnet.RoleReplicator {
		res.replicated, err = benchMetric(t.Context(), n.MetricsURL, "op_node_default_replicator_blocks_replicated_total")
		require.NoError(t, err)
		res.errors = metricLines(t, n.MetricsURL, "op_node_default_replicator_errors_total")
	}
	got := benchHeader(t, n.EL, rpc.BlockNumber(target)).Hash()
	require.Equal(t, want, got, "%s has another block at %d", name, target)
	if stopProfiles != nil {
		stopProfiles()
	}
	require.NoError(t, n.Stop())
	t.Logf("%s: block %d in %s (steady from %d: %s), safe %d at target, replicated %.0f, op-node CPU %s, errors: %s; CPU in the steady part: %s",
		label, target, res.total.Round(time.Millisecond), res.steadyFrom, res.steady.Round(time.Millisecond), res.safeAtTarget,
		res.replicated, res.cpu, res.errors, res.cpuSteady)
	return res
}

// profileChunk is the length of one CPU profile of a catching-up op-node: profiles are taken back to back while it
// catches up, and the one in flight when it reaches its target is dropped, so that they cover catch-up only.
const profileChunk = 3 * time.Second

// captureProfiles takes CPU profiles of the op-node at pprofPort back to back, writing them to
// $OP_REPLICATOR_BENCH_PPROF/<name>-<i>.pprof (merge them with `go tool pprof -top <files>`), until stop is called.
func captureProfiles(t *testing.T, pprofPort int, name string) (stop func()) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		url := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", pprofPort, int(profileChunk/time.Second))
		for i := 0; ctx.Err() == nil; i++ {
			path := filepath.Join(os.Getenv("OP_REPLICATOR_BENCH_PPROF"), fmt.Sprintf("%s-%d.pprof", name, i))
			if err := fetchTo(ctx, url, path); err != nil {
				_ = os.Remove(path)
				if ctx.Err() == nil {
					t.Logf("profile %s: %v", path, err)
					time.Sleep(100 * time.Millisecond)
				}
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// captureHeap writes a heap profile of the op-node at pprofPort, after a garbage collection, to
// $OP_REPLICATOR_BENCH_PPROF/<name>.pprof: what the follow bench's window starts and ends with, to tell what the
// resident memory it reports grows with (go tool pprof -sample_index=inuse_space -diff_base <start> <end>).
func captureHeap(t *testing.T, pprofPort int, name string) {
	url := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/heap?gc=1", pprofPort)
	path := filepath.Join(os.Getenv("OP_REPLICATOR_BENCH_PPROF"), name+".pprof")
	if err := fetchTo(t.Context(), url, path); err != nil {
		t.Logf("heap profile %s: %v", path, err)
	}
}

// liveHeap is the op-node at pprofPort's heap in use right after a garbage collection (runtime.MemStats.HeapAlloc,
// as its heap profile's text form reports it): what it holds, without the garbage and the memory the runtime has
// not returned to the system yet that its resident memory also counts.
func liveHeap(ctx context.Context, pprofPort int) (uint64, error) {
	url := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/heap?gc=1&debug=1", pprofPort)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s: %s", url, resp.Status)
	}
	lines := bufio.NewScanner(resp.Body)
	lines.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for lines.Scan() {
		if v, ok := strings.CutPrefix(lines.Text(), "# HeapAlloc = "); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	if err := lines.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s: no HeapAlloc", url)
}

func fetchTo(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// metricLines returns the series of a metric at a Prometheus endpoint, label and value, joined.
func metricLines(t *testing.T, url, name string) string {
	resp, err := http.Get(url)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	var out []string
	scanner := bufio.NewScanner(resp.Body)
	for scanner.Scan() {
		if line := scanner.Text(); strings.HasPrefix(line, name+"{") {
			out = append(out, strings.TrimPrefix(line, name))
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}

// ceilings replays the sequencer's blocks 1..target into fresh op-geths, rounds times each, alternating: with a
// forkchoice update per block, and with one per 32 blocks.
func ceilings(t *testing.T, d *devnet.Devnet, target uint64, rounds int) (perBlock, per32 []devnet.ReplayResult) {
	t.Helper()
	fetchStart := time.Now()
	envs, err := d.FetchPayloads(t.Context(), d.Sequencer.EL, 1, target)
	require.NoError(t, err)
	t.Logf("fetched %d payloads in %s", len(envs), time.Since(fetchStart).Round(time.Millisecond))
	for round := range rounds {
		for _, every := range []int{1, 32} {
			name := fmt.Sprintf("ceiling-fcu%d-%d", every, round+1)
			e, err := d.StartEngine(t.Context(), name)
			require.NoError(t, err)
			t.Cleanup(func() { _ = e.Stop() })
			before := snapshotCPU(t, d, e.OpGeth)
			res, err := e.Replay(t.Context(), envs, every)
			require.NoError(t, err)
			res.CPU = cpuSince(before, snapshotCPU(t, d, e.OpGeth))
			head := benchHeader(t, e.EL, rpc.LatestBlockNumber)
			require.Equal(t, envs[len(envs)-1].ExecutionPayload.BlockHash, head.Hash(), "%s: head after the replay", name)
			require.NoError(t, e.Stop())
			t.Logf("%s: %d blocks in %s: %.1f blocks/s; CPU: %s", name, res.Blocks, res.Elapsed.Round(time.Millisecond), res.BlocksPerSecond(), res.CPU)
			if every == 1 {
				perBlock = append(perBlock, res)
			} else {
				per32 = append(per32, res)
			}
		}
	}
	return perBlock, per32
}

func startBenchLoad(t *testing.T, d *devnet.Devnet, rate uint64) {
	t.Helper()
	txs, err := devnet.StartTxGen(t.Context(), d.Sequencer.EL, d.Keys.L2Accounts, float64(rate))
	require.NoError(t, err)
	t.Cleanup(txs.Stop)
}

// waitSequencer waits until the sequencer's unsafe head (safe: its safe head) is at least n, and returns it.
func waitSequencer(t *testing.T, d *devnet.Devnet, n uint64, safe bool) uint64 {
	t.Helper()
	label, what := rpc.LatestBlockNumber, "unsafe"
	if safe {
		label, what = rpc.SafeBlockNumber, "safe"
	}
	var got uint64
	require.NoError(t, d.WaitFor(t.Context(), time.Duration(n)*3*time.Second+2*time.Minute, fmt.Sprintf("sequencer %s head %d", what, n),
		func(ctx context.Context) (bool, error) {
			h, err := d.Sequencer.EL.Header(ctx, label)
			if err != nil {
				return false, err
			}
			got = h.Number.Uint64()
			return got >= n, nil
		}))
	return got
}

func benchHeading(title string, blocks, rate uint64) string {
	return fmt.Sprintf("### %s: %d blocks, %d transfers/s (%s, %s, %d CPUs, GOMAXPROCS %d, load average %s)\n\n", title, blocks, rate,
		time.Now().UTC().Format(time.RFC3339), hostname(), runtime.NumCPU(), runtime.GOMAXPROCS(0), loadAverage())
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// rates lists rates, and returns their mean.
func rates(rs []float64) (string, float64) {
	var list []string
	var sum float64
	for _, r := range rs {
		list = append(list, fmt.Sprintf("%.1f", r))
		sum += r
	}
	return strings.Join(list, ", "), sum / float64(len(rs))
}

func replayRates(rs []devnet.ReplayResult) (string, float64) {
	var out []float64
	for _, r := range rs {
		out = append(out, r.BlocksPerSecond())
	}
	return rates(out)
}

// fetchingCeilings replays the sequencer's blocks 1..target into fresh op-geths, rounds times, fetching them from
// the sequencer's op-geth while replaying (Devnet.ReplayFetching, as the ws replicator's prefetcher fetches) with one
// forkchoice update per 32 blocks: the engine's ceiling when its source shares the machine.
func fetchingCeilings(t *testing.T, d *devnet.Devnet, target uint64, rounds int) []devnet.ReplayResult {
	t.Helper()
	// As the replicator's prefetcher: 16 requests in flight (plugin.maxInFlight), two batches of 32 ahead.
	const inFlight, lookahead = 16, 64
	var out []devnet.ReplayResult
	for round := range rounds {
		name := fmt.Sprintf("ceiling-fetching-%d", round+1)
		e, err := d.StartEngine(t.Context(), name)
		require.NoError(t, err)
		t.Cleanup(func() { _ = e.Stop() })
		before := snapshotCPU(t, d, e.OpGeth)
		res, err := d.ReplayFetching(t.Context(), e, d.Sequencer.EL, 1, target, 32, inFlight, lookahead)
		require.NoError(t, err)
		res.CPU = cpuSince(before, snapshotCPU(t, d, e.OpGeth))
		head := benchHeader(t, e.EL, rpc.LatestBlockNumber)
		require.Equal(t, benchHeader(t, d.Sequencer.EL, rpc.BlockNumber(target)).Hash(), head.Hash(), "%s: head after the replay", name)
		require.NoError(t, e.Stop())
		t.Logf("%s: %d blocks in %s: %.1f blocks/s; CPU: %s", name, res.Blocks, res.Elapsed.Round(time.Millisecond), res.BlocksPerSecond(), res.CPU)
		out = append(out, res)
	}
	return out
}

// ceilingRows writes the two ceiling rows, and returns the mean of the per-32 ceiling (the anchor).
func ceilingRows(out *strings.Builder, perBlock, per32 []devnet.ReplayResult) float64 {
	list1, mean1 := replayRates(perBlock)
	list32, mean32 := replayRates(per32)
	fmt.Fprintf(out, "| engine ceiling: prefetched, `newPayload` + forkchoice update per block | %s | %.2f× | %d blocks from genesis, each round a fresh op-geth |\n",
		list1, mean1/mean32, perBlock[0].Blocks)
	fmt.Fprintf(out, "| engine ceiling: prefetched, one forkchoice update per 32 blocks | %s | 1.00× (anchor) | |\n", list32)
	return mean32
}

// catchUpRow writes the row of one path's catch-ups, with ratios against the per-32 ceiling and, if anchor > 0,
// against anchor; it returns the mean steady rate.
func catchUpRow(out *strings.Builder, rs []catchUpResult, per32, anchor float64, anchorName string) float64 {
	var steady, total []float64
	var notes []string
	for _, r := range rs {
		steady, total = append(steady, r.steadyRate()), append(total, r.totalRate())
		note := fmt.Sprintf("%d → %d in %s, safe head %d at the target, op-node CPU %.1f s", r.steadyFrom, r.blocks,
			r.steady.Round(100*time.Millisecond), r.safeAtTarget, r.cpu.Seconds())
		if r.errors != "" {
			note += fmt.Sprintf(", replicated %.0f blocks", r.replicated)
		}
		notes = append(notes, note)
	}
	list, mean := rates(steady)
	totalList, _ := rates(total)
	ratios := fmt.Sprintf("%.2f×", mean/per32)
	if anchor > 0 {
		ratios += fmt.Sprintf(", %.2f× %s", mean/anchor, anchorName)
	}
	fmt.Fprintf(out, "| %s | %s | %s | from process start %s; %s |\n", rs[0].name, list, ratios, totalList, strings.Join(notes, "; "))
	return mean
}

// TestBenchCatchUp measures a fresh node started ~OP_REPLICATOR_BENCH_CATCHUP_BLOCKS blocks behind the sequencer,
// with L1 holding the batches of every one of them: stock op-node (L1 derivation only), the replicator (source =
// the sequencer's op-geth over websocket) and the engine ceiling, on the same blocks 1..N, each
// OP_REPLICATOR_BENCH_ROUNDS times (default 2).
func TestBenchCatchUp(t *testing.T) {
	blocks := envUint(t, "OP_REPLICATOR_BENCH_CATCHUP_BLOCKS", 500)
	rate := envUint(t, "OP_REPLICATOR_BENCH_TX_RATE", 60)
	rounds := int(envUint(t, "OP_REPLICATOR_BENCH_ROUNDS", 2))
	profile := os.Getenv("OP_REPLICATOR_BENCH_PPROF") != ""
	// The sequencer's relay holds the last 1024 heights it signed: the whole backlog while it is shorter.
	relayPort := benchFreePort(t)
	d := devnet.Start(t, devnet.Config{SequencerArgs: benchRelayArgs(relayPort)})
	startBenchLoad(t, d, rate)
	// The target must be on L1 for the stock node: wait until the sequencer's safe head has it.
	waitSequencer(t, d, blocks, true)
	target := blocks
	want := benchHeader(t, d.Sequencer.EL, rpc.BlockNumber(target)).Hash()

	perBlock, per32 := ceilings(t, d, target, rounds)
	fetching := fetchingCeilings(t, d, target, rounds)
	var stock, rep []catchUpResult
	for round := range rounds {
		stock = append(stock, measureCatchUp(t, d, fmt.Sprintf("stock-%d", round+1), "stock op-node, L1 derivation only",
			devnet.RoleVerifier, target, want, false))
		rep = append(rep, measureCatchUp(t, d, fmt.Sprintf("rep-ws-%d", round+1), "replicator, sequencer op-geth over ws",
			devnet.RoleReplicator, target, want, profile && round == 0, devnet.WithSource(d.Sequencer.EL.WS)))
	}
	var relay []catchUpResult
	for round := range rounds {
		t.Run(fmt.Sprintf("relay-%d", round+1), func(t *testing.T) {
			head := benchHeader(t, d.Sequencer.EL, rpc.LatestBlockNumber).Number.Uint64()
			if head > 1000 {
				t.Skipf("the relay's window no longer holds block 1 (head %d)", head)
			}
			relay = append(relay, measureCatchUp(t, d, fmt.Sprintf("rep-relay-%d", round+1), "replicator, the sequencer's relay",
				devnet.RoleReplicator, target, want, false, devnet.WithSource(benchRelaySource(relayPort))))
		})
	}
	head := benchHeader(t, d.Sequencer.EL, rpc.LatestBlockNumber).Number.Uint64()

	var out strings.Builder
	out.WriteString(benchHeading("Catch-up of a fresh node, L1 has the batches", target, rate))
	fmt.Fprintf(&out, "A fresh node (new op-geth from genesis, new op-node) started when the sequencer's safe head was at block %d; "+
		"the sequencer was at %d when the last measurement ended. %d rounds, one value per round, nodes one at a time. A node's "+
		"rate is over the steady part: from the first sample (every %s) at or above a tenth of the way to the target; the "+
		"ceilings replay all blocks 1 → %d.\n\n", target, head, rounds, catchUpSample, target)
	fmt.Fprintln(&out, "| path | blocks/s | vs per-32 ceiling (mean), vs stock | notes |")
	fmt.Fprintln(&out, "|---|---|---|---|")
	anchor := ceilingRows(&out, perBlock, per32)
	fetchList, fetchMean := replayRates(fetching)
	fmt.Fprintf(&out, "| engine ceiling: fetched from the sequencer's op-geth while replaying (`debug_getRawBlock`, 16 in flight), "+
		"one forkchoice update per 32 blocks | %s | %.2f× | the source's own work on the same cores, as for the ws replicator |\n",
		fetchList, fetchMean/anchor)
	stockMean := catchUpRow(&out, stock, anchor, 0, "")
	wsMean := catchUpRow(&out, rep, anchor, stockMean, "stock")
	if len(relay) > 0 {
		catchUpRow(&out, relay, anchor, stockMean, "stock")
	}
	fmt.Fprintf(&out, "\nThe ws replicator against the ceiling fetched from the same source: %.2f×.\n", wsMean/fetchMean)
	if len(relay) > 0 {
		cpuLines(&out, perBlock, per32, stock, rep, relay)
	} else {
		cpuLines(&out, perBlock, per32, stock, rep)
	}
	fmt.Fprintf(&out, "- ceiling, fetched from the sequencer's op-geth: %s\n", fetching[0].CPU)
	report(t, out.String())
}

// TestBenchCatchUpUnsafeOnly measures a fresh node catching up through a backlog of
// OP_REPLICATOR_BENCH_UNSAFE_BLOCKS blocks that exist only as unsafe blocks (the batcher stopped early, the
// sequencing window longer than the run): the replicator (ws source) against the engine ceiling, each
// OP_REPLICATOR_BENCH_ROUNDS times. A stock op-node cannot: the blocks are on no L1, and gossip serves no history.
func TestBenchCatchUpUnsafeOnly(t *testing.T) {
	blocks := envUint(t, "OP_REPLICATOR_BENCH_UNSAFE_BLOCKS", 1000)
	rate := envUint(t, "OP_REPLICATOR_BENCH_TX_RATE", 60)
	rounds := int(envUint(t, "OP_REPLICATOR_BENCH_ROUNDS", 2))
	profile := os.Getenv("OP_REPLICATOR_BENCH_PPROF") != ""
	// The window must outlast the backlog's growth (blocks s of L2 time) and the measurements, with room to spare;
	// otherwise derivation replaces the unsafe chain with deposit-only blocks once it passes.
	window := max(200, 2*(blocks+600)/uint64(devnet.L1BlockTime/time.Second))
	// The sequencer's relay holds every signed block above its safe head (up to its window of 1024 heights): with the
	// batcher stopped, the whole backlog, for a replicator whose source is the relay.
	relayPort := benchFreePort(t)
	d := devnet.Start(t, devnet.Config{SequencerWindowSize: window, SequencerArgs: benchRelayArgs(relayPort)})
	startBenchLoad(t, d, rate)
	waitSequencer(t, d, 10, true)
	require.NoError(t, d.SetBatching(t.Context(), false))
	// Whatever the batcher had in flight lands within a few L1 blocks.
	time.Sleep(4 * devnet.L1BlockTime)
	stopped := benchHeader(t, d.Sequencer.EL, rpc.SafeBlockNumber).Number.Uint64()
	target := waitSequencer(t, d, stopped+blocks, false)
	want := benchHeader(t, d.Sequencer.EL, rpc.BlockNumber(target)).Hash()
	require.Equal(t, stopped, benchHeader(t, d.Sequencer.EL, rpc.SafeBlockNumber).Number.Uint64(), "the safe head moved with the batcher stopped")

	perBlock, per32 := ceilings(t, d, target, rounds)
	var rep []catchUpResult
	for round := range rounds {
		rep = append(rep, measureCatchUp(t, d, fmt.Sprintf("rep-ws-%d", round+1), "replicator, sequencer op-geth over ws",
			devnet.RoleReplicator, target, want, profile && round == 0, devnet.WithSource(d.Sequencer.EL.WS)))
	}
	// A replicator following the relay (signed envelopes, transactions as opaque bytes) instead of the sequencer's
	// op-geth (blocks with full transaction objects in JSON): how much of the cost is the source's encoding. Only
	// while the relay's window holds the whole backlog.
	var relay []catchUpResult
	if target-stopped < 1000 {
		for round := range rounds {
			t.Run(fmt.Sprintf("relay-%d", round+1), func(t *testing.T) {
				relay = append(relay, measureCatchUp(t, d, fmt.Sprintf("rep-relay-%d", round+1), "replicator, the sequencer's relay",
					devnet.RoleReplicator, target, want, false, devnet.WithSource(benchRelaySource(relayPort))))
			})
		}
	}
	require.Equal(t, stopped, benchHeader(t, d.Sequencer.EL, rpc.SafeBlockNumber).Number.Uint64(), "the safe head moved with the batcher stopped")

	var out strings.Builder
	out.WriteString(benchHeading("Catch-up through an unsafe-only backlog", target-stopped, rate))
	fmt.Fprintf(&out, "Batcher stopped with the safe head at block %d; sequencing window %d L1 blocks; a fresh node's target is "+
		"block %d, so %d blocks exist only as unsafe blocks. %d rounds, one value per round. A node's rate is over the steady part "+
		"(from the first sample at or above a tenth of the way); the ceilings replay all blocks 1 → %d.\n\n",
		stopped, window, target, target-stopped, rounds, target)
	fmt.Fprintln(&out, "| path | blocks/s | vs per-32 ceiling (mean) | notes |")
	fmt.Fprintln(&out, "|---|---|---|---|")
	anchor := ceilingRows(&out, perBlock, per32)
	fmt.Fprintln(&out, "| stock op-node (L1 derivation, gossip) | cannot | – | the blocks are on no L1, and gossip serves no history |")
	catchUpRow(&out, rep, anchor, 0, "")
	if len(relay) > 0 {
		catchUpRow(&out, relay, anchor, 0, "")
		cpuLines(&out, perBlock, per32, rep, relay)
	} else {
		cpuLines(&out, perBlock, per32, rep)
	}
	report(t, out.String())
}

// cpuLines lists where the machine's CPU went in the first round of each measurement (in cores: CPU seconds per
// second of wall time; processes using under 2% of a core left out).
func cpuLines(out *strings.Builder, perBlock, per32 []devnet.ReplayResult, nodes ...[]catchUpResult) {
	fmt.Fprintln(out, "\nCPU in the first round (cores busy, per process):")
	fmt.Fprintf(out, "- ceiling, forkchoice update per block: %s\n", perBlock[0].CPU)
	fmt.Fprintf(out, "- ceiling, one per 32 blocks: %s\n", per32[0].CPU)
	for _, rs := range nodes {
		fmt.Fprintf(out, "- %s, steady part: %s\n", rs[0].name, rs[0].cpuSteady)
	}
}
