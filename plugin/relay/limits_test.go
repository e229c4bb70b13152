package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/log"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/ethereum-optimism/optimism/op-service/testlog"

	"github.com/op-replicator/op-replicator/driverhook"
)

func TestClientKey(t *testing.T) {
	for addr, want := range map[string]string{
		"1.2.3.4:5":                 "1.2.3.4",
		"[::ffff:1.2.3.4]:5":        "1.2.3.4",
		"[2001:db8::1]:443":         "2001:db8::/64",
		"[2001:db8::ffff:abcd]:443": "2001:db8::/64", // same /64: one client
		"[2001:db8:0:1::1]:443":     "2001:db8:0:1::/64",
		"not-an-address":            "not-an-address",
	} {
		require.Equal(t, want, clientKey(addr), addr)
	}
}

// One HTTP request with a batch of 800 calls is refused whole, not answered with 800 blocks.
func TestRelayBatchLimit(t *testing.T) {
	r, store := startRelay(t, driverhook.RelayConfig{MaxSubscribers: 4, MaxSubscribersPerIP: 4, SendQueue: 16})
	store.Add(envelopeAt(1, 0), "gossip", time.Now())
	var batch []string
	for i := range 800 {
		batch = append(batch, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"relay_envelopeByNumber","params":["0x1"]}`, i))
	}
	resp, err := http.Post("http://"+r.Addr().String(), "application/json", strings.NewReader("["+strings.Join(batch, ",")+"]"))
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Contains(t, string(body), "batch too large")
	require.Less(t, bytes.Count(body, []byte(`"signature"`)), relayMaxBatch+1, "more blocks answered than the batch limit")
}

// A client beyond its request rate is refused with HTTP 429; a connection beyond its open connections is closed as
// soon as it is accepted, bare TCP connections counted as much as websockets; other clients are served.
func TestRelayClientLimits(t *testing.T) {
	t.Run("rate", func(t *testing.T) {
		// One request every 100 s, with a burst of one.
		r, _ := startRelay(t, driverhook.RelayConfig{MaxSubscribers: 4, MaxSubscribersPerIP: 4, SendQueue: 16, RateLimit: 0.01})
		codes := map[int]int{}
		for range 20 {
			resp, err := http.Post("http://"+r.Addr().String(), "application/json",
				strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"relay_head","params":[]}`))
			require.NoError(t, err)
			resp.Body.Close()
			codes[resp.StatusCode]++
		}
		require.Equal(t, map[int]int{http.StatusOK: 1, http.StatusTooManyRequests: 19}, codes)
	})
	t.Run("connections", func(t *testing.T) {
		r, _ := startRelay(t, driverhook.RelayConfig{MaxSubscribers: 4, MaxSubscribersPerIP: 4, SendQueue: 16, MaxConnsPerClient: 2})
		addr := r.Addr().String()
		// Two bare TCP connections that never send a request take the client's two slots.
		var held []net.Conn
		for range 2 {
			c, err := net.Dial("tcp", addr)
			require.NoError(t, err)
			defer c.Close()
			held = append(held, c)
		}
		requireClosedAtOnce(t, addr)
		_, err := rpc.Dial(r.wsURL())
		require.Error(t, err, "a websocket beyond the client's connections")
		// Another client is served meanwhile (all of 127.0.0.0/8 is loopback on Linux).
		other := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
		if c, err := other.Dial("tcp", addr); err != nil {
			t.Logf("no second loopback address to test another client from: %v", err)
		} else {
			c.Close()
			ws, err := rpc.DialOptions(context.Background(), r.wsURL(), rpc.WithWebsocketDialer(websocket.Dialer{NetDialContext: other.DialContext}))
			require.NoError(t, err, "another client")
			var head hexutil.Uint64
			require.NoError(t, ws.Call(&head, "relay_head"))
			ws.Close()
		}

		// A closed connection frees its slot (once the server has seen it close): a websocket takes it and holds it.
		held[0].Close()
		var ws *rpc.Client
		require.Eventually(t, func() bool {
			ws, err = rpc.Dial(r.wsURL())
			return err == nil
		}, 5*time.Second, 10*time.Millisecond)
		defer ws.Close()
		var head hexutil.Uint64
		require.NoError(t, ws.Call(&head, "relay_head"))
		requireClosedAtOnce(t, addr)
	})
}

// Connections from all clients together are bounded too: with the relay's connections all open, a client with
// slots of its own left is closed at once, counted as refused by "max-conns"; a closed connection frees a slot for
// any client.
func TestRelayTotalConnections(t *testing.T) {
	cfg := driverhook.RelayConfig{Enabled: true, Addr: "127.0.0.1", Window: 16, MaxSubscribers: 3,
		MaxSubscribersPerIP: 3, SendQueue: 16, MaxMessageSize: 1 << 20, MaxConnsPerClient: 2, MaxConns: 3, RateLimit: 1000}
	require.NoError(t, cfg.Check())
	m := &refusals{}
	r, err := NewServer(testlog.Logger(t, log.LevelInfo), cfg, newTestStore(cfg.Window), m)
	require.NoError(t, err)
	require.NoError(t, r.Start(context.Background()))
	t.Cleanup(func() { require.NoError(t, r.Stop(context.Background())) })
	addr := r.Addr().String()
	a := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}}
	b := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}} // all of 127.0.0.0/8 is loopback on Linux

	var held []net.Conn
	for _, d := range []*net.Dialer{a, a, b} {
		c, err := d.Dial("tcp", addr)
		require.NoError(t, err)
		defer c.Close()
		held = append(held, c)
	}
	requireClosedAtOnceFrom(t, b, addr) // b has one of its two slots left, the relay none
	require.Equal(t, 0, m.count(RefusedConns))
	require.Positive(t, m.count(RefusedMaxConns))

	held[0].Close() // one of a's: b's second connection is served once the relay has seen it close
	require.Eventually(t, func() bool {
		ws, err := rpc.DialOptions(context.Background(), r.wsURL(), rpc.WithWebsocketDialer(websocket.Dialer{NetDialContext: b.DialContext}))
		if err != nil {
			return false
		}
		defer ws.Close()
		var head hexutil.Uint64
		return ws.Call(&head, "relay_head") == nil
	}, 5*time.Second, 10*time.Millisecond)
}

// refusals counts the relay's refusals by limit.
type refusals struct {
	NoopMetrics
	mu sync.Mutex
	n  map[string]int
}

func (m *refusals) RecordRelayRefused(limit string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.n == nil {
		m.n = make(map[string]int)
	}
	m.n[limit]++
}

func (m *refusals) count(limit string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.n[limit]
}

// requireClosedAtOnce opens a TCP connection to addr and requires the relay to close it without waiting for a
// request.
func requireClosedAtOnce(t *testing.T, addr string) {
	t.Helper()
	requireClosedAtOnceFrom(t, &net.Dialer{}, addr)
}

func requireClosedAtOnceFrom(t *testing.T, d *net.Dialer, addr string) {
	t.Helper()
	c, err := d.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err = c.Read(make([]byte, 1))
	require.Error(t, err)
	var netErr net.Error
	require.False(t, errors.As(err, &netErr) && netErr.Timeout(), "the relay held a connection beyond the limit: %v", err)
}
