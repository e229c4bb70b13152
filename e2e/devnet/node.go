package devnet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/ethereum/go-ethereum/crypto"

	"github.com/ethereum-optimism/optimism/op-service/client"
	"github.com/ethereum-optimism/optimism/op-service/sources"
)

// Role is what an L2 node does.
type Role string

const (
	// RoleSequencer builds the chain and gossips it.
	RoleSequencer Role = "sequencer"
	// RoleReplicator follows the sequencer's unsafe chain through the replicator (--replicator.enabled),
	// without P2P unless WithP2P is given.
	RoleReplicator Role = "replicator"
	// RoleGossipFollower is a stock op-node receiving unsafe blocks by P2P gossip from the sequencer.
	RoleGossipFollower Role = "gossip-follower"
	// RoleVerifier derives the chain from L1 only (--p2p.disable).
	RoleVerifier Role = "verifier"
)

// startTimeout bounds how long a node's op-geth and op-node each get to answer RPC after start.
const startTimeout = 30 * time.Second

// Node is an L2 node: an op-node driving its own op-geth over the engine API, with a shared JWT secret.
// Stop, Kill and Start keep the data directories, so a node can be restarted where it left off.
type Node struct {
	Name string
	Role Role
	// OpGeth and OpNode are the two processes, for stopping or killing one of them alone.
	OpGeth, OpNode *Process
	// EL is the op-geth's user RPC, CL the op-node's RPC.
	EL *EL
	CL *CL
	// MetricsURL is the op-node's metrics endpoint (WithMetrics), empty without metrics.
	MetricsURL string
	// EngineURL is the op-geth's engine API (authenticated with JWT), for tests that hand it payloads themselves.
	EngineURL string
	JWT       [32]byte

	d       *Devnet
	p2pPort int // 0 without P2P
}

// Start starts the node's op-geth, waits for its RPC, then starts its op-node and waits for its RPC.
// Processes that are already running are left alone.
func (n *Node) Start(ctx context.Context) error {
	if !n.OpGeth.Running() {
		if err := n.OpGeth.Start(); err != nil {
			return err
		}
	}
	if err := n.d.WaitFor(ctx, startTimeout, n.OpGeth.Name+" RPC", func(ctx context.Context) (bool, error) {
		_, err := n.EL.ChainID(ctx)
		return err == nil, err
	}); err != nil {
		return err
	}
	if !n.OpNode.Running() {
		if err := n.OpNode.Start(); err != nil {
			return err
		}
	}
	return n.d.WaitFor(ctx, startTimeout, n.OpNode.Name+" RPC", func(ctx context.Context) (bool, error) {
		_, err := n.CL.SyncStatus(ctx)
		return err == nil, err
	})
}

// Stop stops the op-node, then the op-geth, each gracefully.
func (n *Node) Stop() error {
	return errors.Join(n.OpNode.Stop(), n.OpGeth.Stop())
}

// Kill kills the op-node and the op-geth with SIGKILL, as a crash or power loss would.
func (n *Node) Kill() error {
	return errors.Join(n.OpNode.Kill(), n.OpGeth.Kill())
}

// Restart stops the node gracefully and starts it again on the same data.
func (n *Node) Restart(ctx context.Context) error {
	if err := n.Stop(); err != nil {
		return err
	}
	return n.Start(ctx)
}

// nodeSpec is everything that differs between the op-nodes of a devnet.
type nodeSpec struct {
	name string
	role Role
	// p2p enables libp2p; staticPeer, when set, is dialled and kept connected.
	p2p        bool
	staticPeer string
	// l1 is the op-node's L1 RPC; empty for the devnet's L1.
	l1 string
	// metrics enables the op-node's metrics server.
	metrics bool
	// extraArgs are appended to the op-node command line; nodeEnv is added to the op-node's environment.
	extraArgs []string
	nodeEnv   []string
	// archive runs a replicator's op-geth as an archive node (hash scheme, --gcmode archive), as every other node's
	// is; a replicator's op-geth otherwise runs with op-geth's defaults, as operators run it.
	archive bool
	// hashScheme runs a replicator's op-geth with the hash state scheme, still --gcmode full (a legacy datadir).
	hashScheme bool
}

// defaultEngine reports whether the node's op-geth runs with op-geth's default state scheme and gcmode (path,
// full): replicators, unless asked for an archive engine. Other nodes' op-geths are archive nodes, which survive
// a SIGKILL with their state (a path-scheme op-geth killed loses its recent state, and its op-node then stops).
func (s nodeSpec) defaultEngine() bool { return s.role == RoleReplicator && !s.archive }

// stateScheme is the --state.scheme the node's op-geth is initialised and run with.
func (s nodeSpec) stateScheme() string {
	if s.defaultEngine() && !s.hashScheme {
		return "path"
	}
	return "hash"
}

