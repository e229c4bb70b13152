package plugin

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/gorilla/websocket"
)

// wsIdleKept is how long a websocket connection to a source is kept unused for the next fetch. go-ethereum's server
// pings a connection it has not written to for 30 s and drops it when no pong comes within 30 s more; a connection
// waiting in the pool reads nothing, so answers no ping: it is closed before that.
const wsIdleKept = 20 * time.Second

// rawBlockWS is a rawBlockFetcher for a ws(s) source, on websocket connections of its own, one request at a time on
// each: the source's newHeads subscription and every other request stay on go-ethereum's client. Connections are
// dialled as go-ethereum's client dials (the URL's user info as basic authentication), kept for the next fetch while
// idle for less than wsIdleKept, up to maxInFlight of them, and closed after any failure other than a JSON-RPC error
// answer. A kept connection that fails before an answer is followed by another, or a new one: the source may have
// closed it.
type rawBlockWS struct {
	url    string
	header http.Header
	dialer websocket.Dialer

	nextID atomic.Uint64
	mu     sync.Mutex
	idle   []idleWS // most recently used last
	closed bool
}

type idleWS struct {
	conn  *websocket.Conn
	since time.Time
}

func newRawBlockWS(rawURL string) (*rawBlockWS, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	header := make(http.Header)
	if u.User != nil {
		header.Set("authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(u.User.String())))
		u.User = nil
	}
	return &rawBlockWS{url: u.String(), header: header, dialer: websocket.Dialer{
		ReadBufferSize: 1024, WriteBufferSize: 1024, Proxy: http.ProxyFromEnvironment}}, nil
}

func (w *rawBlockWS) getRawBlock(ctx context.Context, num uint64) (hexutil.Bytes, error) {
	for {
		conn, reused, err := w.take(ctx)
		if err != nil {
			return nil, err
		}
		raw, answered, err := w.call(ctx, conn, num)
		var rpcErr *rpcError
		if answered && (err == nil || errors.As(err, &rpcErr)) {
			w.put(conn)
			return raw, err
		}
		_ = conn.Close()
		if answered || !reused || ctx.Err() != nil {
			return nil, err
		}
		// A kept connection that failed before an answer: the source may have closed it while it was kept. The
		// next kept one is tried, or a new one.
	}
}

// call asks for the block at num on conn; answered says whether an answer arrived.
func (w *rawBlockWS) call(ctx context.Context, conn *websocket.Conn, num uint64) (hexutil.Bytes, bool, error) {
	deadline, _ := ctx.Deadline() // none: the zero time, no deadline
	_ = conn.SetWriteDeadline(deadline)
	_ = conn.SetReadDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Now()) })
	defer stop()
	id := strconv.FormatUint(w.nextID.Add(1), 10)
	if err := conn.WriteMessage(websocket.TextMessage, rawBlockRequest(id, num)); err != nil {
		return nil, false, err
	}
	_, r, err := conn.NextReader()
	if err != nil {
		return nil, false, err
	}
	buf := responseBuffers.Get().(*bytes.Buffer)
	defer responseBuffers.Put(buf)
	buf.Reset()
	if _, err := buf.ReadFrom(r); err != nil {
		if errors.Is(err, websocket.ErrReadLimit) {
			err = errResponseTooLarge
		}
		return nil, true, err
	}
	raw, err := hexResult(buf.Bytes(), id)
	return raw, true, err
}

// take returns a kept connection, or dials one; reused says which.
func (w *rawBlockWS) take(ctx context.Context) (*websocket.Conn, bool, error) {
	w.mu.Lock()
	for len(w.idle) > 0 {
		last := w.idle[len(w.idle)-1]
		w.idle = w.idle[:len(w.idle)-1]
		if time.Since(last.since) < wsIdleKept {
			w.mu.Unlock()
			return last.conn, true, nil
		}
		_ = last.conn.Close()
	}
	w.mu.Unlock()
	conn, resp, err := w.dialer.DialContext(ctx, w.url, w.header)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		return nil, false, err
	}
	conn.SetReadLimit(maxSourceResponse)
	return conn, false, nil
}

func (w *rawBlockWS) put(conn *websocket.Conn) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || len(w.idle) >= maxInFlight {
		_ = conn.Close()
		return
	}
	w.idle = append(w.idle, idleWS{conn: conn, since: time.Now()})
}

// Close closes the kept connections; one in use is closed when its fetch ends.
func (w *rawBlockWS) Close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	for _, c := range w.idle {
		_ = c.conn.Close()
	}
	w.idle = nil
}
