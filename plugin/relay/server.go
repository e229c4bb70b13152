package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/log"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/ethereum-optimism/optimism/op-service/httputil"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/api"
)

// The relay serves the sequencer-signed blocks this node holds to downstream nodes, so that they need neither P2P
// nor the sequencer's RPC, and nobody has to trust the relay: every block carries the sequencer's signature.
// It runs on a JSON-RPC listener of its own (HTTP and websocket), where its limits can be enforced:
//
//	relay_subscribe("envelopes", fromNumber)  replays what is held from fromNumber on, then every new block
//	relay_envelopeByNumber(number)            the block held at a height (the latest arrived), or null (for gaps)
//	relay_envelopesByRange(from, count)       the blocks held at consecutive heights from a height (a catch-up's
//	                                          fetches: one call, and one token of the client's rate, per range)
//	relay_head()                              the highest height held

// relayMaxBatch bounds the calls in one JSON-RPC batch (a follower sends single calls); the batch's response is
// bounded by the message size limit.
const relayMaxBatch = 16

// MaxRange bounds the blocks of one relay_envelopesByRange answer; the answer is also bounded by the message size
// limit. 64 is the replicator's deepest read-ahead (plugin/prefetch.go, catchUpDepth).
const MaxRange = 64

type Server struct {
	log     log.Logger
	cfg     driverhook.RelayConfig
	store   *Store
	metrics Metricer

	rpc      *rpc.Server
	http     *http.Server
	listener net.Listener
	clients  *clientLimiter
	calls    *wsCallLimits

	ctx    context.Context // ends subscriptions at Stop
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	total int
	perIP map[string]int
}

func NewServer(lgr log.Logger, cfg driverhook.RelayConfig, store *Store, m Metricer) (*Server, error) {
	ctx, cancel := context.WithCancel(context.Background())
	clients := newClientLimiter(cfg.MaxConnsPerClient, cfg.MaxConns, cfg.RateLimit, m)
	r := &Server{log: lgr, cfg: cfg, store: store, metrics: m, rpc: rpc.NewServer(), ctx: ctx, cancel: cancel,
		perIP: make(map[string]int), clients: clients, calls: newWSCallLimits(relayMaxBatch, clients, m)}
	if err := r.rpc.RegisterName(api.RelayNamespace, &relayAPI{r: r}); err != nil {
		cancel()
		return nil, err
	}
	r.rpc.SetHTTPBodyLimit(wsReadLimit) // requests are small; responses are bounded by MaxMessageSize
	r.rpc.SetBatchLimits(relayMaxBatch, cfg.MaxMessageSize)
	return r, nil
}

// Start listens on the configured address (ctx bounds the listen; the listener serves until Stop).
func (r *Server) Start(ctx context.Context) error {
	ws := websocketHandler(r.rpc, r.log, wsDefaultKeepAlive, r.calls)
	handler := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.EqualFold(req.Header.Get("Upgrade"), "websocket") {
			ws.ServeHTTP(w, req)
			return
		}
		r.rpc.ServeHTTP(w, req)
	})
	// Not httputil.StartHTTPServer: the per-client connection limit needs the listener (clientLimiter.listener).
	ln, err := new(net.ListenConfig).Listen(ctx, "tcp", net.JoinHostPort(r.cfg.Addr, strconv.Itoa(r.cfg.Port)))
	if err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	r.listener = r.clients.listener(ln)
	timeouts := httputil.DefaultTimeouts
	r.http = &http.Server{
		Handler:           r.clients.wrap(handler),
		ReadTimeout:       timeouts.ReadTimeout,
		ReadHeaderTimeout: timeouts.ReadHeaderTimeout,
		WriteTimeout:      timeouts.WriteTimeout,
		IdleTimeout:       timeouts.IdleTimeout,
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		if err := r.http.Serve(r.listener); !errors.Is(err, http.ErrServerClosed) {
			r.log.Error("Relay listener failed", "err", err)
		}
	}()
	r.log.Info("Relay serving signed blocks", "addr", ln.Addr())
	return nil
}

// Addr is the listening address (after Start).
func (r *Server) Addr() net.Addr { return r.listener.Addr() }

// Stop ends every subscription and closes the listener: gracefully, or, once ctx ends, at once.
func (r *Server) Stop(ctx context.Context) error {
	r.cancel()
	var err error
	if r.http != nil {
		if err = r.http.Shutdown(ctx); err != nil && ctx.Err() != nil {
			err = r.http.Close()
		}
	}
	r.rpc.Stop()
	r.wg.Wait()
	return err
}

