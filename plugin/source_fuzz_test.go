package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/log"
	"github.com/ethereum/go-ethereum/rlp"
	"github.com/ethereum/go-ethereum/rpc"
	"github.com/ethereum/go-ethereum/trie"
	"github.com/stretchr/testify/require"

	"github.com/ethereum-optimism/optimism/op-node/rollup"
	"github.com/ethereum-optimism/optimism/op-node/rollup/derive"
	"github.com/ethereum-optimism/optimism/op-service/client"
	"github.com/ethereum-optimism/optimism/op-service/clock"
	"github.com/ethereum-optimism/optimism/op-service/eth"
	"github.com/ethereum-optimism/optimism/op-service/sources"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/internal/testkit"
	"github.com/op-replicator/op-replicator/plugin/source"
)

// FuzzSourceBlock feeds a source's answer for a block through what the replicator does with it before inserting
// it: the RPC source's Payload, then the verifier (derive.PayloadToBlockRef, next block, L1 origin canonical on our L1
// view). With raw, the answer is debug_getRawBlock's (the block's RLP: go-ethereum's decoding, the checks of
// rawBlockPayload, op-service's conversion); without, the source does not serve debug_getRawBlock and the answer is
// eth_getBlockByNumber's (op-service's decoding, block hash and transactions root recomputed). With rehash, the
// transactions root and hash of what the fuzzer made of the block are recomputed first, so that what lies past
// those checks is fuzzed too. Nothing is accepted that the engine would find has another hash than it claims, and
// what the verifier accepts is the next block on our head with an origin on our L1 view.
func FuzzSourceBlock(f *testing.F) {
	cfg := testkit.IsthmusRollupConfig()
	head := eth.L2BlockRef{Hash: testkit.Genesis.Hash, Number: testkit.Genesis.Number, L1Origin: cfg.Genesis.L1, Time: cfg.Genesis.L2Time}
	l1Head := testkit.L1Block(1000, 0)
	ctx := context.Background()

	// The seeds pass: op-service makes of each the payload go-ethereum's block is, and the verifier accepts it.
	block := testkit.IsthmusBlock(f, cfg)
	want, err := eth.BlockAsPayloadEnv(block, cfg)
	require.NoError(f, err)
	jsonSeed := testkit.RPCBlockJSON(f, block)
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
				require.True(t, errors.Is(err, source.ErrBadInput) || len(answer) == 0 && errors.Is(err, ethereum.NotFound),
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
		require.Equal(t, testkit.L1Block(got.L1Origin.Number, 0).ID(), got.L1Origin, "accepted an L1 origin not on our L1 view")
	})
}

// requireJSONPathAgrees requires that a block the RLP path accepted (raw, its payload env) is accepted by the JSON
// path too, as op-geth's eth_getBlockByNumber would answer it, and made the same payload: the RLP path is as strict.
func requireJSONPathAgrees(t *testing.T, cfg *rollup.Config, raw []byte, env *eth.ExecutionPayloadEnvelope) {
	var block types.Block
	require.NoError(t, rlp.DecodeBytes(raw, &block))
	answer, err := testkit.BlockJSON(&block)
	require.NoError(t, err)
	viaJSON, err := answeringSource(t, cfg, answer, false).Payload(context.Background(), uint64(env.ExecutionPayload.BlockNumber))
	require.NoError(t, err, "the JSON path refuses a block the RLP path accepts")
	want, err := json.Marshal(viaJSON)
	require.NoError(t, err)
	got, err := json.Marshal(env)
	require.NoError(t, err)
	require.JSONEq(t, string(want), string(got))
}

// answeringSource is an RPC source (source.NewOnClient) whose op-geth answers every call with answer: with raw,
// debug_getRawBlock with answer as the block's RLP and any other call with "method not found"; else every call but
// debug_getRawBlock (not served) with answer as the JSON result.
func answeringSource(tb testing.TB, cfg *rollup.Config, answer []byte, raw bool) source.Source {
	var rpcClient client.RPC = answerRPC(answer)
	if raw {
		rpcClient = rawAnswerRPC{answerRPC(answer)}
	}
	src, err := source.NewOnClient(log.NewLogger(log.DiscardHandler()), "fuzz", rpcClient, cfg, time.Second, NoopMetrics{}, clock.SystemClock)
	require.NoError(tb, err)
	return src
}

// rawBlockMethod is how an RPC source asks for a block's RLP.
const rawBlockMethod = "debug_getRawBlock"

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

// fuzzVerifier is the verifier as the replicator builds it, on our fake L1 view and engine.
func fuzzVerifier(cfg *rollup.Config) *verifier {
	return newVerifier(driverhook.Deps{Log: log.NewLogger(log.DiscardHandler()), Rollup: cfg, L1: &fakeL1{}, L2: newFakeEngine(cfg)})
}
