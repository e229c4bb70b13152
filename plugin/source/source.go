package source

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"

	"github.com/ethereum-optimism/optimism/op-service/clock"
	"github.com/ethereum-optimism/optimism/op-service/eth"
	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/relay"
)

// Source is where the sequencer's blocks come from. Everything it returns is at most unsafe: the replicator
// never asks it for safe or finalized labels.
type Source interface {
	// Name identifies the source in logs and replicator_status (credentials redacted).
	Name() string
	// Head returns the source's latest block.
	Head(ctx context.Context) (eth.BlockID, error)
	// Payload returns the source's block at a height, its block hash checked: the payload hashes to it.
	Payload(ctx context.Context, num uint64) (*eth.ExecutionPayloadEnvelope, error)
	// NewHeads signals that the source has a new head (its newHeads subscription, its http poller, a relay's
	// subscription; never closed).
	NewHeads() <-chan struct{}
	// Start starts the source's goroutines (a ws subscription, an http poller, a relay's), which run until Stop:
	// ctx bounds Start alone. Stop stops them and closes the source's connections, waiting for its goroutines up to
	// ctx. A source is built without starting anything, and may be stopped without having been started.
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
}

// ErrBadInput: a source returned something malformed; the pipeline drops it and asks again (the bad-input kind of
// the errors metric).
var ErrBadInput = errors.New("bad response from source")

// MaxInFlight is the most requests the pipeline has at one source at once (its prefetcher's bound): an http(s) or
// ws(s) source keeps as many connections to its endpoint for them.
const MaxInFlight = 16

// Metricer is what the sources record: a relay source's relay.Client metrics (with every request's latency,
// RecordSourceRequest), and each source's head and errors. The replicator's metrics implement it.
type Metricer interface {
	relay.Metricer
	RecordSourceHead(source string, number uint64)
	RecordSourceError(source string)
}

// New builds the sources of --replicator.source (newSources) fanned into one Multi, unsigned blocks weighed against
// the signed blocks held in store as --replicator.require-signature and --replicator.quorum say (trust.go). Nothing
// is started: Start does.
func New(cfg driverhook.CLIConfig, deps driverhook.Deps, store *relay.Store, evidence *relay.EvidenceLog, m Metricer, clk clock.Clock) (*Multi, error) {
	srcs, err := newSources(cfg, deps, store, evidence, m, clk)
	if err != nil {
		return nil, err
	}
	return NewMulti(srcs, m, clk).withTrust(deps.Log, trust{store: store, requireSignature: cfg.RequireSignature,
		quorum: cfg.Quorum}), nil
}

// newSources builds a source per URL of --replicator.source: a relay (relay+ws://) through a relay.Client into the
// shared store, anything else as the sequencer's execution-engine RPC.
func newSources(cfg driverhook.CLIConfig, deps driverhook.Deps, store *relay.Store, evidence *relay.EvidenceLog, m Metricer, clk clock.Clock) ([]Source, error) {
	var srcs []Source
	for _, rawURL := range cfg.Sources {
		if driverhook.IsRelaySource(rawURL) {
			c := relay.NewClient(deps.Log, relay.ClientConfig{Name: RedactURL(rawURL), URL: strings.TrimPrefix(rawURL, driverhook.RelayScheme),
				Rollup: deps.Rollup, Signers: deps.Signers, Timeout: cfg.RequestTimeout, ReadTimeout: cfg.ReadTimeout},
				store, evidence, m, clk)
			srcs = append(srcs, relaySource{c})
			continue
		}
		src, err := newRPCSource(deps.Log, rawURL, deps.Rollup, cfg.RequestTimeout, cfg.PollInterval, m, clk)
		if err != nil {
			for _, s := range srcs {
				_ = s.Stop(context.Background()) // started nothing: nothing to wait for
			}
			return nil, err
		}
		srcs = append(srcs, src)
	}
	return srcs, nil
}

// waitGroup waits for wg, or for ctx: then the goroutines of what is named are still running (an error).
func waitGroup(ctx context.Context, wg *sync.WaitGroup, what string) error {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s still stopping: %w", what, ctx.Err())
	}
}

// RedactURL drops credentials and query parameters, which commonly carry API keys.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<invalid url>"
	}
	u.User = nil
	u.RawQuery = ""
	u.Fragment = ""
	return strings.TrimSuffix(u.String(), "?")
}
