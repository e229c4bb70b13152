package relay

import (
	"bytes"
	"encoding/json"
	"net/http"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/ethereum/go-ethereum/log"
	"github.com/ethereum/go-ethereum/rpc"
)

// The relay's websocket endpoint is go-ethereum's JSON-RPC server (rpc.Server.ServeCodec) over a websocket codec of
// the relay's own. go-ethereum's codec encodes every message with encoding/json, which compacts and validates a
// notification's result however it is given (a json.RawMessage or any json.Marshaler): for a block relayed to 1,000
// subscribers, the ~16 KB of its JSON a thousand times, most of the relay's CPU. This codec writes a notification
// whose result is an encodedResult (the block's JSON, prepared once per block: Held.result) by encoding the
// notification around a short placeholder (once per subscription: only the result changes) and putting the
// prepared JSON in its place: the bytes encoding/json would have written, without going over the block again.
// Everything else (responses, errors, other notifications) is written as go-ethereum's codec writes it.
//
// The websocket is handled as go-ethereum's codec does (the read limit, keep-alive pings, every origin allowed) but
// for the write buffer: 64 KB, not 1 KB. With 1 KB, gorilla writes a message above 2 KB as a frame that is not final
// and then an empty final one, in three writes to the socket (the frame's header, its payload, the final frame: the
// connection the relay's per-client limit wraps cannot writev); a message that fits the buffer is one frame and one
// write, a large share of the relay's CPU per subscriber saved (docs/benchmarks-history.md). The messages (the JSON,
// byte for byte) are the same; how they are cut into frames is not part of them (RFC 6455 §5.4: websocket APIs
// deliver whole messages, and intermediaries may refragment). Inside the node, the rpc.PeerInfo of a call says
// transport "ipc" and has no HTTP headers (the relay reads only its RemoteAddr).

// Go-ethereum's websocket settings (rpc/websocket.go), which the relay's codec keeps, but for wsWriteBuffer.
const (
	wsReadBuffer = 1024
	// wsWriteBuffer is the most of a message written as one frame (and one write to the socket). Connections take
	// a buffer from wsBufferPool for each message they write and put it back once it is written: only a subscriber
	// stuck in a write (until the write timeout, 10 s, drops it) holds one.
	wsWriteBuffer      = 64 << 10
	wsPingWriteTimeout = 5 * time.Second
	// wsReadLimit bounds a request: requests to the relay are small; responses are bounded by MaxMessageSize.
	wsReadLimit = 64 << 10
)

// wsKeepAlive is when a silent connection is pinged, and how long after a ping it is closed without a pong.
type wsKeepAlive struct{ pingInterval, pongTimeout time.Duration }

// wsDefaultKeepAlive is go-ethereum's.
var wsDefaultKeepAlive = wsKeepAlive{pingInterval: 30 * time.Second, pongTimeout: 30 * time.Second}

var wsBufferPool = new(sync.Pool)

// encodedResult is a notification's result, encoded already: exactly what encoding/json writes for it (compact,
// HTML-escaped). MarshalJSON makes any other encoder write the same, only slower.
type encodedResult struct{ json []byte }

// newEncodedResult prepares JSON to be sent as a result: what encoding/json makes of it as a json.RawMessage value,
// which is how it was sent before (and is json.Marshal's output as it is).
func newEncodedResult(msg json.RawMessage) (*encodedResult, error) {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(msg); err != nil {
		return nil, err
	}
	enc := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if bytes.Equal(enc, msg) { // as it is for json.Marshal's output: one copy held, not two
		enc = msg
	}
	return &encodedResult{json: enc}, nil
}

// marshaledResult prepares json.Marshal's output (or marshalSigned's, the same bytes) to be sent as a result, as it
// is: encoding/json writes its own output unchanged (compact and HTML-escaped, MarshalJSON methods' output
// included), so newEncodedResult's pass over it would only copy it, at more than json.Marshal's own cost
// (BenchmarkPrepareResult).
func marshaledResult(msg json.RawMessage) *encodedResult { return &encodedResult{json: msg} }

// resultMarker stands for an encodedResult while the notification around it is encoded: it is encoded as
// resultPlaceholder, a JSON string no subscription ID or method name contains.
type resultMarker struct{}

var resultPlaceholder = []byte(`"\u0000relay-encoded-result\u0000"`)

func (resultMarker) MarshalJSON() ([]byte, error) { return resultPlaceholder, nil }

// encodedInFull counts encodedResults that encoding/json encoded (MarshalJSON), not notificationEncoder: every one if
// go-ethereum's notification is not what notificationEncoder expects.
var (
	encodedInFull     atomic.Uint64
	encodedInFullOnce sync.Once
)

