package relay

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/log"
	"github.com/ethereum/go-ethereum/rpc"
	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/ethereum-optimism/optimism/op-service/testlog"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/internal/testkit"
)

// notifyingAPI is a relay namespace whose subscription sends results, as they are (json.RawMessage, as the relay
// did before its codec) or prepared (encodedResult, as the relay does now).
type notifyingAPI struct {
	results  []json.RawMessage
	prepared bool
}

func (a *notifyingAPI) Envelopes(ctx context.Context, _ hexutil.Uint64) (*rpc.Subscription, error) {
	notifier, _ := rpc.NotifierFromContext(ctx)
	sub := notifier.CreateSubscription()
	for _, res := range a.results { // sent once the subscription is answered
		var v any = res
		if a.prepared {
			enc, err := newEncodedResult(res)
			if err != nil {
				return nil, err
			}
			v = enc
		}
		if err := notifier.Notify(sub.ID, v); err != nil {
			return nil, err
		}
	}
	return sub, nil
}

// subscribeRaw subscribes over a websocket to url's envelopes and returns the next count messages as they arrived,
// with the subscription's ID replaced by "0xID".
func subscribeRaw(t *testing.T, url string, count int) []string {
	t.Helper()
	conn, _, err := websocket.DefaultDialer.Dial(url, nil)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	require.NoError(t, conn.WriteMessage(websocket.TextMessage, []byte(`{"jsonrpc":"2.0","id":1,"method":"relay_subscribe","params":["envelopes","0x0"]}`)))
	var resp struct{ Result string }
	require.NoError(t, conn.ReadJSON(&resp))
	require.NotEmpty(t, resp.Result)
	var out []string
	for range count {
		typ, msg, err := conn.ReadMessage()
		require.NoError(t, err)
		require.Equal(t, websocket.TextMessage, typ)
		out = append(out, strings.ReplaceAll(string(msg), `"`+resp.Result+`"`, `"0xID"`))
	}
	return out
}

// goEthereumNotifications is what go-ethereum's own websocket server writes for results as json.RawMessage: the
// relay's notifications before its codec.
func goEthereumNotifications(t *testing.T, results []json.RawMessage) []string {
	srv := rpc.NewServer()
	t.Cleanup(srv.Stop)
	require.NoError(t, srv.RegisterName("relay", &notifyingAPI{results: results}))
	ts := httptest.NewServer(srv.WebsocketHandler([]string{"*"}))
	t.Cleanup(ts.Close)
	return subscribeRaw(t, "ws"+strings.TrimPrefix(ts.URL, "http"), len(results))
}

// The relay's codec writes prepared results byte for byte as go-ethereum's codec writes them as they are, whatever
// the JSON: not compact, HTML characters (escaped by encoding/json), large.
func TestCodecWritesAsGoEthereum(t *testing.T) {
	block, err := json.Marshal(fanoutEnvelope(t, 7))
	require.NoError(t, err)
	results := []json.RawMessage{
		block,
		json.RawMessage(` { "a" : "<b>&amp; \u2028 é" , "c":[ 1, 2.50, true, null ] } `),
		json.RawMessage(`"a string"`),
		json.RawMessage(`null`),
		json.RawMessage(`{"big":"` + strings.Repeat("ab", 200<<10) + `"}`),
	}
	want := goEthereumNotifications(t, results)
	require.True(t, strings.HasPrefix(want[0], `{"jsonrpc":"2.0","method":"relay_subscription","params":{"subscription":"0xID","result":{`), want[0][:100])

	srv := rpc.NewServer()
	defer srv.Stop()
	require.NoError(t, srv.RegisterName("relay", &notifyingAPI{results: results, prepared: true}))
	ts := httptest.NewServer(websocketHandler(srv, testlog.Logger(t, log.LevelInfo), wsDefaultKeepAlive, newWSCallLimits(0, nil, NoopMetrics{})))
	defer ts.Close()
	before := encodedInFull.Load()
	got := subscribeRaw(t, "ws"+strings.TrimPrefix(ts.URL, "http"), len(results))
	require.Equal(t, want, got)
	require.Equal(t, before, encodedInFull.Load(), "every prepared result was put in place, none encoded in full")
}

// What the relay sends its subscribers is what it sent before its codec: go-ethereum's notification of the block's
// JSON (Held.JSON).
func TestRelayNotificationsUnchanged(t *testing.T) {
	r, store := startRelay(t, driverhook.RelayConfig{MaxSubscribers: 4, MaxSubscribersPerIP: 4, SendQueue: 16})
	var results []json.RawMessage
	for n := range uint64(3) {
		held, _, _, err := store.Add(fanoutEnvelope(t, n+1), "gossip", time.Now())
		require.NoError(t, err)
		msg, err := held.JSON()
		require.NoError(t, err)
		results = append(results, msg)
	}
	want := goEthereumNotifications(t, results)
	before := encodedInFull.Load()
	require.Equal(t, want, subscribeRaw(t, r.wsURL(), len(results)))
	require.Equal(t, before, encodedInFull.Load())
}

