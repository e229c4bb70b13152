// Package devnet runs a local OP Stack devnet of real binaries for end-to-end tests and demos: an L1 (geth
// --dev), a sequencer (op-node + op-geth), an op-batcher posting calldata, and any number of followers
// (replicators, gossip followers, L1-only verifiers), all on 127.0.0.1 with ports chosen at start.
//
// Binaries are taken from build/bin of the repository (run `make build`), or from $OP_REPLICATOR_BIN.
// Every process logs to <Dir>/logs/<name>.log.
package devnet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/rpc"
)

// Config configures a devnet. The zero value is valid except for Dir.
type Config struct {
	// Dir holds every data directory and log. Required.
	Dir string
	// BinDir holds geth, op-node and op-batcher. Default: $OP_REPLICATOR_BIN, else build/bin of the
	// first parent of the working directory that has one.
	BinDir string
	// L2BlockTime is the L2 block time in seconds. Default: 1.
	L2BlockTime uint64
	// L2Accounts is how many accounts the L2 genesis funds (see Keys.L2Accounts). Default: 16.
	L2Accounts int
	// LogLevel is the op-node and op-batcher log level. Default: info.
	LogLevel string
	// OnFault is called once, from any goroutine, when the devnet breaks: a process exits on its own or L1
	// stops producing blocks. WaitFor fails as soon as a fault has happened, whether or not OnFault is set.
	OnFault func(error)
	// SequencerArgs are appended to the sequencer's op-node command line (e.g. to enable its relay).
	SequencerArgs []string
	// SequencerWindowSize is the rollup's sequencing window in L1 blocks. Default: 200 (400 s of L1). Once a
	// window passes without batches, derivation replaces the unsafe chain with deposit-only blocks: a run that
	// keeps the batcher stopped for longer needs a longer window.
	SequencerWindowSize uint64
	// L2GenesisAge puts the L1 and L2 genesis this long in the past: the sequencer starts that far behind the wall
	// clock and builds the missing blocks (one per L2BlockTime of age) as fast as it can, so that a test has an
	// unsafe chain of hours-deep batching in a minute. Blocks beyond the sequencer drift (1,800 s) carry no user
	// transactions. With BatcherStopped and a SequencerWindowSize that covers the run, they all stay unsafe.
	L2GenesisAge time.Duration
	// BatcherStopped starts the op-batcher stopped (SetBatching(true) starts it).
	BatcherStopped bool
	// EngineMetrics enables op-geth's metrics server (--metrics) on every replicator's op-geth and every engine
	// StartEngine starts, for benchmarks that read where the engine's time goes (EL.EngineTimes). Off by default:
	// op-geth then runs as operators run it.
	EngineMetrics bool
}

// Devnet is a running devnet. Its exported fields are set by New and not changed afterwards.
type Devnet struct {
	Keys      Keys
	L1        *L1
	L2        *L2Chain
	Sequencer *Node
	Batcher   *Process
	// BatcherRPC is the op-batcher's RPC, with the admin namespace enabled.
	BatcherRPC *rpc.Client

	cfg Config

	stopWatch context.CancelFunc
	watching  sync.WaitGroup

	mu     sync.Mutex
	nodes  []*Node // every L2 node, the sequencer first
	err    error   // the first fault
	closed bool
}

// New starts L1, generates the L2 chain anchored at the L1 head, and starts the sequencer and the batcher.
// It returns once the sequencer has produced a block. On error, everything started is stopped again.
func New(ctx context.Context, cfg Config) (*Devnet, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(logDir(cfg.Dir), 0o755); err != nil {
		return nil, fmt.Errorf("create devnet dir: %w", err)
	}
	watchCtx, stopWatch := context.WithCancel(context.Background())
	d := &Devnet{
		Keys:      newKeys(cfg.L2Accounts),
		cfg:       cfg,
		stopWatch: stopWatch,
	}
	if err := d.start(ctx, watchCtx); err != nil {
		return nil, errors.Join(err, d.Close())
	}
	return d, nil
}

