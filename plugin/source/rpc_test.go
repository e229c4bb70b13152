package source

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/log"
	"github.com/ethereum/go-ethereum/rlp"
	"github.com/ethereum/go-ethereum/rpc"
	"github.com/ethereum/go-ethereum/trie"

	"github.com/ethereum-optimism/optimism/op-node/rollup"
	"github.com/ethereum-optimism/optimism/op-service/clock"
	"github.com/ethereum-optimism/optimism/op-service/eth"
	"github.com/ethereum-optimism/optimism/op-service/testlog"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/internal/testkit"
)

// sourceEL is a sequencer's op-geth as an rpcSource reads it: eth_getBlockByNumber and debug_getRawBlock on
// go-ethereum's RPC server, answering as op-geth does (null and "0x" for a block it does not have). Over http, it
// counts the calls of each method, and can refuse debug_getRawBlock as proxyd does a method it does not whitelist.
type sourceEL struct {
	blocks map[uint64]*types.Block
	// raw, when set for a number, is debug_getRawBlock's answer instead of the block's RLP.
	raw map[uint64][]byte
	// rawErr, when set, is debug_getRawBlock's error.
	rawErr error
	// rawStall makes debug_getRawBlock answer only when the request is cancelled.
	rawStall bool
	// noDebug leaves the debug namespace out (go-ethereum then answers "method not found"); notWhitelisted has
	// debug_getRawBlock refused as proxyd refuses a method it does not whitelist.
	noDebug, notWhitelisted bool

	// heads are announced to newHeads subscribers (over ws).
	heads chan *types.Header

	mu    sync.Mutex
	calls map[string]int
	// rawCalls counts debug_getRawBlock calls over either transport.
	rawCalls int
}

func newSourceEL(blocks ...*types.Block) *sourceEL {
	el := &sourceEL{blocks: make(map[uint64]*types.Block), raw: make(map[uint64][]byte), calls: make(map[string]int),
		heads: make(chan *types.Header)}
	for _, b := range blocks {
		el.blocks[b.NumberU64()] = b
	}
	return el
}

type sourceELEth struct{ el *sourceEL }

// GetBlockByNumber answers with the block's JSON; for "latest", without full transactions, with the highest block's
// (its header fields are what a head request reads).
func (e sourceELEth) GetBlockByNumber(n rpc.BlockNumber, full bool) (json.RawMessage, error) {
	e.el.mu.Lock()
	defer e.el.mu.Unlock()
	if n == rpc.LatestBlockNumber && !full {
		var head *types.Block
		for _, b := range e.el.blocks {
			if head == nil || b.NumberU64() > head.NumberU64() {
				head = b
			}
		}
		if head == nil {
			return json.RawMessage("null"), nil
		}
		return testkit.BlockJSON(head)
	}
	b, ok := e.el.blocks[uint64(n)]
	if !ok || n < 0 || !full {
		return json.RawMessage("null"), nil
	}
	out, err := testkit.BlockJSON(b)
	return out, err
}

// NewHeads is eth_subscribe("newHeads"): the headers sent on el.heads.
func (e sourceELEth) NewHeads(ctx context.Context) (*rpc.Subscription, error) {
	notifier, ok := rpc.NotifierFromContext(ctx)
	if !ok {
		return nil, rpc.ErrNotificationsUnsupported
	}
	sub := notifier.CreateSubscription()
	go func() {
		for {
			select {
			case h := <-e.el.heads:
				_ = notifier.Notify(sub.ID, h)
			case <-sub.Err():
				return
			}
		}
	}()
	return sub, nil
}

type sourceELDebug struct{ el *sourceEL }

