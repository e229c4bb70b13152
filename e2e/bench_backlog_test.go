//go:build bench

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/rpc"

	"github.com/ethereum-optimism/optimism/op-service/eth"

	"github.com/op-replicator/op-replicator/e2e/benchplot"
	"github.com/op-replicator/op-replicator/e2e/devnet"
	"github.com/op-replicator/op-replicator/e2e/dsl"
)

// Backlog depth (issue 28): a fresh node catching up through unsafe-only backlogs of several depths, in one devnet
// run, from the sequencer's op-geth (ws) and from the sequencer's relay with its window (--replicator.relay.window)
// sized to hold the deepest backlog, each against the per-32 engine ceiling measured on the same blocks at that
// depth, over the same steady part (from a tenth of the way), in rounds that each replay the ceilings and then catch
// up once from each source; and what the relay's window costs in memory. Settings: OP_REPLICATOR_BENCH_BACKLOG (the depths, default
// 1000,3600: one hour of 1 s blocks for the deepest, in real time), OP_REPLICATOR_BENCH_RELAY_WINDOW (default the
// deepest + 1,800: what the sequencer produces while the deepest is measured must not push its first block out),
// OP_REPLICATOR_BENCH_TX_RATE (default 60), OP_REPLICATOR_BENCH_ROUNDS (default 2), OP_REPLICATOR_BENCH_REPORT,
// OP_REPLICATOR_BENCH_OUT (a directory: the results as backlog.json; default build/bench), OP_REPLICATOR_BENCH_PLOTS
// (backlog.png, default docs/bench), OP_REPLICATOR_BENCH_PPROF
// (a directory: heap profiles of the sequencer's op-node at each depth, CPU profiles of every catch-up),
// OP_REPLICATOR_BENCH_BACKLOG_DISK (default 1; 0 leaves it out): a third source, a relaying replicator that follows
// the sequencer's relay from the batcher's stop with its window on disk (--replicator.relay.window.dir, the default
// --replicator.relay.window.memory), so that catch-up from a window on disk is measured beside the one in memory;
// OP_REPLICATOR_BENCH_CLIENT_WINDOW (default: op-node's, 1,024): the catching-up nodes' --replicator.relay.window,
// the heights of signed blocks they hold (a backlog deeper than it, at a depth that takes less than an hour to make);
// OP_REPLICATOR_BENCH_RELAY_RATE (default: op-node's, 50): both relays' --replicator.relay.rate-limit, which paces a
// follower's by-number fetches of the blocks below its window (one call per block);
// OP_REPLICATOR_BENCH_NICE_OTHERS (default: unset, every process at the test's own nice value): a nice value (e.g.
// 19) set, before each depth's rounds, on every devnet process then running: the L1 geth, the sequencer, the
// op-batcher and the relay with its window on disk. The engines of the ceilings and the catching-up nodes start
// later, at the test's own. On a replica's own machine the L1 node and the source are elsewhere; here they share 2
// cores with the engine measured, and at nice 19 they run only on a core nothing else wants;
// OP_REPLICATOR_BENCH_ENGINE_METRICS (default unset; 1 enables): op-geth's metrics (--metrics) on every engine
// measured, so that the table of where each block's time went has op-geth's own share beside the caller's;
// OP_REPLICATOR_BENCH_NODE_GOMAXPROCS (default unset: Go's, the machine's cores): GOMAXPROCS of the catching-up
// nodes' op-node, to see whether its Go runtime taking every core at once (a batch's decoding and checks, its GC)
// delays the engine beside it; OP_REPLICATOR_BENCH_NODE_GOMAXPROCS_AB (default unset): a GOMAXPROCS for a second
// catch-up from op-geth and from the relay in each round, beside the default ones, for a comparison on one machine; OP_REPLICATOR_BENCH_CEILING_DEFAULT_CLIENT (default unset; 1 enables): a third ceiling each round, per 32 blocks on
// geth's default HTTP client (4 KiB writes), as every ceiling was replayed before 2026-12-08.

// backlogMemory is the sequencer's op-node (which holds the relay's window) at one moment.
type backlogMemory struct {
	Held     uint64 `json:"held_blocks"` // signed blocks above the safe head: what the window holds
	RSS      uint64 `json:"rss_bytes"`
	PeakRSS  uint64 `json:"peak_rss_bytes"`
	LiveHeap uint64 `json:"live_heap_bytes"` // HeapAlloc right after a GC
}

// diskWindow is the relaying replicator with its window on disk at one moment.
type diskWindow struct {
	backlogMemory
	MemoryBytes float64 `json:"window_memory_bytes"` // relay_window_bytes{where="memory"}
	DiskBytes   float64 `json:"window_disk_bytes"`   // relay_window_bytes{where="disk"}
	DirBytes    int64   `json:"dir_bytes"`           // the window's directory on disk (pebble's files)
	DiskErrors  float64 `json:"disk_errors"`
}

// backlogRate is one catch-up or replay, for the JSON.
type backlogRate struct {
	Round        int     `json:"round"`
	BlocksPerSec float64 `json:"blocks_per_s"`
	// BlocksPerSec is over the steady part (from a tenth of the way); TotalBlocksPerSec over the whole run: a
	// catch-up's from its node's process start, a ceiling's from its fresh engine's first block.
	TotalBlocksPerSec float64 `json:"total_blocks_per_s,omitempty"`
	OpNodeCPUSeconds  float64 `json:"op_node_cpu_s,omitempty"`
	CPU               string  `json:"cpu,omitempty"`
	InsertSteps       string  `json:"insert_steps,omitempty"` // the replicator's insert_seconds over the catch-up
	// Time is where each block's time went over the steady part (with devnet.Config.EngineMetrics, op-geth's own
	// share too: OP_REPLICATOR_BENCH_ENGINE_METRICS).
	Time *blockTime `json:"time_per_block,omitempty"`
}

