//go:build bench

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/rpc"

	"github.com/op-replicator/op-replicator/e2e/benchplot"
	"github.com/op-replicator/op-replicator/e2e/devnet"
	"github.com/op-replicator/op-replicator/e2e/dsl"
)

// A relay tree (issue 28): the sequencer's relay → OP_REPLICATOR_BENCH_TREE_RELAYS relaying replicators (real
// op-nodes with their own op-geths, following the sequencer's relay only, their relay enabled) →
// OP_REPLICATOR_BENCH_TREE_SUBSCRIBERS websocket subscribers spread over them (the fan-out bench's subscriber
// clients, in the test process). Two phases of OP_REPLICATOR_BENCH_TREE_BLOCKS blocks each: "probes", one
// subscriber on each relay (the hops without fan-out, and each relay's cost without subscribers), then "tree", the
// subscribers added. Settings also: OP_REPLICATOR_BENCH_TX_RATE (default 60), OP_REPLICATOR_BENCH_REPORT,
// OP_REPLICATOR_BENCH_OUT (tree.json; default build/bench).
//
// Hops, per block, on the test's one clock: hop 1 (sequencer's relay → a second-tier relay) is the first arrival at
// any subscriber of the second-tier relay minus the arrival at the probe subscribed to the sequencer's relay: it
// holds the second-tier node's websocket read, decode, signature check, hold, encoding and first write. Hop 2
// (second-tier relay → its subscribers) is each subscriber's arrival after that first one (the fan-out bench's
// spread). End to end is each subscriber's arrival after the sequencer-relay probe's. A relay's bytes/s is what its
// op-node wrote to sockets and files (/proc/<pid>/io wchar: its engine API calls and logs included) over the phase;
// the subscribers' own count of what they received from it is beside it.

type treeRelayStats struct {
	Name        string `json:"name"`
	Subscribers int    `json:"subscribers"`
	Hop1        pct    `json:"hop1_ms"` // sequencer-relay probe → first arrival here (tier-2 only)
	// AtRelay is the relay's own relay_forward_seconds over the phase: from a block's arrival at this relay to its
	// write to each live subscriber (p50 and p99 estimated within the histogram's buckets); AtRelayWithin2ms is the
	// share of those writes within 2 ms (a bucket bound: exact).
	AtRelay          pct     `json:"at_relay_ms"`
	AtRelayWithin2ms float64 `json:"at_relay_within_2ms"`
	Hop2             pct     `json:"hop2_spread_ms"`    // after the first arrival here
	EndToEnd         pct     `json:"end_to_end_ms"`     // after the sequencer-relay probe
	AfterHeads       pct     `json:"after_newheads_ms"` // after the sequencer op-geth's newHeads
	Missing          int     `json:"missing"`
	OpNodeCPUms      float64 `json:"op_node_cpu_ms_per_block"`
	OpGethCPUms      float64 `json:"op_geth_cpu_ms_per_block,omitempty"`
	WriteBytesPerSec float64 `json:"op_node_write_bytes_per_s"`
	RecvBytesPerSec  float64 `json:"subscribers_received_bytes_per_s"`
	RSS              uint64  `json:"op_node_rss_bytes"`
}

type pct struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	N   int     `json:"n"`
}

func pctOf(ds []time.Duration) pct {
	return pct{P50: ms(percentile(ds, 50)), P90: ms(percentile(ds, 90)), P99: ms(percentile(ds, 99)), N: len(ds)}
}

func (p pct) String() string {
	if p.N == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f / %.1f ms", p.P50, p.P99)
}

type treePhase struct {
	Name        string           `json:"name"`
	From, To    uint64           `json:"-"`
	Blocks      uint64           `json:"blocks"`
	Seconds     float64          `json:"seconds"`
	Relays      []treeRelayStats `json:"relays"` // the sequencer's first
	ClientCPUms float64          `json:"test_process_cpu_ms_per_block"`
	MsgBytes    int              `json:"message_bytes"`
	CPU         string           `json:"cpu"`
}

type treeResult struct {
	When        string      `json:"when"`
	Commit      string      `json:"commit"`
	Host        string      `json:"host"`
	CPUs        int         `json:"cpus"`
	TxRate      uint64      `json:"tx_rate"`
	Subscribers int         `json:"subscribers"`
	Relays      int         `json:"tier2_relays"`
	Phases      []treePhase `json:"phases"`
}

