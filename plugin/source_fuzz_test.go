package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/consensus/misc/eip1559"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/log"
	"github.com/ethereum/go-ethereum/rlp"
	"github.com/ethereum/go-ethereum/rpc"
	"github.com/ethereum/go-ethereum/trie"
	"github.com/stretchr/testify/require"

	opparams "github.com/ethereum-optimism/optimism/op-core/params"
	"github.com/ethereum-optimism/optimism/op-core/predeploys"
	"github.com/ethereum-optimism/optimism/op-node/rollup"
	"github.com/ethereum-optimism/optimism/op-node/rollup/derive"
	"github.com/ethereum-optimism/optimism/op-service/client"
	"github.com/ethereum-optimism/optimism/op-service/clock"
	"github.com/ethereum-optimism/optimism/op-service/eth"
	"github.com/ethereum-optimism/optimism/op-service/sources"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/internal/testkit"
)

// FuzzSourceBlock feeds a source's answer for a block through what the replicator does with it before inserting
// it: rpcSource.Payload, then the verifier (derive.PayloadToBlockRef, next block, L1 origin canonical on our L1
// view). With raw, the answer is debug_getRawBlock's (the block's RLP: go-ethereum's decoding, the checks of
// rawBlockPayload, op-service's conversion); without, the source does not serve debug_getRawBlock and the answer is
// eth_getBlockByNumber's (op-service's decoding, block hash and transactions root recomputed). With rehash, the
// transactions root and hash of what the fuzzer made of the block are recomputed first, so that what lies past
// those checks is fuzzed too. Nothing is accepted that the engine would find has another hash than it claims, and
// what the verifier accepts is the next block on our head with an origin on our L1 view.
func FuzzSourceBlock(f *testing.F) {
	cfg := fuzzRollupConfig()
	head := eth.L2BlockRef{Hash: testGenesis.Hash, Number: testGenesis.Number, L1Origin: cfg.Genesis.L1, Time: cfg.Genesis.L2Time}
	l1Head := l1Block(1000, 0)
	ctx := context.Background()

	// The seeds pass: op-service makes of each the payload go-ethereum's block is, and the verifier accepts it.
	block := fuzzBlock(f, cfg)
	want, err := eth.BlockAsPayloadEnv(block, cfg)
	require.NoError(f, err)
	jsonSeed := rpcBlockJSON(f, block)
	rawSeed, err := rlp.EncodeToBytes(block)
	require.NoError(f, err)
	for _, seed := range []struct {
		answer []byte
		raw    bool
	}{{jsonSeed, false}, {rawSeed, true}} {
		env, err := answeringSource(f, cfg, seed.answer, seed.raw).Payload(ctx, head.Number+1)
		require.NoError(f, err)
		require.Equal(f, want, env)
		_, err = fuzzVerifier(cfg).Check(ctx, env, head, head, l1Head)
		require.NoError(f, err)
		f.Add(seed.answer, false, seed.raw)
	}

	f.Fuzz(func(t *testing.T, answer []byte, rehash, raw bool) {
		if rehash && raw {
			answer = rehashedRaw(answer)
		} else if rehash {
			answer = rehashed(answer)
		}
		src := answeringSource(t, cfg, answer, raw)
		env, err := src.Payload(ctx, head.Number+1)
		if err != nil {
			if raw {
				require.True(t, errors.Is(err, errBadInput) || len(answer) == 0 && errors.Is(err, ethereum.NotFound),
					"refused a raw block other than as bad input: %v", err)
			}
			return
		}
		payload := env.ExecutionPayload
		require.Equal(t, head.Number+1, uint64(payload.BlockNumber), "not the block asked for")
		_, ok := env.CheckBlockHash()
		require.True(t, ok, "block %s does not hash to its block hash as the engine will compute it", payload.ID())
		if raw {
			requireJSONPathAgrees(t, cfg, answer, env)
		}

		ref, refErr := derive.PayloadToBlockRef(cfg, payload)
		if refErr == nil {
			require.Equal(t, payload.ID(), ref.ID())
			require.Equal(t, payload.ParentHash, ref.ParentHash)
			require.Equal(t, uint64(payload.Timestamp), ref.Time)
		}
		got, err := fuzzVerifier(cfg).Check(ctx, env, head, head, l1Head)
		if err != nil {
			var d *Disagreement
			require.True(t, errors.As(err, &d) || errors.Is(err, errStale) || errors.Is(err, errWait), "unexpected error: %v", err)
			return
		}
		require.NoError(t, refErr, "accepted without an L1-info deposit")
		require.Equal(t, ref, got)
		require.Equal(t, head.Hash, got.ParentHash, "accepted a block that is not on our head")
		require.Equal(t, l1Block(got.L1Origin.Number, 0).ID(), got.L1Origin, "accepted an L1 origin not on our L1 view")
	})
}

