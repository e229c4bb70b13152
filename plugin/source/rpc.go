package source

import (
	"context"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ethereum/go-ethereum/log"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/ethereum-optimism/optimism/op-node/rollup"
	"github.com/ethereum-optimism/optimism/op-service/client"
	"github.com/ethereum-optimism/optimism/op-service/clock"
	"github.com/ethereum-optimism/optimism/op-service/eth"
	"github.com/ethereum-optimism/optimism/op-service/sources"

	"github.com/op-replicator/op-replicator/driverhook"
)

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

var _ Source = (*rpcSource)(nil)

func newRPCSource(lgr log.Logger, rawURL string, cfg *rollup.Config, timeout, pollInterval time.Duration, m Metricer, clk clock.Clock) (*rpcSource, error) {
	name := RedactURL(rawURL)
	// Lazy dial: a source that is down at start-up is retried like one that goes down later.
	opts := []client.RPCOption{client.WithLazyDial(), client.WithCallTimeout(timeout)}
	var rawFetch rawBlockFetcher
	u, _ := url.Parse(rawURL)
	switch {
	case u != nil && (u.Scheme == "http" || u.Scheme == "https"):
		httpClient := NewHTTPClient()
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
	s, err := onClient(lgr, name, rpcClient, rawFetch, cfg, timeout, pollInterval, m, clk)
	if err != nil {
		rpcClient.Close()
		return nil, fmt.Errorf("source %s: %w", name, err)
	}
	s.subscribe = u != nil && (u.Scheme == "ws" || u.Scheme == "wss")
	return s, nil
}

// NewOnClient is an RPC source reading c, a client the caller made (an in-process op-geth's, a test's): every
// request goes through c, debug_getRawBlock included, and its head is polled. Stop closes c.
func NewOnClient(lgr log.Logger, name string, c client.RPC, cfg *rollup.Config, timeout time.Duration, m Metricer, clk clock.Clock) (Source, error) {
	return onClient(lgr, name, c, nil, cfg, timeout, driverhook.DefaultPollInterval, m, clk)
}

// onClient is an rpcSource on rpcClient, with rawFetch (nil: rpcClient asks for debug_getRawBlock).
func onClient(lgr log.Logger, name string, rpcClient client.RPC, rawFetch rawBlockFetcher, cfg *rollup.Config, timeout, pollInterval time.Duration, m Metricer, clk clock.Clock) (*rpcSource, error) {
	l2, err := sources.NewL2Client(rpcClient, lgr, nil, sourceClientConfig(cfg))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	if pollInterval <= 0 {
		pollInterval = driverhook.DefaultPollInterval
	}
	return &rpcSource{log: lgr, name: name, rpc: rpcClient, rawFetch: rawFetch, l2: l2, forks: cfg, timeout: timeout, metrics: m, clock: clk,
		heads: make(chan struct{}, 1), ctx: ctx, cancel: cancel, blockTime: time.Duration(cfg.BlockTime) * time.Second,
		pollInterval: pollInterval}, nil
}

// Start subscribes to the source's newHeads (ws and wss), or polls its head around when each block is due (http
// and https: pollHeads), in the background, until Stop.
func (s *rpcSource) Start(context.Context) error {
	s.wg.Add(1)
	if s.subscribe {
		go s.subscribeHeads(s.ctx)
	} else {
		go s.pollHeads(s.ctx, s.pollInterval)
	}
	return nil
}

// sourceClientConfig is how a source's op-geth is read: trust off, so that op-service recomputes every block hash
// and transactions root.
func sourceClientConfig(cfg *rollup.Config) *sources.L2ClientConfig {
	return sources.L2ClientSimpleConfig(cfg, false, 64, 64)
}

func (s *rpcSource) Name() string { return s.name }

func (s *rpcSource) NewHeads() <-chan struct{} { return s.heads }

// call bounds one request by the request timeout and records its latency.
func (s *rpcSource) call(ctx context.Context, method string) (context.Context, func()) {
	start := s.clock.Now()
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	return ctx, func() {
		cancel()
		s.metrics.RecordSourceRequest(method, s.clock.Since(start))
	}
}

// Stop stops the subscription or the poller and the early fetch, waits for them up to ctx, and closes the
// connections.
func (s *rpcSource) Stop(ctx context.Context) error {
	s.cancel()
	err := waitGroup(ctx, &s.wg, "source "+s.name)
	if s.rawFetch != nil {
		s.rawFetch.Close()
	}
	s.rpc.Close()
	return err
}