// blockTime is where the time per block of a replay or a catch-up went over its steady part, in milliseconds: Wall
// is the elapsed time over the blocks; NewPayload and Forkchoice the caller's time in its engine_newPayload calls
// (the mean, one call a block) and in its engine_forkchoiceUpdated calls (over the blocks), from sending each to
// its answer, on the caller's clock (the replayer's; op-node's engine-api client metrics); Between is the rest: the
// caller's own time between its calls. The Engine fields are op-geth's own medians over the same part (nil without
// op-geth's metrics): its time serving engine_newPayload, the block's insertion within it and the EVM's part of
// that. A caller's time in newPayload above op-geth's serving time is the transport and the encoding and decoding
// on the caller's side.
type blockTime struct {
	Wall, NewPayload, Forkchoice, Between float64
	// NewPayloadMedian is the median of the caller's newPayload calls: the replayer's only (op-node's histogram
	// buckets are too coarse for one).
	NewPayloadMedian *float64 `json:",omitempty"`
	// OtherCalls is the caller's other calls to op-geth's engine endpoint per block (op-node's reads of its L2
	// blocks), Other their time per block.
	OtherCalls, Other                        float64
	EngineNewPayload, EngineInsert           *float64 `json:",omitempty"`
	EngineNewPayloadP95, EngineNewPayloadP99 *float64 `json:",omitempty"`
	EngineExecution                          *float64 `json:",omitempty"`
}

// newBlockTime is a blockTime over blocks taking wall, calls newPayload calls, with engine's medians if not nil.
func newBlockTime(blocks uint64, wall time.Duration, calls engineCalls, engine *devnet.EngineTimes) *blockTime {
	if blocks == 0 || calls.NewPayloadCalls == 0 {
		return nil
	}
	bt := &blockTime{Wall: ms(wall) / float64(blocks), NewPayload: ms(calls.NewPayload) / float64(calls.NewPayloadCalls),
		Forkchoice: ms(calls.Forkchoice) / float64(calls.NewPayloadCalls)}
	bt.OtherCalls, bt.Other = float64(calls.OtherCalls)/float64(calls.NewPayloadCalls), ms(calls.Other)/float64(calls.NewPayloadCalls)
	bt.Between = bt.Wall - bt.NewPayload - bt.Forkchoice
	if engine != nil {
		np, ins, ex := ms(engine.NewPayload), ms(engine.Insert), ms(engine.Execution)
		p95, p99 := ms(engine.NewPayloadP95), ms(engine.NewPayloadP99)
		bt.EngineNewPayload, bt.EngineInsert, bt.EngineExecution = &np, &ins, &ex
		bt.EngineNewPayloadP95, bt.EngineNewPayloadP99 = &p95, &p99
	}
	return bt
}

func replayTime(r devnet.ReplayResult) *blockTime {
	bt := newBlockTime(uint64(r.SteadyBlocks), r.SteadyElapsed, engineCalls{NewPayload: r.SteadyNewPayload,
		Forkchoice: r.SteadyForkchoice, NewPayloadCalls: uint64(r.SteadyBlocks)}, r.Engine)
	if bt != nil {
		m := ms(r.SteadyNewPayloadMedian)
		bt.NewPayloadMedian = &m
	}
	return bt
}

func catchUpTime(r catchUpResult) *blockTime {
	return newBlockTime(r.blocks-r.steadyFrom, r.steady, r.calls, r.engine)
}

// blockTimeRows writes a table of where each block's time went, a row per run (name → its blockTime).
func blockTimeRows(out *strings.Builder, names []string, times []*blockTime) {
	opt := func(v *float64) string {
		if v == nil {
			return "–"
		}
		return fmt.Sprintf("%.2f", *v)
	}
	fmt.Fprintln(out, "| run | wall | in newPayload (caller, mean) | (caller, median) | in forkchoiceUpdated | between the calls | other calls to op-geth (calls, ms) | op-geth: newPayload median / p95 / p99 | insert (median) | execution (median) |")
	fmt.Fprintln(out, "|---|---|---|---|---|---|---|---|---|---|")
	for i, bt := range times {
		if bt == nil {
			continue
		}
		fmt.Fprintf(out, "| %s | %.2f | %.2f | %s | %.2f | %.2f | %.3f, %.2f | %s / %s / %s | %s | %s |\n", names[i], bt.Wall, bt.NewPayload,
			opt(bt.NewPayloadMedian), bt.Forkchoice, bt.Between, bt.OtherCalls, bt.Other, opt(bt.EngineNewPayload),
			opt(bt.EngineNewPayloadP95), opt(bt.EngineNewPayloadP99), opt(bt.EngineInsert), opt(bt.EngineExecution))
	}
}