// Start is New for tests: faults fail the test, and at the end of the test every process is stopped and,
// if the test failed, the tail of every log is printed. Without Config.Dir, the devnet lives in
// t.TempDir(), or, to keep it after the test, in $OP_REPLICATOR_E2E_DIR/<test name>.
func Start(t testing.TB, cfg Config) *Devnet {
	t.Helper()
	if keep := os.Getenv("OP_REPLICATOR_E2E_DIR"); cfg.Dir == "" && keep != "" {
		cfg.Dir = filepath.Join(keep, t.Name())
		if err := os.RemoveAll(cfg.Dir); err != nil {
			t.Fatalf("clear devnet dir: %v", err)
		}
	} else if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	if cfg.OnFault == nil {
		cfg.OnFault = func(err error) { t.Errorf("devnet fault: %v", err) }
	}
	d, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("start devnet: %v\ndevnet logs in %s; last lines:\n%s", err, logDir(cfg.Dir), logTails(logDir(cfg.Dir), 40))
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("stop devnet: %v", err)
		}
		if t.Failed() {
			t.Logf("devnet logs in %s; last lines:\n%s", d.LogDir(), d.LogTails(40))
			keepFailedLogs(t, d.LogDir())
		}
	})
	return d
}

// keepFailedLogs copies a failed test's devnet logs, which live in its temporary directory, to
// $OP_REPLICATOR_E2E_FAILED_LOGS/<test name>, by default build/e2e-failed/<test name> in the repository (the e2e
// tests run in e2e/): the tails printed are rarely the whole story of a flake, and a CI clone keeps its build/.
func keepFailedLogs(t testing.TB, logs string) {
	dir := os.Getenv("OP_REPLICATOR_E2E_FAILED_LOGS")
	if dir == "" {
		dir = filepath.Join("..", "build", "e2e-failed")
	}
	dst := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_"))
	if err := os.RemoveAll(dst); err == nil {
		err = os.CopyFS(dst, os.DirFS(logs))
		if err != nil {
			t.Logf("keeping the devnet logs: %v", err)
			return
		}
	}
	if abs, err := filepath.Abs(dst); err == nil {
		t.Logf("devnet logs kept in %s", abs)
	}
}

func (cfg *Config) setDefaults() error {
	if cfg.Dir == "" {
		return errors.New("devnet: Config.Dir is required")
	}
	if cfg.BinDir == "" {
		dir, err := findBinDir()
		if err != nil {
			return err
		}
		cfg.BinDir = dir
	}
	if cfg.L2BlockTime == 0 {
		cfg.L2BlockTime = 1
	}
	if cfg.L2Accounts == 0 {
		cfg.L2Accounts = 16
	}
	if cfg.SequencerWindowSize == 0 {
		cfg.SequencerWindowSize = defaultSequencerWindowSize
	}
	if cfg.LogLevel == "" {
		cfg.LogLevel = "info"
	}
	return nil
}

// findBinDir returns $OP_REPLICATOR_BIN, or the build/bin with an op-node nearest above the working directory.
func findBinDir() (string, error) {
	if dir := os.Getenv("OP_REPLICATOR_BIN"); dir != "" {
		return dir, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find binaries: %w", err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		bin := filepath.Join(dir, "build", "bin")
		if _, err := os.Stat(filepath.Join(bin, "op-node")); err == nil {
			return bin, nil
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("no build/bin/op-node above %s: run `make build` or set OP_REPLICATOR_BIN", wd)
		}
	}
}

