package devnet

import (
	"context"
	"encoding/json"
	"math/big"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/rpc"
)

// fakeChain serves eth_getBlockByNumber and eth_getBlockByHash for a chain of empty blocks.
type fakeChain struct {
	headers []*types.Header
}

func newFakeChain(seed string, n int) *fakeChain {
	c := &fakeChain{}
	parent := common.Hash{}
	for i := range n {
		h := &types.Header{
			ParentHash: parent,
			Number:     big.NewInt(int64(i)),
			Root:       crypto.Keccak256Hash([]byte(seed), big.NewInt(int64(i)).Bytes()),
			Difficulty: new(big.Int),
			GasLimit:   30_000_000,
			Time:       uint64(1000 + i),
			BaseFee:    big.NewInt(1),
		}
		c.headers = append(c.headers, h)
		parent = h.Hash()
	}
	return c
}

// GetBlockByNumber serves "latest" as the last block, "safe" as block 2 and "finalized" as block 1.
func (c *fakeChain) GetBlockByNumber(n rpc.BlockNumber, full bool) (json.RawMessage, error) {
	switch n {
	case rpc.LatestBlockNumber:
		n = rpc.BlockNumber(len(c.headers) - 1)
	case rpc.SafeBlockNumber:
		n = 2
	case rpc.FinalizedBlockNumber:
		n = 1
	}
	if int(n) >= len(c.headers) {
		return json.RawMessage("null"), nil
	}
	return blockJSON(c.headers[n])
}

func (c *fakeChain) GetBlockByHash(hash common.Hash, full bool) (json.RawMessage, error) {
	for _, h := range c.headers {
		if h.Hash() == hash {
			return blockJSON(h)
		}
	}
	return json.RawMessage("null"), nil
}

func blockJSON(h *types.Header) (json.RawMessage, error) {
	var block map[string]any
	data, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, &block); err != nil {
		return nil, err
	}
	block["transactions"] = []any{}
	block["uncles"] = []any{}
	return json.Marshal(block)
}

func serveFakeChain(t *testing.T, c *fakeChain) string {
	srv := rpc.NewServer()
	require.NoError(t, srv.RegisterName("eth", c))
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	t.Cleanup(srv.Stop)
	return hs.URL
}

// fetched is a block as a client of the proxy sees it.
type fetched struct {
	header   *types.Header
	reported common.Hash
}

func getBlock(t *testing.T, c *rpc.Client, method string, arg any) fetched {
	t.Helper()
	var raw json.RawMessage
	require.NoError(t, c.CallContext(context.Background(), &raw, method, arg, false))
	var b fetched
	require.NoError(t, json.Unmarshal(raw, &b.header))
	var fields struct {
		Hash common.Hash `json:"hash"`
	}
	require.NoError(t, json.Unmarshal(raw, &fields))
	b.reported = fields.Hash
	require.Equal(t, b.header.Hash(), b.reported, "served header must hash to the served block hash")
	return b
}

func TestProxy(t *testing.T) {
	chain := newFakeChain("a", 6)
	proxy, err := NewProxy(serveFakeChain(t, chain))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, proxy.Close()) })
	client, err := rpc.Dial(proxy.URL)
	require.NoError(t, err)
	t.Cleanup(client.Close)

	t.Run("forward", func(t *testing.T) {
		b := getBlock(t, client, "eth_getBlockByNumber", "0x3")
		require.Equal(t, chain.headers[3].Hash(), b.reported)
	})

	t.Run("tamper", func(t *testing.T) {
		proxy.TamperFrom(2)
		defer proxy.StopTampering()

		require.Equal(t, chain.headers[1].Hash(), getBlock(t, client, "eth_getBlockByNumber", "0x1").reported,
			"blocks below the tampered range are unchanged")
		// The head first: the proxy must tamper blocks 2 to 4 on its own to link the head to them.
		b3 := getBlock(t, client, "eth_getBlockByNumber", "latest")
		require.Equal(t, uint64(5), b3.header.Number.Uint64())
		b3 = getBlock(t, client, "eth_getBlockByNumber", "0x3")
		require.NotEqual(t, chain.headers[3].Root, b3.header.Root)
		b2 := getBlock(t, client, "eth_getBlockByNumber", "0x2")
		require.NotEqual(t, chain.headers[2].Root, b2.header.Root)
		require.Equal(t, b2.reported, b3.header.ParentHash, "tampered blocks link to their tampered parents")
		require.Equal(t, chain.headers[1].Hash(), b2.header.ParentHash, "the first tampered block links to the real chain")
		require.Equal(t, b2.reported, getBlock(t, client, "eth_getBlockByHash", b2.reported).reported,
			"tampered blocks can be looked up by their tampered hash")

		batch := []rpc.BatchElem{
			{Method: "eth_getBlockByNumber", Args: []any{"0x4", false}, Result: new(json.RawMessage)},
			{Method: "eth_getBlockByNumber", Args: []any{"0x0", false}, Result: new(json.RawMessage)},
		}
		require.NoError(t, client.BatchCall(batch))
		var b4, b0 types.Header
		require.NoError(t, batch[0].Error)
		require.NoError(t, json.Unmarshal(*batch[0].Result.(*json.RawMessage), &b4))
		require.NoError(t, json.Unmarshal(*batch[1].Result.(*json.RawMessage), &b0))
		require.Equal(t, b3.reported, b4.ParentHash, "batches are tampered too")
		require.Equal(t, chain.headers[0].Hash(), b0.Hash())
	})

	t.Run("lying tags", func(t *testing.T) {
		require.Equal(t, uint64(2), getBlock(t, client, "eth_getBlockByNumber", "safe").header.Number.Uint64())
		proxy.SetLyingTags(true)
		defer proxy.SetLyingTags(false)
		require.Equal(t, uint64(5), getBlock(t, client, "eth_getBlockByNumber", "safe").header.Number.Uint64())
		require.Equal(t, uint64(5), getBlock(t, client, "eth_getBlockByNumber", "finalized").header.Number.Uint64())
	})

	t.Run("failures", func(t *testing.T) {
		var raw json.RawMessage
		proxy.SetFailure(FailErrors)
		require.ErrorContains(t, client.Call(&raw, "eth_getBlockByNumber", "0x1", false), "injected failure")
		proxy.SetFailure(FailDown)
		require.ErrorContains(t, client.Call(&raw, "eth_getBlockByNumber", "0x1", false), "503")
		proxy.SetFailure(FailNone)
		require.NoError(t, client.Call(&raw, "eth_getBlockByNumber", "0x1", false))
	})

	t.Run("upstream", func(t *testing.T) {
		other := newFakeChain("b", 6)
		proxy.SetUpstream(serveFakeChain(t, other))
		require.Equal(t, other.headers[3].Hash(), getBlock(t, client, "eth_getBlockByNumber", "0x3").reported)
	})
}