// GetRawBlock is op-geth's DebugAPI.GetRawBlock: a block number or hash, the block's RLP, empty for a number
// beyond the head.
func (d sourceELDebug) GetRawBlock(ctx context.Context, blockNrOrHash rpc.BlockNumberOrHash) (hexutil.Bytes, error) {
	d.el.mu.Lock()
	d.el.rawCalls++
	d.el.mu.Unlock()
	if d.el.rawStall {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if d.el.rawErr != nil {
		return nil, d.el.rawErr
	}
	n, ok := blockNrOrHash.Number()
	if !ok || n < 0 {
		return nil, errors.New("by number only")
	}
	if raw, ok := d.el.raw[uint64(n)]; ok {
		return raw, nil
	}
	d.el.mu.Lock()
	b, ok := d.el.blocks[uint64(n)]
	d.el.mu.Unlock()
	if !ok {
		return nil, nil
	}
	return rlp.EncodeToBytes(b)
}

// serve starts the server; over ws it returns a ws:// URL.
func (el *sourceEL) serve(t *testing.T, ws bool) string {
	srv := rpc.NewServer()
	require.NoError(t, srv.RegisterName("eth", sourceELEth{el}))
	if !el.noDebug {
		require.NoError(t, srv.RegisterName("debug", sourceELDebug{el}))
	}
	t.Cleanup(srv.Stop)
	if ws {
		hs := httptest.NewServer(srv.WebsocketHandler([]string{"*"}))
		t.Cleanup(hs.Close)
		return "ws" + strings.TrimPrefix(hs.URL, "http")
	}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		require.NoError(t, err)
		var msg struct {
			Method string `json:"method"`
		}
		_ = json.Unmarshal(body, &msg)
		el.mu.Lock()
		el.calls[msg.Method]++
		notWhitelisted := el.notWhitelisted
		el.mu.Unlock()
		if msg.Method == rawBlockMethod && notWhitelisted {
			w.Header().Set("content-type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`{"jsonrpc":"2.0","id":1,"error":{"code":-32001,"message":"rpc method is not whitelisted"}}`))
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		srv.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	return hs.URL
}

func (el *sourceEL) rawBlockCalls() int {
	el.mu.Lock()
	defer el.mu.Unlock()
	return el.rawCalls
}

func (el *sourceEL) callsOf(method string) int {
	el.mu.Lock()
	defer el.mu.Unlock()
	return el.calls[method]
}

func testRPCSource(t *testing.T, cfg *rollup.Config, url string, lgr log.Logger) *rpcSource {
	if lgr == nil {
		lgr = testlog.Logger(t, log.LevelInfo)
	}
	src, err := newRPCSource(lgr, url, cfg, 5*time.Second, driverhook.DefaultPollInterval, noopMetrics{}, clock.SystemClock)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, src.Stop(context.Background())) })
	return src
}

// The block fetched as RLP is the payload the JSON answer makes, and the one op-service's conversion makes of
// go-ethereum's block; the source asks nothing else.
func TestRPCSourceRawBlockIsTheJSONPayload(t *testing.T) {
	cfg := testkit.IsthmusRollupConfig()
	block := testkit.IsthmusBlock(t, cfg)
	want, err := eth.BlockAsPayloadEnv(block, cfg)
	require.NoError(t, err)
	for _, ws := range []bool{false, true} {
		t.Run(map[bool]string{false: "http", true: "ws"}[ws], func(t *testing.T) {
			ctx := context.Background()
			rawEL := newSourceEL(block)
			lgr, logs := testlog.CaptureLogger(t, log.LevelInfo)
			rawSrc := testRPCSource(t, cfg, rawEL.serve(t, ws), lgr)
			raw, err := rawSrc.Payload(ctx, 1)
			require.NoError(t, err)
			_, err = rawSrc.Payload(ctx, 1)
			require.NoError(t, err)
			logs.RequireMessageContainedOnce(t, "Fetching blocks from source as RLP")
			require.Nil(t, logs.FindLog(testlog.NewMessageContainsFilter("does not serve")))
			jsonEL := newSourceEL(block)
			jsonEL.noDebug = true
			viaJSON, err := testRPCSource(t, cfg, jsonEL.serve(t, ws), nil).Payload(ctx, 1)
			require.NoError(t, err)
			require.Equal(t, viaJSON, raw)
			require.Equal(t, want, raw)
			if !ws {
				require.Equal(t, 2, rawEL.callsOf(rawBlockMethod))
				require.Zero(t, rawEL.callsOf("eth_getBlockByNumber"))
			}
		})
	}
}

