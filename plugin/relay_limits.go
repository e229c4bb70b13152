package plugin

import (
	"net/http"
	"sync"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"
)

// clientLimiterEntries bounds how many clients' request rates are remembered (the least recent are forgotten).
const clientLimiterEntries = 8192

// Reasons a client's request is refused, the label values of relay_refused_total beside the subscriber limits.
const (
	refusedRateLimit = "rate-limit"
	refusedConns     = "max-conns-per-client"
)

// clientLimiter applies per-client limits in front of the relay's JSON-RPC handler, per clientKey (an IPv4 address
// or an IPv6 /64): open connections (HTTP requests in progress, and websocket connections, which last as long as
// the handler does) and a rate of HTTP requests and websocket connections. Calls inside one websocket are bounded
// by the batch and message size limits and, for subscriptions, by the send queue.
type clientLimiter struct {
	maxConns int
	rate     rate.Limit
	burst    int
	metrics  Metrics

	mu    sync.Mutex
	conns map[string]int
	rates *lru.Cache[string, *rate.Limiter]
}

func newClientLimiter(maxConns int, perSecond float64, m Metrics) *clientLimiter {
	rates, _ := lru.New[string, *rate.Limiter](clientLimiterEntries) // only fails for a non-positive size
	return &clientLimiter{maxConns: maxConns, rate: rate.Limit(perSecond), burst: max(1, int(perSecond)), metrics: m,
		conns: make(map[string]int), rates: rates}
}

// admit takes a connection slot and a token for the client, or says why not.
func (l *clientLimiter) admit(client string) (release func(), refused string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.rates.Get(client)
	if !ok {
		lim = rate.NewLimiter(l.rate, l.burst)
		l.rates.Add(client, lim)
	}
	if !lim.Allow() {
		return nil, refusedRateLimit
	}
	if l.conns[client] >= l.maxConns {
		return nil, refusedConns
	}
	l.conns[client]++
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.conns[client]--; l.conns[client] <= 0 {
			delete(l.conns, client)
		}
	}, ""
}

// wrap refuses a client beyond its limits with HTTP 429 before next sees the request.
func (l *clientLimiter) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		release, refused := l.admit(clientKey(req.RemoteAddr))
		if release == nil {
			l.metrics.RecordRelayRefused(refused)
			http.Error(w, "relay: too many requests from this client ("+refused+")", http.StatusTooManyRequests)
			return
		}
		defer release()
		next.ServeHTTP(w, req)
	})
}