type backlogDepth struct {
	Depth  uint64 `json:"depth"`
	Target uint64 `json:"target"` // the fresh nodes' target block (from genesis)
	// HeadAtEnd is the sequencer's head when the depth's last measurement ended.
	HeadAtEnd  uint64        `json:"head_at_end"`
	CeilingFCU []backlogRate `json:"ceiling_fcu_per_block"`
	Ceiling32  []backlogRate `json:"ceiling_per_32"`
	// Ceiling32Default is the per-32 ceiling on geth's default HTTP client (OP_REPLICATOR_BENCH_CEILING_DEFAULT_CLIENT),
	// as every ceiling was replayed before 2026-12-08.
	Ceiling32Default []backlogRate `json:"ceiling_per_32_default_client,omitempty"`
	Anchor           float64       `json:"anchor_blocks_per_s"` // the per-32 ceiling's mean
	WS               []backlogRate `json:"ws"`
	Relay            []backlogRate `json:"relay"`
	RelayNote        string        `json:"relay_note,omitempty"`
	WSRatio          float64       `json:"ws_vs_ceiling"`
	RelayRatio       float64       `json:"relay_vs_ceiling,omitempty"`
	// Each catch-up against the per-32 ceiling of its own round (measured at the round's start), averaged over the
	// rounds; 0 without catch-ups from that source.
	WSPaired    float64 `json:"ws_vs_round_ceiling"`
	RelayPaired float64 `json:"relay_vs_round_ceiling,omitempty"`
	DiskPaired  float64 `json:"disk_relay_vs_round_ceiling,omitempty"`
	// The catch-ups with their op-node at OP_REPLICATOR_BENCH_NODE_GOMAXPROCS_AB, and each against its round's ceiling.
	WSAB          []backlogRate `json:"ws_gomaxprocs_ab,omitempty"`
	RelayAB       []backlogRate `json:"relay_gomaxprocs_ab,omitempty"`
	WSABPaired    float64       `json:"ws_gomaxprocs_ab_vs_round_ceiling,omitempty"`
	RelayABPaired float64       `json:"relay_gomaxprocs_ab_vs_round_ceiling,omitempty"`
	// The relaying replicator with its window on disk (OP_REPLICATOR_BENCH_BACKLOG_DISK): catch-ups from it, and its
	// op-node's memory and window at the same two moments as the sequencer's.
	DiskRelay        []backlogRate `json:"disk_relay,omitempty"`
	DiskRatio        float64       `json:"disk_relay_vs_ceiling,omitempty"`
	DiskAtDepth      *diskWindow   `json:"disk_relay_at_depth,omitempty"`
	DiskAfterRelayed *diskWindow   `json:"disk_relay_after_catch_ups,omitempty"`
	// The backlog's blocks (stopped+1..target): mean sizes.
	TxBytesPerBlock   float64 `json:"tx_bytes_per_block"`   // transactions, as RLP (opaque bytes)
	JSONBytesPerBlock float64 `json:"json_bytes_per_block"` // the payload envelope's JSON (the relay's message, less its signature)
	GasPerBlock       float64 `json:"gas_per_block"`
	TxsPerBlock       float64 `json:"txs_per_block"`
	// The relay's message for a few blocks of the backlog, from relay_envelopeByNumber (bytes).
	RelayMessageBytes []int `json:"relay_message_bytes,omitempty"`
	// The sequencer's op-node when the backlog reached the depth (blocks never relayed yet: held decoded only), and
	// after the relay catch-ups (every block also held as the JSON it was relayed as).
	AtDepth      backlogMemory `json:"memory_at_depth"`
	AfterRelayed backlogMemory `json:"memory_after_relay_catch_ups"`
}

type backlogResult struct {
	When            string         `json:"when"`
	Commit          string         `json:"commit"`
	Host            string         `json:"host"`
	CPUs            int            `json:"cpus"`
	TxRate          uint64         `json:"tx_rate"`
	Rounds          int            `json:"rounds"`
	NiceOthers      string         `json:"nice_others,omitempty"` // OP_REPLICATOR_BENCH_NICE_OTHERS
	RelayWindow     uint64         `json:"relay_window"`
	SequencingWin   uint64         `json:"sequencing_window_l1_blocks"`
	Stopped         uint64         `json:"safe_head_batcher_stopped"`
	BaselineMemory  backlogMemory  `json:"memory_at_batcher_stop"`
	Depths          []backlogDepth `json:"depths"`
	HeapPerHeld     float64        `json:"heap_bytes_per_held_block,omitempty"`      // at the deepest, unrelayed
	HeapPerRelayed  float64        `json:"heap_bytes_per_relayed_block,omitempty"`   // at the deepest, after the relay catch-ups
	RSSPerRelayed   float64        `json:"rss_bytes_per_relayed_block,omitempty"`    // likewise
	HeapPerTxByte   float64        `json:"heap_per_tx_byte_relayed,omitempty"`       // HeapPerRelayed / tx bytes per block
	WindowAt1MBTxGB float64        `json:"window_3600_at_1mb_tx_bytes_gb,omitempty"` // extrapolated: 3,600 × 1 MB × HeapPerTxByte
}

