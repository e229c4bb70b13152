package relay

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/rpc"

	opsigner "github.com/ethereum-optimism/optimism/op-service/signer"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/api"
)

// dialFrom opens a websocket to the relay from a local address (all of 127.0.0.0/8 is loopback on Linux: each
// address is a client of its own), with a receive buffer of rcvBuf bytes if positive.
func dialFrom(t *testing.T, r *Server, ip string, rcvBuf int) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	if rcvBuf > 0 {
		d.Control = func(_, _ string, c syscall.RawConn) error {
			var sockErr error
			err := c.Control(func(fd uintptr) {
				sockErr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvBuf)
			})
			if err != nil {
				return err
			}
			return sockErr
		}
	}
	ws := websocket.Dialer{NetDialContext: d.DialContext, HandshakeTimeout: 10 * time.Second}
	return ws.Dial(r.wsURL(), nil)
}

func callMsg(id int, method string, params ...string) []byte {
	return fmt.Appendf(nil, `{"jsonrpc":"2.0","id":%d,"method":%q,"params":[%s]}`, id, method, strings.Join(params, ","))
}

// liveHeap is the heap in use after a collection.
func liveHeap() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// Clients that pipeline 10,000 calls each on a websocket and never read an answer hold at most wsMaxInFlight calls
// of each connection in the relay: the relay stops reading their calls, rather than serving each on a goroutine
// that holds its answer until the client reads it. Goroutines and heap per connection stay within the bound, and
// return to what they were once the clients leave.
func TestWebsocketPipeliningIsBounded(t *testing.T) {
	const conns, calls = 8, 10_000
	r, store := startRelay(t, driverhook.RelayConfig{MaxSubscribers: 4, MaxSubscribersPerIP: 4, SendQueue: 16, RateLimit: 1e9})
	_, _, _, err := store.Add(fanoutEnvelope(t, 1), "gossip", time.Now())
	require.NoError(t, err)
	block, err := store.Latest(1).JSON()
	require.NoError(t, err)

	goroutinesBefore, heapBefore := runtime.NumGoroutine(), liveHeap()
	// The most goroutines at any time, sampled until the clients leave (by a goroutine of its own).
	var peak atomic.Int64
	sampling, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			peak.Store(max(peak.Load(), int64(runtime.NumGoroutine())))
			select {
			case <-sampling:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	var (
		writers sync.WaitGroup
		written atomic.Int64
		clients []*websocket.Conn
	)
	for range conns {
		// A 4 KB receive buffer: the relay's writes back up at the first answer (a block of 16 KB).
		c, _, err := dialFrom(t, r, "127.0.0.1", 4096)
		require.NoError(t, err)
		clients = append(clients, c)
		writers.Add(1)
		go func() {
			defer writers.Done()
			for i := range calls {
				_ = c.SetWriteDeadline(time.Now().Add(time.Minute))
				if c.WriteMessage(websocket.TextMessage, callMsg(i, api.MethodRelayEnvelopeByNumber, `"0x1"`)) != nil {
					return // closed: by the relay (an answer past its write timeout) or at the end of the test
				}
				written.Add(1)
			}
		}()
	}
	// Every connection has its calls in flight, stuck behind the answers its client does not read.
	require.Eventually(t, func() bool { return r.calls.inFlight.Load() == conns*wsMaxInFlight }, 30*time.Second,
		5*time.Millisecond, "in flight: %d", r.calls.inFlight.Load())
	// Minus the test's writers (one per connection, and gorilla's client connection has none of its own) and the
	// sampler.
	goroutines := runtime.NumGoroutine() - goroutinesBefore - conns - 1
	heap := liveHeap() - heapBefore
	inFlight := r.calls.inFlight.Load()
	t.Logf("%d connections pipelining (%d calls written of %d): %d calls in flight, %d goroutines (%d per connection), "+
		"heap %d KB (%d KB per connection; answers of %d bytes)", conns, written.Load(), conns*calls, inFlight,
		goroutines, goroutines/conns, heap>>10, heap/conns>>10, len(block))
	require.LessOrEqual(t, inFlight, int64(conns*wsMaxInFlight))
	// Per connection: its calls in flight, and the codec's reader, go-ethereum's dispatcher, the ping loop and the
	// HTTP server's goroutine for the connection.
	require.LessOrEqual(t, goroutines, conns*(wsMaxInFlight+8), "goroutines beyond the in-flight bound")
	// Per connection: each call in flight holds up to three copies of its answer (go-ethereum's result, the response
	// encoding it, the frame being written), its bookkeeping, and a write buffer; the bound is twice that. Unbounded,
	// the heap grows by tens of MB within seconds.
	require.Less(t, heap, int64(conns*(6*wsMaxInFlight*len(block)+2*wsWriteBuffer+512<<10)), "heap beyond the in-flight bound")

	for _, c := range clients {
		c.Close()
	}
	writers.Wait()
	close(sampling)
	<-sampled
	t.Logf("at most %d goroutines (before: %d)", peak.Load(), goroutinesBefore)
	require.LessOrEqual(t, peak.Load(), int64(goroutinesBefore+conns+1+conns*(wsMaxInFlight+8)), "goroutines beyond the in-flight bound")
	// The condition runs on a goroutine of its own.
	require.Eventually(t, func() bool {
		return r.calls.inFlight.Load() == 0 && runtime.NumGoroutine() <= goroutinesBefore+1
	}, 30*time.Second, 10*time.Millisecond, "the relay kept goroutines of the connections")
}

// Messages that get no answer (notifications, responses, batches of them) do not hold a slot of the connection's
// calls in flight, and messages answered with an error free theirs: after many of each, more than the connection
// has slots, a call is still answered.
func TestWebsocketCallsFreeTheirSlots(t *testing.T) {
	r, _ := startRelay(t, driverhook.RelayConfig{MaxSubscribers: 4, MaxSubscribersPerIP: 4, SendQueue: 16, RateLimit: 1e9})
	c, _, err := dialFrom(t, r, "127.0.0.1", 0)
	require.NoError(t, err)
	defer c.Close()

	notifications := strings.Repeat(`{"jsonrpc":"2.0","method":"relay_head","params":[]},`, relayMaxBatch+1)
	kinds := []struct {
		msg      string
		answered bool
	}{
		{`{"jsonrpc":"2.0","method":"relay_head","params":[]}`, false},                   // a notification
		{`{"jsonrpc":"2.0","method":"relay_subscription","params":{"result":1}}`, false}, // a subscription's, to a server
		{`{"jsonrpc":"2.0","id":7,"result":"0x1"}`, false},                               // a response nobody asked for
		{`{"jsonrpc":"2.0","id":8,"error":{"code":1,"message":"x"}}`, false},             // an error nobody asked for
		{`[{"jsonrpc":"2.0","method":"relay_head"},{"jsonrpc":"2.0","id":9,"result":1}]`, false},
		{`{"jsonrpc":"2.0","id":null,"method":"relay_head"}`, true}, // a null ID is an ID
		{`{"jsonrpc":"2.0","id":10,"method":"eth_chainId"}`, true},  // an unknown method
		{`{"jsonrpc":"1.0","method":"relay_head"}`, true},           // not JSON-RPC 2.0: an invalid request
		{`{"jsonrpc":"2.0","id":{},"method":"relay_head"}`, true},   // an invalid ID
		{`{"jsonrpc":"2.0","id":11,"error":null}`, true},            // neither a result nor an error
		{`{"jsonrpc":"2.0","id":12}`, true},
		{`"not a message"`, true},
		{`[]`, true},
		{`[1]`, true},
		{`[{"jsonrpc":"2.0","method":"relay_head"},{"jsonrpc":"2.0","id":13,"method":"relay_head"}]`, true},
		{`[` + strings.TrimSuffix(notifications, ",") + `]`, true}, // above the batch limit: one error
	}
	answers := 0
	for _, k := range kinds {
		calls, answered := classify(json.RawMessage(k.msg), relayMaxBatch)
		require.Equal(t, k.answered, answered, k.msg)
		require.Positive(t, calls)
		for range 2 * wsMaxInFlight {
			require.NoError(t, c.WriteMessage(websocket.TextMessage, []byte(k.msg)))
			if k.answered {
				answers++
			}
		}
	}
	require.NoError(t, c.WriteMessage(websocket.TextMessage, []byte(`{"jsonrpc":"2.0","id":"last","method":"relay_head"}`)))
	require.NoError(t, c.SetReadDeadline(time.Now().Add(30*time.Second)))
	last := 0
	for got := range answers + 1 { // answered in any order: each on a goroutine of its own
		_, msg, err := c.ReadMessage()
		require.NoError(t, err, "answers read: %d of %d", got, answers+1)
		if strings.Contains(string(msg), `"id":"last"`) {
			require.Contains(t, string(msg), `"result":"0x0"`)
			last++
		}
	}
	require.Equal(t, 1, last)
	require.Eventually(t, func() bool { return r.calls.inFlight.Load() == 0 }, 10*time.Second, time.Millisecond)
}

// A client's calls on its websockets take tokens of its rate (a batch one per call): beyond it they are delayed,
// not refused, and all answered; the rate is the client's across its connections and HTTP requests, and other
// clients keep theirs.
func TestWebsocketCallRate(t *testing.T) {
	t.Run("delayed, all answered", func(t *testing.T) {
		const perSecond, calls, batch = 10, 20, 10
		m := &refusals{}
		r, store := startRelayMetered(t, driverhook.RelayConfig{MaxSubscribers: 4, MaxSubscribersPerIP: 4, SendQueue: 16,
			RateLimit: perSecond}, m)
		_, _, _, err := store.Add(signed(buildChain(1, 0, 0)[0]), "gossip", time.Now())
		require.NoError(t, err)
		c, _, err := dialFrom(t, r, "127.0.0.1", 0)
		require.NoError(t, err)
		defer c.Close()
		start := time.Now()
		for i := range calls {
			require.NoError(t, c.WriteMessage(websocket.TextMessage, callMsg(i, api.MethodRelayEnvelopeByNumber, `"0x1"`)))
		}
		var b []string
		for i := range batch {
			b = append(b, string(callMsg(calls+i, api.MethodRelayHead)))
		}
		require.NoError(t, c.WriteMessage(websocket.TextMessage, []byte("["+strings.Join(b, ",")+"]")))
		require.NoError(t, c.SetReadDeadline(time.Now().Add(60*time.Second)))
		for range calls + 1 {
			var answer json.RawMessage
			require.NoError(t, c.ReadJSON(&answer))
			require.NotContains(t, string(answer), `"error"`)
		}
		// The upgrade and the first calls take the burst; the other calls wait for tokens at the rate.
		tokens := 1 + calls + batch
		require.GreaterOrEqual(t, time.Since(start), time.Duration(tokens-perSecond-1)*time.Second/perSecond)
		require.Positive(t, m.count(RefusedCallRate))
	})
	t.Run("per client", func(t *testing.T) {
		// One token a second, with a burst of one: the websocket's upgrade takes it.
		r, _ := startRelay(t, driverhook.RelayConfig{MaxSubscribers: 4, MaxSubscribersPerIP: 4, SendQueue: 16, RateLimit: 1})
		c, _, err := dialFrom(t, r, "127.0.0.1", 0)
		require.NoError(t, err)
		defer c.Close()
		// A batch of 1,000 calls (above the batch limit, it will be answered with one error) takes 1,000 tokens:
		// it waits for them, and the client's rate is spent for its other connections and HTTP requests.
		var b []string
		for i := range 1000 {
			b = append(b, string(callMsg(i, api.MethodRelayHead)))
		}
		require.NoError(t, c.WriteMessage(websocket.TextMessage, []byte("["+strings.Join(b, ",")+"]")))
		require.Eventually(t, func() bool {
			resp, err := http.Post("http://"+r.Addr().String(), "application/json", strings.NewReader(string(callMsg(1, api.MethodRelayHead))))
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusTooManyRequests
		}, 10*time.Second, 10*time.Millisecond)
		_, resp, err := dialFrom(t, r, "127.0.0.1", 0)
		require.Error(t, err)
		require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
		// Another client has a rate of its own: its call is answered (after a second, its upgrade took its burst).
		other, _, err := dialFrom(t, r, "127.0.0.2", 0)
		require.NoError(t, err)
		defer other.Close()
		require.NoError(t, other.WriteMessage(websocket.TextMessage, callMsg(2, api.MethodRelayHead)))
		require.NoError(t, other.SetReadDeadline(time.Now().Add(30*time.Second)))
		_, msg, err := other.ReadMessage()
		require.NoError(t, err)
		require.Contains(t, string(msg), `"id":2,"result":"0x0"`)
		// The batch is still waiting (for about 1,000 s): closing the connection, or stopping the relay, ends the
		// wait.
		require.NoError(t, c.SetReadDeadline(time.Now().Add(100*time.Millisecond)))
		_, _, err = c.ReadMessage()
		var netErr net.Error
		require.ErrorAs(t, err, &netErr)
		require.True(t, netErr.Timeout())
	})
}

// A few addresses cannot take every subscription slot, however many each may hold: an address's second and later
// subscriptions leave the last quarter of the slots to addresses holding none, which followers from other addresses
// are still admitted to.
func TestRelaySubscriberReserve(t *testing.T) {
	r, _ := startRelay(t, driverhook.RelayConfig{MaxSubscribers: 8, MaxSubscribersPerIP: 7, SendQueue: 16})
	subscribeFrom := func(ip string) error {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		c, err := rpc.DialOptions(context.Background(), r.wsURL(), rpc.WithWebsocketDialer(websocket.Dialer{NetDialContext: d.DialContext}))
		require.NoError(t, err)
		t.Cleanup(c.Close)
		_, err = api.NewRelayClient(c).SubscribeEnvelopes(context.Background(), 0, make(chan *opsigner.SignedExecutionPayloadEnvelope, 8))
		return err
	}
	for range 6 { // all but the reserve (8/4)
		require.NoError(t, subscribeFrom("127.0.0.1"))
	}
	err := subscribeFrom("127.0.0.1")
	require.ErrorContains(t, err, ErrRelayFullForIP.Error())
	require.ErrorContains(t, err, "kept for addresses holding none")
	// Followers from other addresses take the reserve, one subscription each.
	require.NoError(t, subscribeFrom("127.0.0.2"))
	require.ErrorContains(t, subscribeFrom("127.0.0.2"), ErrRelayFullForIP.Error())
	require.NoError(t, subscribeFrom("127.0.0.3"))
	require.ErrorContains(t, subscribeFrom("127.0.0.4"), ErrRelayFull.Error())

	// With a per-address limit as high as the total, one address may take every slot (as behind a proxy).
	r.cfg.MaxSubscribersPerIP = r.cfg.MaxSubscribers
	require.Zero(t, r.subscriberReserve())
}

// relay_envelopeByNumber answers with the block's JSON as encoded once (Held.JSON), not encoded again per call, and
// its answer is, byte for byte, what it was when the method returned the block itself.
func TestEnvelopeByNumberServesTheEncodedBlock(t *testing.T) {
	r, store := startRelay(t, driverhook.RelayConfig{MaxSubscribers: 4, MaxSubscribersPerIP: 4, SendQueue: 16})
	block := fanoutEnvelope(t, 3)
	_, _, _, err := store.Add(block, "gossip", time.Now())
	require.NoError(t, err)

	a := &relayAPI{r: r}
	held, err := store.Latest(3).JSON()
	require.NoError(t, err)
	got, err := a.EnvelopeByNumber(3)
	require.NoError(t, err)
	require.Same(t, &held[0], &got[0], "the held encoding itself")
	require.Zero(t, testing.AllocsPerRun(100, func() { _, _ = a.EnvelopeByNumber(3) }), "encoded again")
	missing, err := a.EnvelopeByNumber(4)
	require.NoError(t, err)
	require.Nil(t, missing)

	// What go-ethereum answered when the method returned the block (the relay before), over both transports.
	before := rpc.NewServer()
	defer before.Stop()
	require.NoError(t, before.RegisterName(api.RelayNamespace, &blockAPI{block: block}))
	beforeHTTP := &http.Server{Handler: before}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = beforeHTTP.Serve(ln) }()
	defer beforeHTTP.Close()
	beforeWS := &http.Server{Handler: before.WebsocketHandler([]string{"*"})}
	lnWS, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = beforeWS.Serve(lnWS) }()
	defer beforeWS.Close()

	for _, n := range []string{`"0x3"`, `"0x4"`} {
		req := callMsg(1, api.MethodRelayEnvelopeByNumber, n)
		require.Equal(t, wsAnswer(t, "ws://"+lnWS.Addr().String(), req), wsAnswer(t, r.wsURL(), req), n)
		require.Equal(t, httpAnswer(t, "http://"+ln.Addr().String(), req), httpAnswer(t, "http://"+r.Addr().String(), req), n)
	}
}

// blockAPI is relay_envelopeByNumber as the relay served it before: the block itself, for go-ethereum to encode.
type blockAPI struct {
	block *opsigner.SignedExecutionPayloadEnvelope
}

func (a *blockAPI) EnvelopeByNumber(n hexutil.Uint64) (*opsigner.SignedExecutionPayloadEnvelope, error) {
	if uint64(n) != uint64(a.block.Envelope.ExecutionPayload.BlockNumber) {
		return nil, nil
	}
	return a.block, nil
}

func wsAnswer(t *testing.T, url string, req []byte) string {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial(url, nil)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.WriteMessage(websocket.TextMessage, req))
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	_, msg, err := c.ReadMessage()
	require.NoError(t, err)
	return string(msg)
}

func httpAnswer(t *testing.T, url string, req []byte) string {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(string(req)))
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}
