package relay

import (
	"net"
	"net/http"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"
)

// clientLimiterEntries bounds how many clients' request rates are remembered (the least recent are forgotten).
const clientLimiterEntries = 8192

// clientLimiter applies the relay's connection limits to its listener: open TCP connections, counted from accept to
// close whatever they carry (idle, waiting for a request, a request in progress, a websocket), per clientKey (an
// IPv4 address or an IPv6 /64) and from all clients together, and a rate of HTTP requests and websocket connections
// per client. The total bounds what many clients (many /64s are cheap) can take of the node's file descriptors
// together. The same rate meters the calls inside the client's websockets (wsCallLimits, which also bounds the calls
// in flight on each connection).
type clientLimiter struct {
	maxConns      int // per client
	maxTotalConns int
	rate          rate.Limit
	burst         int
	metrics       Metricer

	mu    sync.Mutex
	conns map[string]int
	total int
	rates *lru.Cache[string, *rate.Limiter]
}

func newClientLimiter(maxConns, maxTotalConns int, perSecond float64, m Metricer) *clientLimiter {
	rates, _ := lru.New[string, *rate.Limiter](clientLimiterEntries) // only fails for a non-positive size
	return &clientLimiter{maxConns: maxConns, maxTotalConns: maxTotalConns, rate: rate.Limit(perSecond),
		burst: max(1, int(perSecond)), metrics: m, conns: make(map[string]int), rates: rates}
}

// limiter is the client's token bucket.
func (l *clientLimiter) limiter(client string) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.rates.Get(client)
	if !ok {
		lim = rate.NewLimiter(l.rate, l.burst)
		l.rates.Add(client, lim)
	}
	return lim
}

// allow takes a token of the client's request rate, or reports that it has none left.
func (l *clientLimiter) allow(client string) bool { return l.limiter(client).Allow() }

// reserve takes n tokens of the client's rate, for n calls that wait for them rather than being refused, and
// returns how long until they are the client's. Tokens beyond the burst are reserved a burst at a time: a batch
// counts as its number of calls, however many.
func (l *clientLimiter) reserve(client string, n int) time.Duration {
	lim, now := l.limiter(client), time.Now()
	var delay time.Duration
	for n > 0 {
		take := min(n, l.burst)
		delay = max(delay, lim.ReserveN(now, take).DelayFrom(now)) // always granted: take is within the burst
		n -= take
	}
	return delay
}

// open takes a connection slot of the client's and one of the relay's, or names the limit that has none left
// (RefusedConns or RefusedMaxConns).
func (l *clientLimiter) open(client string) (release func(), refused string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conns[client] >= l.maxConns {
		return nil, RefusedConns
	}
	if l.total >= l.maxTotalConns {
		return nil, RefusedMaxConns
	}
	l.conns[client]++
	l.total++
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.total--
		if l.conns[client]--; l.conns[client] <= 0 {
			delete(l.conns, client)
		}
	}, ""
}

// wrap refuses a client beyond its request rate with HTTP 429 before next sees the request.
func (l *clientLimiter) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !l.allow(clientKey(req.RemoteAddr)) {
			l.metrics.RecordRelayRefused(RefusedRateLimit)
			http.Error(w, "relay: too many requests from this client ("+RefusedRateLimit+")", http.StatusTooManyRequests)
			return
		}
		next.ServeHTTP(w, req)
	})
}

// listener closes, as soon as it has accepted it, a connection from a client that has all its connection slots
// open already, or while the relay has all of its own open. The limits have to hold at the socket, not per request:
// a connection that never sends a request holds a file descriptor and a goroutine until the server's read-header
// timeout, and a client opening them as fast as it can would otherwise exhaust the node's file descriptors within
// that timeout.
func (l *clientLimiter) listener(inner net.Listener) net.Listener {
	return &limitedListener{Listener: inner, limiter: l}
}

type limitedListener struct {
	net.Listener
	limiter *clientLimiter
}

func (ln *limitedListener) Accept() (net.Conn, error) {
	for {
		conn, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		release, refused := ln.limiter.open(clientKey(conn.RemoteAddr().String()))
		if refused == "" {
			return &limitedConn{Conn: conn, release: release}, nil
		}
		ln.limiter.metrics.RecordRelayRefused(refused)
		_ = conn.Close()
	}
}

// limitedConn frees its client's slot when it is closed: by the HTTP server, or, for a websocket (hijacked from the
// server), by the websocket connection.
type limitedConn struct {
	net.Conn
	release func()
	once    sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
