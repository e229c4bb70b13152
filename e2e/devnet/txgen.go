package devnet

import (
	"context"
	"crypto/ecdsa"
	"fmt"
	"math/big"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/params"
)

// nonceResyncInterval is how often the generator re-reads account nonces, so that transactions lost
// (e.g. by a restarted op-geth) do not leave it sending nonces that can never be included.
const nonceResyncInterval = 5 * time.Second

// TxGen sends simple ETH transfers, round-robin from a set of funded accounts, at a fixed rate.
type TxGen struct {
	el     *EL
	signer types.Signer
	keys   []*ecdsa.PrivateKey
	nonces []uint64

	sent, failed atomic.Uint64

	cancel context.CancelFunc
	done   sync.WaitGroup
}

// StartTxGen starts sending rate transactions per second to el, from keys (funded L2 accounts, e.g.
// Devnet.Keys.L2Accounts), until Stop. Failed sends are counted, not fatal.
func StartTxGen(ctx context.Context, el *EL, keys []*ecdsa.PrivateKey, rate float64) (*TxGen, error) {
	if rate <= 0 || len(keys) == 0 {
		return nil, fmt.Errorf("tx generator needs a positive rate and at least one key (rate %v, %d keys)", rate, len(keys))
	}
	chainID, err := el.ChainID(ctx)
	if err != nil {
		return nil, fmt.Errorf("tx generator: chain ID: %w", err)
	}
	g := &TxGen{
		el:     el,
		signer: types.LatestSignerForChainID(chainID),
		keys:   keys,
		nonces: make([]uint64, len(keys)),
	}
	if err := g.resyncNonces(ctx); err != nil {
		return nil, err
	}
	ctx, g.cancel = context.WithCancel(context.WithoutCancel(ctx))
	g.done.Add(1)
	go g.run(ctx, time.Duration(float64(time.Second)/rate))
	return g, nil
}

// Stop stops sending and waits for the generator to return.
func (g *TxGen) Stop() {
	g.cancel()
	g.done.Wait()
}

// Sent is the number of transactions the engine accepted.
func (g *TxGen) Sent() uint64 { return g.sent.Load() }

// Failed is the number of transactions the engine rejected or that could not be sent.
func (g *TxGen) Failed() uint64 { return g.failed.Load() }

func (g *TxGen) run(ctx context.Context, interval time.Duration) {
	defer g.done.Done()
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	resync := time.NewTicker(nonceResyncInterval)
	defer resync.Stop()
	for i := 0; ; i = (i + 1) % len(g.keys) {
		select {
		case <-ctx.Done():
			return
		case <-resync.C:
			_ = g.resyncNonces(ctx) // retried at the next interval
			continue
		case <-ticker.C:
		}
		if err := g.send(ctx, i); err != nil {
			g.failed.Add(1)
			_ = g.resyncNonces(ctx)
		} else {
			g.sent.Add(1)
		}
	}
}

// send transfers 1 wei from account i to the next account.
func (g *TxGen) send(ctx context.Context, i int) error {
	to := address(g.keys[(i+1)%len(g.keys)])
	tx, err := types.SignNewTx(g.keys[i], g.signer, &types.DynamicFeeTx{
		Nonce:     g.nonces[i],
		GasTipCap: big.NewInt(params.GWei),
		GasFeeCap: big.NewInt(100 * params.GWei),
		Gas:       params.TxGas,
		To:        &to,
		Value:     big.NewInt(1),
	})
	if err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := g.el.SendTransaction(ctx, tx); err != nil {
		return err
	}
	g.nonces[i]++
	return nil
}

// resyncNonces sets every account's next nonce to the engine's pending nonce.
func (g *TxGen) resyncNonces(ctx context.Context) error {
	for i, key := range g.keys {
		n, err := g.el.PendingNonceAt(ctx, address(key))
		if err != nil {
			return fmt.Errorf("tx generator: nonce of %s: %w", address(key), err)
		}
		g.nonces[i] = n
	}
	return nil
}
