package relay

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/op-replicator/op-replicator/plugin/internal/wsdial"
)

// fakeRelayWS answers the subscribe call with answer, then writes notes, one message each, and stays open.
func fakeRelayWS(t *testing.T, answer string, notes ...string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer conn.Close()
		if _, _, err := conn.ReadMessage(); err != nil {
			return
		}
		for _, msg := range append([]string{answer}, notes...) {
			if err := conn.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
				return
			}
		}
		_, _, _ = conn.ReadMessage() // until the client leaves
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

// A subscription reads each notification into a signed block. What is not a signed block of this subscription (bad
// JSON, a block that does not decode, a message without a block, another subscription's or method's notification)
// is bad input, and the subscription goes on to the next; the relay's silence for the read timeout ends it.
func TestSubscriptionRefusesBadNotifications(t *testing.T) {
	good := signedChain(t, 1, 2, 0)
	result, err := json.Marshal(good[1])
	require.NoError(t, err)
	note := func(sub, result string) string {
		return `{"jsonrpc":"2.0","method":"relay_subscription","params":{"subscription":"` + sub + `","result":` + result + `}}`
	}
	url := fakeRelayWS(t, `{"jsonrpc":"2.0","id":1,"result":"0xabc"}`,
		`{"jsonrpc":"2.0","method":"relay_subscription","params":{`, // cut short
		note("0xabc", `{"signature":"0x12","envelope":{}}`),
		note("0xabc", `null`),
		note("0xdef", string(result)),
		`{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":"0xabc","result":`+string(result)+`}}`,
		note("0xabc", string(result)))
	d, err := wsdial.New(url, subscriptionReadLimit)
	require.NoError(t, err)
	sub, err := subscribeRelay(context.Background(), d, 2, time.Second, 300*time.Millisecond, time.Now)
	require.NoError(t, err)
	defer sub.Close()
	for i := range 5 {
		_, err := sub.Next()
		require.ErrorIs(t, err, ErrBadInput, "message %d", i)
	}
	signed, err := sub.Next()
	require.NoError(t, err, "the subscription goes on after bad input")
	require.Equal(t, good[1].Envelope.ExecutionPayload.BlockHash, signed.Envelope.ExecutionPayload.BlockHash)
	require.Equal(t, good[1].Signature, signed.Signature)
	_, err = sub.Next()
	require.ErrorContains(t, err, "no block for 300ms")
	require.NotErrorIs(t, err, ErrBadInput)
}

// A subscribe call the relay refuses (full, say) fails with the relay's message, whatever its id; an answer without a
// subscription ID fails too. Neither is a bad block (ErrBadInput).
func TestSubscriptionRefused(t *testing.T) {
	url := fakeRelayWS(t, `{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"relay full (limit 4)"}}`)
	d, err := wsdial.New(url, subscriptionReadLimit)
	require.NoError(t, err)
	_, err = subscribeRelay(context.Background(), d, 1, time.Second, time.Second, time.Now)
	require.ErrorContains(t, err, "relay full (limit 4) (code -32000)")
	require.NotErrorIs(t, err, ErrBadInput)

	url = fakeRelayWS(t, `{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error"}}`)
	d, err = wsdial.New(url, subscriptionReadLimit)
	require.NoError(t, err)
	_, err = subscribeRelay(context.Background(), d, 1, time.Second, time.Second, time.Now)
	require.ErrorContains(t, err, "parse error (code -32700)")

	url = fakeRelayWS(t, `{"jsonrpc":"2.0","id":1,"result":""}`)
	d, err = wsdial.New(url, subscriptionReadLimit)
	require.NoError(t, err)
	_, err = subscribeRelay(context.Background(), d, 1, time.Second, time.Second, time.Now)
	require.ErrorContains(t, err, "no subscription ID")
	require.NotErrorIs(t, err, ErrBadInput)
}

// Ending the subscribing context closes the subscription's connection: Next returns at once.
func TestSubscriptionEndsWithContext(t *testing.T) {
	url := fakeRelayWS(t, `{"jsonrpc":"2.0","id":1,"result":"0xabc"}`)
	d, err := wsdial.New(url, subscriptionReadLimit)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	sub, err := subscribeRelay(ctx, d, 1, time.Second, time.Minute, time.Now)
	require.NoError(t, err)
	defer sub.Close()
	done := make(chan error, 1)
	go func() { _, err := sub.Next(); done <- err }()
	cancel()
	select {
	case err := <-done:
		require.Error(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Next still waiting after the context ended")
	}
}
