package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/log"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/ethereum-optimism/optimism/op-node/rollup"
	"github.com/ethereum-optimism/optimism/op-service/client"
	"github.com/ethereum-optimism/optimism/op-service/clock"
	"github.com/ethereum-optimism/optimism/op-service/eth"
	"github.com/ethereum-optimism/optimism/op-service/retry"
	"github.com/ethereum-optimism/optimism/op-service/sources"

	"github.com/op-replicator/op-replicator/driverhook"
)

// maxSourceResponse bounds one response of an http(s) source, as go-ethereum's websocket client bounds a message:
// a source (or a man in the middle on plain http) cannot stream an endless body into op-node's memory.
const maxSourceResponse = 32 << 20

// errResponseTooLarge: an http(s) source answered with a body above maxSourceResponse.
var errResponseTooLarge = fmt.Errorf("%w: response above %d bytes", errBadInput, maxSourceResponse)

// limitedTransport cuts every response body at limit bytes: reading past it fails with errResponseTooLarge.
type limitedTransport struct {
	next  http.RoundTripper
	limit int64
}

func (t limitedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body = &limitedBody{ReadCloser: resp.Body, left: t.limit}
	return resp, nil
}

// sourceTransport is http.DefaultTransport keeping as many idle connections to the source as a prefetcher has
// requests in flight (the default keeps 2), so that catching up does not open and close connections per block, and
// not asking for gzip: go-ethereum's http server compresses every answer a client accepts gzip for, which costs
// the source (the sequencer's op-geth, most often) and this node CPU per block and per poll, for a block of a few
// tens of KB: what a source is for is sparing the sequencer's own work.
func sourceTransport() http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = maxInFlight
	t.DisableCompression = true
	return t
}

type limitedBody struct {
	io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// One byte more tells a body of exactly the limit from a longer one.
		var one [1]byte
		if n, err := b.ReadCloser.Read(one[:]); n > 0 {
			return 0, errResponseTooLarge
		} else if err != nil {
			return 0, err
		}
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	return n, err
}

// rpcSource reads the sequencer's execution-engine RPC. A block is fetched as RLP (debug_getRawBlock) and made a
// payload with op-service's conversion; a source that does not serve debug_getRawBlock is read with op-service's L2
// client (eth_getBlockByNumber) instead. Either way trust is off: block hashes and transaction roots are
// recomputed. The state root can only be checked by executing the block locally.
type rpcSource struct {
	log  log.Logger
	name string
	rpc  client.RPC
	// rawFetch asks an http(s) or ws(s) source for blocks with debug_getRawBlock (nil: rpc does).
	rawFetch rawBlockFetcher
	l2       *sources.L2Client
	forks    eth.HardforkConfig // the rollup config: which withdrawals fields a block's payload has
	timeout  time.Duration
	metrics  Metricer
	// jsonSince is when the source last answered that it does not serve debug_getRawBlock (the clock's Unix
	// nanoseconds; 0 while it serves it): its blocks are fetched with eth_getBlockByNumber, and debug_getRawBlock is
	// asked again once rawRetry has passed. rawServed is set by the first block it served with debug_getRawBlock.
	// Each change is logged once.
	jsonSince atomic.Int64
	rawServed atomic.Bool

	clock clock.Clock

	heads     chan struct{}
	subscribe bool // a ws source: its newHeads tell when to ask
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	// notified is the head the newHeads subscription (over http, the poller) last announced. Head uses it for up to
	// one block time instead of asking: the source already told us, and a silent subscription is polled again.
	notified  atomic.Pointer[notifiedHead]
	blockTime time.Duration
	// pollInterval bounds the wait between polls of an http source's head (pollHeads).
	pollInterval time.Duration
	// early is the fetch of the block the subscription (or the http poller) last announced, started when the
	// announcement arrived, for the loop's next Payload call (nil once taken; what is older than a block time, or
	// not the announced block, is not used). At the head this takes the round trip off the loop's path: the loop
	// wakes, reads op-node's status and starts its round while the block is on its way. A new one starts only once
	// the last one was taken (or another block was announced at or below its height: a reorg), so a loop that is
	// not asking (halted, or catching up below the head) costs the source one fetch at most.
	early atomic.Pointer[earlyFetch]
}

// earlyFetch is a fetch of the announced block id, started at at; done is closed when env and err are set.
type earlyFetch struct {
	id   eth.BlockID
	at   time.Time
	done chan struct{}
	env  *eth.ExecutionPayloadEnvelope
	err  error
}

type notifiedHead struct {
	id eth.BlockID
	at time.Time
}

var _ Source = (*rpcSource)(nil)