func (e *encodedResult) MarshalJSON() ([]byte, error) {
	encodedInFull.Add(1)
	encodedInFullOnce.Do(func() {
		log.Warn("Relay encodes every notification in full: go-ethereum's notification message is not what the relay's codec expects")
	})
	return e.json, nil
}

// notificationEncoder writes go-ethereum's subscription notifications of encodedResults on one connection (one
// message at a time). It finds the result by reflection (go-ethereum's message type is unexported) as the field
// Params.Result, an interface; a go-ethereum without it has every notification encoded in full. It remembers the
// last notification, with a marker for its result, and its encoding around the marker: a subscription's
// notifications differ in their result only, so each is encoded once per subscription, not once per block.
type notificationEncoder struct {
	buf        bytes.Buffer
	last       reflect.Value // a copy of the last message encoded, with the marker: made of plainEqual values
	head, tail []byte        // its encoding before and after the marker, in buf
}

// encode returns v's JSON encoding as json.Encoder writes it (with its trailing newline), in three parts: head,
// result and tail, valid until the next call, if v is go-ethereum's notification of an encodedResult; otherwise ok
// is false and v is for encoding/json.
func (e *notificationEncoder) encode(v any) (head, result, tail []byte, ok bool) {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() || rv.Elem().Kind() != reflect.Struct {
		return nil, nil, nil, false
	}
	params := rv.Elem().FieldByName("Params")
	if params.Kind() != reflect.Struct {
		return nil, nil, nil, false
	}
	field := params.FieldByName("Result")
	if field.Kind() != reflect.Interface || !field.CanSet() || field.IsNil() {
		return nil, nil, nil, false
	}
	enc, ok := field.Interface().(*encodedResult)
	if !ok {
		return nil, nil, nil, false
	}
	field.Set(reflect.ValueOf(resultMarker{}))
	defer field.Set(reflect.ValueOf(enc))
	msg := rv.Elem()
	if e.last.IsValid() && plainEqual(msg, e.last) {
		return e.head, enc.json, e.tail, true
	}
	e.last = reflect.Value{}
	e.buf.Reset()
	if err := json.NewEncoder(&e.buf).Encode(v); err != nil { // as gorilla's Conn.WriteJSON, which go-ethereum's codec calls
		return nil, nil, nil, false
	}
	b := e.buf.Bytes()
	at := bytes.Index(b, resultPlaceholder)
	if at < 0 || bytes.Contains(b[at+len(resultPlaceholder):], resultPlaceholder) {
		return nil, nil, nil, false
	}
	e.head, e.tail = b[:at], b[at+len(resultPlaceholder):]
	if plainEqual(msg, msg) {
		e.last = reflect.New(msg.Type()).Elem()
		e.last.Set(msg)
	}
	return e.head, enc.json, e.tail, true
}

// plainEqual reports whether a and b are equal and made of plain values only: strings, booleans, numbers, and
// structs and interfaces holding them. What a pointer, slice or map refers to could change unseen: a message with
// one is encoded every time.
func plainEqual(a, b reflect.Value) bool {
	if a.Type() != b.Type() {
		return false
	}
	switch a.Kind() {
	case reflect.String:
		return a.String() == b.String()
	case reflect.Bool:
		return a.Bool() == b.Bool()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return a.Int() == b.Int()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return a.Uint() == b.Uint()
	case reflect.Float32, reflect.Float64:
		return a.Float() == b.Float()
	case reflect.Struct:
		for i := range a.NumField() {
			if !plainEqual(a.Field(i), b.Field(i)) {
				return false
			}
		}
		return true
	case reflect.Interface:
		if a.IsNil() || b.IsNil() {
			return a.IsNil() && b.IsNil()
		}
		return plainEqual(a.Elem(), b.Elem())
	default:
		return false
	}
}

// websocketHandler serves srv's JSON-RPC to websocket connections, as go-ethereum's rpc.Server.WebsocketHandler
// with every origin allowed, but with wsConn's codec, which bounds each connection's calls by limits.
func websocketHandler(srv *rpc.Server, lgr log.Logger, keepAlive wsKeepAlive, limits *wsCallLimits) http.Handler {
	upgrader := websocket.Upgrader{
		ReadBufferSize:  wsReadBuffer,
		WriteBufferSize: wsWriteBuffer,
		WriteBufferPool: wsBufferPool,
		CheckOrigin:     func(*http.Request) bool { return true },
	}
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		conn, err := upgrader.Upgrade(w, req, nil)
		if err != nil {
			lgr.Debug("Relay websocket upgrade failed", "err", err)
			return
		}
		ws := newWSConn(conn, keepAlive, limits)
		srv.ServeCodec(rpc.NewFuncCodec(ws, ws.encode, ws.read), 0)
		ws.served()
		<-ws.pinging // ServeCodec closed the connection, which ends the ping loop
	})
}