// TestBenchBacklog measures catch-up through unsafe-only backlogs of OP_REPLICATOR_BENCH_BACKLOG blocks, from the
// sequencer's op-geth and from its relay, against the engine ceiling at each depth, and the relay window's memory.
func TestBenchBacklog(t *testing.T) {
	var depths []uint64
	for _, f := range strings.Split(envString("OP_REPLICATOR_BENCH_BACKLOG", "1000,3600"), ",") {
		n, err := strconv.ParseUint(strings.TrimSpace(f), 10, 64)
		require.NoError(t, err, "OP_REPLICATOR_BENCH_BACKLOG")
		depths = append(depths, n)
	}
	slices.Sort(depths)
	deepest := depths[len(depths)-1]
	rate := envUint(t, "OP_REPLICATOR_BENCH_TX_RATE", 60)
	rounds := int(envUint(t, "OP_REPLICATOR_BENCH_ROUNDS", 2))
	relayWindow := envUint(t, "OP_REPLICATOR_BENCH_RELAY_WINDOW", deepest+1800)
	// As TestBenchCatchUpUnsafeOnly: the sequencing window outlasts the deepest backlog and its measurements.
	seqWindow := max(200, 2*(deepest+1200)/uint64(devnet.L1BlockTime/time.Second))
	relayPort, pprofPort := dsl.FreePort(t), dsl.FreePort(t)
	var rateLimit []string
	if v := envString("OP_REPLICATOR_BENCH_RELAY_RATE", ""); v != "" {
		rateLimit = []string{"--replicator.relay.rate-limit", v}
	}
	args := dsl.RelayArgs(relayPort, "--replicator.relay.window", strconv.FormatUint(relayWindow, 10),
		"--pprof.enabled", "--pprof.addr", "127.0.0.1", "--pprof.port", strconv.Itoa(pprofPort))
	args = append(args, rateLimit...)
	sys := dsl.Start(t, devnet.Config{SequencerWindowSize: seqWindow, SequencerArgs: args,
		EngineMetrics: envString("OP_REPLICATOR_BENCH_ENGINE_METRICS", "") == "1"})
	seq := sys.Sequencer
	startBenchLoad(sys, rate)
	waitSequencer(sys, 10, true)
	sys.SetBatching(false)
	time.Sleep(4 * devnet.L1BlockTime) // whatever the batcher had in flight lands
	stopped := seq.EL.NumberAt(rpc.SafeBlockNumber)
	res := backlogResult{When: time.Now().UTC().Format(time.RFC3339), Commit: gitCommit(), Host: hostname(), CPUs: runtimeCPUs(),
		TxRate: rate, Rounds: rounds, NiceOthers: envString("OP_REPLICATOR_BENCH_NICE_OTHERS", ""), RelayWindow: relayWindow, SequencingWin: seqWindow, Stopped: stopped}
	profile := os.Getenv("OP_REPLICATOR_BENCH_PPROF") != ""
	if profile {
		require.NoError(t, os.MkdirAll(os.Getenv("OP_REPLICATOR_BENCH_PPROF"), 0o755))
	}
	memory := func(name string, held uint64) backlogMemory {
		r, err := seq.OpNode.Resources()
		require.NoError(t, err)
		heap, err := liveHeap(t.Context(), pprofPort)
		require.NoError(t, err)
		if os.Getenv("OP_REPLICATOR_BENCH_PPROF") != "" {
			captureHeap(t, pprofPort, "backlog-sequencer-"+name)
		}
		m := backlogMemory{Held: held, RSS: r.RSS, PeakRSS: r.PeakRSS, LiveHeap: heap}
		t.Logf("sequencer op-node, %s: %d blocks held, RSS %d MiB (peak %d), live heap %.1f MiB", name, held, r.RSS>>20,
			r.PeakRSS>>20, float64(heap)/(1<<20))
		return m
	}
	res.BaselineMemory = memory("stopped", seq.EL.NumberAt(rpc.LatestBlockNumber)-stopped)
	relayClient := sys.DialRelay(relayPort)

	// The window on disk: a relaying replicator, started now so that its window holds the whole backlog, as a
	// downstream relay of the sequencer's would.
	var disk *dsl.Node
	var diskPort, diskPprof int
	var diskDir string
	if envString("OP_REPLICATOR_BENCH_BACKLOG_DISK", "1") != "0" {
		diskPort, diskPprof, diskDir = dsl.FreePort(t), dsl.FreePort(t), t.TempDir()
		disk = sys.AddFollower("relay-disk", devnet.RoleReplicator, devnet.WithMetrics(), devnet.WithSource(dsl.RelaySource(relayPort)),
			devnet.WithNodeArgs(append(dsl.RelayArgs(diskPort, "--replicator.relay.window", strconv.FormatUint(relayWindow, 10),
				"--replicator.relay.window.dir", diskDir,
				"--pprof.enabled", "--pprof.addr", "127.0.0.1", "--pprof.port", strconv.Itoa(diskPprof)), rateLimit...)...))
	}
	diskState := func(name string) *diskWindow {
		if disk == nil {
			return nil
		}
		r, err := disk.OpNode.Resources()
		require.NoError(t, err)
		heap, err := liveHeap(t.Context(), diskPprof)
		require.NoError(t, err)
		if profile {
			captureHeap(t, diskPprof, "backlog-relay-disk-"+name)
		}
		w := &diskWindow{backlogMemory: backlogMemory{Held: disk.EL.NumberAt(rpc.LatestBlockNumber) - stopped, RSS: r.RSS,
			PeakRSS: r.PeakRSS, LiveHeap: heap}, DirBytes: dirSize(t, diskDir),
			MemoryBytes: metricOrZero(t, disk, dsl.MetricPrefix+"relay_window_bytes", "where", "memory"),
			DiskBytes:   metricOrZero(t, disk, dsl.MetricPrefix+"relay_window_bytes", "where", "disk"),
			DiskErrors:  metricOrZero(t, disk, dsl.MetricPrefix+"relay_window_disk_errors_total")}
		t.Logf("relay-disk op-node, %s: %d blocks held, RSS %d MiB, live heap %.1f MiB, window %.1f MiB in memory, %.1f MiB on disk "+
			"(directory %.1f MiB), disk errors %.0f", name, w.Held, r.RSS>>20, mibf(heap), w.MemoryBytes/(1<<20), w.DiskBytes/(1<<20),
			float64(w.DirBytes)/(1<<20), w.DiskErrors)
		return w
	}

	for _, depth := range depths {
		d := backlogDepth{Depth: depth, Target: stopped + depth}
		waitSequencer(sys, d.Target, false)
		require.Equal(t, stopped, seq.EL.NumberAt(rpc.SafeBlockNumber), "the safe head moved with the batcher stopped")
		want := seq.EL.HashAt(rpc.BlockNumber(d.Target))
		d.AtDepth = memory(fmt.Sprintf("depth-%d", depth), seq.EL.NumberAt(rpc.LatestBlockNumber)-stopped)
		if disk != nil {
			require.Equal(t, want, disk.EL.HashAt(rpc.BlockNumber(d.Target)), "relay-disk has another block at %d", d.Target)
		}
		d.DiskAtDepth = diskState(fmt.Sprintf("depth-%d", depth))

		fetchStart := time.Now()
		envs, err := sys.Net.FetchPayloads(t.Context(), sys.Net.Sequencer.EL, 1, d.Target)
		require.NoError(t, err)
		t.Logf("depth %d: fetched %d payloads in %s", depth, len(envs), time.Since(fetchStart).Round(time.Millisecond))
		d.TxBytesPerBlock, d.JSONBytesPerBlock, d.GasPerBlock, d.TxsPerBlock = payloadSizes(t, envs[stopped:])

		if res.NiceOthers != "" {
			nice, err := strconv.Atoi(res.NiceOthers)
			require.NoError(t, err, "OP_REPLICATOR_BENCH_NICE_OTHERS")
			var names []string
			for _, p := range sys.Net.Processes() {
				if p.Running() {
					require.NoError(t, p.SetNice(nice))
					names = append(names, p.Name)
				}
			}
			t.Logf("depth %d: nice %d set on %s", depth, nice, strings.Join(names, ", "))
		}

		// The rounds are interleaved: each round replays the ceilings, then catches up once from each source, so that
		// every catch-up has a ceiling measured minutes before it; the machine's speed drifts by up to a third within
		// the hour a deep backlog takes, and ceilings measured all first would anchor the last catch-ups on another
		// machine speed.
		var perBlock, per32 []devnet.ReplayResult
		var ws, relay, fromDisk []catchUpResult
		var relayRounds, diskRounds []int // the round each relay and disk catch-up ran in (a skipped one has none)
		// source is a catching-up node's options: its source, and OP_REPLICATOR_BENCH_CLIENT_WINDOW.
		source := func(url string) []devnet.FollowerOption {
			opts := []devnet.FollowerOption{devnet.WithSource(url)}
			if v := envString("OP_REPLICATOR_BENCH_NODE_GOMAXPROCS", ""); v != "" {
				opts = append(opts, devnet.WithNodeEnv("GOMAXPROCS="+v))
			}
			if w := envString("OP_REPLICATOR_BENCH_CLIENT_WINDOW", ""); w != "" {
				opts = append(opts, devnet.WithNodeArgs("--replicator.relay.window", w))
			}
			return opts
		}
		// OP_REPLICATOR_BENCH_NODE_GOMAXPROCS_AB: a second catch-up from op-geth and from the relay in each round, its
		// op-node at that GOMAXPROCS, beside the default one, so that both meet the same machine.
		abProcs := envString("OP_REPLICATOR_BENCH_NODE_GOMAXPROCS_AB", "")
		var wsAB, relayAB []catchUpResult
		var relayABRounds []int
		measureAB := func(name, label, url string, round int) catchUpResult {
			return measureCatchUp(t, sys, fmt.Sprintf("%s-gomaxprocs%s-%d-%d", name, abProcs, depth, round), label+", op-node at GOMAXPROCS="+abProcs,
				devnet.RoleReplicator, d.Target, want, profile, append(source(url), devnet.WithNodeEnv("GOMAXPROCS="+abProcs))...)
		}
		var per32Default []devnet.ReplayResult
		for round := range rounds {
			fcu1, fcu32 := ceilingRound(t, sys, envs, round+1)
			perBlock, per32 = append(perBlock, fcu1), append(per32, fcu32)
			if envString("OP_REPLICATOR_BENCH_CEILING_DEFAULT_CLIENT", "") == "1" {
				per32Default = append(per32Default, replayCeilingOn(t, sys, envs, 32,
					fmt.Sprintf("ceiling-fcu32-default-client-%d", round+1), true))
			}
			ws = append(ws, measureCatchUp(t, sys, fmt.Sprintf("rep-ws-%d-%d", depth, round+1), "replicator, sequencer op-geth over ws",
				devnet.RoleReplicator, d.Target, want, profile, source(seq.EL.WS)...))
			if abProcs != "" {
				wsAB = append(wsAB, measureAB("rep-ws", "replicator, sequencer op-geth over ws", seq.EL.WS, round+1))
			}
			if head := seq.EL.NumberAt(rpc.LatestBlockNumber); head-stopped >= relayWindow {
				d.RelayNote = fmt.Sprintf("skipped: the sequencer's head %d is a window (%d) above the safe head %d", head, relayWindow, stopped)
				t.Log(d.RelayNote)
				continue
			}
			relayRounds = append(relayRounds, round+1)
			relay = append(relay, measureCatchUp(t, sys, fmt.Sprintf("rep-relay-%d-%d", depth, round+1), "replicator, the sequencer's relay",
				devnet.RoleReplicator, d.Target, want, profile, source(dsl.RelaySource(relayPort))...))
			if abProcs != "" {
				relayABRounds = append(relayABRounds, round+1)
				relayAB = append(relayAB, measureAB("rep-relay", "replicator, the sequencer's relay", dsl.RelaySource(relayPort), round+1))
			}
			if head := seq.EL.NumberAt(rpc.LatestBlockNumber); disk != nil && head-stopped >= relayWindow {
				t.Logf("round %d: no catch-up from the relay on disk: the sequencer's head %d is a window (%d) above the safe head %d",
					round+1, head, relayWindow, stopped)
			} else if disk != nil {
				diskRounds = append(diskRounds, round+1)
				fromDisk = append(fromDisk, measureCatchUp(t, sys, fmt.Sprintf("rep-relaydisk-%d-%d", depth, round+1),
					"replicator, a relay with its window on disk", devnet.RoleReplicator, d.Target, want, profile,
					source(dsl.RelaySource(diskPort))...))
			}
		}
		envs = nil
		// The ceilings are counted over the same steady part as the catch-ups (from a tenth of the way), not from
		// the fresh engine's first block.
		for i, r := range perBlock {
			d.CeilingFCU = append(d.CeilingFCU, backlogRate{Round: i + 1, BlocksPerSec: r.SteadyBlocksPerSecond(),
				TotalBlocksPerSec: r.BlocksPerSecond(), CPU: r.CPU, Time: replayTime(r)})
		}
		for i, r := range per32 {
			d.Ceiling32 = append(d.Ceiling32, backlogRate{Round: i + 1, BlocksPerSec: r.SteadyBlocksPerSecond(),
				TotalBlocksPerSec: r.BlocksPerSecond(), CPU: r.CPU, Time: replayTime(r)})
		}
		for i, r := range per32Default {
			d.Ceiling32Default = append(d.Ceiling32Default, backlogRate{Round: i + 1, BlocksPerSec: r.SteadyBlocksPerSecond(),
				TotalBlocksPerSec: r.BlocksPerSecond(), CPU: r.CPU, Time: replayTime(r)})
		}
		d.Anchor = meanRate(d.Ceiling32)
		// A few of the relay's messages, as a subscriber gets them (encoded once, then held with the block).
		for _, n := range []uint64{stopped + 1, stopped + depth/4, stopped + depth/2, stopped + 3*depth/4, d.Target} {
			if raw, err := relayClient.EnvelopeByNumberRaw(t.Context(), n); err == nil {
				d.RelayMessageBytes = append(d.RelayMessageBytes, len(raw))
			}
		}
		d.HeadAtEnd = seq.EL.NumberAt(rpc.LatestBlockNumber)
		d.AfterRelayed = memory(fmt.Sprintf("depth-%d-relayed", depth), d.HeadAtEnd-stopped)
		d.DiskAfterRelayed = diskState(fmt.Sprintf("depth-%d-relayed", depth))
		require.Equal(t, stopped, seq.EL.NumberAt(rpc.SafeBlockNumber), "the safe head moved with the batcher stopped")

		for i, r := range ws {
			d.WS = append(d.WS, backlogRate{Round: i + 1, BlocksPerSec: r.steadyRate(), TotalBlocksPerSec: r.totalRate(),
				OpNodeCPUSeconds: r.cpu.Seconds(), CPU: r.cpuSteady, InsertSteps: r.insertSteps, Time: catchUpTime(r)})
		}
		for i, r := range relay {
			d.Relay = append(d.Relay, backlogRate{Round: relayRounds[i], BlocksPerSec: r.steadyRate(), TotalBlocksPerSec: r.totalRate(),
				OpNodeCPUSeconds: r.cpu.Seconds(), CPU: r.cpuSteady, InsertSteps: r.insertSteps, Time: catchUpTime(r)})
		}
		for i, r := range fromDisk {
			d.DiskRelay = append(d.DiskRelay, backlogRate{Round: diskRounds[i], BlocksPerSec: r.steadyRate(), TotalBlocksPerSec: r.totalRate(),
				OpNodeCPUSeconds: r.cpu.Seconds(), CPU: r.cpuSteady, InsertSteps: r.insertSteps, Time: catchUpTime(r)})
		}
		for i, r := range wsAB {
			d.WSAB = append(d.WSAB, backlogRate{Round: i + 1, BlocksPerSec: r.steadyRate(), TotalBlocksPerSec: r.totalRate(),
				OpNodeCPUSeconds: r.cpu.Seconds(), CPU: r.cpuSteady, InsertSteps: r.insertSteps, Time: catchUpTime(r)})
		}
		for i, r := range relayAB {
			d.RelayAB = append(d.RelayAB, backlogRate{Round: relayABRounds[i], BlocksPerSec: r.steadyRate(), TotalBlocksPerSec: r.totalRate(),
				OpNodeCPUSeconds: r.cpu.Seconds(), CPU: r.cpuSteady, InsertSteps: r.insertSteps, Time: catchUpTime(r)})
		}
		d.WSABPaired, d.RelayABPaired = pairedRatio(d.WSAB, d.Ceiling32), pairedRatio(d.RelayAB, d.Ceiling32)
		if len(d.DiskRelay) > 0 {
			d.DiskRatio = meanRate(d.DiskRelay) / d.Anchor
		}
		d.WSRatio = meanRate(d.WS) / d.Anchor
		if len(d.Relay) > 0 {
			d.RelayRatio = meanRate(d.Relay) / d.Anchor
		}
		d.WSPaired, d.RelayPaired, d.DiskPaired = pairedRatio(d.WS, d.Ceiling32), pairedRatio(d.Relay, d.Ceiling32),
			pairedRatio(d.DiskRelay, d.Ceiling32)

		var out strings.Builder
		out.WriteString(benchHeading(fmt.Sprintf("Catch-up through an unsafe-only backlog of %d blocks", depth), depth, rate))
		fmt.Fprintf(&out, "Batcher stopped with the safe head at block %d; sequencing window %d L1 blocks; the sequencer's relay "+
			"window %d heights; a fresh node's target is block %d. The sequencer was at %d when the last measurement ended. %d "+
			"rounds, one value per round; the catching-up nodes' window %q (empty: 1,024); the devnet's other processes at nice %q (empty: the test's); rates over the steady part (from a tenth of the way); the ceilings replay blocks 1 → %d. "+
			"The backlog's blocks: %.0f transactions, %.0f gas, %.1f KB of transactions, %.1f KB as the envelope's JSON, per block; "+
			"relay messages sampled: %v bytes.\n\n",
			stopped, seqWindow, relayWindow, d.Target, d.HeadAtEnd, rounds, envString("OP_REPLICATOR_BENCH_CLIENT_WINDOW", ""), res.NiceOthers, d.Target, d.TxsPerBlock, d.GasPerBlock,
			d.TxBytesPerBlock/1e3, d.JSONBytesPerBlock/1e3, d.RelayMessageBytes)
		fmt.Fprintln(&out, "| path | blocks/s | vs per-32 ceiling (mean) | notes |")
		fmt.Fprintln(&out, "|---|---|---|---|")
		backlogCeilingRows(&out, d.CeilingFCU, d.Ceiling32, perBlock[0].Blocks)
		if len(d.Ceiling32Default) > 0 {
			list, mean := rates(rateValues(d.Ceiling32Default))
			fmt.Fprintf(&out, "| engine ceiling, one forkchoice update per 32 blocks, on geth's default HTTP client | %s | %.2f× | as every ceiling before 2026-12-08 |\n",
				list, mean/d.Anchor)
		}
		catchUpRow(&out, ws, d.Anchor, 0, "")
		if len(relay) > 0 {
			catchUpRow(&out, relay, d.Anchor, 0, "")
		} else {
			fmt.Fprintf(&out, "| replicator, the sequencer's relay | – | – | %s |\n", d.RelayNote)
		}
		if len(fromDisk) > 0 {
			catchUpRow(&out, fromDisk, d.Anchor, 0, "")
		}
		if len(wsAB) > 0 {
			catchUpRow(&out, wsAB, d.Anchor, 0, "")
		}
		if len(relayAB) > 0 {
			catchUpRow(&out, relayAB, d.Anchor, 0, "")
		}
		fmt.Fprintf(&out, "\nThe sequencer's op-node (its relay holds the window): at batcher stop %s; at depth %s; after the relay "+
			"catch-ups (each block also held as its JSON) %s.\n", memLine(res.BaselineMemory), memLine(d.AtDepth), memLine(d.AfterRelayed))
		if d.DiskAtDepth != nil {
			fmt.Fprintf(&out, "\nThe relay with its window on disk: at depth %s, window %.1f MiB in memory and %.1f MiB on disk "+
				"(directory %.1f MiB); after the catch-ups from it %s, window %.1f / %.1f MiB; disk errors %.0f.\n",
				memLine(d.DiskAtDepth.backlogMemory), d.DiskAtDepth.MemoryBytes/(1<<20), d.DiskAtDepth.DiskBytes/(1<<20),
				float64(d.DiskAtDepth.DirBytes)/(1<<20), memLine(d.DiskAfterRelayed.backlogMemory),
				d.DiskAfterRelayed.MemoryBytes/(1<<20), d.DiskAfterRelayed.DiskBytes/(1<<20), d.DiskAfterRelayed.DiskErrors)
		}
		fmt.Fprintf(&out, "\nEach catch-up against its own round's per-32 ceiling (the rounds interleave ceilings and catch-ups), "+
			"averaged: ws %s, relay %s, relay with its window on disk %s.\n", ratioOrDash(d.WSPaired), ratioOrDash(d.RelayPaired),
			ratioOrDash(d.DiskPaired))
		if abProcs != "" {
			fmt.Fprintf(&out, "With their op-node at GOMAXPROCS=%s, in the same rounds: ws %s, relay %s.\n", abProcs,
				ratioOrDash(d.WSABPaired), ratioOrDash(d.RelayABPaired))
		}
		cpuLines(&out, perBlock, per32, append(append([][]catchUpResult{ws}, nonEmpty(relay)...), nonEmpty(fromDisk)...)...)
		fmt.Fprintf(&out, "\nWhere each block's time went over the steady part, in ms per block (the caller's clock: the replayer's, "+
			"or op-node's engine-api client metrics; op-geth's own medians with OP_REPLICATOR_BENCH_ENGINE_METRICS=%q):\n\n",
			envString("OP_REPLICATOR_BENCH_ENGINE_METRICS", ""))
		var names []string
		var times []*blockTime
		for _, rs := range []struct {
			name  string
			rates []backlogRate
		}{{"ceiling, per block", d.CeilingFCU}, {"ceiling, per 32", d.Ceiling32}, {"ceiling, per 32, default client", d.Ceiling32Default}, {"ws", d.WS}, {"relay", d.Relay}, {"relay on disk", d.DiskRelay},
			{"ws, GOMAXPROCS=" + abProcs, d.WSAB}, {"relay, GOMAXPROCS=" + abProcs, d.RelayAB}} {
			for _, r := range rs.rates {
				names, times = append(names, fmt.Sprintf("%s, round %d", rs.name, r.Round)), append(times, r.Time)
			}
		}
		blockTimeRows(&out, names, times)
		report(t, out.String())
		res.Depths = append(res.Depths, d)
		saveBenchJSON(t, "backlog.json", res) // after each depth: a run stopped later keeps what it measured
	}

	last := res.Depths[len(res.Depths)-1]
	base := res.BaselineMemory
	perBlock := func(m backlogMemory, v func(backlogMemory) uint64) float64 {
		return (float64(v(m)) - float64(v(base))) / float64(m.Held-base.Held)
	}
	heap := func(m backlogMemory) uint64 { return m.LiveHeap }
	rss := func(m backlogMemory) uint64 { return m.RSS }
	res.HeapPerHeld = perBlock(last.AtDepth, heap)
	res.HeapPerRelayed = perBlock(last.AfterRelayed, heap)
	res.RSSPerRelayed = perBlock(last.AfterRelayed, rss)
	if last.TxBytesPerBlock > 0 {
		res.HeapPerTxByte = res.HeapPerRelayed / last.TxBytesPerBlock
		res.WindowAt1MBTxGB = 3600 * 1e6 * res.HeapPerTxByte / 1e9
	}
	var out strings.Builder
	fmt.Fprintf(&out, "### The relay window's memory (%s)\n\n", res.When)
	fmt.Fprintln(&out, "| depth | blocks held | sequencer op-node live heap, unrelayed | after relaying | RSS after relaying | tx bytes per block | JSON bytes per block |")
	fmt.Fprintln(&out, "|---|---|---|---|---|---|---|")
	fmt.Fprintf(&out, "| batcher stop | %d | %.1f MiB | | %d MiB | | |\n", base.Held, mibf(base.LiveHeap), base.RSS>>20)
	for _, d := range res.Depths {
		fmt.Fprintf(&out, "| %d | %d / %d | %.1f MiB | %.1f MiB | %d MiB | %.0f | %.0f |\n", d.Depth, d.AtDepth.Held, d.AfterRelayed.Held,
			mibf(d.AtDepth.LiveHeap), mibf(d.AfterRelayed.LiveHeap), d.AfterRelayed.RSS>>20, d.TxBytesPerBlock, d.JSONBytesPerBlock)
	}
	fmt.Fprintf(&out, "\nPer block held at the deepest (growth from the batcher stop, over the growth in blocks held; the sequencer's "+
		"own growth over the hour is counted in): live heap %.1f KB unrelayed, %.1f KB relayed (%.2f× the block's transaction "+
		"bytes), RSS %.1f KB relayed. Extrapolated by transaction bytes, a window of 3,600 blocks of 1 MB of transactions: "+
		"%.1f GB of live heap.\n", res.HeapPerHeld/1e3, res.HeapPerRelayed/1e3, res.HeapPerTxByte, res.RSSPerRelayed/1e3, res.WindowAt1MBTxGB)
	report(t, out.String())
	saveBenchJSON(t, "backlog.json", res)
	plotBacklog(t, res)
}

