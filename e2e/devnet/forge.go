package devnet

import (
	"context"
	"crypto/ecdsa"
	"fmt"
	"regexp"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/log"
	"github.com/ethereum/go-ethereum/node"
	"github.com/ethereum/go-ethereum/rpc"
	"github.com/ethereum/go-ethereum/trie"

	"github.com/ethereum-optimism/optimism/op-node/rollup"
	"github.com/ethereum-optimism/optimism/op-service/client"
	"github.com/ethereum-optimism/optimism/op-service/eth"
	"github.com/ethereum-optimism/optimism/op-service/sources"
)

// ForgedRecipient receives the value of the transfer a Forger redirects.
var ForgedRecipient = common.Address{0xf0, 0x4e, 0xd0, 0x02}

// Forger forges blocks a lying source could serve: the last plain transfer of a block sent by one of its keys goes
// to ForgedRecipient instead (re-signed by its sender: same nonce, gas, fees and value), and the block is made
// self-consistent by executing it on a scratch engine, which names the state root it computes when it refuses the
// block (op-geth's "invalid merkle root (remote: … local: …)"). The forged block uses the same gas and executes VALID;
// only its state (who received the value) and its hashes differ. Blocks above it are relinked and get their state
// roots the same way. The scratch engine keeps the forged blocks as side blocks; its chain is not changed.
type Forger struct {
	keys   map[common.Address]*ecdsa.PrivateKey
	engine *sources.EngineAPIClient
	rollup *rollup.Config

	mu    sync.Mutex                  // held while a block is forged (Forge)
	roots map[common.Hash]common.Hash // forged block hash before the root was fixed → the executed state root
	held  map[common.Hash]bool        // the same hashes: the fixed block was answered VALID (the engine has it)
}

// forgeTimeout bounds a block's exchange with the scratch engine, which a proxy request's cancellation does not cut
// short (Forger.execute).
const forgeTimeout = 30 * time.Second

// NewForger forges with the keys of the accounts whose transfers it may redirect, executing on engine (an op-geth's
// engine API: Node.EngineURL, Node.JWT).
func NewForger(ctx context.Context, engineURL string, jwt [32]byte, cfg *rollup.Config, keys []*ecdsa.PrivateKey) (*Forger, error) {
	c, err := rpc.DialOptions(ctx, engineURL, rpc.WithHTTPAuth(node.NewJWTAuth(jwt)))
	if err != nil {
		return nil, fmt.Errorf("dial scratch engine %s: %w", engineURL, err)
	}
	f := &Forger{keys: make(map[common.Address]*ecdsa.PrivateKey), rollup: cfg, roots: make(map[common.Hash]common.Hash), held: make(map[common.Hash]bool),
		engine: sources.NewEngineAPIClient(client.NewBaseRPCClient(c), log.Root(), cfg)}
	for _, k := range keys {
		f.keys[crypto.PubkeyToAddress(k.PublicKey)] = k
	}
	return f, nil
}

// redirect returns txs with the last plain transfer of a known sender re-signed to ForgedRecipient, and whether it
// found one.
func (f *Forger) redirect(txs sources.RawTransactions) (sources.RawTransactions, bool, error) {
	for i := len(txs) - 1; i >= 0; i-- {
		var tx types.Transaction
		if err := tx.UnmarshalBinary(txs[i]); err != nil || tx.Type() != types.DynamicFeeTxType || len(tx.Data()) > 0 ||
			tx.To() == nil || *tx.To() == ForgedRecipient {
			continue
		}
		signer := types.LatestSignerForChainID(tx.ChainId())
		sender, err := types.Sender(signer, &tx)
		key, ok := f.keys[sender]
		if err != nil || !ok {
			continue
		}
		forged, err := types.SignNewTx(key, signer, &types.DynamicFeeTx{ChainID: tx.ChainId(), Nonce: tx.Nonce(),
			GasTipCap: tx.GasTipCap(), GasFeeCap: tx.GasFeeCap(), Gas: tx.Gas(), To: &ForgedRecipient, Value: tx.Value()})
		if err != nil {
			return nil, false, err
		}
		raw, err := forged.MarshalBinary()
		if err != nil {
			return nil, false, err
		}
		out := append(sources.RawTransactions(nil), txs...)
		out[i] = raw
		return out, true, nil
	}
	return txs, false, nil
}

