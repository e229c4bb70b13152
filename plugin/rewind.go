package plugin

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/ethereum-optimism/optimism/op-service/eth"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/source"
)

// engineRewinder rewinds this node's op-geth to the safe head at a halt, over its user RPC (--replicator.l2.rpc).
//
// op-node's forkchoice update to the safe head is not enough: when the safe head is a canonical ancestor of
// op-geth's head, op-geth's forkchoiceUpdated changes nothing (the "ignore old head" branch is skipped for OP
// chains), and op-geth would go on serving the rejected blocks as latest until derivation overtook them.
// debug_setHead rewinds op-geth's canonical chain itself. It runs under op-node's engine-controller lock
// (driverhook.Engine.RewindUnsafeToSafe), so nothing inserts a block between the rewind and op-node's reset.
//
// How far back debug_setHead can go depends on op-geth's state scheme:
//   - path (op-geth's default): state older than the last 128 blocks cannot be read, but debug_setHead rolls the
//     state back through op-geth's state history (--history.state, 90,000 blocks by default), so a rewind over any
//     unsafe range within that history succeeds;
//   - hash: debug_setHead stops only at a block whose state is on disk. Without --gcmode archive that is rarely the
//     safe head, and it rewinds further, below the safe head (to genesis, on a young chain): the safe head's state is read
//     first, and a rewind that would lose it is refused.
type engineRewinder struct {
	rpc     *rpc.Client
	name    string
	timeout time.Duration
	scheme  stateScheme // found by Check
	archive bool        // a hash-scheme op-geth proven to be an archive node (Check)

	mu        sync.Mutex
	strikes   []time.Time // when the RPC was last seen ahead of the engine (CheckIdentity)
	otherNode error       // set once the RPC is taken for another node: every rewind is refused
}

// stateScheme is op-geth's state scheme, as debug_getTrieFlushInterval tells it.
type stateScheme string

const (
	schemeUnknown stateScheme = ""
	schemePath    stateScheme = "path"
	schemeHash    stateScheme = "hash"
)

// hashFullUnsafeRange bounds the unsafe range above the safe head on a hash-scheme op-geth not proven to be an
// archive node: such a node keeps the state of its last 128 blocks in memory, so a safe head this close to the head
// still has its state, and debug_setHead stops there.
const hashFullUnsafeRange = 120

// hashArchiveProbeDepth: on a hash-scheme op-geth, state this many blocks below the head can be read only if it
// is an archive node (a full node keeps the last 128 blocks' state in memory, and flushes some now and then).
const hashArchiveProbeDepth = 256

// setHeadPerBlock is how long debug_setHead may take per block rolled back, beyond the request timeout: a
// path-scheme op-geth reverts one state history per block, each a few milliseconds of disk writes (README, "What a
// halt means"), so rolling back an hour of 1 s blocks takes seconds to tens of seconds.
const setHeadPerBlock = 25 * time.Millisecond

// identityAttempts bounds the start-up comparison of --replicator.l2.rpc with the engine op-node drives: both are
// read one after the other while the engine may insert blocks, so a mismatch is read again before it is believed.
const (
	identityAttempts = 5
	identityRetry    = 300 * time.Millisecond
)

// The identity of --replicator.l2.rpc is watched while the replicator runs (CheckIdentity): a node seen ahead of or
// behind the engine op-node drives identityStrikes times within identityStrikeWindow is another node. The same node
// never is (its head is read before and after the engine's); an engine reorg between the reads can make it look so
// once.
const (
	identityStrikes      = 3
	identityStrikeWindow = time.Minute
)

// errOtherNode: --replicator.l2.rpc is not the op-geth behind op-node's --l2. A rewind is refused, not retried into it.
var errOtherNode = errors.New("--" + driverhook.L2RPCFlagName + " is not this node's op-geth")

func newEngineRewinder(rawURL string, timeout time.Duration) (*engineRewinder, error) {
	// Lazy: rpc.DialOptions connects http(s) on the first call; ws(s) and IPC connect now, and Check reports it.
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// Over http(s), the sources' client: op-geth compresses every answer to a client that accepts gzip, and a
	// reader of gzip costs more to set up than these answers (a block number, a header) cost to read.
	c, err := rpc.DialOptions(ctx, rawURL, rpc.WithHTTPClient(source.NewHTTPClient()))
	if err != nil {
		return nil, fmt.Errorf("--%s %s: %w", driverhook.L2RPCFlagName, source.RedactURL(rawURL), err)
	}
	return &engineRewinder{rpc: c, name: source.RedactURL(rawURL), timeout: timeout}, nil
}

