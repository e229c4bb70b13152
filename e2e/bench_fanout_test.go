//go:build bench

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/ethclient"

	"github.com/op-replicator/op-replicator/e2e/devnet"
)

// Relay fan-out: how fast one relay (the sequencer's) delivers each block to 1, 100 and 1,000 websocket
// subscribers, and what it costs the relay's op-node. Settings: OP_REPLICATOR_BENCH_FANOUT (subscriber counts,
// default 1,100,1000), OP_REPLICATOR_BENCH_FANOUT_BLOCKS (blocks measured per count, default 30),
// OP_REPLICATOR_BENCH_TX_RATE (default 60), OP_REPLICATOR_BENCH_PPROF (a directory: CPU profiles of the relay's
// op-node over each window), OP_REPLICATOR_BENCH_REPORT.
//
// The subscribers run in the test process, on the same 2 cores as the relay. Their own cost is measured apart: the
// test process' CPU time (getrusage) over each window, and the same subscriber count against a trivial websocket
// server in the test process that writes the same message to every connection at once, from one goroutine per
// connection as the relay does; its spread is what the clients, the kernel and a server doing nothing but writing
// cost, so the relay's own part is the difference.

// deliveries records when each subscriber received each block.
type deliveries struct {
	mu sync.Mutex
	at map[uint64][]time.Time // block number → arrival at each subscriber that got it
}

func newDeliveries() *deliveries { return &deliveries{at: make(map[uint64][]time.Time)} }

func (d *deliveries) record(n uint64, at time.Time) {
	d.mu.Lock()
	d.at[n] = append(d.at[n], at)
	d.mu.Unlock()
}

// complete reports whether every block from..to reached count subscribers.
func (d *deliveries) complete(from, to uint64, count int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for n := from; n <= to; n++ {
		if len(d.at[n]) < count {
			return false
		}
	}
	return true
}

// spread returns, for blocks from..to, every subscriber's arrival after the first subscriber's (the first excluded),
// the arrival of every subscriber after ref[n] (if ref has the block), and how many deliveries are missing.
func (d *deliveries) spread(from, to uint64, count int, ref map[uint64]time.Time) (afterFirst, afterRef []time.Duration, missing int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for n := from; n <= to; n++ {
		at := slices.Clone(d.at[n])
		missing += max(0, count-len(at))
		if len(at) == 0 {
			continue
		}
		slices.SortFunc(at, func(a, b time.Time) int { return a.Compare(b) })
		for _, t := range at[1:] {
			afterFirst = append(afterFirst, t.Sub(at[0]))
		}
		if r, ok := ref[n]; ok {
			for _, t := range at {
				afterRef = append(afterRef, t.Sub(r))
			}
		}
	}
	return afterFirst, afterRef, missing
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	ds = slices.Clone(ds)
	slices.Sort(ds)
	return ds[int(p/100*float64(len(ds)-1))]
}

func p50p99(ds []time.Duration) string {
	if len(ds) == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f / %.1f ms", ms(percentile(ds, 50)), ms(percentile(ds, 99)))
}

var blockNumberKey = []byte(`"blockNumber":"0x`)

// blockNumberOf finds the block number in a relay notification without decoding it (the subscribers must cost as
// little as possible).
func blockNumberOf(msg []byte) (uint64, bool) {
	i := bytes.Index(msg, blockNumberKey)
	if i < 0 {
		return 0, false
	}
	rest := msg[i+len(blockNumberKey):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return 0, false
	}
	n, err := strconv.ParseUint(string(rest[:j]), 16, 64)
	return n, err == nil
}

// subscriberDialer reads a message of up to 64 KB (a block's notification is ~16 KB) with one read from the socket
// where it has arrived whole (gorilla's default buffer is 4 KB: four reads and four wake-ups of the subscriber).
var subscriberDialer = &websocket.Dialer{ReadBufferSize: 64 << 10, HandshakeTimeout: 45 * time.Second}

// subscribers is a set of websocket subscriptions to relay_subscribe("envelopes").
type subscribers struct {
	conns []*websocket.Conn
	wg    sync.WaitGroup
	mu    sync.Mutex
	last  []byte // the last notification the first subscriber received
}

