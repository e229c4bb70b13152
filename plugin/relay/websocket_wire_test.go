package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/log"
	"github.com/ethereum/go-ethereum/rpc"
	"github.com/stretchr/testify/require"

	"github.com/ethereum-optimism/optimism/op-service/testlog"

	"github.com/op-replicator/op-replicator/plugin/internal/testkit"
)

// These tests pin what the relay's codec reads of go-ethereum's unexported JSON-RPC messages (by reflection in
// websocket.go and calls.go, by copy in rpcMessage), against go-ethereum's own server and client running in process:
// a go-ethereum upgrade that changes them fails here, not on a node.

const wireSubscribe = `{"jsonrpc":"2.0","id":1,"method":"relay_subscribe","params":["envelopes","0x0"]}`

// The messages go-ethereum's server hands a codec for a subscription are what the codec expects: the answer has no
// method (isAnswer), the notification holds its result in Params.Result, an interface notificationEncoder puts the
// prepared JSON in place of; and the notification's bytes are go-ethereum's notification format.
func TestWireNotificationOfGoEthereum(t *testing.T) {
	result := json.RawMessage(`{"block":"0x07","<html>":"&"}`)
	srv := rpc.NewServer()
	defer srv.Stop()
	require.NoError(t, srv.RegisterName("relay", &notifyingAPI{results: []json.RawMessage{result}, prepared: true}))
	msgs := testkit.GethCodecMessages(t, srv, wireSubscribe, 2)
	answer, notification := msgs[0], msgs[1]

	require.True(t, isAnswer(answer), "the subscription's answer (%T) answers a call", answer)
	require.False(t, isAnswer(notification), "a notification (%T) answers nothing", notification)
	var id string
	require.NoError(t, json.Unmarshal(wireEncode(t, answer), &struct{ Result *string }{&id}))
	require.NotEmpty(t, id)

	rv := reflect.ValueOf(notification)
	require.Equal(t, reflect.Pointer, rv.Kind(), "go-ethereum's notification is a %T", notification)
	res := rv.Elem().FieldByName("Params").FieldByName("Result")
	require.Equal(t, reflect.Interface, res.Kind(), "go-ethereum's notification has no Params.Result interface")

	var e notificationEncoder
	before := encodedInFull.Load()
	head, got, tail, ok := e.encode(notification)
	require.True(t, ok, "notificationEncoder does not take go-ethereum's notification")
	require.Equal(t, before, encodedInFull.Load())
	enc, err := newEncodedResult(result)
	require.NoError(t, err)
	want := `{"jsonrpc":"2.0","method":"relay_subscription","params":{"subscription":"` + id + `","result":` +
		string(enc.json) + "}}\n"
	require.Equal(t, want, string(head)+string(got)+string(tail))
	require.Equal(t, enc, res.Interface(), "the notification's result is put back")
}

// rpcMessage is go-ethereum's JSON-RPC message as far as classify reads it (rpc.jsonrpcMessage, unexported): the same
// fields and JSON names; and the answer and notification go-ethereum's server writes are, as classify reads them,
// messages go-ethereum's server answers nothing, while the subscription request is answered.
func TestWireMessageOfGoEthereum(t *testing.T) {
	srv := rpc.NewServer()
	defer srv.Stop()
	require.NoError(t, srv.RegisterName("relay", &notifyingAPI{results: []json.RawMessage{json.RawMessage(`1`)}}))
	msgs := testkit.GethCodecMessages(t, srv, wireSubscribe, 2)

	geth := reflect.TypeOf(msgs[0])
	require.Equal(t, reflect.Pointer, geth.Kind(), "go-ethereum's answer is a %T", msgs[0])
	geth = geth.Elem()
	ours := reflect.TypeFor[rpcMessage]()
	require.Equal(t, geth.NumField(), ours.NumField())
	for i := range geth.NumField() {
		g, o := geth.Field(i), ours.Field(i)
		require.Equal(t, g.Name, o.Name, "field %d of %s", i, geth)
		require.Equal(t, g.Tag.Get("json"), o.Tag.Get("json"), "%s.%s", geth, g.Name)
		if g.Name != "Error" { // ours only tells whether there is one
			require.Equal(t, g.Type, o.Type, "%s.%s", geth, g.Name)
		}
	}

	calls, answered := classify(json.RawMessage(wireSubscribe), 100)
	require.Equal(t, 1, calls)
	require.True(t, answered, "a call is answered")
	for _, m := range msgs {
		_, answered := classify(wireEncode(t, m), 100)
		require.False(t, answered, "go-ethereum answers nothing to %s", wireEncode(t, m))
	}
}

// What the relay's codec writes is what go-ethereum's client reads: a subscription's notifications of prepared
// results arrive as their JSON.
func TestWireNotificationsReadByGoEthereum(t *testing.T) {
	results := []json.RawMessage{json.RawMessage(`{"a":"<b>","n":[1,2]}`), json.RawMessage(`"x"`), json.RawMessage(`null`)}
	srv := rpc.NewServer()
	defer srv.Stop()
	require.NoError(t, srv.RegisterName("relay", &notifyingAPI{results: results, prepared: true}))
	ts := httptest.NewServer(websocketHandler(srv, testlog.Logger(t, log.LevelInfo), wsDefaultKeepAlive, newWSCallLimits(0, nil, NoopMetrics{})))
	defer ts.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, err := rpc.DialContext(ctx, "ws"+strings.TrimPrefix(ts.URL, "http"))
	require.NoError(t, err)
	defer client.Close()
	before := encodedInFull.Load()
	ch := make(chan json.RawMessage, len(results))
	sub, err := client.Subscribe(ctx, "relay", ch, "envelopes", "0x0")
	require.NoError(t, err)
	defer sub.Unsubscribe()
	for _, want := range results {
		select {
		case got := <-ch:
			require.JSONEq(t, string(want), string(got))
		case err := <-sub.Err():
			t.Fatal(err)
		case <-ctx.Done():
			t.Fatal("no notification")
		}
	}
	require.Equal(t, before, encodedInFull.Load(), "the notifications were written by notificationEncoder")
}

// wireEncode is a message as go-ethereum's websocket codec writes it (gorilla's WriteJSON: json.Encoder).
func wireEncode(t *testing.T, v any) []byte {
	var buf bytes.Buffer
	require.NoError(t, json.NewEncoder(&buf).Encode(v))
	return buf.Bytes()
}