func (d *Devnet) start(ctx, watchCtx context.Context) error {
	if err := d.startL1(ctx); err != nil {
		return err
	}
	d.watching.Add(1)
	go func() {
		defer d.watching.Done()
		d.watchL1(watchCtx)
	}()

	l1Start, err := d.L1.EL.Header(ctx, rpc.LatestBlockNumber)
	if d.cfg.L2GenesisAge > 0 { // the L2 genesis must not be older than its L1 origin
		l1Start, err = d.L1.EL.Header(ctx, 0)
	}
	if err != nil {
		return err
	}
	if d.L2, err = buildL2Chain(d.cfg.Dir, d.cfg.L2BlockTime, d.cfg.SequencerWindowSize, d.Keys, l1Start); err != nil {
		return err
	}
	if d.Sequencer, err = d.startNode(ctx, nodeSpec{
		name:      "sequencer",
		role:      RoleSequencer,
		p2p:       true,
		extraArgs: append([]string{"--rpc.enable-admin"}, d.cfg.SequencerArgs...),
	}); err != nil {
		return err
	}
	if err := d.startBatcher(); err != nil {
		return err
	}
	return d.WaitFor(ctx, startTimeout, "the sequencer's first block", func(ctx context.Context) (bool, error) {
		n, err := d.Sequencer.EL.BlockNumber(ctx)
		return n > 0, err
	})
}

// FreePort returns a free port of 127.0.0.1 that the devnet has not handed out yet, for a service a test
// configures itself (e.g. a relay listener).
func (d *Devnet) FreePort() (int, error) { return portPool.next() }

// startNode creates a node, registers it for Close, and starts it.
func (d *Devnet) startNode(ctx context.Context, spec nodeSpec) (*Node, error) {
	d.mu.Lock()
	for _, n := range d.nodes {
		if n.Name == spec.name {
			d.mu.Unlock()
			return nil, fmt.Errorf("a node named %q exists already", spec.name)
		}
	}
	d.mu.Unlock()
	n, err := d.newNode(spec)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.nodes = append(d.nodes, n)
	d.mu.Unlock()
	if err := n.Start(ctx); err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.name, err)
	}
	return n, nil
}

func (d *Devnet) startBatcher() error {
	rpcPort, err := portPool.next()
	if err != nil {
		return err
	}
	args := []string{
		"--l1-eth-rpc", d.L1.EL.HTTP,
		"--l2-eth-rpc", d.Sequencer.EL.HTTP,
		"--rollup-rpc", d.Sequencer.CL.URL,
		"--private-key", keyHex(d.Keys.Batcher),
		"--data-availability-type", "calldata",
		"--batch-type", "1", // span batches; the name "span" does not parse
		"--max-channel-duration", "2",
		"--num-confirmations", "1",
		"--poll-interval", "1s",
		// The default (12 s) holds each batch back until the previous one's receipt has been seen: the safe
		// head then moves every 6 L1 blocks instead of every 1 or 2.
		"--txmgr.receipt-query-interval", "1s",
		// Throttling needs miner_setMaxDASize on the sequencer's op-geth; the batcher exits without it.
		"--throttle.unsafe-da-bytes-lower-threshold", "0",
		"--rpc.addr", "127.0.0.1", "--rpc.port", strconv.Itoa(rpcPort), "--rpc.enable-admin",
		"--log.level", d.cfg.LogLevel,
	}
	if d.cfg.BatcherStopped {
		args = append(args, "--stopped")
	}
	if d.BatcherRPC, err = rpc.DialOptions(context.Background(), httpURL(rpcPort)); err != nil {
		return fmt.Errorf("dial op-batcher RPC: %w", err)
	}
	d.Batcher = newProcess("op-batcher", d.logPath("op-batcher"), d.bin("op-batcher"), args, d.processExited)
	return d.Batcher.Start()
}

// SetBatching starts or stops batch submission (admin_startBatcher / admin_stopBatcher). With batching
// stopped, the sequencer's blocks stay unsafe.
func (d *Devnet) SetBatching(ctx context.Context, on bool) error {
	method := "admin_stopBatcher"
	if on {
		method = "admin_startBatcher"
	}
	if err := d.BatcherRPC.CallContext(ctx, nil, method); err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	return nil
}

// Nodes returns every L2 node, the sequencer first, in the order they were added.
func (d *Devnet) Nodes() []*Node {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]*Node(nil), d.nodes...)
}

// Processes returns the L1 geth, the op-batcher and every L2 node's op-geth and op-node, running or not.
func (d *Devnet) Processes() []*Process {
	procs := []*Process{d.L1.Process, d.Batcher}
	for _, n := range d.Nodes() {
		procs = append(procs, n.OpGeth, n.OpNode)
	}
	return procs
}

