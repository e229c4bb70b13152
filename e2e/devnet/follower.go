package devnet

import (
	"context"
	"fmt"
	"time"
)

// FollowerOption configures a follower added with AddFollower.
type FollowerOption func(*followerConfig)

type followerConfig struct {
	source       string
	pollInterval time.Duration
	haltPolicy   string
	haltDuration time.Duration
	p2p          bool
	p2pUnpeered  bool
	noAdminRPC   bool
	l1           string
	metrics      bool
	archive      bool
	hashScheme   bool
	nodeArgs     []string
	nodeEnv      []string
}

// WithSource sets --replicator.source (default: the sequencer's op-geth HTTP RPC). Replicators only.
func WithSource(url string) FollowerOption {
	return func(c *followerConfig) { c.source = url }
}

// WithPollInterval sets --replicator.poll-interval. Replicators only.
func WithPollInterval(d time.Duration) FollowerOption {
	return func(c *followerConfig) { c.pollInterval = d }
}

// WithHaltPolicy sets --replicator.halt.policy: "timed", "manual" or "until-synced". Replicators only.
func WithHaltPolicy(policy string) FollowerOption {
	return func(c *followerConfig) { c.haltPolicy = policy }
}

// WithHaltDuration sets --replicator.halt.duration. Replicators only.
func WithHaltDuration(d time.Duration) FollowerOption {
	return func(c *followerConfig) { c.haltDuration = d }
}

// WithP2P also connects a replicator to the sequencer by P2P gossip; by default it runs with --p2p.disable.
func WithP2P() FollowerOption {
	return func(c *followerConfig) { c.p2p = true }
}

// WithP2PUnpeered enables libp2p on a replicator as WithP2P does, but dials no peer: nothing is gossiped to
// it until the test connects it, e.g. with Node.ConnectPeer(ctx, d.Sequencer).
func WithP2PUnpeered() FollowerOption {
	return func(c *followerConfig) { c.p2p, c.p2pUnpeered = true, true }
}

// WithL1 sets the op-node's --l1 (default: the devnet's L1 HTTP RPC), e.g. to a Proxy in front of it, so that
// a test can take L1 away from this node alone.
func WithL1(url string) FollowerOption {
	return func(c *followerConfig) { c.l1 = url }
}

// WithMetrics enables op-node's metrics server on a free port; Node.MetricsURL is its address.
func WithMetrics() FollowerOption {
	return func(c *followerConfig) { c.metrics = true }
}

// WithoutAdminRPC leaves out --rpc.enable-admin, which followers otherwise get.
func WithoutAdminRPC() FollowerOption {
	return func(c *followerConfig) { c.noAdminRPC = true }
}

// WithArchiveEngine runs a replicator's op-geth as an archive node (hash scheme, --gcmode archive) instead of with
// op-geth's defaults: for tests that kill op-geth with SIGKILL, which a default op-geth does not survive with its
// recent state.
func WithArchiveEngine() FollowerOption {
	return func(c *followerConfig) { c.archive = true }
}

// WithHashSchemeEngine runs a replicator's op-geth with the hash state scheme and --gcmode full, as a node on a
// legacy datadir runs: it keeps the state of its last 128 blocks only, and cannot roll back further.
func WithHashSchemeEngine() FollowerOption {
	return func(c *followerConfig) { c.hashScheme = true }
}

// WithNodeEnv sets environment variables (KEY=VALUE) of the op-node process, on top of the test's own (e.g.
// GOMAXPROCS=1, for a bench that limits the cores op-node's Go runtime runs on).
func WithNodeEnv(kv ...string) FollowerOption {
	return func(c *followerConfig) { c.nodeEnv = append(c.nodeEnv, kv...) }
}

// WithNodeArgs appends arguments to the op-node command line.
func WithNodeArgs(args ...string) FollowerOption {
	return func(c *followerConfig) { c.nodeArgs = append(c.nodeArgs, args...) }
}

// AddFollower creates and starts a follower of the sequencer, named name (unique in the devnet; it names
// its data directory and logs), and returns once its op-geth and op-node answer RPC.
func (d *Devnet) AddFollower(ctx context.Context, name string, role Role, opts ...FollowerOption) (*Node, error) {
	spec, err := d.followerSpec(ctx, name, role, opts)
	if err != nil {
		return nil, err
	}
	return d.startNode(ctx, spec)
}

