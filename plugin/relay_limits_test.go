package plugin

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/rpc"

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

// A client beyond its request rate, or its open connections, is refused with HTTP 429; other clients are not.
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
		for range 2 {
			c, err := rpc.Dial(r.wsURL())
			require.NoError(t, err)
			defer c.Close()
			var head hexutil.Uint64
			require.NoError(t, c.Call(&head, "relay_head")) // the connection is up and counted
		}
		_, err := rpc.Dial(r.wsURL())
		require.ErrorContains(t, err, "429", "a third websocket from the same client")
	})
}
