package relay

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/log"
	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/ethereum-optimism/optimism/op-service/eth"
	opsigner "github.com/ethereum-optimism/optimism/op-service/signer"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/internal/testkit"
)

// BenchmarkFanout measures the relay's fan-out: one op is one block, published into the store of a real relay Server
// on loopback and waited for until every subscriber has it. The subscribers (raw websocket clients that find the
// block number without decoding, as e2e's TestBenchRelayFanout) run in a child process (this test binary, running
// TestFanoutSubscribers), so that this process' CPU time (and -cpuprofile) is the relay's alone. Reported per block:
// relay-µs/block, the relay process' CPU time (user+system), and that over the subscriber count (µs/sub); after-first
// p50/p99, each subscriber's arrival minus the first subscriber's (the first excluded); last p50/p99, the last
// subscriber's arrival after the block was added to the store. Messages are ~16 KB (60 transactions, as the devnet
// bench's blocks). Run with a fixed count, e.g.
//
//	GOWORK=$PWD/build/go.work go test -run '^$' -bench BenchmarkFanout -benchtime 50x ./plugin/relay/
//
// Setting up 1,000 websockets takes a moment, and is done again for each b.N the testing package tries.
//
// BenchmarkFanoutTrivial is the same against a trivial websocket server (as e2e's baseline): gorilla's default
// upgrader, one writer goroutine per connection, each writing the same notification bytes (WriteMessage): what
// writing alone costs here.
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) { benchFanout(b, n, false) })
	}
}

func BenchmarkFanoutTrivial(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) { benchFanout(b, n, true) })
	}
}

// trivialServer answers a subscription request with a result and writes every broadcast to every connection, from
// one goroutine per connection.
type trivialServer struct {
	mu    sync.Mutex
	sinks []chan []byte
}