// subscriberReserveShare is the share of the relay's subscription slots kept for addresses that hold none (1/4): an
// address's second and later subscriptions are admitted only while more than MaxSubscribers/subscriberReserveShare
// slots are free. A few addresses then cannot take every slot: filling the relay takes
// (MaxSubscribers-reserve)/MaxSubscribersPerIP addresses and then reserve more, one subscription each, not
// MaxSubscribers/MaxSubscribersPerIP. A quarter keeps 16 of the default 64 slots for followers arriving meanwhile,
// and still admits a second subscription from one address (two nodes behind one address) until the relay is three
// quarters full. A per-address limit as high as the total keeps nothing: one address may take every slot (all
// clients of a relay behind a reverse proxy are the proxy's address).
const subscriberReserveShare = 4

// subscriberReserve is how many slots acquire keeps for addresses that hold none.
func (r *Server) subscriberReserve() int {
	if r.cfg.MaxSubscribersPerIP >= r.cfg.MaxSubscribers {
		return 0
	}
	return r.cfg.MaxSubscribers / subscriberReserveShare
}

func (r *Server) acquire(ip string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.total >= r.cfg.MaxSubscribers {
		r.metrics.RecordRelayRefused(RefusedMaxSubscribers)
		return fmt.Errorf("%w (limit %d)", ErrRelayFull, r.cfg.MaxSubscribers)
	}
	held := r.perIP[ip]
	if held >= r.cfg.MaxSubscribersPerIP {
		r.metrics.RecordRelayRefused(RefusedMaxSubscribersPerIP)
		return fmt.Errorf("%w (limit %d)", ErrRelayFullForIP, r.cfg.MaxSubscribersPerIP)
	}
	if reserve := r.subscriberReserve(); held > 0 && r.total >= r.cfg.MaxSubscribers-reserve {
		r.metrics.RecordRelayRefused(RefusedMaxSubscribersPerIP)
		return fmt.Errorf("%w (it holds %d; the relay's last %d slots are kept for addresses holding none)",
			ErrRelayFullForIP, held, reserve)
	}
	r.total++
	r.perIP[ip]++
	r.metrics.RecordRelaySubscribers(r.total)
	return nil
}

func (r *Server) release(ip string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.total--
	if r.perIP[ip]--; r.perIP[ip] <= 0 {
		delete(r.perIP, ip)
	}
	r.metrics.RecordRelaySubscribers(r.total)
}

// relaySubscriber is one subscription: a bounded queue between the store and the connection.
type relaySubscriber struct {
	queue    chan *Held
	overflow chan struct{} // closed when the queue was full
	once     sync.Once
}

func (s *relaySubscriber) Offer(h *Held) {
	select {
	case s.queue <- h:
	default:
		s.once.Do(func() { close(s.overflow) })
	}
}

// serve sends a subscription its replay, then what arrives, until the subscriber leaves, falls a whole send queue
// behind (then it is dropped: memory stays bounded by the queue), or the relay stops.
func (r *Server) serve(notifier *rpc.Notifier, sub *rpc.Subscription, ip string, sink *relaySubscriber, replay []*Held) {
	defer r.wg.Done()
	defer r.release(ip)
	defer r.store.Unsubscribe(sink)
	lgr := r.log.New("subscriber", ip, "subscription", sub.ID)
	// send writes a block to the subscriber; a live one (queued as it arrived, not the subscription's replay) counts
	// its time at this relay (RecordRelayForward).
	send := func(h *Held, live bool) error {
		msg, err := h.JSON()
		if errors.Is(err, ErrNotHeld) { // spilled, and unreadable or evicted since: not held, as a gap
			lgr.Debug("Not relaying a block no longer held", "block", h.ID(), "err", err)
			return nil
		} else if err != nil {
			return err
		}
		if len(msg) > r.cfg.MaxMessageSize {
			r.metrics.RecordRelayOversized()
			lgr.Warn("Not relaying block above the message size limit", "block", h.ID(), "size", len(msg), "limit", r.cfg.MaxMessageSize)
			return nil
		}
		result, err := h.result()
		if errors.Is(err, ErrNotHeld) {
			lgr.Debug("Not relaying a block no longer held", "block", h.ID(), "err", err)
			return nil
		} else if err != nil {
			return err
		}
		if err := notifier.Notify(sub.ID, result); err != nil {
			return err
		}
		if live { // Arrived is on op-node's clock, the system's (monotonic: never negative)
			r.metrics.RecordRelayForward(time.Since(h.Arrived))
		}
		return nil
	}
	// overflowed reports (and drops the subscriber) once a block could not be queued for it. It is checked before
	// every send: what is still queued comes after the block it missed, and a select that also has a ready queue
	// would only notice the overflow by chance, sending on (into a full connection, until the write timeout).
	overflowed := func() bool {
		select {
		case <-sink.overflow:
			r.metrics.RecordRelayDropped()
			lgr.Warn("Dropping slow relay subscriber: send queue full", "queue", r.cfg.SendQueue)
			return true
		default:
			return false
		}
	}
	for _, h := range replay {
		if overflowed() {
			return
		}
		if err := send(h, false); err != nil {
			lgr.Debug("Relay subscriber gone", "err", err)
			return
		}
	}
	for {
		if overflowed() {
			return
		}
		select {
		case h := <-sink.queue:
			if err := send(h, true); err != nil {
				lgr.Debug("Relay subscriber gone", "err", err)
				return
			}
		case <-sink.overflow:
			// checked again at the top of the loop
		case <-sub.Err():
			return
		case <-r.ctx.Done():
			return
		}
	}
}

