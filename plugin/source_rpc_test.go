package plugin

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
		return blockJSON(head)
	}
	b, ok := e.el.blocks[uint64(n)]
	if !ok || n < 0 || !full {
		return json.RawMessage("null"), nil
	}
	out, err := blockJSON(b)
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
	src, err := newRPCSource(lgr, url, cfg, 5*time.Second, driverhook.DefaultPollInterval, NoopMetrics{}, clock.SystemClock)
	require.NoError(t, err)
	t.Cleanup(src.Close)
	return src
}

// The block fetched as RLP is the payload the JSON answer makes, and the one op-service's conversion makes of
// go-ethereum's block; the source asks nothing else.
func TestRPCSourceRawBlockIsTheJSONPayload(t *testing.T) {
	cfg := fuzzRollupConfig()
	block := fuzzBlock(t, cfg)
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
	cfg := fuzzRollupConfig()
	block := fuzzBlock(t, cfg)
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
	cfg := fuzzRollupConfig()
	block := fuzzBlock(t, cfg)
	want, err := eth.BlockAsPayloadEnv(block, cfg)
	require.NoError(t, err)
	el := newSourceEL(block)
	el.notWhitelisted = true
	lgr, logs := testlog.CaptureLogger(t, log.LevelInfo)
	clk := clock.NewDeterministicClock(time.Unix(1_700_000_000, 0))
	src, err := newRPCSource(lgr, el.serve(t, false), cfg, 5*time.Second, driverhook.DefaultPollInterval, NoopMetrics{}, clk)
	require.NoError(t, err)
	t.Cleanup(src.Close)
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
	cfg := fuzzRollupConfig()
	block := fuzzBlock(t, cfg)
	for name, fail := range map[string]func(*sourceEL){
		"server error": func(el *sourceEL) { el.rawErr = errors.New("database is closed") },
		"timeout":      func(el *sourceEL) { el.rawStall = true },
	} {
		t.Run(name, func(t *testing.T) {
			el := newSourceEL(block)
			fail(el)
			src, err := newRPCSource(testlog.Logger(t, log.LevelInfo), el.serve(t, false), cfg, 200*time.Millisecond, driverhook.DefaultPollInterval, NoopMetrics{}, clock.SystemClock)
			require.NoError(t, err)
			t.Cleanup(src.Close)
			for range 2 {
				env, err := src.Payload(context.Background(), 1)
				require.Error(t, err)
				require.Nil(t, env)
				require.NotErrorIs(t, err, ethereum.NotFound)
				require.NotErrorIs(t, err, errBadInput)
			}
			require.Equal(t, 2, el.callsOf(rawBlockMethod))
			require.Zero(t, el.callsOf("eth_getBlockByNumber"))
			require.Zero(t, src.jsonSince.Load())
		})
	}
}

// A block beyond the source's head is ethereum.NotFound (wait), on either path.
func TestRPCSourceBlockNotFound(t *testing.T) {
	cfg := fuzzRollupConfig()
	block := fuzzBlock(t, cfg)
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
	cfg := fuzzRollupConfig()
	block := fuzzBlock(t, cfg)
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
			require.ErrorIs(t, err, errBadInput)
			require.ErrorContains(t, err, c.want)
			require.Nil(t, env)
			require.Zero(t, el.callsOf("eth_getBlockByNumber"), "fell back on a bad answer")
		})
	}

	// Block 1 where block 2 was asked for.
	el := newSourceEL(block)
	el.raw[2] = good
	env, err := testRPCSource(t, cfg, el.serve(t, false), nil).Payload(context.Background(), 2)
	require.ErrorIs(t, err, errBadInput)
	require.Nil(t, env)
}

// blockAt is block with another number (and so another hash): a chain of test blocks for a source to serve.
func blockAt(block *types.Block, n uint64) *types.Block {
	h := types.CopyHeader(block.Header())
	h.Number = new(big.Int).SetUint64(n)
	return types.NewBlockWithHeader(h).WithBody(*block.Body())
}

