package devnet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/ethereum/go-ethereum/common/hexutil"
)

// HostileConfig says what a HostileClient does to a relay. Every part runs at once, flat out, until Stop; the zero
// value does nothing.
type HostileConfig struct {
	// LocalIP is the address the client connects from, e.g. "127.0.0.2": the relay's per-client limits then see it
	// as a client of its own, apart from the well-behaved nodes on 127.0.0.1 (all of 127.0.0.0/8 is loopback on
	// Linux). Empty: the system chooses.
	LocalIP string

	// BatchWorkers each send HTTP requests back to back, each one JSON-RPC batch of BatchSize
	// relay_envelopeByNumber calls for the heights up to the relay's head (the largest answers it could give).
	BatchWorkers, BatchSize int

	// FloodWorkers each open connections as fast as they can and hold them open, alternately a bare TCP
	// connection that never sends a request and a websocket that never sends a call, MaxHeldConns at most at
	// once in all (the bound is the client's own file descriptors; a connection the relay closes frees its
	// slot). Default MaxHeldConns: 1024.
	FloodWorkers, MaxHeldConns int

	// StuckSubscribers is how many websockets at once subscribe to relay_envelopes from block 0 and then never
	// read (with a receive buffer shrunk to 2 KB, so the relay's writes back up at once). Each is closed after
	// StuckHold and replaced by a new one. Default StuckHold: 10s.
	StuckSubscribers int
	StuckHold        time.Duration

	// PipelineWorkers each open a websocket and write PipelineCalls calls on it back to back without reading an
	// answer (alternately relay_envelopeByNumber for the relay's head and eth_chainId, a method the relay has not),
	// with a receive buffer shrunk to 2 KB so that the relay's answers back up at once; then close it and start
	// over. The relay bounds the calls it has in flight per connection and meters each client's calls: the
	// worker's writes stall (PipelineStalls) instead of piling up goroutines in the relay. Default PipelineCalls:
	// 10,000.
	PipelineWorkers, PipelineCalls int
}

// HostileStats counts what a HostileClient sent and how the relay answered.
type HostileStats struct {
	// Batches is the HTTP requests sent with a batch, BatchCalls the calls they held.
	Batches, BatchCalls uint64
	// Served is calls answered with a result; RPCErrors is calls answered with a JSON-RPC error, such as the one
	// error that answers a whole batch over the batch limit ("batch too large").
	Served, RPCErrors uint64
	// TooMany is HTTP requests and websocket handshakes refused with HTTP 429 (the per-client rate and connection
	// limits); OtherStatus is those refused with another HTTP status (e.g. 413, a request body over the limit).
	TooMany, OtherStatus uint64
	// TCPConns is bare TCP connections opened, Websockets websocket handshakes that succeeded, HeldMax the most
	// connections the flood held open at once, and ClosedByRelay held connections the relay closed.
	TCPConns, Websockets uint64
	HeldMax              int64
	ClosedByRelay        uint64
	// Subscribed and SubscribeRefused count the stuck subscriptions the relay accepted and refused (too many
	// subscribers).
	Subscribed, SubscribeRefused uint64
	// PipelineConns is the websockets the pipeline workers opened, PipelinedCalls the calls they wrote without
	// reading, and PipelineStalls their writes that did not go through within hostileTimeout: the relay stopped
	// reading their calls (and then closed the connection, as the client never read its answers).
	PipelineConns, PipelinedCalls, PipelineStalls uint64
	// Errors is every other failure: connections the relay closed without an answer (as its per-client connection
	// limit does, at once), resets, timeouts.
	Errors uint64
}

// Refused is every refusal by a limit: HTTP 429 and other error statuses, JSON-RPC errors, refused subscriptions.
func (s HostileStats) Refused() uint64 {
	return s.TooMany + s.OtherStatus + s.RPCErrors + s.SubscribeRefused
}

func (s HostileStats) String() string {
	return fmt.Sprintf("batches %d (%d calls): served %d, rpc errors %d | HTTP 429 %d, other status %d | "+
		"flood: %d TCP, %d websockets, held at most %d, %d closed by the relay | stuck subscriptions %d, refused %d | "+
		"pipelined: %d websockets, %d calls, %d stalls | errors %d",
		s.Batches, s.BatchCalls, s.Served, s.RPCErrors, s.TooMany, s.OtherStatus,
		s.TCPConns, s.Websockets, s.HeldMax, s.ClosedByRelay, s.Subscribed, s.SubscribeRefused,
		s.PipelineConns, s.PipelinedCalls, s.PipelineStalls, s.Errors)
}