// plotBacklog draws the catch-ups against depth (benchplot.Backlog) into OP_REPLICATOR_BENCH_PLOTS (default
// docs/bench).
func plotBacklog(t *testing.T, res backlogResult) {
	rates := func(rs []backlogRate) []benchplot.BacklogRate {
		var out []benchplot.BacklogRate
		for _, r := range rs {
			out = append(out, benchplot.BacklogRate{BlocksPerSec: r.BlocksPerSec})
		}
		return out
	}
	b := benchplot.BacklogResults{When: res.When, Commit: res.Commit}
	for _, d := range res.Depths {
		b.Depths = append(b.Depths, benchplot.BacklogRow{Depth: d.Depth, Anchor: d.Anchor, WS: rates(d.WS), Relay: rates(d.Relay),
			DiskRelay: rates(d.DiskRelay)})
	}
	path, err := benchplot.Backlog(b, envString("OP_REPLICATOR_BENCH_PLOTS", filepath.Join("..", "docs", "bench")))
	require.NoError(t, err)
	t.Logf("plot: %s", path)
}

// metricOrZero is n's metric, or 0 (logged) when it has no such series yet: a gauge or counter not set yet.
func metricOrZero(t *testing.T, n *dsl.Node, name string, labels ...string) float64 {
	v, err := n.Metrics().Value(name, labels...)
	if err != nil {
		t.Logf("%s %v: %v", name, labels, err)
		return 0
	}
	return v
}