// TestBenchRelayTree measures a relay tree: the sequencer's relay → relaying replicators → subscribers.
func TestBenchRelayTree(t *testing.T) {
	total := int(envUint(t, "OP_REPLICATOR_BENCH_TREE_SUBSCRIBERS", 1000))
	tier2 := int(envUint(t, "OP_REPLICATOR_BENCH_TREE_RELAYS", 3))
	blocks := envUint(t, "OP_REPLICATOR_BENCH_TREE_BLOCKS", 60)
	rate := envUint(t, "OP_REPLICATOR_BENCH_TX_RATE", 60)
	limit := strconv.Itoa(total + 16)
	limits := []string{"--replicator.relay.max-subscribers", limit, "--replicator.relay.max-subscribers-per-ip", limit,
		"--replicator.relay.max-conns-per-client", limit, "--replicator.relay.max-conns", limit,
		"--replicator.relay.rate-limit", "100000"}
	seqPort, seqMetrics := dsl.FreePort(t), dsl.FreePort(t)
	sys := dsl.Start(t, devnet.Config{SequencerArgs: append(dsl.RelayArgs(seqPort, limits...),
		"--metrics.enabled", "--metrics.addr", "127.0.0.1", "--metrics.port", strconv.Itoa(seqMetrics))})
	seq := sys.Sequencer
	startBenchLoad(sys, rate)
	heads := newHeadTimes(t, seq.EL.WS)
	waitSequencer(sys, 5, false)

	type relayNode struct {
		name    string
		url     string
		metrics string // its op-node's metrics endpoint
		opNode  *devnet.Process
		opGeth  *devnet.Process
	}
	relays := []relayNode{{name: "sequencer", url: "ws://127.0.0.1:" + strconv.Itoa(seqPort),
		metrics: "http://127.0.0.1:" + strconv.Itoa(seqMetrics) + "/metrics", opNode: seq.OpNode}}
	for i := range tier2 {
		port := sys.FreePort()
		name := fmt.Sprintf("relay-%d", i+1)
		n := sys.AddFollower(name, devnet.RoleReplicator, devnet.WithSource(dsl.RelaySource(seqPort)),
			devnet.WithNodeArgs(dsl.RelayArgs(port, limits...)...), devnet.WithMetrics())
		relays = append(relays, relayNode{name: name, url: "ws://127.0.0.1:" + strconv.Itoa(port), metrics: n.MetricsURL,
			opNode: n.OpNode, opGeth: n.OpGeth})
		client := sys.DialRelay(port)
		sys.WaitFor(3*time.Minute, name+" to relay the sequencer's head", func(ctx context.Context) (bool, error) {
			h, err := client.Head(ctx)
			return err == nil && h+1 >= seq.EL.NumberAt(rpc.LatestBlockNumber), nil
		})
	}

	// The second tier's op-gethes settle after their catch-up (compaction, caches) before anything is measured.
	sys.Hold(30 * time.Second)

	res := treeResult{When: time.Now().UTC().Format(time.RFC3339), Commit: gitCommit(), Host: hostname(), CPUs: runtimeCPUs(),
		TxRate: rate, Subscribers: total, Relays: tier2}
	var idle *treePhase
	phase := func(name string, perRelay []int) treePhase {
		start := waitSequencer(sys, 0, false)
		recs := make([]*deliveries, len(relays))
		subs := make([]*subscribers, len(relays))
		// The probe of each relay first (one subscriber), then the rest of its subscribers.
		for i, r := range relays {
			recs[i] = newDeliveries()
			subs[i] = subscribe(t, r.url, 1, start+1, recs[i])
		}
		var more []*subscribers
		for i, r := range relays {
			if perRelay[i] > 1 {
				more = append(more, subscribe(t, r.url, perRelay[i]-1, start+1, recs[i]))
			}
		}
		from := waitSequencer(sys, 0, false) + 2
		waitSequencer(sys, from-1, false)
		to := from + blocks - 1
		type sample struct {
			cpu, geth time.Duration
			wchar     uint64
			forward   devnet.Histogram
		}
		snap := func() []sample {
			out := make([]sample, len(relays))
			for i, r := range relays {
				c, err := r.opNode.CPUTime()
				require.NoError(t, err)
				out[i].cpu = c
				if r.opGeth != nil {
					g, err := r.opGeth.CPUTime()
					require.NoError(t, err)
					out[i].geth = g
				}
				out[i].wchar = wcharOf(t, r.opNode.Pid())
				m, err := devnet.ScrapeMetrics(t.Context(), r.metrics)
				require.NoError(t, err)
				out[i].forward, err = m.Histogram(dsl.MetricRelayForward)
				require.NoError(t, err)
			}
			return out
		}
		recv0 := make([]int64, len(relays))
		countRecv := func(i int) int64 {
			n := subs[i].received.Load()
			for _, m := range more {
				if m.url == relays[i].url {
					n += m.received.Load()
				}
			}
			return n
		}
		for i := range relays {
			recv0[i] = countRecv(i)
		}
		s0, self0, cpu0, at0 := snap(), selfCPU(t), snapshotCPU(t, sys.Net), time.Now()
		waitSequencer(sys, to, false)
		sys.WaitFor(30*time.Second, fmt.Sprintf("block %d at every subscriber (%s)", to, name), func(context.Context) (bool, error) {
			for i := range relays {
				if !recs[i].complete(from, to, perRelay[i]) {
					return false, nil
				}
			}
			return true, nil
		})
		s1, self1, cpu1, at1 := snap(), selfCPU(t), snapshotCPU(t, sys.Net), time.Now()
		wall := at1.Sub(at0).Seconds()
		p := treePhase{Name: name, From: from, To: to, Blocks: blocks, Seconds: wall,
			ClientCPUms: ms((self1 - self0) / time.Duration(blocks)), CPU: cpuSince(cpu0, cpu1)}
		probeAt := recs[0].firstArrivals(from, to)
		newHeads := heads()
		for i, r := range relays {
			st := treeRelayStats{Name: r.name, Subscribers: perRelay[i]}
			afterFirst, afterHeads, missing := recs[i].spread(from, to, perRelay[i], newHeads)
			_, afterProbe, _ := recs[i].spread(from, to, perRelay[i], probeAt)
			st.Hop2, st.AfterHeads, st.Missing, st.EndToEnd = pctOf(afterFirst), pctOf(afterHeads), missing, pctOf(afterProbe)
			if i > 0 {
				var hop1 []time.Duration
				for n, first := range recs[i].firstArrivals(from, to) {
					if p, ok := probeAt[n]; ok {
						hop1 = append(hop1, first.Sub(p))
					}
				}
				st.Hop1 = pctOf(hop1)
				st.OpGethCPUms = ms((s1[i].geth - s0[i].geth) / time.Duration(blocks))
			}
			st.OpNodeCPUms = ms((s1[i].cpu - s0[i].cpu) / time.Duration(blocks))
			if fwd := s1[i].forward.Since(s0[i].forward); fwd.Count > 0 { // else NaN, which JSON has not
				st.AtRelay = pct{P50: fwd.Quantile(0.5) * 1e3, P90: fwd.Quantile(0.9) * 1e3, P99: fwd.Quantile(0.99) * 1e3, N: int(fwd.Count)}
				st.AtRelayWithin2ms = fwd.Within(0.002)
			}
			st.WriteBytesPerSec = float64(s1[i].wchar-s0[i].wchar) / wall
			st.RecvBytesPerSec = float64(countRecv(i)-recv0[i]) / wall
			if r, err := r.opNode.Resources(); err == nil {
				st.RSS = r.RSS
			}
			p.Relays = append(p.Relays, st)
			t.Logf("%s, %s (%d subscribers): hop 1 %s, at the relay %s (%.0f%% within 2 ms), hop 2 (spread) %s, end to end %s, "+
				"after newHeads %s, missing %d, op-node CPU %.1f ms/block, op-geth %.1f ms/block, op-node wrote %.0f KB/s, "+
				"subscribers received %.0f KB/s, RSS %d MiB",
				name, r.name, perRelay[i], st.Hop1, st.AtRelay, 100*st.AtRelayWithin2ms, st.Hop2, st.EndToEnd, st.AfterHeads, st.Missing, st.OpNodeCPUms, st.OpGethCPUms,
				st.WriteBytesPerSec/1e3, st.RecvBytesPerSec/1e3, st.RSS>>20)
		}
		subs[0].mu.Lock()
		p.MsgBytes = len(subs[0].last)
		subs[0].mu.Unlock()
		for _, s := range append(subs, more...) {
			s.close()
		}
		t.Logf("%s: test process CPU %.1f ms/block; %s", name, p.ClientCPUms, p.CPU)
		return p
	}

	probes := make([]int, len(relays))
	for i := range probes {
		probes[i] = 1
	}
	p := phase("probes", probes)
	idle = &p
	res.Phases = append(res.Phases, p)
	spread := make([]int, len(relays))
	spread[0] = 1
	for i := range tier2 {
		spread[i+1] = total / tier2
		if i < total%tier2 {
			spread[i+1]++
		}
	}
	res.Phases = append(res.Phases, phase("tree", spread))
	saveBenchJSON(t, "tree.json", res)
	plotTree(t, res)

	var out strings.Builder
	out.WriteString(benchHeading(fmt.Sprintf("A relay tree: the sequencer's relay → %d relays → %d subscribers", tier2, total), blocks, rate))
	fmt.Fprintf(&out, "Each second-tier relay is a replicator (its own op-node and op-geth) whose only source is the sequencer's relay. "+
		"Two phases of %d blocks: one probe subscriber per relay, then the %d subscribers spread over the second tier (the probe "+
		"among them). Hop 1: the first arrival at any subscriber of a second-tier relay after the arrival at the probe of the "+
		"sequencer's relay. Hop 2: each subscriber's arrival after its relay's first (the fan-out spread). End to end: after the "+
		"sequencer-relay probe. At the relay: the relay's own `relay_forward_seconds` over the phase, from a block's arrival "+
		"there (read off its source's websocket; on the sequencer, signed) to its write to each subscriber, p50 / p99 estimated "+
		"within the histogram's buckets (0.5, 1, 2, 5, 10, 20, 50 ms …), and the share within 2 ms (exact: a bucket bound). Relay CPU: the op-node's CPU per block (its op-geth's beside it); \"beyond probes\" is the tree "+
		"phase minus the probe phase. Bytes/s: what the op-node wrote (/proc wchar: sockets, its engine calls and logs), and what "+
		"its subscribers received. Test process (the subscribers; the tx generator): %.1f ms per block with probes, %.1f ms in "+
		"the tree: the subscribers' own cost is %.1f ms per block. Messages %d bytes.\n\n", blocks, total, idle.ClientCPUms,
		res.Phases[1].ClientCPUms, res.Phases[1].ClientCPUms-idle.ClientCPUms, res.Phases[1].MsgBytes)
	fmt.Fprintln(&out, "| phase | relay | subscribers | hop 1 p50 / p99 | at the relay p50 / p99 (within 2 ms) | hop 2 (spread) p50 / p99 | end to end p50 / p99 | after newHeads p50 / p99 | missing | op-node CPU per block (beyond probes) | op-geth CPU per block | op-node writes | subscribers received | RSS |")
	fmt.Fprintln(&out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, ph := range res.Phases {
		for i, r := range ph.Relays {
			beyond := ""
			if ph.Name != "probes" {
				beyond = fmt.Sprintf(" (%+.1f)", r.OpNodeCPUms-idle.Relays[i].OpNodeCPUms)
			}
			geth := "–"
			if i > 0 {
				geth = fmt.Sprintf("%.1f ms", r.OpGethCPUms)
			}
			fmt.Fprintf(&out, "| %s | %s | %d | %s | %s (%.0f%%) | %s | %s | %s | %d | %.1f ms%s | %s | %.0f KB/s | %.0f KB/s | %d MiB |\n", ph.Name, r.Name,
				r.Subscribers, r.Hop1, r.AtRelay, 100*r.AtRelayWithin2ms, r.Hop2, r.EndToEnd, r.AfterHeads, r.Missing, r.OpNodeCPUms, beyond, geth,
				r.WriteBytesPerSec/1e3, r.RecvBytesPerSec/1e3, r.RSS>>20)
		}
	}
	fmt.Fprintln(&out, "\nCPU over each phase:")
	for _, ph := range res.Phases {
		fmt.Fprintf(&out, "- %s: %s\n", ph.Name, ph.CPU)
	}
	report(t, out.String())
}

// plotTree draws res (benchplot.Tree) into OP_REPLICATOR_BENCH_PLOTS (default docs/bench).
func plotTree(t *testing.T, res treeResult) {
	pcts := func(p pct) benchplot.Percentiles { return benchplot.Percentiles{P50: p.P50, P99: p.P99, N: p.N} }
	tr := benchplot.TreeResults{When: res.When, Commit: res.Commit, Subscribers: res.Subscribers}
	for _, ph := range res.Phases {
		p := benchplot.TreePhase{Name: ph.Name}
		for _, r := range ph.Relays {
			p.Relays = append(p.Relays, benchplot.TreeRelay{Name: r.Name, Subscribers: r.Subscribers, Hop1: pcts(r.Hop1), Hop2: pcts(r.Hop2),
				AtRelay: pcts(r.AtRelay)})
		}
		tr.Phases = append(tr.Phases, p)
	}
	path, err := benchplot.Tree(tr, envString("OP_REPLICATOR_BENCH_PLOTS", filepath.Join("..", "docs", "bench")))
	require.NoError(t, err)
	t.Logf("plot: %s", path)
}

// firstArrivals returns, for blocks from..to, the first arrival of each at any subscriber.
func (d *deliveries) firstArrivals(from, to uint64) map[uint64]time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[uint64]time.Time)
	for n := from; n <= to; n++ {
		if at := d.at[n]; len(at) > 0 {
			out[n] = slices.MinFunc(at, func(a, b time.Time) int { return a.Compare(b) })
		}
	}
	return out
}

// wcharOf is the bytes process pid has written (write and send calls: sockets and files; /proc/<pid>/io wchar).
func wcharOf(t *testing.T, pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	require.NoError(t, err)
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "wchar:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			require.NoError(t, err)
			return n
		}
	}
	t.Fatalf("no wchar in /proc/%d/io", pid)
	return 0
}