// hostileCounters is HostileStats, updated atomically by the client's goroutines.
type hostileCounters struct {
	batches, batchCalls, served, rpcErrors, tooMany, otherStatus atomic.Uint64
	tcpConns, websockets, closedByRelay                          atomic.Uint64
	subscribed, subscribeRefused, errors                         atomic.Uint64
	pipelineConns, pipelinedCalls, pipelineStalls                atomic.Uint64
	held, heldMax                                                atomic.Int64
}

// HostileClient attacks a relay the way an unauthenticated client on the internet could: oversized batches,
// connection floods, subscriptions it never reads. Tests check that the relay refuses it and stays within its
// bounds while serving its well-behaved subscribers.
type HostileClient struct {
	cfg    HostileConfig
	host   string // the relay's host:port
	head   uint64 // the relay's head when the client started
	dialer *net.Dialer
	http   *http.Client
	slots  chan struct{} // one per connection the flood may hold

	c      hostileCounters
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

const (
	// hostileTimeout bounds one request, dial or websocket handshake of a HostileClient.
	hostileTimeout = 5 * time.Second
	// hostileRetryPause is how long a stuck subscriber waits after a refusal, and a flood worker while the relay
	// refuses connections (it is down).
	hostileRetryPause = 100 * time.Millisecond
)

// StartHostileClient starts attacking the relay at relayURL (its http://, ws:// or relay+ws:// address) as cfg says,
// until Stop or the end of ctx. It first asks the relay for its head (relay_head), which it needs to aim its
// batches at the blocks the relay holds.
func StartHostileClient(ctx context.Context, relayURL string, cfg HostileConfig) (*HostileClient, error) {
	u, err := url.Parse(relayURL)
	if err != nil {
		return nil, fmt.Errorf("hostile client: relay URL %q: %w", relayURL, err)
	}
	if cfg.MaxHeldConns == 0 {
		cfg.MaxHeldConns = 1024
	}
	if cfg.StuckHold == 0 {
		cfg.StuckHold = 10 * time.Second
	}
	if cfg.PipelineCalls == 0 {
		cfg.PipelineCalls = 10_000
	}
	dialer := &net.Dialer{Timeout: hostileTimeout}
	if cfg.LocalIP != "" {
		ip := net.ParseIP(cfg.LocalIP)
		if ip == nil {
			return nil, fmt.Errorf("hostile client: local IP %q is not an IP address", cfg.LocalIP)
		}
		dialer.LocalAddr = &net.TCPAddr{IP: ip}
	}
	h := &HostileClient{
		cfg:    cfg,
		host:   u.Host,
		dialer: dialer,
		http: &http.Client{Timeout: hostileTimeout, Transport: &http.Transport{
			DialContext:         dialer.DialContext,
			MaxIdleConnsPerHost: cfg.BatchWorkers,
		}},
		slots: make(chan struct{}, cfg.MaxHeldConns),
	}
	if h.head, err = h.relayHead(ctx); err != nil {
		return nil, err
	}
	ctx, h.cancel = context.WithCancel(context.WithoutCancel(ctx))
	for range cfg.BatchWorkers {
		h.spawn(ctx, h.sendBatches)
	}
	for range cfg.FloodWorkers {
		h.spawn(ctx, h.flood)
	}
	for range cfg.StuckSubscribers {
		h.spawn(ctx, h.subscribeStuck)
	}
	for range cfg.PipelineWorkers {
		h.spawn(ctx, h.pipeline)
	}
	return h, nil
}

func (h *HostileClient) spawn(ctx context.Context, run func(context.Context)) {
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		run(ctx)
	}()
}

// Stop ends the attack, closes every connection the client holds, and waits for its goroutines.
func (h *HostileClient) Stop() {
	h.cancel()
	h.wg.Wait()
	h.http.CloseIdleConnections()
}

// Stats returns the counts so far.
func (h *HostileClient) Stats() HostileStats {
	c := &h.c
	return HostileStats{
		Batches: c.batches.Load(), BatchCalls: c.batchCalls.Load(), Served: c.served.Load(), RPCErrors: c.rpcErrors.Load(),
		TooMany: c.tooMany.Load(), OtherStatus: c.otherStatus.Load(),
		TCPConns: c.tcpConns.Load(), Websockets: c.websockets.Load(), HeldMax: c.heldMax.Load(), ClosedByRelay: c.closedByRelay.Load(),
		Subscribed: c.subscribed.Load(), SubscribeRefused: c.subscribeRefused.Load(),
		PipelineConns: c.pipelineConns.Load(), PipelinedCalls: c.pipelinedCalls.Load(), PipelineStalls: c.pipelineStalls.Load(),
		Errors: c.errors.Load(),
	}
}