// A source that does not serve debug_getRawBlock is read with eth_getBlockByNumber from its first such answer on,
// and says so once.
func TestRPCSourceFallsBackToJSON(t *testing.T) {
	cfg := testkit.IsthmusRollupConfig()
	block := testkit.IsthmusBlock(t, cfg)
	want, err := eth.BlockAsPayloadEnv(block, cfg)
	require.NoError(t, err)
	for name, refuse := range map[string]func(*sourceEL){
		"method not found":        func(el *sourceEL) { el.noDebug = true },
		"proxyd, not whitelisted": func(el *sourceEL) { el.notWhitelisted = true },
	} {
		t.Run(name, func(t *testing.T) {
			el := newSourceEL(block)
			refuse(el)
			lgr, logs := testlog.CaptureLogger(t, log.LevelInfo)
			src := testRPCSource(t, cfg, el.serve(t, false), lgr)
			for range 3 {
				env, err := src.Payload(context.Background(), 1)
				require.NoError(t, err)
				require.Equal(t, want, env)
			}
			_, err := src.Payload(context.Background(), 2)
			require.ErrorIs(t, err, ethereum.NotFound)
			require.Equal(t, 1, el.callsOf(rawBlockMethod), "asked for the raw block again")
			require.Equal(t, 4, el.callsOf("eth_getBlockByNumber"))
			logs.RequireMessageContainedOnce(t, "does not serve debug_getRawBlock")
			require.Nil(t, logs.FindLog(testlog.NewMessageContainsFilter("as RLP")))
			require.Equal(t, log.LevelInfo, logs.FindLog(testlog.NewMessageContainsFilter("does not serve")).Record.Level)
		})
	}
}

// A source read with eth_getBlockByNumber is asked for debug_getRawBlock again after rawRetry, by one fetch: while it
// still refuses, every other block is read as JSON and nothing more is logged; once it serves it, its blocks are
// read as RLP again, and that is logged once.
func TestRPCSourceAsksForRawBlockAgain(t *testing.T) {
	cfg := testkit.IsthmusRollupConfig()
	block := testkit.IsthmusBlock(t, cfg)
	want, err := eth.BlockAsPayloadEnv(block, cfg)
	require.NoError(t, err)
	el := newSourceEL(block)
	el.notWhitelisted = true
	lgr, logs := testlog.CaptureLogger(t, log.LevelInfo)
	clk := clock.NewDeterministicClock(time.Unix(1_700_000_000, 0))
	src, err := newRPCSource(lgr, el.serve(t, false), cfg, 5*time.Second, driverhook.DefaultPollInterval, noopMetrics{}, clk)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, src.Stop(context.Background())) })
	fetch := func(times int) {
		t.Helper()
		for range times {
			env, err := src.Payload(context.Background(), 1)
			require.NoError(t, err)
			require.Equal(t, want, env)
		}
	}

	fetch(3)
	require.Equal(t, 1, el.callsOf(rawBlockMethod))
	clk.AdvanceTime(rawRetry - time.Second)
	fetch(2)
	require.Equal(t, 1, el.callsOf(rawBlockMethod), "asked again before rawRetry")

	clk.AdvanceTime(time.Second) // still refused: one fetch asks, then JSON for another rawRetry
	fetch(3)
	require.Equal(t, 2, el.callsOf(rawBlockMethod))
	require.Equal(t, 8, el.callsOf("eth_getBlockByNumber"))
	logs.RequireMessageContainedOnce(t, "does not serve debug_getRawBlock")

	el.mu.Lock()
	el.notWhitelisted = false // the proxy's allow-list now has it
	el.mu.Unlock()
	clk.AdvanceTime(rawRetry)
	fetch(3)
	require.Equal(t, 5, el.callsOf(rawBlockMethod), "read as RLP again")
	require.Equal(t, 8, el.callsOf("eth_getBlockByNumber"))
	logs.RequireMessageContainedOnce(t, "serves debug_getRawBlock again")
	require.Zero(t, src.jsonSince.Load())
}