// A result that is not an encodedResult, or a message that is not a notification, is left to encoding/json.
// A notification is encoded around its result once while the rest of it stays the same.
func TestNotificationEncoder(t *testing.T) {
	var e notificationEncoder
	for _, v := range []any{
		map[string]any{"result": 1},
		&struct{ Params struct{ Result any } }{Params: struct{ Result any }{Result: json.RawMessage(`1`)}},
		(*struct{ Params struct{ Result any } })(nil),
	} {
		_, _, _, ok := e.encode(v)
		require.False(t, ok)
	}

	type params struct {
		ID     string `json:"subscription"`
		Result any    `json:"result"`
	}
	type message struct {
		Version string `json:"jsonrpc"`
		Extra   any    `json:"extra,omitempty"`
		Params  params `json:"params"`
	}
	encode := func(v any) string {
		head, result, tail, ok := e.encode(v)
		require.True(t, ok)
		return string(head) + string(result) + string(tail)
	}
	fresh := func(v any) string {
		var buf bytes.Buffer
		require.NoError(t, json.NewEncoder(&buf).Encode(v))
		return buf.String()
	}
	var results []*encodedResult
	for _, r := range []string{`{"x": "<"}`, `[1, 2]`, `"s"`} {
		enc, err := newEncodedResult(json.RawMessage(r))
		require.NoError(t, err)
		results = append(results, enc)
	}
	msg := &message{Version: "2.0", Params: params{ID: "0x1", Result: results[0]}}
	require.Equal(t, `{"jsonrpc":"2.0","params":{"subscription":"0x1","result":{"x":"\u003c"}}}`+"\n", encode(msg))
	require.Same(t, results[0], msg.Params.Result, "the message is left as it was")
	require.True(t, e.last.IsValid(), "remembered")
	lastHead := &e.head[0]
	msg.Params.Result = results[1]
	require.Equal(t, fresh(msg), encode(msg))
	require.Same(t, lastHead, &e.head[0], "not encoded again")

	// Anything else changed, it is encoded again: another subscription, another field.
	for _, m := range []*message{
		{Version: "2.0", Params: params{ID: "0x2", Result: results[2]}},
		{Version: "2.0", Extra: "x", Params: params{ID: "0x2", Result: results[2]}},
		{Version: "2.0", Extra: 7, Params: params{ID: "0x2", Result: results[1]}},
		{Version: "2.0", Extra: int64(7), Params: params{ID: "0x2", Result: results[1]}},
	} {
		require.Equal(t, fresh(m), encode(m))
	}
	// A pointer is never taken as unchanged: a message holding one is encoded every time.
	extra := &struct{ N int }{1}
	m := &message{Version: "2.0", Extra: extra, Params: params{ID: "0x2", Result: results[0]}}
	require.Equal(t, fresh(m), encode(m))
	require.False(t, e.last.IsValid())
	extra.N = 2
	require.Equal(t, fresh(m), encode(m))
	require.Contains(t, encode(m), `"N":2`)
}