// relayHead asks the relay for its head, retrying (within hostileTimeout) while the relay refuses.
func (h *HostileClient) relayHead(ctx context.Context) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, hostileTimeout)
	defer cancel()
	body := []byte(`{"jsonrpc":"2.0","id":1,"method":"relay_head","params":[]}`)
	for {
		status, resp, err := h.post(ctx, body)
		if err == nil && status == http.StatusOK {
			var msg struct {
				Result *hexutil.Uint64 `json:"result"`
			}
			if err := json.Unmarshal(resp, &msg); err != nil || msg.Result == nil {
				return 0, fmt.Errorf("hostile client: relay_head answered %s", resp)
			}
			return uint64(*msg.Result), nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("hostile client: relay_head at %s: status %d, err %v", h.host, status, err)
		case <-time.After(hostileRetryPause):
		}
	}
}

// post sends one JSON-RPC request body over HTTP and returns the response status and body.
func (h *HostileClient) post(ctx context.Context, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+h.host, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	respBody, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	return resp.StatusCode, respBody, err
}

// batchBody is one batch of calls for the size heights up to head.
func batchBody(head uint64, size int) []byte {
	var b bytes.Buffer
	b.WriteByte('[')
	for i := range size {
		if i > 0 {
			b.WriteByte(',')
		}
		n := head - min(head, uint64(i))
		fmt.Fprintf(&b, `{"jsonrpc":"2.0","id":%d,"method":"relay_envelopeByNumber","params":["%s"]}`, i, hexutil.Uint64(n))
	}
	b.WriteByte(']')
	return b.Bytes()
}

// sendBatches posts batches back to back and counts the answers.
func (h *HostileClient) sendBatches(ctx context.Context) {
	body := batchBody(h.head, h.cfg.BatchSize)
	for ctx.Err() == nil {
		h.c.batches.Add(1)
		h.c.batchCalls.Add(uint64(h.cfg.BatchSize))
		status, resp, err := h.post(ctx, body)
		switch {
		case err != nil:
			if ctx.Err() == nil {
				h.c.errors.Add(1)
			}
		case status == http.StatusTooManyRequests:
			h.c.tooMany.Add(1)
		case status != http.StatusOK:
			h.c.otherStatus.Add(1)
		default:
			h.countAnswers(resp)
		}
	}
}

// countAnswers counts the results and errors in a JSON-RPC response: a batch or a single message.
func (h *HostileClient) countAnswers(resp []byte) {
	type answer struct {
		Error json.RawMessage `json:"error"`
	}
	var answers []answer
	if err := json.Unmarshal(resp, &answers); err != nil {
		var single answer
		if err := json.Unmarshal(resp, &single); err != nil {
			h.c.errors.Add(1)
			return
		}
		answers = []answer{single}
	}
	for _, a := range answers {
		if len(a.Error) > 0 && string(a.Error) != "null" {
			h.c.rpcErrors.Add(1)
		} else {
			h.c.served.Add(1)
		}
	}
}

// flood opens connections as fast as it can, alternately bare TCP and websocket, each held by a goroutine of its
// own until the relay closes it or the attack ends.
func (h *HostileClient) flood(ctx context.Context) {
	for i := 0; ; i++ {
		select {
		case h.slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		var (
			conn io.Closer
			hold func() error
			err  error
		)
		if i%2 == 0 {
			var c net.Conn
			if c, err = h.dialer.DialContext(ctx, "tcp", h.host); err == nil {
				h.c.tcpConns.Add(1)
				conn, hold = c, func() error { _, err := c.Read(make([]byte, 1)); return err }
			} else {
				h.dialFailed(ctx, err)
			}
		} else {
			var c *websocket.Conn
			if c, err = h.dialWebsocket(ctx, nil); err == nil {
				h.c.websockets.Add(1)
				conn, hold = c, func() error {
					for {
						if _, _, err := c.ReadMessage(); err != nil { // pings are answered while reading
							return err
						}
					}
				}
			}
		}
		if conn == nil {
			<-h.slots
			if errors.Is(err, syscall.ECONNREFUSED) {
				// The relay is down: nothing to flood until it is back.
				select {
				case <-ctx.Done():
				case <-time.After(hostileRetryPause):
				}
			}
			continue
		}
		h.holding(+1)
		h.spawn(ctx, func(ctx context.Context) {
			defer func() { <-h.slots }()
			defer h.holding(-1)
			stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
			defer stop()
			if err := hold(); err != nil && ctx.Err() == nil {
				h.c.closedByRelay.Add(1)
			}
			_ = conn.Close()
		})
	}
}

func (h *HostileClient) holding(delta int64) {
	n := h.c.held.Add(delta)
	for {
		peak := h.c.heldMax.Load()
		if n <= peak || h.c.heldMax.CompareAndSwap(peak, n) {
			return
		}
	}
}

// dialFailed counts a failed dial, unless the attack is over.
func (h *HostileClient) dialFailed(ctx context.Context, err error) {
	if ctx.Err() == nil && err != nil {
		h.c.errors.Add(1)
	}
}

// dialWebsocket opens a websocket to the relay, its receive buffer set by control if given. A handshake refused
// with an HTTP status is counted by status; other failures as errors.
func (h *HostileClient) dialWebsocket(ctx context.Context, control func(network, address string, c syscall.RawConn) error) (*websocket.Conn, error) {
	d := *h.dialer
	d.Control = control
	ws := websocket.Dialer{NetDialContext: d.DialContext, HandshakeTimeout: hostileTimeout}
	conn, resp, err := ws.DialContext(ctx, "ws://"+h.host, nil)
	if err != nil {
		switch {
		case resp != nil && resp.StatusCode == http.StatusTooManyRequests:
			h.c.tooMany.Add(1)
		case resp != nil:
			h.c.otherStatus.Add(1)
		default:
			h.dialFailed(ctx, err)
		}
		return nil, err
	}
	return conn, nil
}

// ShrinkReceiveBuffer returns a net.Dialer Control function that sets a socket's receive buffer to size bytes before
// it connects: a client that stops reading then backs the server's writes up after a message or two.
func ShrinkReceiveBuffer(size int) func(network, address string, c syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var sockErr error
		err := c.Control(func(fd uintptr) {
			sockErr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, size)
		})
		return errors.Join(err, sockErr)
	}
}