// dirSize is the bytes of the files under dir.
func dirSize(t *testing.T, dir string) int64 {
	var n int64
	require.NoError(t, filepath.WalkDir(dir, func(_ string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		info, err := e.Info()
		if err == nil {
			n += info.Size()
		}
		return err
	}))
	return n
}

func mibf(b uint64) float64 { return float64(b) / (1 << 20) }

func memLine(m backlogMemory) string {
	return fmt.Sprintf("%d blocks held, live heap %.1f MiB, RSS %d MiB (peak %d)", m.Held, mibf(m.LiveHeap), m.RSS>>20, m.PeakRSS>>20)
}

func nonEmpty(rs []catchUpResult) [][]catchUpResult {
	if len(rs) == 0 {
		return nil
	}
	return [][]catchUpResult{rs}
}

// backlogCeilingRows writes the ceilings' rows: their steady rates, with their whole replays' beside them.
func backlogCeilingRows(out *strings.Builder, perBlock, per32 []backlogRate, blocks int) {
	list := func(rs []backlogRate, total bool) string {
		var v []string
		for _, r := range rs {
			if total {
				v = append(v, fmt.Sprintf("%.1f", r.TotalBlocksPerSec))
			} else {
				v = append(v, fmt.Sprintf("%.1f", r.BlocksPerSec))
			}
		}
		return strings.Join(v, ", ")
	}
	fmt.Fprintf(out, "| engine ceiling: prefetched, `newPayload` + forkchoice update per block | %s | %.2f× | over all %d blocks from genesis: %s; each round a fresh op-geth |\n",
		list(perBlock, false), meanRate(perBlock)/meanRate(per32), blocks, list(perBlock, true))
	fmt.Fprintf(out, "| engine ceiling: prefetched, one forkchoice update per 32 blocks | %s | 1.00× (anchor) | over all blocks: %s |\n",
		list(per32, false), list(per32, true))
}