// engineMetricsPort gives ports an op-geth metrics port when the devnet runs its engines with metrics.
func (d *Devnet) engineMetricsPort(ports *nodePorts) error {
	if !d.cfg.EngineMetrics {
		return nil
	}
	var err error
	ports.gethMetrics, err = portPool.next()
	return err
}

// nodePorts are the ports of one L2 node.
type nodePorts struct {
	http, ws, auth int // op-geth: user RPC over HTTP and WS, engine API
	gethP2P        int // op-geth devp2p: unused (no peers), but geth always listens
	rpc            int // op-node RPC
	p2p            int // op-node libp2p; 0 without P2P
	metrics        int // op-node metrics; 0 without metrics
	gethMetrics    int // op-geth metrics; 0 without them (Config.EngineMetrics)
}

// newNode creates the node's directories and processes and initialises its op-geth; it does not start it.
func (d *Devnet) newNode(spec nodeSpec) (*Node, error) {
	dir := filepath.Join(d.cfg.Dir, spec.name)
	gethDir := filepath.Join(dir, "op-geth")
	if err := os.MkdirAll(gethDir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	jwtPath := filepath.Join(dir, "jwt.hex")
	if err := os.WriteFile(jwtPath, []byte(keyHex(devKey("jwt/"+spec.name))), 0o600); err != nil {
		return nil, fmt.Errorf("write JWT secret of %s: %w", spec.name, err)
	}
	gethLog := d.logPath(spec.name + "-op-geth")
	if err := runToCompletion(gethLog, d.bin("geth"), "init", "--datadir", gethDir, "--state.scheme", spec.stateScheme(), d.L2.GenesisPath); err != nil {
		return nil, fmt.Errorf("init op-geth of %s: %w", spec.name, err)
	}
	var ports nodePorts
	var err error
	if ports.http, ports.ws, ports.auth, err = d.ports3(); err != nil {
		return nil, err
	}
	// Not --port 0: geth binds its devp2p listener first, and an ephemeral port can be one of the ports
	// allocated above, which geth then fails to bind for its RPC ("address already in use").
	if ports.gethP2P, err = portPool.next(); err != nil {
		return nil, err
	}
	if ports.rpc, err = portPool.next(); err != nil {
		return nil, err
	}
	if spec.p2p {
		if ports.p2p, err = portPool.next(); err != nil {
			return nil, err
		}
	}
	metricsURL := ""
	if spec.metrics {
		if ports.metrics, err = portPool.next(); err != nil {
			return nil, err
		}
		metricsURL = httpURL(ports.metrics) + "/metrics"
	}
	if spec.role == RoleReplicator {
		if err := d.engineMetricsPort(&ports); err != nil {
			return nil, err
		}
	}
	el, err := newEL(httpURL(ports.http), wsURL(ports.ws))
	if err != nil {
		return nil, err
	}
	el.setMetrics(ports.gethMetrics)
	cl, err := newCL(httpURL(ports.rpc))
	if err != nil {
		return nil, err
	}
	opNode := newProcess(spec.name+"/op-node", d.logPath(spec.name+"-op-node"), d.bin("op-node"),
		d.opNodeArgs(spec, dir, jwtPath, ports), d.processExited)
	opNode.env = spec.nodeEnv
	return &Node{
		Name: spec.name,
		Role: spec.role,
		OpGeth: newProcess(spec.name+"/op-geth", gethLog, d.bin("geth"),
			d.opGethArgs(spec, gethDir, jwtPath, ports), d.processExited),
		OpNode:     opNode,
		EL:         el,
		CL:         cl,
		MetricsURL: metricsURL,
		EngineURL:  httpURL(ports.auth),
		JWT:        [32]byte(crypto.FromECDSA(devKey("jwt/" + spec.name))),
		d:          d,
		p2pPort:    ports.p2p,
	}, nil
}

func (d *Devnet) opGethArgs(spec nodeSpec, dataDir, jwtPath string, ports nodePorts) []string {
	args := []string{
		"--datadir", dataDir,
		"--networkid", strconv.Itoa(L2ChainID),
		"--syncmode", "full",
		"--cache", "128",
		"--http", "--http.addr", "127.0.0.1", "--http.port", strconv.Itoa(ports.http),
		"--http.api", "eth,net,web3,debug,txpool",
		"--ws", "--ws.addr", "127.0.0.1", "--ws.port", strconv.Itoa(ports.ws), "--ws.api", "eth,net,web3,debug",
		"--authrpc.addr", "127.0.0.1", "--authrpc.port", strconv.Itoa(ports.auth), "--authrpc.jwtsecret", jwtPath,
		"--ipcdisable", "--nodiscover", "--maxpeers", "0", "--port", strconv.Itoa(ports.gethP2P), "--nat", "none",
		"--rollup.disabletxpoolgossip",
		"--verbosity", "3",
	}
	if ports.gethMetrics != 0 {
		args = append(args, "--metrics", "--metrics.addr", "127.0.0.1", "--metrics.port", strconv.Itoa(ports.gethMetrics))
	}
	if !spec.defaultEngine() {
		// Every block's state is written through to disk, so an op-geth killed with SIGKILL restarts where it
		// was. With the default path scheme, a killed op-geth loses the state of its recent blocks and its
		// op-node stops with "Critical error: ... missing trie node".
		args = append(args, "--state.scheme", "hash", "--gcmode", "archive")
	} else if spec.hashScheme {
		args = append(args, "--state.scheme", "hash")
	}
	if spec.role != RoleSequencer {
		// Without gossip, a transaction sent to a follower would otherwise never reach the sequencer.
		args = append(args, "--rollup.sequencerhttp", d.Sequencer.EL.HTTP)
	}
	return args
}

func (d *Devnet) opNodeArgs(spec nodeSpec, dir, jwtPath string, ports nodePorts) []string {
	l1 := spec.l1
	if l1 == "" {
		l1 = d.L1.EL.HTTP
	}
	args := []string{
		"--l1", l1, "--l1.rpckind", "standard", "--l1.beacon.ignore",
		"--l1.http-poll-interval", "1s", "--l1.epoch-poll-interval", L1BlockTime.String(),
		// The signer in the SystemConfig is reloaded every 10 minutes by default; tests rotate it.
		"--l1.runtime-config-reload-interval", L1BlockTime.String(),
		"--l2", httpURL(ports.auth), "--l2.jwt-secret", jwtPath, "--l2.enginekind", "geth",
		"--rollup.config", d.L2.RollupPath, "--rollup.l1-chain-config", d.L1.ChainConfigPath,
		"--verifier.l1-confs", "0",
		"--safedb.path", filepath.Join(dir, "safedb"),
		"--rpc.addr", "127.0.0.1", "--rpc.port", strconv.Itoa(ports.rpc),
		"--log.level", d.cfg.LogLevel,
	}
	if spec.role == RoleReplicator {
		// A halt rewinds this node's op-geth over its user RPC (debug_setHead), and survives restarts.
		args = append(args, "--replicator.l2.rpc", httpURL(ports.http),
			"--replicator.state.path", filepath.Join(dir, "replicator-state.json"))
	}
	if spec.role == RoleSequencer {
		args = append(args,
			"--sequencer.enabled", "--sequencer.l1-confs", "0",
			"--p2p.sequencer.key", keyHex(d.Keys.SequencerP2P))
	}
	if spec.p2p {
		args = append(args,
			"--p2p.listen.ip", "127.0.0.1", "--p2p.listen.tcp", strconv.Itoa(ports.p2p), "--p2p.listen.udp", "0",
			"--p2p.no-discovery",
			// Without an explicit (blank) list, op-node resolves the default public bootnodes.
			"--p2p.bootnodes", " ",
			"--p2p.priv.raw", keyHex(peerKey(spec.name)),
			"--p2p.peerstore.path", "memory", "--p2p.discovery.path", "memory")
		if spec.staticPeer != "" {
			args = append(args, "--p2p.static", spec.staticPeer)
		}
	} else {
		args = append(args, "--p2p.disable")
	}
	if spec.metrics {
		args = append(args, "--metrics.enabled", "--metrics.addr", "127.0.0.1", "--metrics.port", strconv.Itoa(ports.metrics))
	}
	return append(args, spec.extraArgs...)
}

// ConnectPeer connects the node's libp2p host to peer's (opp2p_connectPeer); both need P2P.
func (n *Node) ConnectPeer(ctx context.Context, peer *Node) error {
	if n.p2pPort == 0 || peer.p2pPort == 0 {
		return fmt.Errorf("connect %s to %s: both need P2P", n.Name, peer.Name)
	}
	addr, err := peer.peerAddr(ctx)
	if err != nil {
		return err
	}
	if err := n.CL.RPC.CallContext(ctx, nil, "opp2p_connectPeer", addr); err != nil {
		return fmt.Errorf("opp2p_connectPeer on %s: %w", n.Name, err)
	}
	return nil
}

// peerAddr returns the libp2p multiaddress other op-nodes can dial this node at.
func (n *Node) peerAddr(ctx context.Context) (string, error) {
	self, err := sources.NewP2PClient(client.NewBaseRPCClient(n.CL.RPC)).Self(ctx)
	if err != nil {
		return "", fmt.Errorf("opp2p_self of %s: %w", n.Name, err)
	}
	return fmt.Sprintf("/ip4/127.0.0.1/tcp/%d/p2p/%s", n.p2pPort, self.PeerID), nil
}