// requireJSONPathAgrees requires that a block the RLP path accepted (raw, its payload env) is accepted by the JSON
// path too, as op-geth's eth_getBlockByNumber would answer it, and made the same payload: the RLP path is as strict.
func requireJSONPathAgrees(t *testing.T, cfg *rollup.Config, raw []byte, env *eth.ExecutionPayloadEnvelope) {
	var block types.Block
	require.NoError(t, rlp.DecodeBytes(raw, &block))
	answer, err := blockJSON(&block)
	require.NoError(t, err)
	viaJSON, err := answeringSource(t, cfg, answer, false).Payload(context.Background(), uint64(env.ExecutionPayload.BlockNumber))
	require.NoError(t, err, "the JSON path refuses a block the RLP path accepts")
	want, err := json.Marshal(viaJSON)
	require.NoError(t, err)
	got, err := json.Marshal(env)
	require.NoError(t, err)
	require.JSONEq(t, string(want), string(got))
}

// answeringSource is an rpcSource whose op-geth answers every call with answer: with raw, debug_getRawBlock with
// answer as the block's RLP and any other call with "method not found"; else every call but debug_getRawBlock (not
// served) with answer as the JSON result.
func answeringSource(tb testing.TB, cfg *rollup.Config, answer []byte, raw bool) *rpcSource {
	var rpcClient client.RPC = answerRPC(answer)
	if raw {
		rpcClient = rawAnswerRPC{answerRPC(answer)}
	}
	l2, err := sources.NewL2Client(rpcClient, log.NewLogger(log.DiscardHandler()), nil, sourceClientConfig(cfg))
	require.NoError(tb, err)
	return &rpcSource{log: log.NewLogger(log.DiscardHandler()), name: "fuzz", rpc: rpcClient, l2: l2, forks: cfg,
		timeout: time.Second, metrics: NoopMetrics{}, clock: clock.SystemClock}
}

// methodNotFound is go-ethereum's error for a method a server does not serve.
type methodNotFound struct{ method string }

func (e methodNotFound) Error() string {
	return fmt.Sprintf("the method %s does not exist/is not available", e.method)
}
func (e methodNotFound) ErrorCode() int { return -32601 }

// answerRPC is an RPC client that receives the same result for every call, as geth's client decodes a result, and
// does not serve debug_getRawBlock.
type answerRPC []byte

func (a answerRPC) CallContext(_ context.Context, result any, method string, _ ...any) error {
	if method == rawBlockMethod {
		return methodNotFound{method}
	}
	if len(a) == 0 {
		return rpc.ErrNoResult
	}
	return json.Unmarshal(a, result)
}

// rawAnswerRPC answers debug_getRawBlock with its bytes, hex-encoded as on the wire, and nothing else.
type rawAnswerRPC struct{ answerRPC }

func (a rawAnswerRPC) CallContext(_ context.Context, result any, method string, _ ...any) error {
	if method != rawBlockMethod {
		return methodNotFound{method}
	}
	enc, err := json.Marshal(hexutil.Bytes(a.answerRPC))
	if err != nil {
		return err
	}
	return json.Unmarshal(enc, result)
}

func (a answerRPC) BatchCallContext(context.Context, []rpc.BatchElem) error {
	return errors.New("no batches")
}

func (a answerRPC) Subscribe(context.Context, string, any, ...any) (ethereum.Subscription, error) {
	return nil, errors.New("no subscriptions")
}

func (a answerRPC) Close() {}

// rehashed recomputes a block's transactions root and hash, for what the fuzzer changed in it to get past those
// checks. Undecodable answers are left as they are.
func rehashed(answer []byte) []byte {
	var block sources.RPCBlock
	if json.Unmarshal(answer, &block) != nil {
		return answer
	}
	block.TxHash = types.DeriveSha(block.Transactions, trie.NewStackTrie(nil))
	block.Hash = block.CreateGethHeader().Hash()
	out, err := json.Marshal(&block)
	if err != nil {
		return answer
	}
	return out
}

// rehashedRaw is rehashed for a block's RLP.
func rehashedRaw(answer []byte) []byte {
	var block types.Block
	if rlp.DecodeBytes(answer, &block) != nil {
		return answer
	}
	header := block.Header()
	header.TxHash = types.DeriveSha(block.Transactions(), trie.NewStackTrie(nil))
	out, err := rlp.EncodeToBytes(types.NewBlockWithHeader(header).WithBody(*block.Body()))
	if err != nil {
		return answer
	}
	return out
}

