package devnet

import (
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/core/vm"

	"github.com/ethereum-optimism/optimism/op-node/node/runcfg"
)

const (
	// L1BlockTime is the L1 block time (geth --dev.period).
	L1BlockTime = 2 * time.Second
	// l1GasLimit is the L1 genesis gas limit.
	l1GasLimit = 30_000_000
	// l1StallTimeout is how long L1 may go without a new block before the devnet reports a fault.
	// geth --dev has been seen to stop producing blocks for good; this makes such a stall loud.
	l1StallTimeout = 8 * L1BlockTime
)

var (
	// systemConfigAddr stands in for the SystemConfig proxy: the storage op-node reads (the unsafe-block signer)
	// and signerSetterCode, so that a test can rotate the signer (RotateSigner).
	systemConfigAddr = common.HexToAddress("0x5C00000000000000000000000000000000000001")
	// portalAddr stands in for the OptimismPortal; without code there, there are no deposits.
	portalAddr = common.HexToAddress("0x0D00000000000000000000000000000000000001")
	// batchInboxAddr receives the batcher's calldata.
	batchInboxAddr = common.HexToAddress("0xFF00000000000000000000000000000000000901")
	// fundedBalance is what every funded account gets, on L1 and L2.
	fundedBalance = new(big.Int).Mul(big.NewInt(1_000_000), big.NewInt(1e18))
)

// L1 is a geth in --dev mode: a single-node proof-of-stake chain with a block every L1BlockTime.
type L1 struct {
	// Genesis is the L1 genesis; op-node reads its chain config via --rollup.l1-chain-config.
	Genesis *core.Genesis
	// ChainConfigPath is Genesis.Config as JSON.
	ChainConfigPath string
	Process         *Process
	EL              *EL
}

// l1Genesis is what `geth --dev dumpgenesis` prints (core.DeveloperGenesisBlock), edited: a 30M gas limit,
// funded accounts, and the unsafe-block signer in the SystemConfig storage, without which every op-node exits.
func l1Genesis(keys Keys, age time.Duration) *core.Genesis {
	g := core.DeveloperGenesisBlock(l1GasLimit, nil)
	g.Timestamp = uint64(time.Now().Add(-age).Unix())
	g.Alloc[address(keys.Batcher)] = types.Account{Balance: fundedBalance}
	for _, key := range keys.L2Accounts {
		g.Alloc[address(key)] = types.Account{Balance: fundedBalance}
	}
	g.Alloc[systemConfigAddr] = types.Account{
		Nonce:   1,
		Code:    signerSetterCode(),
		Balance: new(big.Int),
		Storage: map[common.Hash]common.Hash{
			runcfg.UnsafeBlockSignerAddressSystemConfigStorageSlot: common.BytesToHash(address(keys.SequencerP2P).Bytes()),
		},
	}
	return g
}

// startL1 initialises the L1 data directory and starts geth on it, returning once L1 has a block.
func (d *Devnet) startL1(ctx context.Context) error {
	dir := filepath.Join(d.cfg.Dir, "l1")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create L1 dir: %w", err)
	}
	genesis := l1Genesis(d.Keys, d.cfg.L2GenesisAge)
	genesisPath := filepath.Join(dir, "genesis.json")
	if err := writeJSON(genesisPath, genesis); err != nil {
		return err
	}
	chainConfigPath := filepath.Join(dir, "chain-config.json")
	if err := writeJSON(chainConfigPath, genesis.Config); err != nil {
		return err
	}
	logPath := d.logPath("l1-geth")
	dataDir := filepath.Join(dir, "data")
	if err := runToCompletion(logPath, d.bin("geth"), "init", "--datadir", dataDir, genesisPath); err != nil {
		return fmt.Errorf("init L1: %w", err)
	}
	httpPort, wsPort, authPort, err := d.ports3()
	if err != nil {
		return err
	}
	args := []string{
		"--dev", "--dev.period", strconv.Itoa(int(L1BlockTime / time.Second)),
		// The dev block timer can miss its wake-up and never produce again; recommitting often prevents that.
		"--miner.recommit", "250ms",
		"--datadir", dataDir,
		"--cache", "128",
		"--http", "--http.addr", "127.0.0.1", "--http.port", strconv.Itoa(httpPort), "--http.api", "eth,net,web3,debug,txpool",
		"--ws", "--ws.addr", "127.0.0.1", "--ws.port", strconv.Itoa(wsPort), "--ws.api", "eth,net,web3",
		"--authrpc.addr", "127.0.0.1", "--authrpc.port", strconv.Itoa(authPort),
		"--ipcdisable", "--nodiscover", "--maxpeers", "0", "--nat", "none",
		"--verbosity", "3",
	}
	proc := newProcess("l1-geth", logPath, d.bin("geth"), args, d.processExited)
	el, err := newEL(httpURL(httpPort), wsURL(wsPort))
	if err != nil {
		return err
	}
	d.L1 = &L1{Genesis: genesis, ChainConfigPath: chainConfigPath, Process: proc, EL: el}
	if err := proc.Start(); err != nil {
		return err
	}
	return d.WaitFor(ctx, 30*time.Second, "L1 to produce its first block", func(ctx context.Context) (bool, error) {
		n, err := el.BlockNumber(ctx)
		return n > 0, err
	})
}