// A websocket source starts fetching a block when its newHeads announces it, and the loop's request for that block
// takes what was fetched: the round trip is off the loop's path, and the source is asked once.
func TestRPCSourceFetchesAnnouncedBlockEarly(t *testing.T) {
	cfg := fuzzRollupConfig()
	first := fuzzBlock(t, cfg)
	el := newSourceEL(first, blockAt(first, 2))
	src := testRPCSource(t, cfg, el.serve(t, true), nil)
	src.Start()
	ctx := context.Background()
	for n := uint64(1); n <= 2; n++ {
		el.heads <- el.blocks[n].Header()
		require.Eventually(t, func() bool { return el.rawBlockCalls() == int(n) }, 5*time.Second, time.Millisecond,
			"block %d fetched on its announcement", n)
		env, err := src.Payload(ctx, n)
		require.NoError(t, err)
		require.Equal(t, el.blocks[n].Hash(), env.ExecutionPayload.BlockHash)
		require.Equal(t, int(n), el.rawBlockCalls(), "block %d asked for again", n)
	}
}

// testEarlySource is a websocket source of el on a deterministic clock, started.
func testEarlySource(t *testing.T, cfg *rollup.Config, el *sourceEL) (*rpcSource, *clock.DeterministicClock) {
	clk := clock.NewDeterministicClock(time.Unix(1_800_000_000, 0))
	src, err := newRPCSource(testlog.Logger(t, log.LevelInfo), el.serve(t, true), cfg, 5*time.Second, driverhook.DefaultPollInterval, NoopMetrics{}, clk)
	require.NoError(t, err)
	t.Cleanup(src.Close)
	src.Start()
	return src, clk
}

// announce has el's newHeads announce h and waits until src took it in.
func announce(t *testing.T, el *sourceEL, src *rpcSource, h *types.Header) {
	el.heads <- h
	require.Eventually(t, func() bool {
		n := src.notified.Load()
		return n != nil && n.id.Hash == h.Hash()
	}, 5*time.Second, time.Millisecond)
}

// While the loop does not take the blocks fetched early (halted, or catching up below the head), announcements
// cost the source one fetch, not one each. One that is no longer the head announced is dropped when the loop asks
// past it, and the next announcement is fetched early again. A failed early fetch (the block announced but not served yet) is retried when the loop asks.
func TestRPCSourceEarlyFetchWaitsToBeTaken(t *testing.T) {
	cfg := fuzzRollupConfig()
	first := fuzzBlock(t, cfg)
	el := newSourceEL(first)
	for n := uint64(2); n <= 5; n++ {
		el.blocks[n] = blockAt(first, n)
	}
	src, _ := testEarlySource(t, cfg, el)
	for n := uint64(1); n <= 3; n++ {
		announce(t, el, src, el.blocks[n].Header())
	}
	require.Eventually(t, func() bool { return el.rawBlockCalls() == 1 }, 5*time.Second, time.Millisecond)
	require.Equal(t, uint64(1), src.early.Load().id.Number, "only the first announcement is fetched while untaken")

	// The loop asks for block 3: the early fetch of block 1 is behind it and no longer the head announced: dropped,
	// and block 3 is fetched now. (One behind a request but of the latest head is kept: the prefetcher asks for
	// several blocks at once, in any order.)
	env, err := src.Payload(context.Background(), 3)
	require.NoError(t, err)
	require.Equal(t, el.blocks[3].Hash(), env.ExecutionPayload.BlockHash)
	require.Equal(t, 2, el.rawBlockCalls())
	require.Nil(t, src.early.Load())

	// Block 4 is announced before the source serves it: the early fetch finds nothing, the loop's request asks again.
	b4 := el.blocks[4]
	el.mu.Lock()
	delete(el.blocks, 4)
	el.mu.Unlock()
	el.heads <- b4.Header()
	require.Eventually(t, func() bool { return el.rawBlockCalls() == 3 }, 5*time.Second, time.Millisecond)
	f := src.early.Load()
	require.NotNil(t, f)
	<-f.done
	require.ErrorIs(t, f.err, ethereum.NotFound)
	el.mu.Lock()
	el.blocks[4] = b4
	el.mu.Unlock()
	env, err = src.Payload(context.Background(), 4)
	require.NoError(t, err)
	require.Equal(t, b4.Hash(), env.ExecutionPayload.BlockHash)
	require.Equal(t, 4, el.rawBlockCalls())
}