// subscribe opens count websockets to url, subscribes each from block from on, and records every block each
// receives into rec. It returns once every subscription has been confirmed.
func subscribe(t *testing.T, url string, count int, from uint64, rec *deliveries) *subscribers {
	t.Helper()
	s := &subscribers{conns: make([]*websocket.Conn, count)}
	req := []byte(fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"method":"relay_subscribe","params":["envelopes","0x%x"]}`, from))
	sem := make(chan struct{}, 32)
	errs := make(chan error, count)
	var dialing sync.WaitGroup
	for i := range count {
		dialing.Add(1)
		sem <- struct{}{}
		go func() {
			defer dialing.Done()
			defer func() { <-sem }()
			conn, _, err := subscriberDialer.DialContext(t.Context(), url, nil)
			if err != nil {
				errs <- fmt.Errorf("subscriber %d: dial: %w", i, err)
				return
			}
			s.conns[i] = conn
			if err := conn.WriteMessage(websocket.TextMessage, req); err != nil {
				errs <- fmt.Errorf("subscriber %d: subscribe: %w", i, err)
				return
			}
			_, resp, err := conn.ReadMessage()
			if err != nil || !bytes.Contains(resp, []byte(`"result"`)) {
				errs <- fmt.Errorf("subscriber %d: subscription refused: %s %v", i, resp, err)
				return
			}
			s.wg.Add(1)
			go s.read(conn, rec, i == 0)
		}()
	}
	dialing.Wait()
	close(errs)
	for err := range errs {
		s.close()
		require.NoError(t, err)
	}
	return s
}

func (s *subscribers) read(conn *websocket.Conn, rec *deliveries, keepLast bool) {
	defer s.wg.Done()
	var buf bytes.Buffer // reused: a subscriber allocates nothing per message
	for {
		_, r, err := conn.NextReader()
		if err != nil {
			return
		}
		buf.Reset()
		if _, err := buf.ReadFrom(r); err != nil {
			return
		}
		at := time.Now() // the whole message received
		msg := buf.Bytes()
		if n, ok := blockNumberOf(msg); ok {
			rec.record(n, at)
			if keepLast {
				s.mu.Lock()
				s.last = bytes.Clone(msg)
				s.mu.Unlock()
			}
		}
	}
}

func (s *subscribers) close() {
	for _, c := range s.conns {
		if c != nil {
			_ = c.Close()
		}
	}
	s.wg.Wait()
}

// selfCPU is the test process' CPU time (user and system) so far.
func selfCPU(t *testing.T) time.Duration {
	var ru syscall.Rusage
	require.NoError(t, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// trivialServer is the baseline: a websocket server that confirms any subscription and, on broadcast, hands the
// message to every connection's writer goroutine.
type trivialServer struct {
	srv   *httptest.Server
	mu    sync.Mutex
	sinks []chan []byte
}

func startTrivialServer(t *testing.T) *trivialServer {
	ts := &trivialServer{}
	// A message in one frame and one write, as the relay writes it (gorilla's default 4 KB buffer would write a 16 KB
	// message in four frames).
	upgrader := websocket.Upgrader{WriteBufferSize: 64 << 10, CheckOrigin: func(*http.Request) bool { return true }}
	ts.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer conn.Close()
		if _, _, err := conn.ReadMessage(); err != nil {
			return
		}
		if err := conn.WriteMessage(websocket.TextMessage, []byte(`{"jsonrpc":"2.0","id":1,"result":"0x1"}`)); err != nil {
			return
		}
		sink := make(chan []byte, 256)
		ts.mu.Lock()
		ts.sinks = append(ts.sinks, sink)
		ts.mu.Unlock()
		go func() { // notices the client leaving
			for {
				if _, _, err := conn.ReadMessage(); err != nil {
					close(sink)
					return
				}
			}
		}()
		for msg := range sink {
			if err := conn.WriteMessage(websocket.TextMessage, msg); err != nil {
				return
			}
		}
	}))
	t.Cleanup(ts.srv.Close)
	return ts
}

func (ts *trivialServer) broadcast(msg []byte) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for _, s := range ts.sinks {
		select {
		case s <- msg:
		default:
		}
	}
}

func (ts *trivialServer) reset() {
	ts.mu.Lock()
	ts.sinks = nil
	ts.mu.Unlock()
}

// withBlockNumber returns msg with its block number replaced by n.
func withBlockNumber(msg []byte, n uint64) []byte {
	i := bytes.Index(msg, blockNumberKey)
	j := bytes.IndexByte(msg[i+len(blockNumberKey):], '"')
	out := slices.Clone(msg[:i+len(blockNumberKey)])
	out = append(out, strconv.FormatUint(n, 16)...)
	return append(out, msg[i+len(blockNumberKey)+j:]...)
}

// newHeadTimes records when the sequencer's op-geth announced each block (newHeads).
func newHeadTimes(t *testing.T, wsURL string) (times func() map[uint64]time.Time) {
	t.Helper()
	client, err := ethclient.DialContext(t.Context(), wsURL)
	require.NoError(t, err)
	heads := make(chan *types.Header, 64)
	sub, err := client.SubscribeNewHead(t.Context(), heads)
	require.NoError(t, err)
	var mu sync.Mutex
	at := make(map[uint64]time.Time)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case h := <-heads:
				now := time.Now()
				mu.Lock()
				at[h.Number.Uint64()] = now
				mu.Unlock()
			case <-sub.Err():
				return
			}
		}
	}()
	t.Cleanup(func() { sub.Unsubscribe(); <-done; client.Close() })
	return func() map[uint64]time.Time {
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(at)
	}
}

type fanoutRow struct {
	count                  int
	afterFirst, afterHeads []time.Duration
	missing                int
	relayCPU, clientCPU    time.Duration // per block
	rss, peakRSS           uint64
	msgSize                int
	base                   []time.Duration // the trivial server's spread after the first subscriber
	baseMissing            int
}

// TestBenchRelayFanout measures delivery by the sequencer's relay to 1, 100 and 1,000 websocket subscribers.
func TestBenchRelayFanout(t *testing.T) {
	var counts []int
	for _, f := range strings.Split(envString("OP_REPLICATOR_BENCH_FANOUT", "1,100,1000"), ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		require.NoError(t, err, "OP_REPLICATOR_BENCH_FANOUT")
		counts = append(counts, n)
	}
	blocks := envUint(t, "OP_REPLICATOR_BENCH_FANOUT_BLOCKS", 30)
	rate := envUint(t, "OP_REPLICATOR_BENCH_TX_RATE", 60)
	limit := strconv.Itoa(slices.Max(counts) + 16)
	relayPort := benchFreePort(t)
	args := benchRelayArgs(relayPort,
		"--replicator.relay.max-subscribers", limit, "--replicator.relay.max-subscribers-per-ip", limit,
		"--replicator.relay.max-conns-per-client", limit, "--replicator.relay.max-conns", limit,
		"--replicator.relay.rate-limit", "100000")
	// With OP_REPLICATOR_BENCH_PPROF, the sequencer's op-node is profiled over each count's window.
	profile := os.Getenv("OP_REPLICATOR_BENCH_PPROF") != ""
	pprofPort := 0
	if profile {
		pprofPort = benchFreePort(t)
		args = append(args, "--pprof.enabled", "--pprof.addr", "127.0.0.1", "--pprof.port", strconv.Itoa(pprofPort))
	}
	d := devnet.Start(t, devnet.Config{SequencerArgs: args})
	seq := d.Sequencer
	startBenchLoad(t, d, rate)
	heads := newHeadTimes(t, seq.EL.WS)
	waitSequencer(t, d, 5, false)
	relayURL := "ws://127.0.0.1:" + strconv.Itoa(relayPort)

	// window waits for blocks blocks from the next one on, and returns the first and last, and the relay op-node's
	// and the test process' CPU time per block over them.
	window := func(count int, rec *deliveries) (from, to uint64, relayCPU, clientCPU time.Duration) {
		from = waitSequencer(t, d, 0, false) + 2 // the next block may be in flight already
		waitSequencer(t, d, from-1, false)
		cpu0, err := seq.OpNode.CPUTime()
		require.NoError(t, err)
		self0 := selfCPU(t)
		to = from + blocks - 1
		waitSequencer(t, d, to, false)
		if rec != nil {
			require.NoError(t, d.WaitFor(t.Context(), 30*time.Second, fmt.Sprintf("block %d at %d subscribers", to, count),
				func(context.Context) (bool, error) { return rec.complete(from, to, count), nil }))
		}
		cpu1, err := seq.OpNode.CPUTime()
		require.NoError(t, err)
		self1 := selfCPU(t)
		return from, to, (cpu1 - cpu0) / time.Duration(blocks), (self1 - self0) / time.Duration(blocks)
	}

	_, _, idleRelay, idleClient := window(0, nil)
	idleRes, err := seq.OpNode.Resources()
	require.NoError(t, err)
	t.Logf("no subscribers: op-node CPU %s/block, test process %s/block, RSS %d MiB", idleRelay, idleClient, idleRes.RSS>>20)

	base := startTrivialServer(t)
	baseURL := "ws" + strings.TrimPrefix(base.srv.URL, "http")
	var rows []fanoutRow
	for _, count := range counts {
		row := fanoutRow{count: count}
		rec := newDeliveries()
		start := waitSequencer(t, d, 0, false)
		subs := subscribe(t, relayURL, count, start+1, rec)
		var stopProfiles func()
		if profile {
			stopProfiles = captureProfiles(t, pprofPort, fmt.Sprintf("relay-%d", count))
		}
		from, to, relayCPU, clientCPU := window(count, rec)
		if stopProfiles != nil {
			stopProfiles()
		}
		res, err := seq.OpNode.Resources()
		require.NoError(t, err)
		subs.close()
		row.afterFirst, row.afterHeads, row.missing = rec.spread(from, to, count, heads())
		row.relayCPU, row.clientCPU, row.rss, row.peakRSS = relayCPU, clientCPU, res.RSS, res.PeakRSS
		subs.mu.Lock()
		last := subs.last
		subs.mu.Unlock()
		row.msgSize = len(last)
		require.NotEmpty(t, last, "no block from the relay")

		// The baseline: the same subscribers, the same message, a server that only writes.
		baseRec := newDeliveries()
		bsubs := subscribe(t, baseURL, count, 0, baseRec)
		baseBlocks := min(blocks, 15)
		for i := range baseBlocks {
			time.Sleep(time.Second)
			base.broadcast(withBlockNumber(last, 1<<32+i))
		}
		_ = d.WaitFor(t.Context(), 30*time.Second, "baseline deliveries", func(context.Context) (bool, error) {
			return baseRec.complete(1<<32, 1<<32+baseBlocks-1, count), nil
		})
		bsubs.close()
		base.reset()
		row.base, _, row.baseMissing = baseRec.spread(1<<32, 1<<32+baseBlocks-1, count, nil)
		t.Logf("%d subscribers: after first %s, after newHeads %s, missing %d, relay CPU %s/block, client CPU %s/block, RSS %d MiB (peak %d); baseline after first %s, missing %d",
			count, p50p99(row.afterFirst), p50p99(row.afterHeads), row.missing, relayCPU, clientCPU, res.RSS>>20, res.PeakRSS>>20,
			p50p99(row.base), row.baseMissing)
		rows = append(rows, row)
	}

	var out strings.Builder
	out.WriteString(benchHeading("Relay fan-out, the sequencer's relay", blocks, rate))
	fmt.Fprintf(&out, "For each subscriber count, %d blocks; subscribers in the test process (gorilla/websocket, a 64 KB read buffer, "+
		"a message read into a buffer reused per subscriber, the block number found without decoding). \"After the first\": each subscriber's arrival minus the first subscriber's, for each block (the "+
		"first excluded). \"After newHeads\": arrival minus the sequencer's op-geth newHeads notification to the test (the "+
		"relay gets the block when the sequencer signs it, before its own insert: it can be negative). Relay CPU: the "+
		"sequencer op-node's CPU per block minus its CPU per block with no subscriber (%.1f ms). Client CPU: the test "+
		"process' own CPU per block (tx generator included) minus the same with no subscriber (%.1f ms). Baseline: the same "+
		"subscribers and message against a trivial in-process websocket server that only writes (one goroutine per "+
		"connection and one frame per message, like the relay), %d broadcasts a second apart.\n\n", blocks, ms(idleRelay), ms(idleClient), min(blocks, 15))
	fmt.Fprintln(&out, "| subscribers | after the first p50 / p99 | vs baseline p99 | after newHeads p50 / p99 | missing | relay CPU per block (beyond idle) | op-node RSS (peak), vs idle | client CPU per block | baseline after the first p50 / p99 | message |")
	fmt.Fprintln(&out, "|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rows {
		vs := "–"
		if len(r.afterFirst) > 0 && len(r.base) > 0 {
			vs = fmt.Sprintf("%+.1f ms (%.2f×)", ms(percentile(r.afterFirst, 99))-ms(percentile(r.base, 99)),
				ms(percentile(r.afterFirst, 99))/max(ms(percentile(r.base, 99)), 0.001))
		}
		fmt.Fprintf(&out, "| %d | %s | %s | %s | %d | %.1f ms | %d MiB (%d), %+d MiB | %.1f ms | %s | %d B |\n", r.count,
			p50p99(r.afterFirst), vs, p50p99(r.afterHeads), r.missing, ms(r.relayCPU-idleRelay), r.rss>>20, r.peakRSS>>20,
			int64(r.rss>>20)-int64(idleRes.RSS>>20), ms(r.clientCPU-idleClient), p50p99(r.base), r.msgSize)
	}
	report(t, out.String())
}

func envString(name, def string) string {
	if v := strings.TrimSpace(os.Getenv(name)); v != "" {
		return v
	}
	return def
}
