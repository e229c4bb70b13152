package plugin

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/ethereum-optimism/optimism/op-service/eth"
	"github.com/ethereum-optimism/optimism/op-service/testutils"
)

// fakeGeth serves the part of op-geth's user RPC the rewinder uses: a canonical chain of hashes by number.
type fakeGeth struct {
	chain     []common.Hash // chain[n] is block n; the last one is latest
	scheme    stateScheme   // schemeUnknown: not op-geth (no debug_getTrieFlushInterval)
	noState   map[common.Hash]bool
	setHeads  []uint64
	overshoot uint64 // debug_setHead rewinds this many blocks further than asked
}

type fakeGethEth struct{ g *fakeGeth }

func (e fakeGethEth) GetBlockByNumber(n rpc.BlockNumber, _ bool) (map[string]any, error) {
	i := int(n)
	if n == rpc.LatestBlockNumber {
		i = len(e.g.chain) - 1
	}
	if i < 0 || i >= len(e.g.chain) {
		return nil, nil
	}
	return map[string]any{"hash": e.g.chain[i], "number": hexutil.Uint64(i)}, nil
}

func (e fakeGethEth) GetBalance(_ common.Address, at rpc.BlockNumberOrHash) (*hexutil.Big, error) {
	h, ok := at.Hash()
	if n, byNumber := at.Number(); byNumber && int(n) < len(e.g.chain) {
		h, ok = e.g.chain[n], true
	}
	if ok && e.g.noState[h] {
		return nil, errors.New("missing trie node")
	}
	return new(hexutil.Big), nil
}

func (e fakeGethEth) BlockNumber() hexutil.Uint64 { return hexutil.Uint64(len(e.g.chain) - 1) }

// fakeRethDebug is a debug namespace without op-geth's debug_getTrieFlushInterval.
type fakeRethDebug struct{ g *fakeGeth }

func (d fakeRethDebug) SetHead(n hexutil.Uint64) { fakeGethDebug(d).SetHead(n) }

type fakeGethDebug struct{ g *fakeGeth }

func (d fakeGethDebug) GetTrieFlushInterval() (string, error) {
	if d.g.scheme == schemePath {
		return "", errors.New("trie flush interval is undefined for path-based scheme")
	}
	return "1h0m0s", nil
}

func (d fakeGethDebug) SetHead(n hexutil.Uint64) {
	d.g.setHeads = append(d.g.setHeads, uint64(n))
	d.g.chain = d.g.chain[:uint64(n)-min(uint64(n), d.g.overshoot)+1]
}

func startFakeGeth(t *testing.T, g *fakeGeth, debug bool) *engineRewinder {
	t.Helper()
	srv := rpc.NewServer()
	require.NoError(t, srv.RegisterName("eth", fakeGethEth{g}))
	switch {
	case debug && g.scheme == schemeUnknown:
		require.NoError(t, srv.RegisterName("debug", fakeRethDebug{g}))
	case debug:
		require.NoError(t, srv.RegisterName("debug", fakeGethDebug{g}))
	}
	t.Cleanup(srv.Stop)
	rw := &engineRewinder{rpc: rpc.DialInProc(srv), name: "fake", timeout: time.Second, scheme: g.scheme}
	t.Cleanup(rw.Close)
	return rw
}

func hashChain(n int) []common.Hash {
	chain := make([]common.Hash, n)
	for i := range chain {
		chain[i] = common.Hash{0xc0, byte(i)}
	}
	return chain
}

// chainEngine is the engine op-node drives, as the rewinder reads it: a canonical chain of hashes by number.
type chainEngine []common.Hash

func (c chainEngine) L2BlockRefByNumber(_ context.Context, n uint64) (eth.L2BlockRef, error) {
	if n >= uint64(len(c)) {
		return eth.L2BlockRef{}, ethereum.NotFound
	}
	return eth.L2BlockRef{Hash: c[n], Number: n}, nil
}

func (c chainEngine) L2BlockRefByLabel(ctx context.Context, _ eth.BlockLabel) (eth.L2BlockRef, error) {
	return c.L2BlockRefByNumber(ctx, uint64(len(c)-1))
}