func (ts *trivialServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	upgrader := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
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

// fanoutEnvelope is a signed block of ~16 KB at height n: 60 transactions of 120 random bytes.
func fanoutEnvelope(tb testing.TB, n uint64) *opsigner.SignedExecutionPayloadEnvelope {
	beacon := common.Hash{0xbe}
	txs := make([]eth.Data, 60)
	for i := range txs {
		txs[i] = make([]byte, 120)
		_, _ = rand.Read(txs[i])
	}
	env := &eth.ExecutionPayloadEnvelope{ParentBeaconBlockRoot: &beacon, ExecutionPayload: &eth.ExecutionPayload{
		ParentHash:   common.Hash{0x9e, byte(n >> 8), byte(n)},
		FeeRecipient: common.Address{0x42, 0x00},
		StateRoot:    eth.Bytes32{0x22, byte(n >> 8), byte(n)},
		ReceiptsRoot: eth.Bytes32{0x33},
		BlockNumber:  eth.Uint64Quantity(n),
		GasLimit:     30_000_000,
		GasUsed:      60 * 21_000,
		Timestamp:    eth.Uint64Quantity(1000 + 2*n),
		ExtraData:    eth.BytesMax32{0, 0, 0, 0, 0xfa, 0, 0, 0, 6},
		Transactions: txs,
		Withdrawals:  &types.Withdrawals{},
	}}
	return testkit.Sign(tb, testRollup.L2ChainID, testkit.Key(1), env)
}

func benchFanout(b *testing.B, subs int, trivial bool) {
	blocks := make([]*opsigner.SignedExecutionPayloadEnvelope, b.N)
	for i := range blocks {
		blocks[i] = fanoutEnvelope(b, uint64(i+1))
	}
	var url string
	var publish func(i int, at time.Time)
	if trivial {
		ts := &trivialServer{}
		srv := httptest.NewServer(ts)
		defer srv.Close()
		url = "ws" + strings.TrimPrefix(srv.URL, "http")
		msgs := make([][]byte, len(blocks))
		for i, s := range blocks {
			block, err := json.Marshal(s)
			require.NoError(b, err)
			msgs[i] = fmt.Appendf(nil, `{"jsonrpc":"2.0","method":"relay_subscription","params":{"subscription":"0x1","result":%s}}`+"\n", block)
		}
		publish = func(i int, _ time.Time) { ts.broadcast(msgs[i]) }
	} else {
		cfg := driverhook.RelayConfig{Enabled: true, Addr: "127.0.0.1", Window: 1024, MaxSubscribers: subs + 16,
			MaxSubscribersPerIP: subs + 16, SendQueue: driverhook.DefaultRelaySendQueue,
			MaxMessageSize: driverhook.DefaultRelayMaxMessageSize, MaxConnsPerClient: subs + 16, MaxConns: subs + 16,
			RateLimit: 100_000}
		require.NoError(b, cfg.Check())
		store := newTestStore(cfg.Window)
		r, err := NewServer(log.NewLogger(log.DiscardHandler()), cfg, store, NoopMetrics{})
		require.NoError(b, err)
		require.NoError(b, r.Start(context.Background()))
		defer func() { require.NoError(b, r.Stop(context.Background())) }()
		url = r.wsURL()
		publish = func(i int, at time.Time) {
			_, ok, _, err := store.Add(blocks[i], "gossip", at)
			require.NoError(b, err)
			require.True(b, ok)
		}
	}

	cmd := exec.Command(os.Args[0], "-test.run=^TestFanoutSubscribers$", "-test.count=1")
	cmd.Env = append(os.Environ(), "RELAY_FANOUT_URL="+url, "RELAY_FANOUT_SUBSCRIBERS="+strconv.Itoa(subs))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	require.NoError(b, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(b, err)
	require.NoError(b, cmd.Start())
	defer func() {
		_ = stdin.Close() // the subscribers leave
		_, _ = io.Copy(io.Discard, stdout)
		require.NoError(b, cmd.Wait())
	}()
	lines := bufio.NewScanner(stdout)
	lines.Buffer(make([]byte, 1<<20), 1<<20)
	// next reads the child's next report, skipping what go test prints around it.
	next := func() []string {
		for lines.Scan() {
			if f := strings.Fields(lines.Text()); len(f) > 0 && f[0] == "fanout:" {
				return f[1:]
			}
		}
		b.Fatalf("subscriber process ended: %v", lines.Err())
		return nil
	}
	require.Equal(b, []string{"ready"}, next())

	var afterFirst, last []time.Duration
	cpu0 := processCPU(b)
	b.ResetTimer()
	for i := range blocks {
		added := time.Now()
		publish(i, added)
		// "block <n> <last arrival, unix ns> <each subscriber's arrival after the first, µs>..."
		f := next()
		require.Equal(b, strconv.Itoa(i+1), f[1], "blocks arrive in order")
		lastAt, err := strconv.ParseInt(f[2], 10, 64)
		require.NoError(b, err)
		last = append(last, time.Unix(0, lastAt).Sub(added))
		for _, v := range f[3:] {
			us, err := strconv.ParseInt(v, 10, 64)
			require.NoError(b, err)
			afterFirst = append(afterFirst, time.Duration(us)*time.Microsecond)
		}
	}
	b.StopTimer()
	cpu := (processCPU(b) - cpu0) / time.Duration(b.N)
	b.ReportMetric(float64(cpu.Microseconds()), "relay-µs/block") // or the trivial server's
	b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(subs), "relay-µs/sub")
	b.ReportMetric(pct(afterFirst, 50), "after-first-p50-ms")
	b.ReportMetric(pct(afterFirst, 99), "after-first-p99-ms")
	b.ReportMetric(pct(last, 50), "last-p50-ms")
	b.ReportMetric(pct(last, 99), "last-p99-ms")
}

func pct(ds []time.Duration, p float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	ds = slices.Clone(ds)
	slices.Sort(ds)
	return float64(ds[int(p/100*float64(len(ds)-1))].Microseconds()) / 1e3
}

// processCPU is this process' CPU time (user and system) so far.
func processCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	require.NoError(tb, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestFanoutSubscribers is BenchmarkFanout's (and BenchmarkFanoutTrivial's) subscriber process (skipped otherwise): it subscribes
// RELAY_FANOUT_SUBSCRIBERS websockets to the relay at RELAY_FANOUT_URL from block 1 on, prints "fanout: ready", then
// for each block, once every subscriber has it, "fanout: block <n> <last arrival> <arrivals after the first>...",
// until its stdin closes.
func TestFanoutSubscribers(t *testing.T) {
	url := os.Getenv("RELAY_FANOUT_URL")
	if url == "" {
		t.Skip("BenchmarkFanout's subscriber process")
	}
	count, err := strconv.Atoi(os.Getenv("RELAY_FANOUT_SUBSCRIBERS"))
	require.NoError(t, err)
	out := bufio.NewWriter(os.Stdout)
	var mu sync.Mutex
	arrivals := make(map[uint64][]time.Time)
	record := func(n uint64, at time.Time) {
		mu.Lock()
		defer mu.Unlock()
		arrivals[n] = append(arrivals[n], at)
		if len(arrivals[n]) < count {
			return
		}
		all := arrivals[n]
		delete(arrivals, n)
		slices.SortFunc(all, func(a, b time.Time) int { return a.Compare(b) })
		fmt.Fprintf(out, "fanout: block %d %d", n, all[len(all)-1].UnixNano())
		for _, t := range all[1:] {
			fmt.Fprintf(out, " %d", t.Sub(all[0]).Microseconds())
		}
		fmt.Fprintln(out)
		_ = out.Flush()
	}

	key := []byte(`"blockNumber":"0x`)
	req := []byte(`{"jsonrpc":"2.0","id":1,"method":"relay_subscribe","params":["envelopes","0x1"]}`)
	conns := make([]*websocket.Conn, count)
	var readers sync.WaitGroup
	defer func() {
		for _, c := range conns {
			if c != nil {
				_ = c.Close()
			}
		}
		readers.Wait()
	}()
	for i := range conns {
		conn, _, err := websocket.DefaultDialer.Dial(url, nil)
		require.NoError(t, err)
		conns[i] = conn
		require.NoError(t, conn.WriteMessage(websocket.TextMessage, req))
		_, resp, err := conn.ReadMessage()
		require.NoError(t, err)
		require.Contains(t, string(resp), `"result"`)
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				_, msg, err := conn.ReadMessage()
				if err != nil {
					return
				}
				at := time.Now()
				i := bytes.Index(msg, key)
				if i < 0 {
					continue
				}
				rest := msg[i+len(key):]
				j := bytes.IndexByte(rest, '"')
				if n, err := strconv.ParseUint(string(rest[:j]), 16, 64); err == nil {
					record(n, at)
				}
			}
		}()
	}
	fmt.Fprintln(out, "fanout: ready")
	_ = out.Flush()
	_, _ = io.Copy(io.Discard, os.Stdin)
}