// watchL1 reports a fault when L1 has not produced a block for l1StallTimeout. It returns when ctx ends.
func (d *Devnet) watchL1(ctx context.Context) {
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	var head uint64
	lastAdvance := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		callCtx, cancel := context.WithTimeout(ctx, time.Second)
		n, err := d.L1.EL.BlockNumber(callCtx)
		cancel()
		if err == nil && n > head {
			head, lastAdvance = n, time.Now()
			continue
		}
		if stalled := time.Since(lastAdvance); stalled > l1StallTimeout {
			d.fault(fmt.Errorf("L1 stalled: no block after #%d for %s (last error: %v)", head, stalled.Round(time.Second), err))
			return
		}
	}
}

func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", filepath.Base(path), err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func httpURL(port int) string { return "http://127.0.0.1:" + strconv.Itoa(port) }

func wsURL(port int) string { return "ws://127.0.0.1:" + strconv.Itoa(port) }

// signerSetterCode is the stand-in SystemConfig's code: any call stores its first calldata word in the
// unsafe-block-signer slot (SSTORE(slot, CALLDATALOAD(0))). Only for devnets: there is no access control.
func signerSetterCode() []byte {
	slot := runcfg.UnsafeBlockSignerAddressSystemConfigStorageSlot
	code := []byte{byte(vm.PUSH1), 0, byte(vm.CALLDATALOAD), byte(vm.PUSH32)}
	code = append(code, slot[:]...)
	return append(code, byte(vm.SSTORE), byte(vm.STOP))
}

// RotateSigner makes signer the unsafe-block signer on L1, as a SystemConfig owner would, and returns once the
// transaction is in an L1 block. op-nodes pick it up at their next runtime-config reload.
func (d *Devnet) RotateSigner(ctx context.Context, signer common.Address) error {
	key := d.Keys.L2Accounts[0] // funded on L1 too, and otherwise unused there
	chainID, err := d.L1.EL.ChainID(ctx)
	if err != nil {
		return err
	}
	nonce, err := d.L1.EL.PendingNonceAt(ctx, address(key))
	if err != nil {
		return err
	}
	tx, err := types.SignNewTx(key, types.LatestSignerForChainID(chainID), &types.DynamicFeeTx{
		ChainID: chainID, Nonce: nonce, To: &systemConfigAddr, Gas: 100_000,
		GasFeeCap: big.NewInt(100e9), GasTipCap: big.NewInt(1e9),
		Data: common.LeftPadBytes(signer.Bytes(), 32),
	})
	if err != nil {
		return err
	}
	if err := d.L1.EL.SendTransaction(ctx, tx); err != nil {
		return fmt.Errorf("rotate signer: %w", err)
	}
	return d.WaitFor(ctx, 30*time.Second, "the signer rotation on L1", func(ctx context.Context) (bool, error) {
		r, err := d.L1.EL.TransactionReceipt(ctx, tx.Hash())
		if err != nil {
			return false, nil // not mined yet
		}
		if r.Status != types.ReceiptStatusSuccessful {
			return false, fmt.Errorf("rotate signer: transaction %s failed", tx.Hash())
		}
		return true, nil
	})
}
