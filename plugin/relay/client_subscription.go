package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/gorilla/websocket"

	opsigner "github.com/ethereum-optimism/optimism/op-service/signer"

	"github.com/op-replicator/op-replicator/plugin/api"
	"github.com/op-replicator/op-replicator/plugin/internal/wsdial"
)

// subscriptionReadLimit bounds one message of a subscription, as go-ethereum's websocket client bounds one: a relay
// sends no block above its own MaxMessageSize, which is below it.
const subscriptionReadLimit = 32 << 20

// subscriptionNotification is the method of a relay subscription's notifications (go-ethereum's server names it
// after the namespace).
const subscriptionNotification = api.RelayNamespace + "_subscription"

// subscription is a subscription to a relay's signed blocks on a websocket connection of its own that carries nothing
// else: the client's requests (head, by number, by range) go over go-ethereum's client, on another connection.
// go-ethereum's client reads a notification four times before it hands it on (the message, its params, the result,
// the result into the channel's type), and the block was decoded from it a fifth time: here each notification is
// read once, straight into the signed block. Those passes were most of a relay follower's cost per block beyond a
// gossip node's (BenchmarkReceive). The connection is dialled as go-ethereum's client dials; the relay's keep-alive
// pings are answered while the subscription is read.
type subscription struct {
	conn        *websocket.Conn
	id          string        // the relay's subscription ID
	readTimeout time.Duration // how long the relay may stay silent
	buf         bytes.Buffer  // the message being read, reused
	stop        func() bool   // ends the closing of conn with the subscribing context
	// received is when the last message had been read whole, on now (the client's clock).
	received time.Time
	now      func() time.Time
}

// subscribeRelay subscribes to the relay's blocks from height from on: the request and its answer within timeout.
// The connection is closed when ctx ends or Close is called. Each message's arrival is read on now.
func subscribeRelay(ctx context.Context, d *wsdial.Dialer, from uint64, timeout, readTimeout time.Duration, now func() time.Time) (*subscription, error) {
	dialCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := d.Dial(dialCtx)
	if err != nil {
		return nil, err
	}
	s := &subscription{conn: conn, readTimeout: readTimeout, now: now,
		stop: context.AfterFunc(ctx, func() { _ = conn.Close() })}
	req, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": api.MethodRelaySubscribe,
		"params": []any{api.RelayEnvelopes, hexutil.Uint64(from)}})
	if err != nil {
		s.Close()
		return nil, err
	}
	_ = conn.SetWriteDeadline(time.Now().Add(timeout))
	if err := conn.WriteMessage(websocket.TextMessage, req); err != nil {
		s.Close()
		return nil, fmt.Errorf("%s: %w", api.MethodRelaySubscribe, err)
	}
	// go-ethereum's server sends a subscription's notifications only after its answer to the subscribe call.
	var answer struct {
		ID     json.RawMessage `json:"id"`
		Result string          `json:"result"`
		Error  *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	msg, err := s.read(time.Now().Add(timeout))
	if err == nil {
		err = json.Unmarshal(msg, &answer)
	}
	// Not ErrBadInput, which is a block's: the relay's answer failing ends this attempt, which is retried.
	switch {
	case err != nil:
	case answer.Error != nil: // the relay refused (full, say), or could not read the call (then without an id)
		err = fmt.Errorf("%s (code %d)", answer.Error.Message, answer.Error.Code)
	case string(answer.ID) != "1":
		err = fmt.Errorf("an answer to request %s, not to the subscribe call", answer.ID)
	case answer.Result == "":
		err = errors.New("no subscription ID in the answer")
	}
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("%s: %w", api.MethodRelaySubscribe, err)
	}
	s.id = answer.Result
	return s, nil
}

// Next waits for the next block. A notification that is not a signed block of this subscription is ErrBadInput,
// and the subscription goes on; any other error ends it: the connection failed, or the relay was silent for the read
// timeout.
func (s *subscription) Next() (*opsigner.SignedExecutionPayloadEnvelope, error) {
	msg, err := s.read(time.Now().Add(s.readTimeout))
	if err != nil {
		var netErr net.Error
		if errors.As(err, &netErr) && netErr.Timeout() {
			return nil, fmt.Errorf("no block for %s", s.readTimeout)
		}
		return nil, err
	}
	return decodeNotification(msg, s.id)
}

// decodeNotification reads a notification of subscription id into its signed block, in one pass.
func decodeNotification(msg []byte, id string) (*opsigner.SignedExecutionPayloadEnvelope, error) {
	var note struct {
		Method string `json:"method"`
		Params struct {
			Subscription string                                   `json:"subscription"`
			Result       *opsigner.SignedExecutionPayloadEnvelope `json:"result"`
		} `json:"params"`
	}
	if err := json.Unmarshal(msg, &note); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadInput, err)
	}
	if note.Method != subscriptionNotification || note.Params.Subscription != id {
		return nil, fmt.Errorf("%w: a message that is not a notification of subscription %s (method %q, subscription %q)",
			ErrBadInput, id, note.Method, note.Params.Subscription)
	}
	return checkDecoded(note.Params.Result)
}

// read reads a whole message, by deadline. The bytes are s.buf's until the next read.
func (s *subscription) read(deadline time.Time) ([]byte, error) {
	_ = s.conn.SetReadDeadline(deadline)
	_, r, err := s.conn.NextReader()
	if err != nil {
		return nil, err
	}
	s.buf.Reset()
	if _, err := s.buf.ReadFrom(r); err != nil {
		return nil, err
	}
	s.received = s.now()
	return s.buf.Bytes(), nil
}

// Close ends the subscription: the relay ends it with the connection.
func (s *subscription) Close() {
	s.stop()
	_ = s.conn.Close()
}