// relayAPI is the relay namespace (api.MethodRelay*).
type relayAPI struct{ r *Server }

// Envelopes subscribes to the held sequencer-signed blocks from a height on: those already held (the latest
// arrived at each height), in order, then every new one as it arrives.
func (a *relayAPI) Envelopes(ctx context.Context, from hexutil.Uint64) (*rpc.Subscription, error) {
	notifier, ok := rpc.NotifierFromContext(ctx)
	if !ok {
		return nil, rpc.ErrNotificationsUnsupported
	}
	ip := clientKey(rpc.PeerInfoFromContext(ctx).RemoteAddr)
	if err := a.r.acquire(ip); err != nil {
		return nil, err
	}
	sink := &relaySubscriber{queue: make(chan *Held, a.r.cfg.SendQueue), overflow: make(chan struct{})}
	replay := a.r.store.Subscribe(uint64(from), sink)
	sub := notifier.CreateSubscription()
	a.r.wg.Add(1)
	go a.r.serve(notifier, sub, ip, sink, replay)
	return sub, nil
}

// EnvelopeByNumber returns the signed block that arrived last at a height (the sequencer's current one, after an
// unsafe reorg), or null. A block above the message size limit is refused, as it is not relayed to subscribers.
// The answer is the block's JSON encoded once for every subscriber and every call (Held.JSON), which is what
// encoding the block itself gives, byte for byte: go-ethereum only checks and copies it.
func (a *relayAPI) EnvelopeByNumber(number hexutil.Uint64) (json.RawMessage, error) {
	held := a.r.store.Latest(uint64(number))
	if held == nil {
		return nil, nil
	}
	msg, err := held.JSON()
	if errors.Is(err, ErrNotHeld) { // spilled, and unreadable or evicted since: not held
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	if len(msg) > a.r.cfg.MaxMessageSize {
		a.r.metrics.RecordRelayOversized()
		return nil, fmt.Errorf("%w: block %d is %d bytes, the limit is %d", ErrRelayTooLarge, number, len(msg), a.r.cfg.MaxMessageSize)
	}
	return msg, nil
}

// EnvelopesByRange returns the signed blocks held at consecutive heights from a height on (the latest arrived at
// each), at most count and MaxRange of them: it ends before the first height not held, and before the block that
// would take the answer above the message size limit. An empty answer: nothing held at from. A first block above
// the limit is refused, as by EnvelopeByNumber.
//
// It is how a follower far behind fetches the blocks below what its subscription replays (relay.Client): one call
// takes one token of the client's rate (wsCallLimits), as a by-number call does, and its answer is bounded by the
// same message size as one block's, so the rate bounds what a client can ask of the relay as before, while a
// catch-up through an hour-deep backlog is no longer paced by it (docs/benchmarks.md, backlog depth).
func (a *relayAPI) EnvelopesByRange(from, count hexutil.Uint64) ([]json.RawMessage, error) {
	n := min(uint64(count), MaxRange)
	answer := make([]json.RawMessage, 0, n)
	size := 2 // the brackets
	for i := uint64(0); i < n; i++ {
		height := uint64(from) + i
		if height < uint64(from) { // wrapped
			break
		}
		held := a.r.store.Latest(height)
		if held == nil {
			break
		}
		msg, err := held.JSON()
		if errors.Is(err, ErrNotHeld) { // spilled, and unreadable or evicted since: not held
			break
		} else if err != nil {
			return nil, err
		}
		if size+len(msg)+1 > a.r.cfg.MaxMessageSize {
			if len(answer) > 0 {
				break
			}
			a.r.metrics.RecordRelayOversized()
			return nil, fmt.Errorf("%w: block %d is %d bytes, the limit is %d", ErrRelayTooLarge, height, len(msg), a.r.cfg.MaxMessageSize)
		}
		size += len(msg) + 1
		answer = append(answer, msg)
	}
	return answer, nil
}

// Head returns the highest height held (0 if none).
func (a *relayAPI) Head() hexutil.Uint64 { return hexutil.Uint64(a.r.store.Head()) }

// clientKey names the client a connection comes from, for per-client limits: its IPv4 address, or the /64 of its
// IPv6 address (one host commonly holds a whole /64). Behind a reverse proxy every client is the proxy.
func clientKey(addr string) string {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	ip = ip.Unmap()
	if ip.Is4() {
		return ip.String()
	}
	return netip.PrefixFrom(ip, 64).Masked().String()
}