// Err returns the first fault: a process that exited on its own, or an L1 stall.
func (d *Devnet) Err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}

func (d *Devnet) fault(err error) {
	d.mu.Lock()
	if d.closed || d.err != nil {
		d.mu.Unlock()
		return
	}
	d.err = err
	d.mu.Unlock()
	if d.cfg.OnFault != nil {
		d.cfg.OnFault(err)
	}
}

// processExited is every process' exit callback.
func (d *Devnet) processExited(p *Process, err error) {
	tail, _ := p.Tail(15)
	d.fault(fmt.Errorf("%s exited on its own: %w; last log lines:\n%s", p.Name, err, tail))
}

// pollInterval is how often WaitFor evaluates its condition.
const pollInterval = 100 * time.Millisecond

// WaitFor evaluates cond every 100ms, in the calling goroutine, until it returns true. It fails when
// timeout passes or ctx ends (with the last error cond returned, if any), or at once on a devnet fault.
// Errors from cond do not end the wait: nodes may be restarting.
func (d *Devnet) WaitFor(ctx context.Context, timeout time.Duration, what string, cond func(ctx context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	var lastErr error
	for {
		if err := d.Err(); err != nil {
			return fmt.Errorf("waiting for %s: devnet fault: %w", what, err)
		}
		ok, err := cond(ctx)
		if ok {
			return nil
		}
		if err != nil {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return fmt.Errorf("waiting for %s: %w (last error: %w)", what, ctx.Err(), lastErr)
			}
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-ticker.C:
		}
	}
}

// Close stops every process: the batcher and the op-nodes first, then the op-geths, then L1. It is safe
// to call more than once.
func (d *Devnet) Close() error {
	d.mu.Lock()
	d.closed = true
	nodes := d.nodes
	d.mu.Unlock()
	d.stopWatch()
	d.watching.Wait()

	var err error
	if d.Batcher != nil {
		// A graceful stop waits about 10 s for in-flight L1 transactions, which a devnet being torn down
		// does not need.
		err = d.Batcher.Kill()
	}
	var first, second []*Process
	for _, n := range nodes {
		first = append(first, n.OpNode)
		second = append(second, n.OpGeth)
	}
	err = errors.Join(err, stopAll(first))
	err = errors.Join(err, stopAll(second))
	if d.L1 != nil {
		err = errors.Join(err, d.L1.Process.Stop())
	}
	return err
}

// stopAll stops processes in parallel.
func stopAll(procs []*Process) error {
	errs := make([]error, len(procs))
	var wg sync.WaitGroup
	for i, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = p.Stop()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// LogTails returns the last n lines of every process' log, each under a header naming the log.
func (d *Devnet) LogTails(n int) string {
	return logTails(d.LogDir(), n)
}

// LogDir is where every process' log is.
func (d *Devnet) LogDir() string {
	return logDir(d.cfg.Dir)
}

func logDir(devnetDir string) string {
	return filepath.Join(devnetDir, "logs")
}

func logTails(dir string, n int) string {
	paths, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	var b strings.Builder
	for _, path := range paths {
		tail, err := tailFile(path, n)
		if err != nil {
			tail = err.Error()
		}
		fmt.Fprintf(&b, "===== %s =====\n%s\n", path, tail)
	}
	return b.String()
}

func (d *Devnet) logPath(name string) string {
	return filepath.Join(d.LogDir(), name+".log")
}

func (d *Devnet) bin(name string) string {
	return filepath.Join(d.cfg.BinDir, name)
}

// ports3 allocates three ports: for HTTP, WS and the authenticated RPC of a geth.
func (d *Devnet) ports3() (httpPort, wsPort, authPort int, err error) {
	var ports [3]int
	for i := range ports {
		if ports[i], err = portPool.next(); err != nil {
			return 0, 0, 0, err
		}
	}
	return ports[0], ports[1], ports[2], nil
}