// headReader is the engine op-node drives (its --l2 client), read-only: what --replicator.l2.rpc is compared with.
type headReader interface {
	L2BlockRefByLabel(ctx context.Context, label eth.BlockLabel) (eth.L2BlockRef, error)
	L2BlockRefByNumber(ctx context.Context, num uint64) (eth.L2BlockRef, error)
}

// headerReader reads the head of the engine op-node drives as a header. The identity check, about once a second,
// needs only its number and hash: an L2BlockRef is read from the whole block, every transaction decoded.
type headerReader interface {
	InfoByLabel(ctx context.Context, label eth.BlockLabel) (eth.BlockInfo, error)
}

// Check proves at start-up that the RPC can rewind this node's op-geth, and refuses one it cannot rewind safely:
//   - it answers, serves the debug namespace and is op-geth (debug_setHead is op-geth's);
//   - it has the rollup's L2 genesis block;
//   - it is the engine op-node drives: its chain and the engine's agree at both heads (a node that is ahead of or
//     behind this node's engine, or on another branch, is another node);
//   - a hash-scheme op-geth is an archive node (where that can be told: the chain is long enough).
//
// Another op-geth of the same chain at this node's exact head passes the identity check: CheckIdentity goes on
// watching while the replicator runs, and every rewind compares the heads again, under the engine controller's lock,
// before it calls debug_setHead.
func (r *engineRewinder) Check(ctx context.Context, genesis eth.BlockID, engine headReader) error {
	ctx, cancel := context.WithTimeout(ctx, r.timeout+identityAttempts*(identityRetry+r.timeout))
	defer cancel()
	var modules map[string]string
	if err := r.call(ctx, &modules, "rpc_modules"); err != nil {
		return fmt.Errorf("--%s %s is unreachable: %w", driverhook.L2RPCFlagName, r.name, err)
	}
	if _, ok := modules["debug"]; !ok {
		return fmt.Errorf("--%s %s does not serve the debug namespace (it serves %v): start op-geth with "+
			"debug in --http.api, --ws.api, or use its IPC path", driverhook.L2RPCFlagName, r.name, slices.Sorted(maps.Keys(modules)))
	}
	got, err := r.hashAt(ctx, rpc.BlockNumber(genesis.Number))
	if err != nil {
		return fmt.Errorf("--%s %s: L2 genesis block %d: %w", driverhook.L2RPCFlagName, r.name, genesis.Number, err)
	}
	if got != genesis.Hash {
		return fmt.Errorf("--%s %s is another chain's node: its block %d is %s, the rollup's L2 genesis is %s",
			driverhook.L2RPCFlagName, r.name, genesis.Number, got, genesis.Hash)
	}
	if r.scheme, err = r.stateScheme(ctx); err != nil {
		return err
	}
	if err := r.checkIdentity(ctx, engine); err != nil {
		return err
	}
	if r.scheme == schemeHash {
		return r.checkHashArchive(ctx)
	}
	return nil
}

// stateScheme asks op-geth for its trie flush interval, which only the hash scheme has.
func (r *engineRewinder) stateScheme(ctx context.Context) (stateScheme, error) {
	var interval string
	err := r.call(ctx, &interval, "debug_getTrieFlushInterval")
	var rpcErr rpc.Error
	switch {
	case err == nil:
		return schemeHash, nil
	case strings.Contains(err.Error(), "path-based scheme"):
		return schemePath, nil
	case errors.As(err, &rpcErr) && rpcErr.ErrorCode() == -32601: // method not found
		return schemeUnknown, fmt.Errorf("--%s %s is not op-geth (no debug_getTrieFlushInterval): a halt rewinds the "+
			"engine with op-geth's debug_setHead; the replicator needs op-geth (--l2.enginekind geth)", driverhook.L2RPCFlagName, r.name)
	default:
		return schemeUnknown, fmt.Errorf("--%s %s: reading its state scheme: %w", driverhook.L2RPCFlagName, r.name, err)
	}
}

// checkHashArchive refuses a hash-scheme op-geth that provably keeps no old state: debug_setHead there would go
// below the safe head of any halt more than 128 blocks above it.
func (r *engineRewinder) checkHashArchive(ctx context.Context) error {
	var head hexutil.Uint64
	if err := r.call(ctx, &head, "eth_blockNumber"); err != nil {
		return fmt.Errorf("--%s %s: latest block number: %w", driverhook.L2RPCFlagName, r.name, err)
	}
	if uint64(head) <= hashArchiveProbeDepth {
		return nil // too young to tell: the unsafe range is bounded (MaxUnsafeRange) until a restart can tell
	}
	probe := rpc.BlockNumber(uint64(head) - hashArchiveProbeDepth)
	var balance hexutil.Big
	if err := r.call(ctx, &balance, "eth_getBalance", common.Address{}, rpc.BlockNumberOrHashWithNumber(probe)); err != nil {
		return fmt.Errorf("--%s %s is a hash-scheme op-geth without --gcmode archive (no state at block %d: %v): there "+
			"debug_setHead cannot stop at a safe head more than 128 blocks below the head, and a halt would rewind below "+
			"it; run op-geth with the path scheme (--state.scheme path, its default for a new datadir) or --gcmode archive",
			driverhook.L2RPCFlagName, r.name, probe, err)
	}
	r.archive = true
	return nil
}