// wsConn is one websocket connection, as go-ethereum's websocket codec (rpc/websocket.go) handles it: JSON messages
// written with gorilla's Conn.WriteJSON (but for prepared notifications, notificationEncoder), a ping after 30 s
// without a message written, and the connection closed if no pong arrives within 30 s of a ping. Unlike
// go-ethereum's, it reads a message only within its limits (read, in calls.go), and it closes the connection once
// a message could not be written.
type wsConn struct {
	conn      *websocket.Conn
	keepAlive wsKeepAlive
	limits    *wsCallLimits
	client    string        // clientKey of the peer
	slots     chan struct{} // one per message unanswered, and one for the message being read
	pending   atomic.Int64  // messages unanswered
	// writeMu orders pings with messages (a message is written by the codec under its own lock, which pings
	// cannot take): a ping never comes between a message's frames. It guards notifications.
	writeMu       sync.Mutex
	notifications notificationEncoder
	closeOnce     sync.Once
	closed        chan struct{}
	lastWrite     atomic.Int64 // when the last message was written (monotonic, since wsEpoch)
	pongReceived  chan struct{}
	pinging       chan struct{} // closed when the ping loop ends
}

// wsEpoch is what wsConn.lastWrite counts from: time.Since reads the monotonic clock.
var wsEpoch = time.Now()

func newWSConn(conn *websocket.Conn, keepAlive wsKeepAlive, limits *wsCallLimits) *wsConn {
	conn.SetReadLimit(wsReadLimit)
	c := &wsConn{conn: conn, keepAlive: keepAlive, limits: limits, client: clientKey(conn.RemoteAddr().String()),
		slots: make(chan struct{}, limits.maxInFlight), closed: make(chan struct{}), pongReceived: make(chan struct{}),
		pinging: make(chan struct{})}
	c.lastWrite.Store(int64(time.Since(wsEpoch)))
	conn.SetPongHandler(func(string) error {
		select {
		case c.pongReceived <- struct{}{}:
		case <-c.closed:
		}
		return nil
	})
	go c.pingLoop()
	return c
}

// RemoteAddr names the peer (rpc.PeerInfo.RemoteAddr, which the per-client limits key on).
func (c *wsConn) RemoteAddr() string { return c.conn.RemoteAddr().String() }

// SetWriteDeadline is called by the codec before each message.
func (c *wsConn) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }

// Close is called by the codec, once, when the connection ends.
func (c *wsConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return c.conn.Close()
}

// encode writes a message (the codec calls it with its write lock held and the write deadline set). Once the
// message answers one the codec read, the connection may have another read.
func (c *wsConn) encode(v any, _ bool) error {
	c.writeMu.Lock()
	prepared, err := c.write(v)
	c.writeMu.Unlock()
	if err != nil {
		// gorilla's connection cannot write after a failed write (one past its deadline, 10 s, included): the
		// client gets no more answers or notifications. Closed, it frees its slots and its calls end at once,
		// rather than be read, served and failed one after the other until the client leaves.
		_ = c.Close()
	} else {
		// Delays the next idle ping. go-ethereum's codec signals its ping loop instead: a goroutine woken for
		// every message, a tenth of the relay's CPU per subscriber.
		c.lastWrite.Store(int64(time.Since(wsEpoch)))
	}
	if !prepared && isAnswer(v) { // a prepared notification answers nothing
		c.answered()
	}
	return err
}

// write writes a message, and reports whether it was a notification of a prepared result.
func (c *wsConn) write(v any) (prepared bool, err error) {
	head, result, tail, ok := c.notifications.encode(v)
	if !ok {
		return false, c.conn.WriteJSON(v)
	}
	// Into the connection's write buffer, sent as one frame when the message fits (wsWriteBuffer).
	w, err := c.conn.NextWriter(websocket.TextMessage)
	if err != nil {
		return true, err
	}
	for _, part := range [][]byte{head, result, tail} {
		if _, err := w.Write(part); err != nil {
			_ = w.Close()
			return true, err
		}
	}
	return true, w.Close()
}

func (c *wsConn) pingLoop() {
	defer close(c.pinging)
	timer := time.NewTimer(c.keepAlive.pingInterval)
	defer timer.Stop()
	for {
		select {
		case <-c.closed:
			return
		case <-timer.C:
			if idle := time.Since(wsEpoch) - time.Duration(c.lastWrite.Load()); idle < c.keepAlive.pingInterval {
				timer.Reset(c.keepAlive.pingInterval - idle)
				continue
			}
			c.writeMu.Lock()
			_ = c.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(wsPingWriteTimeout))
			_ = c.conn.SetReadDeadline(time.Now().Add(c.keepAlive.pongTimeout))
			c.writeMu.Unlock()
			timer.Reset(c.keepAlive.pingInterval)
		case <-c.pongReceived:
			_ = c.conn.SetReadDeadline(time.Time{})
		}
	}
}