func (c chainEngine) InfoByLabel(ctx context.Context, label eth.BlockLabel) (eth.BlockInfo, error) {
	ref, err := c.L2BlockRefByLabel(ctx, label)
	if err != nil {
		return nil, err
	}
	return &testutils.MockBlockInfo{InfoHash: ref.Hash, InfoNum: ref.Number}, nil
}

func TestEngineRewinderCheck(t *testing.T) {
	ctx := context.Background()
	long := hashChain(hashArchiveProbeDepth + 10)
	other := append(hashChain(5)[:4:4], common.Hash{0xbb, 4})
	for _, tc := range []struct {
		name   string
		geth   *fakeGeth
		debug  bool
		engine chainEngine // nil: the same chain as the fake op-geth
		err    string
		scheme stateScheme
		bound  uint64 // MaxUnsafeRange
	}{
		{name: "path scheme", geth: &fakeGeth{chain: hashChain(5), scheme: schemePath}, debug: true, scheme: schemePath},
		{name: "hash archive", geth: &fakeGeth{chain: long, scheme: schemeHash}, debug: true, scheme: schemeHash},
		{name: "hash, too young to tell", geth: &fakeGeth{chain: hashChain(5), scheme: schemeHash, noState: map[common.Hash]bool{{0xc0, 1}: true}},
			debug: true, scheme: schemeHash, bound: hashFullUnsafeRange},
		{name: "hash without archive", geth: &fakeGeth{chain: long, scheme: schemeHash, noState: map[common.Hash]bool{long[9]: true}},
			debug: true, err: "hash-scheme op-geth without --gcmode archive"},
		{name: "no debug", geth: &fakeGeth{chain: hashChain(5), scheme: schemePath}, err: "does not serve the debug namespace"},
		{name: "not op-geth", geth: &fakeGeth{chain: hashChain(5)}, debug: true, err: "is not op-geth"},
		{name: "another node ahead of the engine", geth: &fakeGeth{chain: hashChain(8), scheme: schemePath}, debug: true,
			engine: hashChain(5), err: "not this node's op-geth"},
		{name: "another node behind the engine", geth: &fakeGeth{chain: hashChain(3), scheme: schemePath}, debug: true,
			engine: hashChain(5), err: "not this node's op-geth"},
		{name: "another node on another branch", geth: &fakeGeth{chain: hashChain(5), scheme: schemePath}, debug: true,
			engine: other, err: "not this node's op-geth"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			engine := tc.engine
			if engine == nil {
				engine = tc.geth.chain
			}
			r := startFakeGeth(t, tc.geth, tc.debug)
			r.scheme = schemeUnknown
			err := r.Check(ctx, eth.BlockID{Hash: tc.geth.chain[0]}, engine)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				require.Empty(t, tc.geth.setHeads)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.scheme, r.scheme)
			require.Equal(t, tc.bound, r.MaxUnsafeRange())
		})
	}
	g := &fakeGeth{chain: hashChain(5), scheme: schemePath}
	require.ErrorContains(t, startFakeGeth(t, g, true).Check(ctx, eth.BlockID{Hash: common.Hash{1}}, chainEngine(g.chain)), "another chain's node")
}