// A connection that stays silent is pinged, and closed if it does not answer the ping, as go-ethereum's are.
func TestCodecPings(t *testing.T) {
	// A pong timeout shorter than the interval: each ping sets the read deadline anew (as go-ethereum's do).
	keepAlive := wsKeepAlive{pingInterval: 100 * time.Millisecond, pongTimeout: 50 * time.Millisecond}
	srv := rpc.NewServer()
	defer srv.Stop()
	require.NoError(t, srv.RegisterName("relay", &notifyingAPI{}))
	ts := httptest.NewServer(websocketHandler(srv, testlog.Logger(t, log.LevelInfo), keepAlive, newWSCallLimits(0, nil, NoopMetrics{})))
	defer ts.Close()
	url := "ws" + strings.TrimPrefix(ts.URL, "http")

	// A client that reads answers pings (gorilla's default ping handler) and stays connected.
	conn, _, err := websocket.DefaultDialer.Dial(url, nil)
	require.NoError(t, err)
	defer conn.Close()
	pings := make(chan struct{}, 16)
	conn.SetPingHandler(func(data string) error {
		select {
		case pings <- struct{}{}:
		default:
		}
		return conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	read := make(chan error, 1)
	go func() {
		_, _, err := conn.ReadMessage()
		read <- err
	}()
	for range 4 { // answered each time
		select {
		case <-pings:
		case err := <-read:
			t.Fatalf("connection closed: %v", err)
		case <-time.After(5 * time.Second):
			t.Fatal("no ping")
		}
	}

	// A client that never reads never answers, and is disconnected.
	silent, _, err := websocket.DefaultDialer.Dial(url, nil)
	require.NoError(t, err)
	defer silent.Close()
	time.Sleep(keepAlive.pingInterval + keepAlive.pongTimeout + 100*time.Millisecond)
	require.NoError(t, silent.SetReadDeadline(time.Now().Add(5*time.Second)))
	for {
		if _, _, err := silent.ReadMessage(); err != nil {
			require.False(t, errors.Is(err, os.ErrDeadlineExceeded), "the server did not close the connection: %v", err)
			break
		}
	}
	conn.Close()
	<-read
}

// recordingConn keeps what is read from it.
type recordingConn struct {
	net.Conn
	mu   sync.Mutex
	read []byte
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.read = append(c.read, p[:n]...)
	c.mu.Unlock()
	return n, err
}

// A notification that fits the write buffer is sent as one frame; a larger one in several, whole all the same.
func TestCodecFrames(t *testing.T) {
	block, err := json.Marshal(fanoutEnvelope(t, 7))
	require.NoError(t, err)
	big := json.RawMessage(`"` + strings.Repeat("ab", wsWriteBuffer) + `"`)
	srv := rpc.NewServer()
	defer srv.Stop()
	require.NoError(t, srv.RegisterName("relay", &notifyingAPI{results: []json.RawMessage{block, big}, prepared: true}))
	ts := httptest.NewServer(websocketHandler(srv, testlog.Logger(t, log.LevelInfo), wsDefaultKeepAlive, newWSCallLimits(0, nil, NoopMetrics{})))
	defer ts.Close()

	var rec *recordingConn
	dialer := websocket.Dialer{NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		rec = &recordingConn{Conn: conn}
		return rec, err
	}}
	conn, _, err := dialer.Dial("ws"+strings.TrimPrefix(ts.URL, "http"), nil)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.WriteMessage(websocket.TextMessage, []byte(`{"jsonrpc":"2.0","id":1,"method":"relay_subscribe","params":["envelopes","0x0"]}`)))
	for range 3 { // the response, then the two notifications
		_, _, err := conn.ReadMessage()
		require.NoError(t, err)
	}

	// The server's frames (RFC 6455 §5.2, unmasked), after the handshake response: FIN and opcode, payload length.
	rec.mu.Lock()
	stream := rec.read[bytes.Index(rec.read, []byte("\r\n\r\n"))+4:]
	rec.mu.Unlock()
	type frame struct {
		fin    bool
		opcode byte
		length int
	}
	var frames []frame
	for len(stream) > 0 {
		f := frame{fin: stream[0]&0x80 != 0, opcode: stream[0] & 0x0f, length: int(stream[1] & 0x7f)}
		stream = stream[2:]
		switch f.length {
		case 126:
			f.length, stream = int(binary.BigEndian.Uint16(stream)), stream[2:]
		case 127:
			f.length, stream = int(binary.BigEndian.Uint64(stream)), stream[8:]
		}
		stream = stream[f.length:]
		frames = append(frames, f)
	}
	require.Len(t, frames, 5, "%+v", frames)
	require.Equal(t, frame{fin: true, opcode: websocket.TextMessage, length: frames[0].length}, frames[0], "the response")
	require.Equal(t, frame{fin: true, opcode: websocket.TextMessage, length: frames[1].length}, frames[1], "the block, one frame")
	require.Greater(t, frames[1].length, len(block))
	require.Equal(t, []frame{{false, websocket.TextMessage, wsWriteBuffer}, {false, 0, frames[3].length}, {true, 0, frames[4].length}},
		frames[2:], "the larger one, in frames of the write buffer")
}

// spacedMarshaler's MarshalJSON is neither compact nor HTML-escaped: json.Marshal makes it both.
type spacedMarshaler struct{}

func (spacedMarshaler) MarshalJSON() ([]byte, error) {
	return []byte(`{ "a" : "<&>" , "b": [1, 2] }`), nil
}

// json.Marshal's output is what newEncodedResult would make of it, byte for byte: marshaledResult takes it as it is.
func TestMarshaledResultIsEncodedResult(t *testing.T) {
	for name, v := range map[string]any{
		"light block": signed(buildChain(1, 0, 0)[0]),
		"10x block":   sign(t, testkit.Key(1), opaqueBlock(t, 7, 470, 118)),
		"strings":     map[string]any{"html": "<script>&</script>", "utf8": "\xff\u2028", "m": spacedMarshaler{}},
	} {
		msg, err := json.Marshal(v)
		require.NoError(t, err, name)
		enc, err := newEncodedResult(msg)
		require.NoError(t, err, name)
		require.Equal(t, string(enc.json), string(marshaledResult(msg).json), name)
	}
}