var invalidRoot = regexp.MustCompile(`invalid merkle root \(remote: ([0-9a-fA-Fx]+) local: ([0-9a-fA-Fx]+)\)`)

// Forge changes a block (its header, its parent hash already relinked, and its transactions) as described on
// Forger: the header's transactions root and state root are set, in place. It returns the transactions and whether
// one was redirected.
func (f *Forger) Forge(ctx context.Context, header *types.Header, txs sources.RawTransactions) (sources.RawTransactions, bool, error) {
	out, redirected, err := f.redirect(txs)
	if err != nil {
		return nil, false, fmt.Errorf("block %d: %w", header.Number, err)
	}
	header.TxHash = types.DeriveSha(out, trie.NewStackTrie(nil))
	unfixed := header.Hash()
	// One block at a time: the scratch engine remembers a block it refused, and answers the same block sent again
	// with "links to previously rejected block" instead of naming its root. Two replicators asking the proxy for the
	// same block at once must not both send it: the second waits here and takes what the first found.
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.execute(ctx, header, out, unfixed); err != nil {
		return nil, false, fmt.Errorf("block %d: %w", header.Number, err)
	}
	return out, redirected, nil
}

// execute sets the header's state root to the one the scratch engine computes and has the engine keep the fixed
// block (the parent of the next forged one), which must execute VALID. The first time a block (unfixed: its hash
// before the root is set) comes, the engine refuses it naming its root, or accepts it (the root was right). The
// exchange is not cut short by the caller's context: a refusal whose answer never arrived would leave the engine
// refusing the block again without naming the root. The root is kept as soon as it is named, and the fixed block
// is sent again until the engine has answered VALID for it once.
func (f *Forger) execute(ctx context.Context, header *types.Header, txs sources.RawTransactions, unfixed common.Hash) error {
	if f.held[unfixed] {
		header.Root = f.roots[unfixed]
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), forgeTimeout)
	defer cancel()
	if root, known := f.roots[unfixed]; known {
		header.Root = root
	} else {
		status, err := f.newPayload(ctx, header, txs)
		if err != nil {
			return err
		}
		switch {
		case status.Status == eth.ExecutionValid: // the root was right
			f.roots[unfixed], f.held[unfixed] = header.Root, true
			return nil
		case status.Status == eth.ExecutionInvalid && status.ValidationError != nil:
			m := invalidRoot.FindStringSubmatch(*status.ValidationError)
			if m == nil {
				return fmt.Errorf("scratch engine refused the forged block: %s", *status.ValidationError)
			}
			header.Root = common.HexToHash(m[2])
			f.roots[unfixed] = header.Root
		default:
			return fmt.Errorf("scratch engine answered %s for the forged block: %s", status.Status, validationError(status))
		}
	}
	status, err := f.newPayload(ctx, header, txs)
	if err != nil {
		return err
	}
	if status.Status != eth.ExecutionValid {
		return fmt.Errorf("scratch engine answered %s for the forged block with its root fixed: %s", status.Status, validationError(status))
	}
	f.held[unfixed] = true
	return nil
}

func validationError(status *eth.PayloadStatusV1) string {
	if status.ValidationError == nil {
		return ""
	}
	return *status.ValidationError
}

func (f *Forger) newPayload(ctx context.Context, header *types.Header, txs sources.RawTransactions) (*eth.PayloadStatusV1, error) {
	body, err := txs.Geth()
	if err != nil {
		return nil, err
	}
	block := types.NewBlockWithHeader(header).WithBody(types.Body{Transactions: body, Withdrawals: []*types.Withdrawal{}})
	env, err := eth.BlockAsPayloadEnv(block, f.rollup)
	if err != nil {
		return nil, err
	}
	return f.engine.NewPayload(ctx, env.ExecutionPayload, env.ParentBeaconBlockRoot)
}