func TestEngineRewinderRewind(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name       string
		geth       *fakeGeth
		safe       uint64
		engineHead *common.Hash // nil: op-geth's latest (the RPC is this node's op-geth)
		err        string
		setHeads   []uint64
		headAfter  int
	}{
		{name: "rewinds to the safe head", geth: &fakeGeth{chain: hashChain(10), scheme: schemePath}, safe: 6, setHeads: []uint64{6}, headAfter: 6},
		{name: "already there", geth: &fakeGeth{chain: hashChain(7), scheme: schemePath}, safe: 6, headAfter: 6},
		// A path-scheme op-geth cannot read the state of a safe head more than 128 blocks down, but rolls back to it.
		{name: "path scheme without the safe head's state", geth: &fakeGeth{chain: hashChain(10), scheme: schemePath,
			noState: map[common.Hash]bool{{0xc0, 6}: true}}, safe: 6, setHeads: []uint64{6}, headAfter: 6},
		{name: "hash scheme without the safe head's state", geth: &fakeGeth{chain: hashChain(10), scheme: schemeHash,
			noState: map[common.Hash]bool{{0xc0, 6}: true}}, safe: 6, err: "no state for the safe head", headAfter: 9},
		{name: "rewound past the safe head", geth: &fakeGeth{chain: hashChain(10), scheme: schemePath, overshoot: 2}, safe: 6,
			setHeads: []uint64{6}, err: "not the safe head", headAfter: 4},
		{name: "another node", geth: &fakeGeth{chain: hashChain(10), scheme: schemePath}, safe: 6, engineHead: &common.Hash{0xbb},
			err: "not this node's op-geth", headAfter: 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := startFakeGeth(t, tc.geth, true)
			head := tc.geth.chain[len(tc.geth.chain)-1]
			if tc.engineHead != nil {
				head = *tc.engineHead
			}
			err := r.Rewind(ctx, eth.L2BlockRef{Hash: tc.geth.chain[tc.safe], Number: tc.safe}, eth.BlockID{Hash: head})
			if tc.err == "" {
				require.NoError(t, err)
			} else {
				require.ErrorContains(t, err, tc.err)
			}
			require.Equal(t, tc.setHeads, tc.geth.setHeads)
			require.Len(t, tc.geth.chain, tc.headAfter+1)
		})
	}
	require.Error(t, startFakeGeth(t, &fakeGeth{chain: hashChain(3)}, true).Rewind(ctx, eth.L2BlockRef{}, eth.BlockID{}), "no safe head")
}

// While running, an RPC seen ahead of or behind the engine op-node drives identityStrikes times within
// identityStrikeWindow is another node: every rewind is refused from then on. The same node never is; a look that
// straddled a rewind (still false) is not counted, nor are strikes older than the window.
func TestEngineRewinderCheckIdentity(t *testing.T) {
	ctx := context.Background()
	t0 := time.Unix(1_700_000_000, 0)
	yes := func() bool { return true }

	same := &fakeGeth{chain: hashChain(10), scheme: schemePath}
	r := startFakeGeth(t, same, true)
	for i := range 10 {
		require.NoError(t, r.CheckIdentity(ctx, chainEngine(same.chain), t0.Add(time.Duration(i)*time.Second), yes))
	}
	require.NoError(t, r.Rewind(ctx, eth.L2BlockRef{Hash: same.chain[6], Number: 6}, eth.BlockID{Hash: same.chain[9], Number: 9}))

	ahead := &fakeGeth{chain: hashChain(12), scheme: schemePath} // the sequencer, a block ahead of this node's engine
	engine := chainEngine(hashChain(11))
	r = startFakeGeth(t, ahead, true)
	require.NoError(t, r.CheckIdentity(ctx, engine, t0, yes))
	require.NoError(t, r.CheckIdentity(ctx, engine, t0.Add(time.Second), func() bool { return false }), "a look across a rewind")
	require.NoError(t, r.CheckIdentity(ctx, engine, t0.Add(2*identityStrikeWindow), yes), "the first strike is out of the window")
	require.NoError(t, r.CheckIdentity(ctx, engine, t0.Add(2*identityStrikeWindow+time.Second), yes))
	err := r.CheckIdentity(ctx, engine, t0.Add(2*identityStrikeWindow+2*time.Second), yes)
	require.ErrorIs(t, err, errOtherNode)
	require.NoError(t, r.CheckIdentity(ctx, engine, t0.Add(2*identityStrikeWindow+3*time.Second), yes), "said once")

	// A follower behind this node's engine is another node too.
	behind := &fakeGeth{chain: hashChain(10), scheme: schemePath}
	rb := startFakeGeth(t, behind, true)
	for i := range identityStrikes - 1 {
		require.NoError(t, rb.CheckIdentity(ctx, engine, t0.Add(time.Duration(i)*time.Second), yes))
	}
	require.ErrorIs(t, rb.CheckIdentity(ctx, engine, t0.Add(identityStrikes*time.Second), yes), errOtherNode)

	// In sync again at the halt (the heads equal): the rewind is refused all the same, and nothing is rewound.
	err = r.Rewind(ctx, eth.L2BlockRef{Hash: ahead.chain[6], Number: 6}, eth.BlockID{Hash: ahead.chain[11], Number: 11})
	require.ErrorIs(t, err, errOtherNode)
	require.Empty(t, ahead.setHeads)
	require.Len(t, ahead.chain, 12)
}