// ratioOrDash formats a ratio, or "–" for none (0: no catch-up from that source).
func ratioOrDash(r float64) string {
	if r == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", r)
}

// pairedRatio is the mean, over rs's rounds, of each round's rate over the ceiling of the same round (0 if rs is
// empty).
func pairedRatio(rs, ceiling []backlogRate) float64 {
	var sum float64
	var n int
	for _, r := range rs {
		for _, c := range ceiling {
			if c.Round == r.Round && c.BlocksPerSec > 0 {
				sum, n = sum+r.BlocksPerSec/c.BlocksPerSec, n+1
			}
		}
	}
	if n == 0 {
		return 0
	}
	return sum / float64(n)
}

func rateValues(rs []backlogRate) []float64 {
	var out []float64
	for _, r := range rs {
		out = append(out, r.BlocksPerSec)
	}
	return out
}

func meanRate(rs []backlogRate) float64 {
	if len(rs) == 0 {
		return 0
	}
	var sum float64
	for _, r := range rs {
		sum += r.BlocksPerSec
	}
	return sum / float64(len(rs))
}

// payloadSizes returns the mean transaction bytes, envelope JSON bytes, gas and transactions of envs' blocks.
func payloadSizes(t *testing.T, envs []*eth.ExecutionPayloadEnvelope) (txBytes, jsonBytes, gas, txs float64) {
	for _, env := range envs {
		for _, tx := range env.ExecutionPayload.Transactions {
			txBytes += float64(len(tx))
		}
		txs += float64(len(env.ExecutionPayload.Transactions))
		gas += float64(env.ExecutionPayload.GasUsed)
		b, err := json.Marshal(env)
		require.NoError(t, err)
		jsonBytes += float64(len(b))
	}
	n := float64(len(envs))
	return txBytes / n, jsonBytes / n, gas / n, txs / n
}

// saveBenchJSON writes v as indented JSON to $OP_REPLICATOR_BENCH_OUT/name (default build/bench/ of the repository;
// the benches run in e2e/).
func saveBenchJSON(t *testing.T, name string, v any) {
	dir := envString("OP_REPLICATOR_BENCH_OUT", filepath.Join("..", "build", "bench"))
	require.NoError(t, os.MkdirAll(dir, 0o755))
	b, err := json.MarshalIndent(v, "", "  ")
	require.NoError(t, err)
	path := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(path, append(b, '\n'), 0o644))
	t.Logf("results written to %s", path)
}

// gitCommit is the repository's HEAD commit (short), with "+dirty" if the work tree has changes; "?" if unknown.
func gitCommit() string {
	out, err := runGit("rev-parse", "--short", "HEAD")
	if err != nil {
		return "?"
	}
	if st, err := runGit("status", "--porcelain", "--untracked-files=no"); err == nil && st != "" {
		out += "+dirty"
	}
	return out
}

func runGit(args ...string) (string, error) {
	out, err := exec.Command("git", args...).Output()
	return strings.TrimSpace(string(out)), err
}

func runtimeCPUs() int { return runtime.NumCPU() }