// The early fetch is of the block announced: another block announced at its height before it was taken (a reorg)
// replaces it, and a fetch that got another block than the one announced (the source reorged in between) is not
// used: the block at that height is asked for again.
func TestRPCSourceEarlyFetchFollowsReorgs(t *testing.T) {
	cfg := fuzzRollupConfig()
	first := fuzzBlock(t, cfg)
	el := newSourceEL(first, blockAt(first, 2))
	orphan := el.blocks[2]
	src, _ := testEarlySource(t, cfg, el)
	announce(t, el, src, orphan.Header())
	require.Eventually(t, func() bool { return el.rawBlockCalls() == 1 }, 5*time.Second, time.Millisecond)
	<-src.early.Load().done

	// The sequencer replaces block 2 (another extra field: another hash) and announces it.
	h := types.CopyHeader(orphan.Header())
	h.Extra = append(h.Extra[:len(h.Extra):len(h.Extra)], 1)
	replacement := types.NewBlockWithHeader(h).WithBody(*orphan.Body())
	require.NotEqual(t, orphan.Hash(), replacement.Hash())
	el.mu.Lock()
	el.blocks[2] = replacement
	el.mu.Unlock()
	announce(t, el, src, replacement.Header())
	require.Eventually(t, func() bool { return el.rawBlockCalls() == 2 }, 5*time.Second, time.Millisecond)
	env, err := src.Payload(context.Background(), 2)
	require.NoError(t, err)
	require.Equal(t, replacement.Hash(), env.ExecutionPayload.BlockHash)
	require.Equal(t, 2, el.rawBlockCalls())

	// Announced, but replaced at the source before the early fetch: that fetch is not the block announced.
	el.mu.Lock()
	el.blocks[2] = orphan
	el.mu.Unlock()
	el.heads <- blockAt(first, 3).Header() // no block 3 served: an early fetch of 3 finds nothing
	require.Eventually(t, func() bool { return el.rawBlockCalls() == 3 }, 5*time.Second, time.Millisecond)
	_, _ = src.Payload(context.Background(), 3) // takes it (not found), asks again
	el.mu.Lock()
	el.blocks[2] = replacement
	el.mu.Unlock()
	announce(t, el, src, orphan.Header()) // the source announces the orphan, but serves the replacement
	require.Eventually(t, func() bool { return el.rawBlockCalls() == 5 }, 5*time.Second, time.Millisecond)
	<-src.early.Load().done
	env, err = src.Payload(context.Background(), 2)
	require.NoError(t, err)
	require.Equal(t, replacement.Hash(), env.ExecutionPayload.BlockHash)
	require.Equal(t, 6, el.rawBlockCalls(), "the early fetch of another block than announced was used")
}

// A block fetched early is not used once it is more than a block time old (the loop was halted, or behind, since):
// the source is asked for its block at that height again.
func TestRPCSourceEarlyFetchExpires(t *testing.T) {
	cfg := fuzzRollupConfig()
	el := newSourceEL(fuzzBlock(t, cfg))
	clk := clock.NewDeterministicClock(time.Unix(1_800_000_000, 0))
	src, err := newRPCSource(testlog.Logger(t, log.LevelInfo), el.serve(t, true), cfg, 5*time.Second, driverhook.DefaultPollInterval, NoopMetrics{}, clk)
	require.NoError(t, err)
	t.Cleanup(src.Close)
	src.Start()
	el.heads <- el.blocks[1].Header()
	require.Eventually(t, func() bool { return el.rawBlockCalls() == 1 }, 5*time.Second, time.Millisecond)
	clk.AdvanceTime(time.Duration(cfg.BlockTime)*time.Second + time.Millisecond)
	env, err := src.Payload(context.Background(), 1)
	require.NoError(t, err)
	require.Equal(t, el.blocks[1].Hash(), env.ExecutionPayload.BlockHash)
	require.Equal(t, 2, el.rawBlockCalls(), "the expired early fetch was used")
}