// MaxUnsafeRange is how many blocks above the safe head the unsafe chain may reach for a halt to stay able to rewind
// op-geth to the safe head, or 0 for no bound: on a hash-scheme op-geth not proven to be an archive node,
// hashFullUnsafeRange; a path-scheme op-geth rolls back through its state history, an archive node has every state.
func (r *engineRewinder) MaxUnsafeRange() uint64 {
	if r.scheme == schemeHash && !r.archive {
		return hashFullUnsafeRange
	}
	return 0
}

// checkIdentity compares the RPC's chain with the engine op-node drives, at both heads: the RPC's latest block must
// be the engine's block at that height, and the engine's latest the RPC's. The same node passes at once, unless a
// block lands between the reads; it is read again a few times before the two are called different nodes.
func (r *engineRewinder) checkIdentity(ctx context.Context, engine headReader) error {
	var err error
	for attempt := 0; attempt < identityAttempts; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return errors.Join(err, ctx.Err())
			case <-time.After(identityRetry):
			}
		}
		if err = r.sameChainAsEngine(ctx, engine); err == nil || !errors.Is(err, errOtherNode) {
			return err
		}
	}
	return fmt.Errorf("%w: %w; a halt would rewind that node with debug_setHead. Point --%s at the op-geth behind --l2 "+
		"(its user RPC with the debug namespace)", errOtherNode, err, driverhook.L2RPCFlagName)
}

func (r *engineRewinder) sameChainAsEngine(ctx context.Context, engine headReader) error {
	var latest *struct {
		Number hexutil.Uint64 `json:"number"`
		Hash   common.Hash    `json:"hash"`
	}
	if err := r.call(ctx, &latest, "eth_getBlockByNumber", rpc.LatestBlockNumber, false); err != nil {
		return fmt.Errorf("--%s %s: latest block: %w", driverhook.L2RPCFlagName, r.name, err)
	}
	if latest == nil {
		return fmt.Errorf("--%s %s has no latest block", driverhook.L2RPCFlagName, r.name)
	}
	ours, err := engine.L2BlockRefByNumber(ctx, uint64(latest.Number))
	if err != nil && !errors.Is(err, ethereum.NotFound) {
		return fmt.Errorf("%w: the engine's block %d: %w", errEngine, latest.Number, err)
	}
	if err != nil || ours.Hash != latest.Hash {
		return fmt.Errorf("%w: its latest block is %d %s, the engine op-node drives has %s at that height", errOtherNode,
			uint64(latest.Number), latest.Hash, describeHash(ours.Hash, err))
	}
	head, err := engine.L2BlockRefByLabel(ctx, eth.Unsafe)
	if err != nil {
		return fmt.Errorf("%w: the engine's latest block: %w", errEngine, err)
	}
	theirs, err := r.hashAt(ctx, rpc.BlockNumber(head.Number))
	if err != nil && !errors.Is(err, ethereum.NotFound) {
		return fmt.Errorf("--%s %s: block %d: %w", driverhook.L2RPCFlagName, r.name, head.Number, err)
	}
	if err != nil || theirs != head.Hash {
		return fmt.Errorf("%w: the engine's latest block is %s, it has %s at that height", errOtherNode, head.ID(),
			describeHash(theirs, err))
	}
	return nil
}

