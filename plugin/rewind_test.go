package plugin

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/ethereum-optimism/optimism/op-service/eth"
)

// fakeGeth serves the part of op-geth's user RPC the rewinder uses: a canonical chain of hashes by number.
type fakeGeth struct {
	chain     []common.Hash // chain[n] is block n; the last one is latest
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
	if h, ok := at.Hash(); ok && e.g.noState[h] {
		return nil, errors.New("missing trie node")
	}
	return new(hexutil.Big), nil
}

type fakeGethDebug struct{ g *fakeGeth }

func (d fakeGethDebug) SetHead(n hexutil.Uint64) {
	d.g.setHeads = append(d.g.setHeads, uint64(n))
	d.g.chain = d.g.chain[:uint64(n)-min(uint64(n), d.g.overshoot)+1]
}

func startFakeGeth(t *testing.T, g *fakeGeth, debug bool) *engineRewinder {
	t.Helper()
	srv := rpc.NewServer()
	require.NoError(t, srv.RegisterName("eth", fakeGethEth{g}))
	if debug {
		require.NoError(t, srv.RegisterName("debug", fakeGethDebug{g}))
	}
	t.Cleanup(srv.Stop)
	rw := &engineRewinder{rpc: rpc.DialInProc(srv), name: "fake", timeout: time.Second}
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

func TestEngineRewinderCheck(t *testing.T) {
	ctx := context.Background()
	g := &fakeGeth{chain: hashChain(5)}
	genesis := eth.BlockID{Hash: g.chain[0], Number: 0}
	require.NoError(t, startFakeGeth(t, g, true).Check(ctx, genesis))
	require.ErrorContains(t, startFakeGeth(t, g, false).Check(ctx, genesis), "does not serve the debug namespace")
	require.ErrorContains(t, startFakeGeth(t, g, true).Check(ctx, eth.BlockID{Hash: common.Hash{1}}), "another chain's node")
}

func TestEngineRewinderRewind(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		geth      *fakeGeth
		safe      uint64
		err       string
		setHeads  []uint64
		headAfter int
	}{
		{name: "rewinds to the safe head", geth: &fakeGeth{chain: hashChain(10)}, safe: 6, setHeads: []uint64{6}, headAfter: 6},
		{name: "already there", geth: &fakeGeth{chain: hashChain(7)}, safe: 6, headAfter: 6},
		{name: "no state for the safe head", geth: &fakeGeth{chain: hashChain(10), noState: map[common.Hash]bool{{0xc0, 6}: true}},
			safe: 6, err: "no state for the safe head", headAfter: 9},
		{name: "rewound past the safe head", geth: &fakeGeth{chain: hashChain(10), overshoot: 2}, safe: 6, setHeads: []uint64{6},
			err: "not the safe head", headAfter: 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := startFakeGeth(t, tc.geth, true)
			err := r.Rewind(ctx, eth.L2BlockRef{Hash: tc.geth.chain[tc.safe], Number: tc.safe})
			if tc.err == "" {
				require.NoError(t, err)
			} else {
				require.ErrorContains(t, err, tc.err)
			}
			require.Equal(t, tc.setHeads, tc.geth.setHeads)
			require.Len(t, tc.geth.chain, tc.headAfter+1)
		})
	}
	require.Error(t, startFakeGeth(t, &fakeGeth{chain: hashChain(3)}, true).Rewind(ctx, eth.L2BlockRef{}), "no safe head")
}
