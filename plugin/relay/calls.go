package relay

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"sync/atomic"
	"time"
)

// Calls inside one websocket. go-ethereum's rpc.Server reads a websocket's messages one after the other and serves
// each (a call, or a whole batch) on a goroutine of its own, which lives until its answer is written: a client that
// sends calls without reading the answers would pile up goroutines, each holding its answer, for as long as it
// keeps sending. The relay's codec bounds what each connection and each client has served:
//
//   - in flight, per connection: the codec reads a connection's next message only while fewer than wsMaxInFlight of
//     its messages are unanswered. A client pipelining calls meets TCP back-pressure (its calls wait, unread, in
//     the sockets' buffers), not one goroutine and one answer in memory per call.
//   - a rate, per client: every call (each call of a batch) takes a token of its client's rate, the token bucket
//     that also meters the client's HTTP requests and websocket connections (clientLimiter), shared by all its
//     connections. A call beyond the rate is delayed, not refused: the codec waits for its tokens before it reads
//     on. A follower's calls are a subscription and a gap fetch now and then, with at most 16 at once (the
//     replicator's prefetcher); refused, a burst of them would fail as "relay unavailable" and make it reconnect,
//     while delayed they are all answered, a little later. The wait holds no goroutine and no memory per call.
//
// A message that asks for no answer (a notification, or a response: the relay sends no requests) is read, counted
// against the rate, and dropped: go-ethereum would serve a notification on a goroutine of its own and answer
// nothing, and the relay has nothing worth calling without an answer.

// wsMaxInFlight bounds the unanswered messages of one websocket connection. It is small because each holds its
// answer until it is written (a block, or a batch's answers up to the message size limit) and a goroutine; it is
// 16 because the replicator's prefetcher has at most that many requests at a source at once (plugin/prefetch.go,
// maxInFlight), so a follower never waits on it.
const wsMaxInFlight = 16

// wsCallLimits are the limits on the calls of the relay's websocket connections.
type wsCallLimits struct {
	maxInFlight int
	// maxBatch is the server's batch limit (0: none): go-ethereum answers a longer batch with one error, whatever it
	// holds.
	maxBatch int
	// clients meters each client's calls (nil: no rate).
	clients *clientLimiter
	metrics Metricer

	inFlight atomic.Int64 // unanswered messages on all connections
}

func newWSCallLimits(maxBatch int, clients *clientLimiter, m Metricer) *wsCallLimits {
	return &wsCallLimits{maxInFlight: wsMaxInFlight, maxBatch: maxBatch, clients: clients, metrics: m}
}

var errConnClosed = errors.New("relay: websocket closed")

// read is the codec's decode: it returns the next message the relay is to answer, once the connection has fewer
// than maxInFlight unanswered and the client's rate has a token for each of its calls.
func (c *wsConn) read(v any) error {
	for {
		// The slot is taken before the message is read: with every slot taken, the message stays in the socket.
		select {
		case c.slots <- struct{}{}:
		case <-c.closed:
			return errConnClosed
		}
		var raw json.RawMessage
		if err := c.conn.ReadJSON(&raw); err != nil {
			<-c.slots
			return err
		}
		calls, answered := classify(raw, c.limits.maxBatch)
		if err := c.waitForRate(calls); err != nil {
			<-c.slots
			return err
		}
		if !answered {
			<-c.slots
			continue
		}
		c.pending.Add(1)
		c.limits.inFlight.Add(1)
		if p, ok := v.(*json.RawMessage); ok { // what go-ethereum's codec reads into
			*p = raw
			return nil
		}
		return json.Unmarshal(raw, v)
	}
}

// answered frees the slot of a message answered, if one is pending: go-ethereum also answers a message that is not
// JSON, which read returned as an error, without a slot.
func (c *wsConn) answered() {
	if c.pending.Add(-1) < 0 {
		c.pending.Add(1)
		return
	}
	c.limits.inFlight.Add(-1)
	<-c.slots
}

// served counts the messages still pending as answered, once go-ethereum has served the connection: it has
// finished every call, and drops what it read after the connection ended without serving it.
func (c *wsConn) served() {
	c.limits.inFlight.Add(-c.pending.Swap(0))
}

// waitForRate takes a token of the client's rate for each call, waiting until they are the client's.
func (c *wsConn) waitForRate(calls int) error {
	if c.limits.clients == nil {
		return nil
	}
	delay := c.limits.clients.reserve(c.client, calls)
	if delay <= 0 {
		return nil
	}
	c.limits.metrics.RecordRelayRefused(RefusedCallRate)
	timer := time.NewTimer(delay)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-c.closed:
		return errConnClosed
	}
}

// isAnswer reports whether a message the codec writes answers one it read: go-ethereum's answer to a call (its
// message has no method) or to a batch (a slice of them); not a subscription notification.
func isAnswer(v any) bool {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() || rv.Elem().Kind() != reflect.Struct {
		return true
	}
	method := rv.Elem().FieldByName("Method")
	return method.Kind() != reflect.String || method.String() == ""
}

// rpcMessage is what go-ethereum reads of a JSON-RPC message (its jsonrpcMessage) to tell calls, notifications and
// responses apart.
type rpcMessage struct {
	Version string          `json:"jsonrpc,omitempty"`
	ID      json.RawMessage `json:"id,omitempty"`
	Method  string          `json:"method,omitempty"`
	Params  json.RawMessage `json:"params,omitempty"`
	Error   *struct{}       `json:"error,omitempty"` // only whether there is one
	Result  json.RawMessage `json:"result,omitempty"`
}

// unanswered reports whether go-ethereum answers nothing to the message: a notification (a method without an ID)
// or a response (an ID with a result or an error), as its rpc package tells them apart.
func (m *rpcMessage) unanswered() bool {
	if m.Version != "2.0" {
		return false
	}
	validID := len(m.ID) > 0 && m.ID[0] != '{' && m.ID[0] != '['
	notification := m.ID == nil && m.Method != ""
	response := validID && m.Method == "" && m.Params == nil && (m.Result != nil || m.Error != nil)
	return notification || response
}

// classify returns how many calls a message holds (a batch's elements; at least one) and whether go-ethereum
// answers it: a single message unless it is a notification or a response; a batch unless every element is one
// (an empty batch, or one above maxBatch, is answered with an error). It reads the message as go-ethereum does
// (rpc.parseMessage): a message that is not one of its shape is a call, answered with an error.
func classify(raw json.RawMessage, maxBatch int) (calls int, answered bool) {
	if !isBatch(raw) {
		var m rpcMessage
		_ = json.Unmarshal(raw, &m) // a partial message is read as far as it goes, as go-ethereum does
		return 1, !m.unanswered()
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if _, err := dec.Token(); err != nil { // '['
		return 1, true
	}
	for dec.More() {
		calls++
		var m rpcMessage
		if err := dec.Decode(&m); err != nil {
			var typeErr *json.UnmarshalTypeError
			if !errors.As(err, &typeErr) { // raw is valid JSON: not expected
				return max(calls, 1), true
			}
		}
		if !m.unanswered() {
			answered = true
		}
	}
	if calls == 0 || (maxBatch > 0 && calls > maxBatch) {
		answered = true
	}
	return max(calls, 1), answered
}

// isBatch reports whether a message is a JSON array, as go-ethereum's rpc package tells.
func isBatch(raw json.RawMessage) bool {
	for _, c := range raw {
		if c == ' ' || c == '\t' || c == '\n' || c == '\r' {
			continue
		}
		return c == '['
	}
	return false
}