// An http source's poller announces each new head as a newHeads notification would: Head answers it without a
// request, the loop is woken, and the block is fetched early, so the loop's request for it is not another one.
func TestRPCSourceHTTPPollerAnnouncesHeads(t *testing.T) {
	cfg := fuzzRollupConfig()
	first := fuzzBlock(t, cfg)
	el := newSourceEL(first)
	src := testRPCSource(t, cfg, el.serve(t, false), nil)
	src.pollInterval = 200 * time.Millisecond // the block timestamps are far from now: polled at the poll interval
	src.Start()
	for n := uint64(1); n <= 2; n++ {
		if n > 1 {
			el.mu.Lock()
			el.blocks[n] = blockAt(first, n)
			el.mu.Unlock()
		}
		select {
		case <-src.NewHeads():
		case <-time.After(5 * time.Second):
			t.Fatalf("block %d not announced", n)
		}
		require.Eventually(t, func() bool { return el.rawBlockCalls() == int(n) }, 5*time.Second, time.Millisecond,
			"block %d fetched early", n)
		heads := el.callsOf("eth_getBlockByNumber")
		head, err := src.Head(context.Background())
		require.NoError(t, err)
		require.Equal(t, el.blocks[n].Hash(), head.Hash)
		env, err := src.Payload(context.Background(), n)
		require.NoError(t, err)
		require.Equal(t, el.blocks[n].Hash(), env.ExecutionPayload.BlockHash)
		require.Equal(t, int(n), el.rawBlockCalls(), "block %d asked for again", n)
		require.LessOrEqual(t, el.callsOf("eth_getBlockByNumber")-heads, 1, "Head asked the source (only the poller may have, meanwhile)")
	}
}

// While an http source's heads are live (near wall-clock time), its poller asks for the block after the last head
// it found, not for the head: a poll that finds none is followed by another, and the block it finds is announced
// with its fetch done, so that the loop's request for it asks the source nothing more.
func TestRPCSourceHTTPPollerPollsTheNextBlock(t *testing.T) {
	cfg := fuzzRollupConfig()
	first := fuzzBlock(t, cfg)
	blockTime := time.Duration(cfg.BlockTime) * time.Second
	stamped := func(n uint64, at time.Time) *types.Block {
		h := types.CopyHeader(first.Header())
		h.Number, h.Time = new(big.Int).SetUint64(n), uint64(at.Unix())
		return types.NewBlockWithHeader(h).WithBody(*first.Body())
	}
	// Block 1 sealed a block time before now, give or take a second's rounding: block 2 is due about now.
	el := newSourceEL(stamped(1, time.Now().Add(-blockTime)))
	src := testRPCSource(t, cfg, el.serve(t, false), nil)
	src.Start()
	waitAnnounced := func(n uint64) {
		select {
		case <-src.NewHeads():
		case <-time.After(5 * time.Second):
			t.Fatalf("block %d not announced", n)
		}
	}
	waitAnnounced(1)
	env, err := src.Payload(context.Background(), 1)
	require.NoError(t, err)
	require.Equal(t, el.blocks[1].Hash(), env.ExecutionPayload.BlockHash)
	headPolls, raw := el.callsOf("eth_getBlockByNumber"), el.rawBlockCalls()
	require.Equal(t, 1, headPolls, "block 1 found by a head poll")

	// The poller asks for block 2 before there is one...
	require.Eventually(t, func() bool { return el.rawBlockCalls() >= raw+2 }, 5*time.Second, time.Millisecond,
		"block 2 polled for, twice")
	el.mu.Lock()
	el.blocks[2] = stamped(2, time.Now())
	el.mu.Unlock()
	// ...and announces it once it is there, fetched.
	waitAnnounced(2)
	head, err := src.Head(context.Background())
	require.NoError(t, err)
	require.Equal(t, el.blocks[2].Hash(), head.Hash)
	raw = el.rawBlockCalls()
	env, err = src.Payload(context.Background(), 2)
	require.NoError(t, err)
	require.Equal(t, el.blocks[2].Hash(), env.ExecutionPayload.BlockHash)
	require.Equal(t, raw, el.rawBlockCalls(), "block 2 asked for again")
	require.Equal(t, headPolls, el.callsOf("eth_getBlockByNumber"), "the head polled while it was live")
}