// Any other failure of debug_getRawBlock is that fetch's error: the source is not read with eth_getBlockByNumber
// instead, now or later.
func TestRPCSourceNoFallbackOnOtherErrors(t *testing.T) {
	cfg := testkit.IsthmusRollupConfig()
	block := testkit.IsthmusBlock(t, cfg)
	for name, fail := range map[string]func(*sourceEL){
		"server error": func(el *sourceEL) { el.rawErr = errors.New("database is closed") },
		"timeout":      func(el *sourceEL) { el.rawStall = true },
	} {
		t.Run(name, func(t *testing.T) {
			el := newSourceEL(block)
			fail(el)
			src, err := newRPCSource(testlog.Logger(t, log.LevelInfo), el.serve(t, false), cfg, 200*time.Millisecond, driverhook.DefaultPollInterval, noopMetrics{}, clock.SystemClock)
			require.NoError(t, err)
			t.Cleanup(func() { require.NoError(t, src.Stop(context.Background())) })
			for range 2 {
				env, err := src.Payload(context.Background(), 1)
				require.Error(t, err)
				require.Nil(t, env)
				require.NotErrorIs(t, err, ethereum.NotFound)
				require.NotErrorIs(t, err, ErrBadInput)
			}
			require.Equal(t, 2, el.callsOf(rawBlockMethod))
			require.Zero(t, el.callsOf("eth_getBlockByNumber"))
			require.Zero(t, src.jsonSince.Load())
		})
	}
}

// A block beyond the source's head is ethereum.NotFound (wait), on either path.
func TestRPCSourceBlockNotFound(t *testing.T) {
	cfg := testkit.IsthmusRollupConfig()
	block := testkit.IsthmusBlock(t, cfg)
	for _, noDebug := range []bool{false, true} {
		el := newSourceEL(block)
		el.noDebug = noDebug
		env, err := testRPCSource(t, cfg, el.serve(t, false), nil).Payload(context.Background(), 2)
		require.ErrorIs(t, err, ethereum.NotFound, "debug namespace served: %v", !noDebug)
		require.Nil(t, env)
	}
}

