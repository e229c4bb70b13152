package plugin

import (
	"context"
	"net/url"
	"strings"

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
	// Start starts the source's goroutines (a ws subscription, an http poller, a relay's); Close stops them and closes its
	// connections. A source is built without starting anything.
	Start()
	Close()
}

// newSources builds a source per URL of --replicator.source: a relay (relay+ws://) through a relay.Client into the
// shared store, anything else as the sequencer's execution-engine RPC.
func newSources(cfg driverhook.CLIConfig, deps driverhook.Deps, store *relay.Store, evidence *relay.EvidenceLog, m Metricer, clk clock.Clock) ([]Source, error) {
	var srcs []Source
	for _, rawURL := range cfg.Sources {
		if driverhook.IsRelaySource(rawURL) {
			c := relay.NewClient(deps.Log, relay.ClientConfig{Name: redactURL(rawURL), URL: strings.TrimPrefix(rawURL, driverhook.RelayScheme),
				Rollup: deps.Rollup, Signers: deps.Signers, Timeout: cfg.RequestTimeout, ReadTimeout: cfg.ReadTimeout},
				store, evidence, m, clk)
			srcs = append(srcs, relaySource{c})
			continue
		}
		src, err := newRPCSource(deps.Log, rawURL, deps.Rollup, cfg.RequestTimeout, cfg.PollInterval, m, clk)
		if err != nil {
			for _, s := range srcs {
				s.Close()
			}
			return nil, err
		}
		srcs = append(srcs, src)
	}
	return srcs, nil
}

// redactURL drops credentials and query parameters, which commonly carry API keys.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<invalid url>"
	}
	u.User = nil
	u.RawQuery = ""
	u.Fragment = ""
	return strings.TrimSuffix(u.String(), "?")
}
