package source

import (
	"errors"
	"fmt"
	"strings"

	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/rlp"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/ethereum-optimism/optimism/op-core/predeploys"
	optypes "github.com/ethereum-optimism/optimism/op-core/types"
	"github.com/ethereum-optimism/optimism/op-service/eth"
)

// rawBlockMethod is how an rpcSource fetches a block: op-geth's debug_getRawBlock, the block's RLP as one byte string.
// Unlike eth_getBlockByNumber with full transaction objects, neither side encodes or decodes a transaction as JSON.
const rawBlockMethod = "debug_getRawBlock"

// errNoRawBlock: the source does not serve debug_getRawBlock (method not found, the debug namespace not enabled).
var errNoRawBlock = errors.New("source does not serve " + rawBlockMethod)

// rawBlockUnserved tells whether err is the source's answer that it does not serve debug_getRawBlock: JSON-RPC
// "method not found" (-32601, which go-ethereum also answers for a namespace it does not serve), or proxyd's
// "rpc method is not whitelisted" (-32001, in an HTTP 403 body over http). Any other error says nothing of that.
func rawBlockUnserved(err error) bool {
	var rpcErr rpc.Error
	if errors.As(err, &rpcErr) && rpcErr.ErrorCode() == -32601 {
		return true
	}
	return strings.Contains(strings.ToLower(err.Error()), "rpc method is not whitelisted")
}

// rawBlockPayload makes the payload of a block as debug_getRawBlock answers it (the RLP of header, transactions,
// uncles and withdrawals) with op-service's conversion, eth.BlockAsPayloadEnv. First it checks what op-service
// checks of an eth_getBlockByNumber answer with trust off (sources.RPCBlock.ExecutionPayloadEnvelope): a post-merge
// header, no withdrawals (patch 0006), and a withdrawals root that the JSON path would take too. The body must also
// match the header as op-geth's BlockValidator.ValidateBody requires (no uncles; a withdrawals list exactly when the
// header has a withdrawals root), since the conversion drops the uncles and takes the withdrawals from the fork, not
// the body. Every refusal is ErrBadInput.
//
// The RLP claims no block hash as the JSON answer does: the block hash is the header's, and the caller checks that
// the payload hashes to it (env.CheckBlockHash) and that it is the block asked for. That check recomputes the
// transactions root from the payload's transactions (transactions other than the header's make a payload that
// hashes otherwise), so it is not also computed here: it would be most of this function's cost.
func rawBlockPayload(raw []byte, forks eth.HardforkConfig) (*eth.ExecutionPayloadEnvelope, error) {
	var block types.Block
	if err := rlp.DecodeBytes(raw, &block); err != nil {
		return nil, fmt.Errorf("%w: undecodable block RLP: %w", ErrBadInput, err)
	}
	header := block.Header()
	if !header.Number.IsUint64() {
		return nil, fmt.Errorf("%w: block number %s", ErrBadInput, header.Number)
	}
	if err := checkPostMerge(header); err != nil {
		return nil, fmt.Errorf("%w: block %d: %w", ErrBadInput, header.Number, err)
	}
	if n := len(block.Uncles()); n != 0 {
		return nil, fmt.Errorf("%w: block %d: %d uncles in the body of a post-merge block", ErrBadInput, header.Number, n)
	}
	if header.WithdrawalsHash != nil && block.Withdrawals() == nil {
		return nil, fmt.Errorf("%w: block %d: a withdrawals root and no withdrawals list", ErrBadInput, header.Number)
	}
	if header.WithdrawalsHash == nil && block.Withdrawals() != nil {
		return nil, fmt.Errorf("%w: block %d: a withdrawals list and no withdrawals root", ErrBadInput, header.Number)
	}
	if n := len(block.Withdrawals()); n != 0 {
		return nil, fmt.Errorf("%w: block %d: expected empty withdrawals, but got %d", ErrBadInput, header.Number, n)
	}
	// op-service takes a block that does not start with a deposit (genesis aside) for an L1 block, whose withdrawals
	// root must be its list's, here the empty one: the JSON path refuses such a block with another root (an Isthmus
	// one), and so does this one. (The verifier would refuse any block without its L1-info deposit, as a halt.)
	txs := block.Transactions()
	isL2 := (len(txs) > 0 && txs[0].Type() == optypes.DepositTxType) ||
		(header.Number.Sign() == 0 && header.Coinbase == predeploys.SequencerFeeVaultAddr)
	if !isL2 && header.WithdrawalsHash != nil && *header.WithdrawalsHash != types.EmptyWithdrawalsHash {
		return nil, fmt.Errorf("%w: block %d: no deposit first, and a withdrawals root %s that is not its empty list's",
			ErrBadInput, header.Number, *header.WithdrawalsHash)
	}
	// op-service's JSON conversion takes an empty withdrawals root for the pre-Isthmus one and leaves it out of the
	// payload, which then hashes otherwise: refused here too. An Isthmus block's root is the L2ToL1MessagePasser's
	// storage root, never empty (the predeploy is a proxy: its storage holds at least the proxy's slots).
	if forks.IsIsthmus(header.Time) && (header.WithdrawalsHash == nil || *header.WithdrawalsHash == types.EmptyWithdrawalsHash) {
		return nil, fmt.Errorf("%w: block %d: Isthmus block without a withdrawals root", ErrBadInput, header.Number)
	}
	env, err := eth.BlockAsPayloadEnv(&block, forks)
	if err != nil {
		return nil, fmt.Errorf("%w: block %d: %w", ErrBadInput, header.Number, err)
	}
	return env, nil
}

// checkPostMerge is op-service's RPCHeader.checkPostMerge (unexported there) on a go-ethereum header: what a header
// must be to be an execution payload's.
func checkPostMerge(h *types.Header) error {
	// Like op-service: the genesis block may have a difficulty.
	if h.Number.Sign() != 0 && h.Difficulty.Sign() != 0 {
		return fmt.Errorf("post-merge block header requires zeroed difficulty field, but got: %s", h.Difficulty)
	}
	if h.Nonce != (types.BlockNonce{}) {
		return fmt.Errorf("post-merge block header requires zeroed block nonce field, but got: %d", h.Nonce.Uint64())
	}
	if h.BaseFee == nil {
		return errors.New("post-merge block header requires EIP-1559 base fee field")
	}
	if len(h.Extra) > 32 {
		return fmt.Errorf("post-merge block header requires 32 or less bytes of extra data, but got %d", len(h.Extra))
	}
	if h.UncleHash != types.EmptyUncleHash {
		return fmt.Errorf("post-merge block header requires uncle hash to be of empty uncle list, but got %s", h.UncleHash)
	}
	return nil
}
