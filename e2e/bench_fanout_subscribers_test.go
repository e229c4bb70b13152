//go:build bench

package e2e

import (
	"bytes"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/ethclient"
)

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
	url      string
	received atomic.Int64 // message bytes received, every subscriber together
	conns    []*websocket.Conn
	wg       sync.WaitGroup
	mu       sync.Mutex
	last     []byte // the last notification the first subscriber received
}

// subscribe opens count websockets to url, subscribes each from block from on, and records every block each
// receives into rec. It returns once every subscription has been confirmed.
func subscribe(t *testing.T, url string, count int, from uint64, rec *deliveries) *subscribers {
	t.Helper()
	s := &subscribers{url: url, conns: make([]*websocket.Conn, count)}
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
		s.received.Add(int64(len(msg)))
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
