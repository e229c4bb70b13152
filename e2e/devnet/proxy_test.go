package devnet

import (
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http/httptest"
	"testing"

	"github.com/ethereum-optimism/optimism/op-service/sources"
	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/rlp"
	"github.com/ethereum/go-ethereum/rpc"
	"github.com/ethereum/go-ethereum/trie"
)

// fakeChain serves eth_getBlockByNumber, eth_getBlockByHash and debug_getRawBlock for a chain of blocks, each
// holding a deposit shaped like an L1-info deposit.
type fakeChain struct {
	blocks  []*types.Block
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
		info := make([]byte, 4+4+4+8+8+8+32+32)
		info[4+4+4+7] = byte(i) // the sequence number
		deposit := types.NewTx(&types.DepositTx{SourceHash: crypto.Keccak256Hash([]byte(seed), h.Number.Bytes()),
			From: common.Address{0xde, 0xad}, To: &common.Address{0x42}, Gas: 1_000_000, Data: info})
		b := types.NewBlock(h, &types.Body{Transactions: types.Transactions{deposit}}, nil, trie.NewStackTrie(nil), types.DefaultBlockConfig)
		c.blocks = append(c.blocks, b)
		c.headers = append(c.headers, b.Header())
		parent = b.Hash()
	}
	return c
}

func (c *fakeChain) number(n rpc.BlockNumber) rpc.BlockNumber {
	switch n {
	case rpc.LatestBlockNumber:
		return rpc.BlockNumber(len(c.headers) - 1)
	case rpc.SafeBlockNumber:
		return 2
	case rpc.FinalizedBlockNumber:
		return 1
	}
	return n
}

// GetBlockByNumber serves "latest" as the last block, "safe" as block 2 and "finalized" as block 1.
func (c *fakeChain) GetBlockByNumber(n rpc.BlockNumber, full bool) (json.RawMessage, error) {
	if n = c.number(n); int(n) >= len(c.blocks) {
		return json.RawMessage("null"), nil
	}
	return blockJSON(c.blocks[n], full)
}

func (c *fakeChain) GetBlockByHash(hash common.Hash, full bool) (json.RawMessage, error) {
	for _, b := range c.blocks {
		if b.Hash() == hash {
			return blockJSON(b, full)
		}
	}
	return json.RawMessage("null"), nil
}

type fakeChainDebug struct{ c *fakeChain }

// GetRawBlock answers as op-geth does: the block's RLP, nothing for an unknown number.
func (d fakeChainDebug) GetRawBlock(arg rpc.BlockNumberOrHash) (hexutil.Bytes, error) {
	if hash, ok := arg.Hash(); ok {
		for _, b := range d.c.blocks {
			if b.Hash() == hash {
				return rlp.EncodeToBytes(b)
			}
		}
		return nil, fmt.Errorf("block #%d not found", hash)
	}
	n, _ := arg.Number()
	if n = d.c.number(n); int(n) >= len(d.c.blocks) {
		return nil, nil
	}
	return rlp.EncodeToBytes(d.c.blocks[n])
}

func blockJSON(b *types.Block, full bool) (json.RawMessage, error) {
	var block map[string]any
	data, err := json.Marshal(b.Header())
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, &block); err != nil {
		return nil, err
	}
	if full {
		block["transactions"] = b.Transactions()
	} else {
		hashes := []common.Hash{}
		for _, tx := range b.Transactions() {
			hashes = append(hashes, tx.Hash())
		}
		block["transactions"] = hashes
	}
	block["uncles"] = []any{}
	return json.Marshal(block)
}

