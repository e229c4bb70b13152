package source

import (
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/gorilla/websocket"

	"github.com/op-replicator/op-replicator/plugin/internal/wsdial"
)

// wsIdleKept is how long a websocket connection to a source is kept unused for the next fetch. go-ethereum's server
// pings a connection it has not written to for 30 s and drops it when no pong comes within 30 s more; a connection
// waiting in the pool reads nothing, so answers no ping: it is closed before that.
const wsIdleKept = 20 * time.Second

// rawBlockWS is a rawBlockFetcher for a ws(s) source, on websocket connections of its own, one request at a time on
// each: the source's newHeads subscription and every other request stay on go-ethereum's client. Connections are
// dialled as go-ethereum's client dials (the URL's user info as basic authentication), kept for the next fetch while
// idle for less than wsIdleKept (closed then), up to MaxInFlight of them, and closed after any failure other than a
// JSON-RPC error answer. A kept connection that fails before an answer is followed by another, or a new one: the source may have
// closed it.
type rawBlockWS struct {
	dialer   *wsdial.Dialer // refusing a message above maxSourceResponse
	idleKept time.Duration  // wsIdleKept

	nextID  atomic.Uint64
	mu      sync.Mutex
	idle    []idleWS    // oldest first
	sweeper *time.Timer // closes what is kept for wsIdleKept (nil: nothing kept)
	closed  bool
}

type idleWS struct {
	conn  *websocket.Conn
	since time.Time
}

func newRawBlockWS(rawURL string) (*rawBlockWS, error) {
	d, err := wsdial.New(rawURL, maxSourceResponse)
	if err != nil {
		return nil, err
	}
	return &rawBlockWS{dialer: d, idleKept: wsIdleKept}, nil
}

func (w *rawBlockWS) getRawBlock(ctx context.Context, num uint64) (hexutil.Bytes, error) {
	for {
		conn, reused, err := w.take(ctx)
		if err != nil {
			return nil, err
		}
		raw, answered, reusable, err := w.call(ctx, conn, num)
		var rpcErr *rpcError
		if reusable && (err == nil || errors.As(err, &rpcErr)) {
			w.put(conn)
			return raw, err
		}
		_ = conn.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if answered || !reused {
			return nil, err
		}
		// A kept connection that failed before an answer: the source may have closed it while it was kept. The
		// next kept one is tried, or a new one.
	}
}

// call asks for the block at num on conn. answered says whether an answer arrived; reusable, whether conn can take
// another request (it answered, and no deadline of this call's context is left to hit the next).
func (w *rawBlockWS) call(ctx context.Context, conn *websocket.Conn, num uint64) (raw hexutil.Bytes, answered, reusable bool, err error) {
	deadline, _ := ctx.Deadline() // none: the zero time, no deadline
	_ = conn.SetWriteDeadline(deadline)
	_ = conn.SetReadDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Now()) })
	defer func() {
		// Whatever the return says: stop is false once ctx's callback ran or runs, which would cut another
		// request's read on conn short.
		reusable = stop() && answered
	}()
	id := strconv.FormatUint(w.nextID.Add(1), 10)
	if err := conn.WriteMessage(websocket.TextMessage, rawBlockRequest(id, num)); err != nil {
		return nil, false, false, err
	}
	_, r, err := conn.NextReader()
	if errors.Is(err, websocket.ErrReadLimit) {
		// gorilla refuses a message above the read limit at its first frame, which is most often all of it.
		return nil, true, false, errResponseTooLarge
	} else if err != nil {
		return nil, false, false, err
	}
	buf := getResponseBuffer()
	defer putResponseBuffer(buf)
	if _, err := buf.ReadFrom(r); err != nil {
		if errors.Is(err, websocket.ErrReadLimit) {
			err = errResponseTooLarge
		}
		return nil, true, false, err
	}
	raw, err = hexResult(buf.Bytes(), id)
	return raw, true, false, err
}

// take returns a kept connection, or dials one; reused says which.
func (w *rawBlockWS) take(ctx context.Context) (*websocket.Conn, bool, error) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil, false, net.ErrClosed
	}
	w.sweepLocked()
	if n := len(w.idle); n > 0 {
		conn := w.idle[n-1].conn
		w.idle = w.idle[:n-1]
		w.mu.Unlock()
		return conn, true, nil
	}
	w.mu.Unlock()
	conn, err := w.dialer.Dial(ctx)
	return conn, false, err
}

func (w *rawBlockWS) put(conn *websocket.Conn) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || len(w.idle) >= MaxInFlight {
		_ = conn.Close()
		return
	}
	w.idle = append(w.idle, idleWS{conn: conn, since: time.Now()})
	if w.sweeper == nil {
		w.sweeper = time.AfterFunc(w.idleKept, w.sweep)
	}
}

// sweep closes the connections kept for idleKept, and comes back while any are kept.
func (w *rawBlockWS) sweep() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sweeper = nil
	w.sweepLocked()
	if len(w.idle) > 0 && !w.closed {
		w.sweeper = time.AfterFunc(w.idleKept-time.Since(w.idle[0].since), w.sweep)
	}
}

func (w *rawBlockWS) sweepLocked() {
	expired := 0
	for expired < len(w.idle) && time.Since(w.idle[expired].since) >= w.idleKept {
		_ = w.idle[expired].conn.Close()
		expired++
	}
	w.idle = slices.Delete(w.idle, 0, expired)
}

// Close closes the kept connections; one in use is closed when its fetch ends.
func (w *rawBlockWS) Close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	if w.sweeper != nil {
		w.sweeper.Stop()
		w.sweeper = nil
	}
	for _, c := range w.idle {
		_ = c.conn.Close()
	}
	w.idle = nil
}