// fuzzRollupConfig is the test chain with every fork up to Isthmus active from genesis, for blocks shaped like
// today's.
// fuzzVerifier is the verifier as the replicator builds it, on our fake L1 view and engine.
func fuzzVerifier(cfg *rollup.Config) *verifier {
	return newVerifier(driverhook.Deps{Log: log.NewLogger(log.DiscardHandler()), Rollup: cfg, L1: &fakeL1{}, L2: newFakeEngine(cfg)})
}

func fuzzRollupConfig() *rollup.Config {
	cfg := testRollupConfig()
	denominator := uint64(250)
	cfg.ChainOpConfig = &opparams.OptimismConfig{EIP1559Elasticity: 6, EIP1559Denominator: 50, EIP1559DenominatorCanyon: &denominator}
	genesis := uint64(0)
	for _, fork := range []**uint64{&cfg.RegolithTime, &cfg.CanyonTime, &cfg.DeltaTime, &cfg.EcotoneTime, &cfg.FjordTime,
		&cfg.GraniteTime, &cfg.HoloceneTime, &cfg.IsthmusTime} {
		*fork = &genesis
	}
	return cfg
}

// fuzzBlock is block 1 on the test genesis as a sequencer's op-geth builds it under Isthmus, and as derivation
// would build it: the L1-info deposit (L1 origin the genesis' own, sequence number 1) and two signed user
// transactions.
func fuzzBlock(tb testing.TB, cfg *rollup.Config) *types.Block {
	origin := l1Block(0, 0)
	ts := cfg.Genesis.L2Time + cfg.BlockTime
	info := l1Info(origin)
	deposit, err := derive.L1InfoDepositBytes(cfg, nil, testSystemConfig, 1, info, ts)
	require.NoError(tb, err)
	var l1InfoTx types.Transaction
	require.NoError(tb, l1InfoTx.UnmarshalBinary(deposit))

	key, signer, to := testkit.Key(9), types.LatestSignerForChainID(cfg.L2ChainID), common.Address{0x42}
	txs := types.Transactions{&l1InfoTx,
		types.MustSignNewTx(key, signer, &types.DynamicFeeTx{ChainID: cfg.L2ChainID, GasTipCap: big.NewInt(1),
			GasFeeCap: big.NewInt(2_000_000_000), Gas: 21_000, To: &to, Value: big.NewInt(1)}),
		types.MustSignNewTx(key, signer, &types.LegacyTx{Nonce: 1, GasPrice: big.NewInt(2_000_000_000), Gas: 50_000,
			To: &to, Data: []byte("replicate me")}),
	}
	beaconRoot, messagePasserRoot, blobGas := common.Hash{}, common.Hash{0x77}, uint64(0) // the mock L1 has no beacon root
	header := &types.Header{
		ParentHash: testGenesis.Hash, Coinbase: predeploys.SequencerFeeVaultAddr, Root: common.Hash{0x22, 1},
		Difficulty: common.Big0, Number: big.NewInt(1), GasLimit: testSystemConfig.GasLimit, GasUsed: 100_000, Time: ts,
		// The SystemConfig's EIP-1559 parameters are unset (0, 0): derivation uses the Canyon constants.
		Extra: eip1559.EncodeHoloceneExtraData(250, 6), MixDigest: info.MixDigest(), BaseFee: big.NewInt(1_000_000),
		WithdrawalsHash: &messagePasserRoot, BlobGasUsed: &blobGas, ExcessBlobGas: &blobGas,
		ParentBeaconRoot: &beaconRoot, RequestsHash: &types.EmptyRequestsHash,
	}
	block := types.NewBlock(header, &types.Body{Transactions: txs, Withdrawals: types.Withdrawals{}}, nil,
		trie.NewStackTrie(nil), types.IsthmusBlockConfig)
	env, err := eth.BlockAsPayloadEnv(block, cfg)
	require.NoError(tb, err)
	_, ok := env.CheckBlockHash()
	require.True(tb, ok, "the payload of the test block does not hash to the block's hash")
	return block
}

// rpcBlockJSON is b as op-geth answers eth_getBlockByNumber(n, true): the header's fields, its hash, and its
// transactions and withdrawals in full.
func rpcBlockJSON(tb testing.TB, b *types.Block) []byte {
	out, err := blockJSON(b)
	require.NoError(tb, err)
	return out
}

func blockJSON(b *types.Block) ([]byte, error) {
	header, err := json.Marshal(b.Header())
	if err != nil {
		return nil, err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(header, &fields); err != nil {
		return nil, err
	}
	if fields["transactions"], err = json.Marshal(b.Transactions()); err != nil {
		return nil, err
	}
	if fields["withdrawals"], err = json.Marshal(b.Withdrawals()); err != nil {
		return nil, err
	}
	return json.Marshal(fields)
}