// StartRefused creates a follower as AddFollower does and starts it expecting its op-node to refuse to start: it
// returns once the op-node has exited, with the op-node's last log lines, or an error if it is still running after
// startTimeout. The exit is not a devnet fault; the node's op-geth keeps running until the devnet closes.
func (d *Devnet) StartRefused(ctx context.Context, name string, role Role, opts ...FollowerOption) (string, error) {
	spec, err := d.followerSpec(ctx, name, role, opts)
	if err != nil {
		return "", err
	}
	n, err := d.newNode(spec)
	if err != nil {
		return "", err
	}
	exited := make(chan error, 1)
	n.OpNode.onExit = func(_ *Process, err error) { exited <- err }
	d.mu.Lock()
	d.nodes = append(d.nodes, n)
	d.mu.Unlock()
	if err := n.OpGeth.Start(); err != nil {
		return "", err
	}
	if err := d.WaitFor(ctx, startTimeout, n.OpGeth.Name+" RPC", func(ctx context.Context) (bool, error) {
		_, err := n.EL.ChainID(ctx)
		return err == nil, err
	}); err != nil {
		return "", err
	}
	if err := n.OpNode.Start(); err != nil {
		return "", err
	}
	err = d.WaitFor(ctx, startTimeout, n.OpNode.Name+" to exit", func(ctx context.Context) (bool, error) {
		select {
		case <-exited:
			return true, nil
		default:
		}
		if _, err := n.CL.SyncStatus(ctx); err == nil {
			return false, fmt.Errorf("%s answers RPC: it was expected to refuse to start", n.OpNode.Name)
		}
		return false, nil
	})
	if err != nil {
		return "", err
	}
	return n.OpNode.Tail(30)
}

// followerSpec is the node AddFollower starts.
func (d *Devnet) followerSpec(ctx context.Context, name string, role Role, opts []FollowerOption) (nodeSpec, error) {
	cfg := followerConfig{source: d.Sequencer.EL.HTTP}
	for _, opt := range opts {
		opt(&cfg)
	}
	spec := nodeSpec{name: name, role: role, l1: cfg.l1, metrics: cfg.metrics, archive: cfg.archive, hashScheme: cfg.hashScheme,
		nodeEnv: cfg.nodeEnv}
	switch role {
	case RoleReplicator:
		spec.p2p = cfg.p2p
		spec.extraArgs = append(spec.extraArgs, "--replicator.enabled", "--replicator.source", cfg.source)
		if cfg.pollInterval != 0 {
			spec.extraArgs = append(spec.extraArgs, "--replicator.poll-interval", cfg.pollInterval.String())
		}
		if cfg.haltPolicy != "" {
			spec.extraArgs = append(spec.extraArgs, "--replicator.halt.policy", cfg.haltPolicy)
		}
		if cfg.haltDuration != 0 {
			spec.extraArgs = append(spec.extraArgs, "--replicator.halt.duration", cfg.haltDuration.String())
		}
	case RoleGossipFollower, RoleVerifier:
		if cfg.source != d.Sequencer.EL.HTTP || cfg.pollInterval != 0 || cfg.haltPolicy != "" || cfg.haltDuration != 0 || cfg.p2p || cfg.archive || cfg.hashScheme {
			return nodeSpec{}, fmt.Errorf("follower %s: replicator options given for role %s", name, role)
		}
		spec.p2p = role == RoleGossipFollower
	default:
		return nodeSpec{}, fmt.Errorf("follower %s: role %q is not a follower role", name, role)
	}
	if spec.p2p && !cfg.p2pUnpeered {
		peer, err := d.Sequencer.peerAddr(ctx)
		if err != nil {
			return nodeSpec{}, err
		}
		spec.staticPeer = peer
	}
	if !cfg.noAdminRPC {
		spec.extraArgs = append(spec.extraArgs, "--rpc.enable-admin")
	}
	spec.extraArgs = append(spec.extraArgs, cfg.nodeArgs...)
	return spec, nil
}

// AddSequencer starts a second sequencer of the devnet's chain, named name. It builds its own blocks from
// genesis but has P2P disabled and no batcher, so nothing it builds reaches other nodes; its chain
// differs from the devnet's as soon as it includes other transactions (its safe chain is still derived
// from the devnet's batches). Give a replicator a Proxy in front of it as a conflicting source.
func (d *Devnet) AddSequencer(ctx context.Context, name string, nodeArgs ...string) (*Node, error) {
	return d.startNode(ctx, nodeSpec{
		name:      name,
		role:      RoleSequencer,
		extraArgs: append([]string{"--rpc.enable-admin"}, nodeArgs...),
	})
}