// stuckReceiveBuffer is the receive buffer of a stuck subscriber's socket: the relay's writes to it back up after
// a block or two.
const stuckReceiveBuffer = 2048

// subscribeStuck keeps one subscription that never reads: it subscribes from block 0, reads only the answer to
// the subscription (to count it), holds the connection for StuckHold without reading, then starts over.
func (h *HostileClient) subscribeStuck(ctx context.Context) {
	shrink := ShrinkReceiveBuffer(stuckReceiveBuffer)
	for ctx.Err() == nil {
		if h.holdStuck(ctx, shrink) != nil {
			// Refused or failed: try again soon, but do not spin (the flood workers are the ones that spin).
			select {
			case <-ctx.Done():
			case <-time.After(hostileRetryPause):
			}
		}
	}
}

func (h *HostileClient) holdStuck(ctx context.Context, shrink func(string, string, syscall.RawConn) error) error {
	conn, err := h.dialWebsocket(ctx, shrink)
	if err != nil {
		return err
	}
	defer conn.Close()
	req := `{"jsonrpc":"2.0","id":1,"method":"relay_subscribe","params":["envelopes","0x0"]}`
	_ = conn.SetWriteDeadline(time.Now().Add(hostileTimeout))
	if err := conn.WriteMessage(websocket.TextMessage, []byte(req)); err != nil {
		h.dialFailed(ctx, err)
		return err
	}
	_ = conn.SetReadDeadline(time.Now().Add(hostileTimeout))
	var answer struct {
		Result json.RawMessage `json:"result"`
		Error  json.RawMessage `json:"error"`
	}
	if err := conn.ReadJSON(&answer); err != nil {
		h.dialFailed(ctx, err)
		return err
	}
	if len(answer.Error) > 0 {
		h.c.subscribeRefused.Add(1)
		return fmt.Errorf("subscription refused: %s", answer.Error)
	}
	h.c.subscribed.Add(1)
	// Never read again.
	select {
	case <-ctx.Done():
	case <-time.After(h.cfg.StuckHold):
	}
	return nil
}

// pipeline writes PipelineCalls calls on one websocket after another, never reading an answer.
func (h *HostileClient) pipeline(ctx context.Context) {
	shrink := ShrinkReceiveBuffer(stuckReceiveBuffer)
	calls := [2][]byte{
		fmt.Appendf(nil, `{"jsonrpc":"2.0","id":1,"method":"relay_envelopeByNumber","params":["%s"]}`, hexutil.Uint64(h.head)),
		[]byte(`{"jsonrpc":"2.0","id":2,"method":"eth_chainId","params":[]}`),
	}
	for ctx.Err() == nil {
		conn, err := h.dialWebsocket(ctx, shrink)
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(hostileRetryPause):
			}
			continue
		}
		h.c.pipelineConns.Add(1)
		stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
		for i := range h.cfg.PipelineCalls {
			_ = conn.SetWriteDeadline(time.Now().Add(hostileTimeout))
			if err := conn.WriteMessage(websocket.TextMessage, calls[i%2]); err != nil {
				var netErr net.Error
				switch {
				case ctx.Err() != nil:
				case errors.As(err, &netErr) && netErr.Timeout():
					h.c.pipelineStalls.Add(1)
				default:
					h.c.errors.Add(1) // closed by the relay
				}
				break
			}
			h.c.pipelinedCalls.Add(1)
		}
		stop()
		_ = conn.Close()
	}
}