func serveFakeChain(t *testing.T, c *fakeChain) string {
	srv := rpc.NewServer()
	require.NoError(t, srv.RegisterName("eth", c))
	require.NoError(t, srv.RegisterName("debug", fakeChainDebug{c}))
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

// getRawBlock fetches a block with debug_getRawBlock.
func getRawBlock(t *testing.T, c *rpc.Client, arg string) *types.Block {
	t.Helper()
	var raw hexutil.Bytes
	require.NoError(t, c.CallContext(context.Background(), &raw, "debug_getRawBlock", arg))
	var b types.Block
	require.NoError(t, rlp.DecodeBytes(raw, &b))
	return &b
}

// fullBlock is a block with its transactions, as a client of the proxy sees it.
type fullBlock struct {
	hash common.Hash
	txs  sources.RawTransactions
}

func getFullBlock(t *testing.T, c *rpc.Client, method string, arg any) fullBlock {
	t.Helper()
	var raw json.RawMessage
	require.NoError(t, c.CallContext(context.Background(), &raw, method, arg, true))
	var header types.Header
	require.NoError(t, json.Unmarshal(raw, &header))
	var fields struct {
		Hash         common.Hash             `json:"hash"`
		Transactions sources.RawTransactions `json:"transactions"`
	}
	require.NoError(t, json.Unmarshal(raw, &fields))
	require.Equal(t, header.Hash(), fields.Hash, "served header must hash to the served block hash")
	require.Equal(t, types.DeriveSha(fields.Transactions, trie.NewStackTrie(nil)), header.TxHash)
	return fullBlock{hash: fields.Hash, txs: fields.Transactions}
}

func rawTxs(t *testing.T, b *types.Block) sources.RawTransactions {
	var txs sources.RawTransactions
	for _, tx := range b.Transactions() {
		enc, err := tx.MarshalBinary()
		require.NoError(t, err)
		txs = append(txs, enc)
	}
	return txs
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

	t.Run("tamper raw blocks", func(t *testing.T) {
		for _, how := range []Tamper{TamperStateRoot, TamperPrevRandao, TamperTimestamp, TamperForgedDeposit, TamperL1InfoField} {
			for _, rawFirst := range []bool{true, false} {
				proxy.TamperFromWith(2, how)
				var raw3 *types.Block
				if rawFirst {
					raw3 = getRawBlock(t, client, "0x3")
				}
				json3 := getFullBlock(t, client, "eth_getBlockByNumber", "0x3")
				if !rawFirst {
					raw3 = getRawBlock(t, client, "0x3")
				}
				require.Equal(t, json3.hash, raw3.Hash(), "tamper %d: the raw block is not the JSON one", how)
				require.Equal(t, json3.txs, rawTxs(t, raw3), "tamper %d", how)
				require.NotEqual(t, chain.headers[3].Hash(), raw3.Hash(), "tamper %d", how)
				if how == TamperForgedDeposit {
					require.Len(t, raw3.Transactions(), 2, "no forged deposit")
				}
				require.Equal(t, types.DeriveSha(raw3.Transactions(), trie.NewStackTrie(nil)), raw3.TxHash(), "tamper %d", how)

				raw2 := getRawBlock(t, client, "0x2")
				require.Equal(t, raw2.Hash(), raw3.ParentHash(), "tamper %d: tampered blocks link to their tampered parents", how)
				require.Equal(t, chain.headers[1].Hash(), raw2.ParentHash(), "tamper %d", how)
				require.Equal(t, raw2.Hash(), getRawBlock(t, client, raw2.Hash().Hex()).Hash(),
					"tamper %d: tampered blocks can be looked up by their tampered hash", how)
				require.Equal(t, chain.headers[1].Hash(), getRawBlock(t, client, "0x1").Hash(),
					"blocks below the tampered range are unchanged")
				var none hexutil.Bytes
				require.NoError(t, client.Call(&none, "debug_getRawBlock", "0x9"))
				require.Empty(t, none, "an unknown block stays unknown")
				proxy.StopTampering()
			}
		}
	})

	t.Run("lying tags", func(t *testing.T) {
		require.Equal(t, uint64(2), getBlock(t, client, "eth_getBlockByNumber", "safe").header.Number.Uint64())
		proxy.SetLyingTags(true)
		defer proxy.SetLyingTags(false)
		require.Equal(t, uint64(5), getBlock(t, client, "eth_getBlockByNumber", "safe").header.Number.Uint64())
		require.Equal(t, uint64(5), getBlock(t, client, "eth_getBlockByNumber", "finalized").header.Number.Uint64())
	})

	t.Run("lying tags, raw blocks", func(t *testing.T) {
		require.Equal(t, uint64(2), getRawBlock(t, client, "safe").NumberU64())
		proxy.SetLyingTags(true)
		defer proxy.SetLyingTags(false)
		require.Equal(t, uint64(5), getRawBlock(t, client, "safe").NumberU64())
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