// A poll for the next block that finds none announces nothing: the head last announced expires after a block time,
// and Head then asks the source, which may have gone back (or replaced its head). ForgetHead is not undone by it.
func TestRPCSourceHTTPPollerMissIsNoAnnouncement(t *testing.T) {
	cfg := fuzzRollupConfig()
	cfg.BlockTime = 1
	first := fuzzBlock(t, cfg)
	h := types.CopyHeader(first.Header())
	h.Time = uint64(time.Now().Unix())
	el := newSourceEL(types.NewBlockWithHeader(h).WithBody(*first.Body()))
	src := testRPCSource(t, cfg, el.serve(t, false), nil)
	src.Start()
	select {
	case <-src.NewHeads():
	case <-time.After(5 * time.Second):
		t.Fatal("block 1 not announced")
	}
	_, err := src.Payload(context.Background(), 1)
	require.NoError(t, err)
	heads := el.callsOf("eth_getBlockByNumber")
	src.ForgetHead()
	raw := el.rawBlockCalls()
	require.Eventually(t, func() bool { return el.rawBlockCalls() >= raw+2 }, 5*time.Second, time.Millisecond,
		"block 2 polled for, twice")
	// The source goes back: it has no block at all now.
	el.mu.Lock()
	delete(el.blocks, 1)
	el.mu.Unlock()
	_, err = src.Head(context.Background())
	require.ErrorIs(t, err, ethereum.NotFound, "Head answered a forgotten head the poller did not find again")
	require.Equal(t, heads+1, el.callsOf("eth_getBlockByNumber"), "Head asked the source")
}

// While the loop has not taken the last block the poller found (halted, or behind), the poller asks for the head,
// not for each next block: a halted replicator costs its source a head request per poll, not a block.
func TestRPCSourceHTTPPollerPollsTheHeadWhileTheBlockIsNotTaken(t *testing.T) {
	cfg := fuzzRollupConfig()
	cfg.BlockTime = 1
	first := fuzzBlock(t, cfg)
	stamped := func(n uint64, at time.Time) *types.Block {
		h := types.CopyHeader(first.Header())
		h.Number, h.Time = new(big.Int).SetUint64(n), uint64(at.Unix())
		return types.NewBlockWithHeader(h).WithBody(*first.Body())
	}
	el := newSourceEL(stamped(1, time.Now()))
	src := testRPCSource(t, cfg, el.serve(t, false), nil)
	src.pollInterval = 50 * time.Millisecond
	src.Start()
	for n := uint64(1); n <= 3; n++ {
		if n > 1 {
			el.mu.Lock()
			el.blocks[n] = stamped(n, time.Now())
			el.mu.Unlock()
		}
		select {
		case <-src.NewHeads():
		case <-time.After(5 * time.Second):
			t.Fatalf("block %d not announced", n)
		}
		head, err := src.Head(context.Background())
		require.NoError(t, err)
		require.Equal(t, el.blocks[n].Hash(), head.Hash)
	}
	require.Equal(t, 1, el.rawBlockCalls(), "blocks fetched that the loop did not ask for (only block 1's early fetch)")
}