// CheckIdentity reads the RPC's head, then the head of the engine op-node drives, then the RPC's head again: the same
// node's engine, read in between, is at least as high as the first and at most as high as the second. Another node
// of the chain is out of those bounds whenever it has a block this node has not inserted yet (the sequencer's
// op-geth, between its block and our insert of it), or lacks one this node has (a follower behind it). still
// reports whether nothing rewound the engine meanwhile (a halt). It returns an error once, when the RPC is taken for
// another node; every rewind is refused from then on.
func (r *engineRewinder) CheckIdentity(ctx context.Context, engine headerReader, now time.Time, still func() bool) error {
	var before, after hexutil.Uint64
	if err := r.call(ctx, &before, "eth_blockNumber"); err != nil {
		return nil // unreachable now: the rewind will say so, if it comes to one
	}
	info, err := engine.InfoByLabel(ctx, eth.Unsafe)
	if err != nil {
		return nil
	}
	head := eth.BlockID{Hash: info.Hash(), Number: info.NumberU64()}
	if err := r.call(ctx, &after, "eth_blockNumber"); err != nil {
		return nil
	}
	if (uint64(before) <= head.Number && head.Number <= uint64(after)) || !still() {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.otherNode != nil {
		return nil
	}
	r.strikes = append(slices.DeleteFunc(r.strikes, func(t time.Time) bool { return now.Sub(t) > identityStrikeWindow }), now)
	if len(r.strikes) < identityStrikes {
		return nil
	}
	r.otherNode = fmt.Errorf("%w: its head was outside the engine op-node drives (--l2) %d times within %s, last at "+
		"blocks %d and %d around the engine's %s; every rewind is refused. Point --%s at the op-geth behind --l2 and "+
		"restart", errOtherNode, identityStrikes, identityStrikeWindow, uint64(before), uint64(after), head,
		driverhook.L2RPCFlagName)
	return r.otherNode
}

// Rewind makes the safe head op-geth's head: debug_setHead to its number, then op-geth's latest must be the safe
// head block. engineHead is the latest block of the engine op-node drives, read under the controller's lock: the
// RPC's latest must be that block, or the RPC is another node and is left alone. It does nothing when op-geth's
// head is the safe head already.
func (r *engineRewinder) Rewind(ctx context.Context, safe eth.L2BlockRef, engineHead eth.BlockID) error {
	if safe.Hash == (common.Hash{}) {
		return errors.New("no safe head yet: nothing to rewind to")
	}
	r.mu.Lock()
	otherNode := r.otherNode
	r.mu.Unlock()
	if otherNode != nil {
		return otherNode
	}
	latest, err := r.hashAt(ctx, rpc.LatestBlockNumber)
	if err != nil {
		return fmt.Errorf("op-geth's latest block: %w", err)
	}
	if latest != engineHead.Hash {
		return fmt.Errorf("%w: its latest block is %s, the engine op-node drives (--l2) is at %s; not rewinding it",
			errOtherNode, latest, engineHead)
	}
	if latest == safe.Hash {
		return nil
	}
	if r.scheme != schemePath {
		// A hash-scheme op-geth rewinds further than asked, down to a block with state, when it lacks the safe head's
		// state: check it first, a missing state must fail the rewind, not the chain.
		var balance hexutil.Big
		if err := r.call(ctx, &balance, "eth_getBalance", common.Address{}, rpc.BlockNumberOrHashWithHash(safe.Hash, true)); err != nil {
			return fmt.Errorf("op-geth (hash scheme) has no state for the safe head %s, not rewinding to it (debug_setHead "+
				"would go below it; run op-geth with --state.scheme path or --gcmode archive): %w", safe.ID(), err)
		}
	}
	setHeadCtx, cancel := context.WithTimeout(ctx, r.timeout+time.Duration(engineHead.Number-min(engineHead.Number, safe.Number))*setHeadPerBlock)
	defer cancel()
	if err := r.rpc.CallContext(setHeadCtx, nil, "debug_setHead", hexutil.Uint64(safe.Number)); err != nil {
		return fmt.Errorf("debug_setHead(%d) at %s: %w", safe.Number, r.name, err)
	}
	if latest, err = r.hashAt(ctx, rpc.LatestBlockNumber); err != nil {
		return fmt.Errorf("op-geth's latest block after debug_setHead(%d): %w", safe.Number, err)
	}
	if latest != safe.Hash {
		return fmt.Errorf("after debug_setHead(%d), op-geth's latest block is %s, not the safe head %s (is --history.state "+
			"shorter than the unsafe range?)", safe.Number, latest, safe.ID())
	}
	return nil
}

func (r *engineRewinder) call(ctx context.Context, result any, method string, args ...any) error {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	return r.rpc.CallContext(ctx, result, method, args...)
}

func (r *engineRewinder) hashAt(ctx context.Context, n rpc.BlockNumber) (common.Hash, error) {
	var head *struct {
		Hash common.Hash `json:"hash"`
	}
	if err := r.call(ctx, &head, "eth_getBlockByNumber", n, false); err != nil {
		return common.Hash{}, err
	}
	if head == nil {
		return common.Hash{}, fmt.Errorf("block %s: %w", n, ethereum.NotFound)
	}
	return head.Hash, nil
}

// describeHash names a block found by number, or says there is none.
func describeHash(h common.Hash, err error) string {
	if err != nil {
		return "no block"
	}
	return h.String()
}

func (r *engineRewinder) Close() { r.rpc.Close() }