// What debug_getRawBlock answers that is malformed, or not the block asked for, is bad input and never a payload.
func TestRPCSourceRawBlockBadInput(t *testing.T) {
	cfg := testkit.IsthmusRollupConfig()
	block := testkit.IsthmusBlock(t, cfg)
	good, err := rlp.EncodeToBytes(block)
	require.NoError(t, err)
	encode := func(b *types.Block) []byte {
		out, err := rlp.EncodeToBytes(b)
		require.NoError(t, err)
		return out
	}
	withHeader := func(change func(h *types.Header), changeBody ...func(body *types.Body)) []byte {
		h := block.Header()
		change(h)
		body := *block.Body()
		for _, c := range changeBody {
			c(&body)
		}
		return encode(types.NewBlockWithHeader(h).WithBody(body))
	}
	withBody := func(change func(body *types.Body)) []byte {
		body := *block.Body()
		change(&body)
		return encode(block.WithBody(body))
	}
	key, signer, to := testkit.Key(9), types.LatestSignerForChainID(cfg.L2ChainID), common.Address{0x43}
	other := types.MustSignNewTx(key, signer, &types.LegacyTx{Nonce: 1, GasPrice: big.NewInt(2_000_000_000), Gas: 50_000,
		To: &to, Data: []byte("not replicated")})

	for name, c := range map[string]struct {
		raw  []byte
		want string // in the error
	}{
		"not RLP":        {[]byte{0xde, 0xad, 0xbe, 0xef}, "undecodable block RLP"},
		"truncated":      {good[:len(good)-1], "undecodable block RLP"},
		"trailing bytes": {append(append([]byte(nil), good...), 0x80), "undecodable block RLP"},
		"a transaction changed (transactions root mismatch)": {withBody(func(body *types.Body) {
			body.Transactions = append(types.Transactions{}, body.Transactions...)
			body.Transactions[2] = other
		}), "its payload hashes to"},
		"a transaction left out": {withBody(func(body *types.Body) {
			body.Transactions = body.Transactions[:2]
		}), "its payload hashes to"},
		"withdrawals": {withBody(func(body *types.Body) {
			body.Withdrawals = types.Withdrawals{{Index: 1, Amount: 1}}
		}), "expected empty withdrawals, but got 1"},
		"withdrawals root, no list": {withBody(func(body *types.Body) { body.Withdrawals = nil }),
			"a withdrawals root and no withdrawals list"},
		"an uncle": {withBody(func(body *types.Body) { body.Uncles = []*types.Header{block.Header()} }), "1 uncles"},
		"the next block's number": {withHeader(func(h *types.Header) { h.Number = big.NewInt(2) }),
			"asked for block 1, got 2"},
		"a number beyond 64 bits": {withHeader(func(h *types.Header) { h.Number = new(big.Int).Lsh(big.NewInt(1), 64) }),
			"block number 18446744073709551616"},
		"a difficulty":           {withHeader(func(h *types.Header) { h.Difficulty = big.NewInt(1) }), "zeroed difficulty"},
		"a nonce":                {withHeader(func(h *types.Header) { h.Nonce = types.EncodeNonce(1) }), "zeroed block nonce"},
		"33 bytes of extra data": {withHeader(func(h *types.Header) { h.Extra = make([]byte, 33) }), "32 or less bytes"},
		"no requests hash (Isthmus)": {withHeader(func(h *types.Header) { h.RequestsHash = nil }),
			"its payload hashes to"},
		"an empty withdrawals root (Isthmus)": {withHeader(func(h *types.Header) { h.WithdrawalsHash = &types.EmptyWithdrawalsHash }),
			"Isthmus block without a withdrawals root"},
		"no deposit first": {withHeader(func(h *types.Header) {
			h.TxHash = types.DeriveSha(block.Transactions()[1:], trie.NewStackTrie(nil))
		}, func(body *types.Body) { body.Transactions = body.Transactions[1:] }), "no deposit first"},
		"a pre-London header (no base fee)": {encode(types.NewBlockWithHeader(&types.Header{ParentHash: block.ParentHash(),
			UncleHash: types.EmptyUncleHash, TxHash: types.EmptyTxsHash, Number: big.NewInt(1), Difficulty: common.Big0,
			Time: block.Time()})), "base fee"},
	} {
		t.Run(name, func(t *testing.T) {
			el := newSourceEL(block)
			el.raw[1] = c.raw
			env, err := testRPCSource(t, cfg, el.serve(t, false), nil).Payload(context.Background(), 1)
			require.ErrorIs(t, err, ErrBadInput)
			require.ErrorContains(t, err, c.want)
			require.Nil(t, env)
			require.Zero(t, el.callsOf("eth_getBlockByNumber"), "fell back on a bad answer")
		})
	}

	// Block 1 where block 2 was asked for.
	el := newSourceEL(block)
	el.raw[2] = good
	env, err := testRPCSource(t, cfg, el.serve(t, false), nil).Payload(context.Background(), 2)
	require.ErrorIs(t, err, ErrBadInput)
	require.Nil(t, env)
}

// blockAt is block with another number (and so another hash): a chain of test blocks for a source to serve.
func blockAt(block *types.Block, n uint64) *types.Block {
	h := types.CopyHeader(block.Header())
	h.Number = new(big.Int).SetUint64(n)
	return types.NewBlockWithHeader(h).WithBody(*block.Body())
}