func newRPCSource(lgr log.Logger, rawURL string, cfg *rollup.Config, timeout, pollInterval time.Duration, m Metricer, clk clock.Clock) (*rpcSource, error) {
	name := redactURL(rawURL)
	// Lazy dial: a source that is down at start-up is retried like one that goes down later.
	opts := []client.RPCOption{client.WithLazyDial(), client.WithCallTimeout(timeout)}
	var rawFetch rawBlockFetcher
	u, _ := url.Parse(rawURL)
	switch {
	case u != nil && (u.Scheme == "http" || u.Scheme == "https"):
		httpClient := &http.Client{Transport: limitedTransport{next: sourceTransport(), limit: maxSourceResponse}}
		opts = append(opts, client.WithGethRPCOptions(rpc.WithHTTPClient(httpClient)))
		rawFetch = &rawBlockHTTP{client: httpClient, url: rawURL}
	case u != nil && (u.Scheme == "ws" || u.Scheme == "wss"):
		ws, err := newRawBlockWS(rawURL)
		if err != nil {
			return nil, fmt.Errorf("source %s: %w", name, err)
		}
		rawFetch = ws
	}
	rpcClient, err := client.NewRPC(context.Background(), lgr, rawURL, opts...)
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", name, err)
	}
	l2, err := sources.NewL2Client(rpcClient, lgr, nil, sourceClientConfig(cfg))
	if err != nil {
		rpcClient.Close()
		return nil, fmt.Errorf("source %s: %w", name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if pollInterval <= 0 {
		pollInterval = driverhook.DefaultPollInterval
	}
	return &rpcSource{log: lgr, name: name, rpc: rpcClient, rawFetch: rawFetch, l2: l2, forks: cfg, timeout: timeout, metrics: m, clock: clk,
		heads: make(chan struct{}, 1), ctx: ctx, cancel: cancel, blockTime: time.Duration(cfg.BlockTime) * time.Second,
		pollInterval: pollInterval,
		subscribe:    u != nil && (u.Scheme == "ws" || u.Scheme == "wss")}, nil
}

// Start subscribes to the source's newHeads (ws and wss), or polls its head around when each block is due (http
// and https: pollHeads), in the background.
func (s *rpcSource) Start() {
	s.wg.Add(1)
	if s.subscribe {
		go s.subscribeHeads(s.ctx)
	} else {
		go s.pollHeads(s.ctx, s.pollInterval)
	}
}

// sourceClientConfig is how a source's op-geth is read: trust off, so that op-service recomputes every block hash
// and transactions root.
func sourceClientConfig(cfg *rollup.Config) *sources.L2ClientConfig {
	return sources.L2ClientSimpleConfig(cfg, false, 64, 64)
}

func (s *rpcSource) Name() string { return s.name }

func (s *rpcSource) NewHeads() <-chan struct{} { return s.heads }

// ForgetHead drops the head last announced: the next Head asks the source (headForgetter).
func (s *rpcSource) ForgetHead() { s.notified.Store(nil) }

func (s *rpcSource) Head(ctx context.Context) (eth.BlockID, error) {
	if n := s.notified.Load(); n != nil && s.clock.Since(n.at) < s.blockTime {
		return n.id, nil
	}
	ctx, done := s.call(ctx, "head")
	defer done()
	info, err := s.l2.InfoByLabel(ctx, eth.Unsafe)
	if err != nil {
		return eth.BlockID{}, err
	}
	return eth.ToBlockID(info), nil
}

func (s *rpcSource) Payload(ctx context.Context, num uint64) (*eth.ExecutionPayloadEnvelope, error) {
	if env, err, ok := s.takeEarly(ctx, num); ok {
		return env, err
	}
	return s.payload(ctx, num)
}

// takeEarly returns the outcome of the early fetch of the block at num (waiting for it, up to ctx), if there is one
// to use: of the head the source last announced, started within the last block time, and not a block other than
// the one announced. One that found no
// block (the announcement's race with the block's storage) is not used: the block is asked for again.
func (s *rpcSource) takeEarly(ctx context.Context, num uint64) (*eth.ExecutionPayloadEnvelope, error, bool) {
	f := s.early.Load()
	if f == nil || f.id.Number > num { // none, or a block the loop gets to later
		return nil, nil, false
	}
	// Only the source's latest announced head, fetched within the last block time, is taken from an early fetch.
	n := s.notified.Load()
	expired := s.clock.Since(f.at) > s.blockTime || n == nil || n.id != f.id
	if f.id.Number < num {
		// Behind this request: kept while fresh for a request for its block still to come (the prefetcher asks
		// for several blocks at once, in any order).
		if expired {
			s.early.CompareAndSwap(f, nil)
		}
		return nil, nil, false
	}
	s.early.CompareAndSwap(f, nil) // taken (or expired): the next announcement starts another
	if expired {
		// The loop was halted or behind since, or the source announced another head: what it has at num now is
		// asked for.
		return nil, nil, false
	}
	select {
	case <-f.done:
	case <-ctx.Done():
		return nil, ctx.Err(), true
	}
	switch {
	case errors.Is(f.err, ethereum.NotFound):
		return nil, nil, false
	case f.err != nil:
		return nil, f.err, true
	case f.env.ExecutionPayload.BlockHash != f.id.Hash:
		return nil, nil, false // the source reorged between its announcement and the fetch
	}
	return f.env, nil, true
}

// fetchEarly starts fetching the announced block id, unless the last early fetch is untaken and not superseded by
// id (another block at or below its height).
func (s *rpcSource) fetchEarly(ctx context.Context, id eth.BlockID) {
	f := &earlyFetch{id: id, at: s.clock.Now(), done: make(chan struct{})}
	if !s.putEarly(f) {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(f.done)
		f.env, f.err = s.payload(ctx, id.Number)
	}()
}

// putEarly makes f the early fetch, unless the last one is untaken and not superseded by f's block (another block
// at or below its height).
func (s *rpcSource) putEarly(f *earlyFetch) bool {
	for {
		cur := s.early.Load()
		if cur != nil && (f.id.Number > cur.id.Number || f.id.Hash == cur.id.Hash) {
			return false
		}
		if s.early.CompareAndSwap(cur, f) {
			return true
		}
	}
}

func (s *rpcSource) payload(ctx context.Context, num uint64) (*eth.ExecutionPayloadEnvelope, error) {
	return s.payloadAs(ctx, num, "payload")
}

// payloadAs is payload, its latency recorded as method's (the http poller's polls for the next block are "poll":
// most find nothing, and would make the latency of "payload" look short).
func (s *rpcSource) payloadAs(ctx context.Context, num uint64, method string) (*eth.ExecutionPayloadEnvelope, error) {
	ctx, done := s.call(ctx, method)
	defer done()
	env, err := s.fetchPayload(ctx, num)
	if err != nil {
		return nil, err
	}
	if got := uint64(env.ExecutionPayload.BlockNumber); got != num {
		return nil, fmt.Errorf("%w: asked for block %d, got %d", errBadInput, num, got)
	}
	// The block hash is the header's (op-service checked the hash a JSON answer claims), but the engine hashes the
	// payload, which does not carry every header field (an Isthmus payload implies the requests hash, say). A block
	// whose payload hashes otherwise is malformed: refused here as bad input, it never reaches the engine, which
	// would find it INVALID (a halt).
	if actual, ok := env.CheckBlockHash(); !ok {
		return nil, fmt.Errorf("%w: block %s: its payload hashes to %s", errBadInput, env.ExecutionPayload.ID(), actual)
	}
	return env, nil
}

// rawRetry is how long a source that answered that it does not serve debug_getRawBlock is read with
// eth_getBlockByNumber before one fetch asks for debug_getRawBlock again: a proxy's allow-list or the source's
// --ws.api can change while op-node runs, and each block read as JSON costs both sides more.
const rawRetry = 10 * time.Minute

// fetchPayload fetches a block as RLP, or with eth_getBlockByNumber from a source that does not serve
// debug_getRawBlock. Only that answer turns a source to eth_getBlockByNumber (for rawRetry, then one fetch tries
// again): any other error (a timeout, say) is this fetch's.
func (s *rpcSource) fetchPayload(ctx context.Context, num uint64) (*eth.ExecutionPayloadEnvelope, error) {
	if s.tryRaw() {
		env, err := s.rawPayload(ctx, num)
		if !errors.Is(err, errNoRawBlock) {
			if err == nil {
				s.rawWorks()
			}
			return env, err
		}
		if s.jsonSince.Swap(s.clock.Now().UnixNano()) == 0 {
			s.log.Info("Source does not serve "+rawBlockMethod+", fetching its blocks with eth_getBlockByNumber",
				"source", s.name, "retry_in", rawRetry, "err", err)
		}
	}
	return s.l2.PayloadByNumber(ctx, num)
}

// tryRaw says whether this fetch asks for debug_getRawBlock: while the source serves it, or, once rawRetry has
// passed since it answered that it does not, for one fetch (the one that claims the retry).
func (s *rpcSource) tryRaw() bool {
	since := s.jsonSince.Load()
	if since == 0 {
		return true
	}
	now := s.clock.Now().UnixNano()
	return now-since >= int64(rawRetry) && s.jsonSince.CompareAndSwap(since, now)
}

// rawWorks records a block served with debug_getRawBlock.
func (s *rpcSource) rawWorks() {
	if s.jsonSince.Swap(0) != 0 {
		s.log.Info("Source serves "+rawBlockMethod+" again, fetching its blocks as RLP", "source", s.name)
	} else if s.rawServed.CompareAndSwap(false, true) {
		s.log.Info("Fetching blocks from source as RLP ("+rawBlockMethod+")", "source", s.name)
	}
}

// rawPayload fetches a block with debug_getRawBlock (with rawFetch where the source has one). A block the source does not have is ethereum.NotFound, as
// with eth_getBlockByNumber: op-geth answers "0x" for a number beyond its head (where eth_getBlockByNumber answers
// null).
func (s *rpcSource) rawPayload(ctx context.Context, num uint64) (*eth.ExecutionPayloadEnvelope, error) {
	var raw hexutil.Bytes
	var err error
	if s.rawFetch != nil {
		raw, err = s.rawFetch.getRawBlock(ctx, num)
	} else {
		err = s.rpc.CallContext(ctx, &raw, rawBlockMethod, hexutil.EncodeUint64(num))
	}
	if err != nil {
		if rawBlockUnserved(err) {
			return nil, fmt.Errorf("%w: %w", errNoRawBlock, err)
		}
		return nil, eth.MaybeAsNotFoundErr(err)
	}
	if len(raw) == 0 {
		return nil, ethereum.NotFound
	}
	return rawBlockPayload(raw, s.forks)
}

// call bounds one request by the request timeout and records its latency.
func (s *rpcSource) call(ctx context.Context, method string) (context.Context, func()) {
	start := s.clock.Now()
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	return ctx, func() {
		cancel()
		s.metrics.RecordSourceRequest(method, s.clock.Since(start))
	}
}

// subscribeHeads keeps a newHeads subscription open, re-subscribing with backoff, and turns each head into a
// wake-up. Polling stays on regardless: a silent subscription delays blocks by one poll interval at most.
func (s *rpcSource) subscribeHeads(ctx context.Context) {
	defer s.wg.Done()
	backoff := retry.Exponential()
	for attempt := 0; ctx.Err() == nil; attempt++ {
		ch := make(chan *types.Header, 16)
		sub, err := s.rpc.Subscribe(ctx, "eth", ch, "newHeads")
		if err == nil {
			attempt = 0
			err = s.forwardHeads(ctx, ch, sub.Err())
			sub.Unsubscribe()
		}
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("Source head subscription failed, polling meanwhile", "source", s.name, "err", err)
		select {
		case <-s.clock.After(backoff.Duration(attempt)):
		case <-ctx.Done():
			return
		}
	}
}

func (s *rpcSource) forwardHeads(ctx context.Context, ch <-chan *types.Header, subErr <-chan error) error {
	for {
		select {
		case h := <-ch:
			s.announce(eth.BlockID{Hash: h.Hash(), Number: h.Number.Uint64()}, true, s.clock.Now())
		case err := <-subErr:
			s.notified.Store(nil)
			return err
		case <-ctx.Done():
			return nil
		}
	}
}

// announce takes the source's head as its newHeads subscription (or, over http, its poller) just told it: Head
// answers it for a block time, and a new head's block is fetched early and the loop woken.
func (s *rpcSource) announce(id eth.BlockID, isNew bool, at time.Time) {
	s.announceFetched(id, isNew, at, nil)
}

// announceFetched is announce, for a head whose block env was fetched already (by the http poller) where it is not
// nil: that is the early fetch.
func (s *rpcSource) announceFetched(id eth.BlockID, isNew bool, at time.Time, env *eth.ExecutionPayloadEnvelope) {
	switch {
	case isNew && env != nil:
		done := make(chan struct{})
		close(done)
		s.putEarly(&earlyFetch{id: id, at: at, done: done, env: env})
	case isNew:
		// The fetch is registered before Head can announce the block: the loop's Payload call finds it.
		s.fetchEarly(s.ctx, id)
	}
	s.notified.Store(&notifiedHead{id: id, at: at})
	if isNew {
		select {
		case s.heads <- struct{}{}:
		default: // a wake-up is already pending
		}
	}
}

func (s *rpcSource) Close() {
	s.cancel()
	s.wg.Wait()
	if s.rawFetch != nil {
		s.rawFetch.Close()
	}
	s.rpc.Close()
}
