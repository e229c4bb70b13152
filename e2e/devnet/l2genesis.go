package devnet

import (
	"fmt"
	"math/big"
	"path/filepath"

	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/params"

	"github.com/ethereum-optimism/optimism/op-chain-ops/genesis"
	"github.com/ethereum-optimism/optimism/op-core/forks"
	"github.com/ethereum-optimism/optimism/op-node/rollup"
	"github.com/ethereum-optimism/optimism/op-service/eth"
)

const (
	// L1ChainID is the chain ID of geth --dev.
	L1ChainID = 1337
	// L2ChainID is the devnet's L2 chain ID.
	L2ChainID = 901
	// l2GasLimit is the L2 block gas limit.
	l2GasLimit = 60_000_000
	// defaultSequencerWindowSize is the sequencing window in L1 blocks unless Config.SequencerWindowSize says otherwise.
	defaultSequencerWindowSize = 200
)

// L2Chain is the generated L2 configuration: the genesis op-geth is initialised with and the rollup
// config every op-node runs with.
type L2Chain struct {
	Genesis     *core.Genesis
	GenesisPath string
	Rollup      *rollup.Config
	RollupPath  string
}

// deployConfig is the devnet's chain configuration: every fork through Jovian active at genesis, fixed
// operator keys, and the stand-in L1 addresses of this package (there are no L1 contracts).
func deployConfig(blockTime, seqWindow uint64, keys Keys) *genesis.DeployConfig {
	dc := &genesis.DeployConfig{
		L2InitializationConfig: genesis.L2InitializationConfig{
			L2GenesisBlockDeployConfig: genesis.L2GenesisBlockDeployConfig{
				L2GenesisBlockGasLimit:      l2GasLimit,
				L2GenesisBlockBaseFeePerGas: (*hexutil.Big)(big.NewInt(params.InitialBaseFee)),
			},
			GasPriceOracleDeployConfig: genesis.GasPriceOracleDeployConfig{
				GasPriceOracleBaseFeeScalar:     1368,
				GasPriceOracleBlobBaseFeeScalar: 810949,
			},
			OperatorDeployConfig: genesis.OperatorDeployConfig{
				P2PSequencerAddress: address(keys.SequencerP2P),
				BatchSenderAddress:  address(keys.Batcher),
			},
			EIP1559DeployConfig: genesis.EIP1559DeployConfig{
				EIP1559Elasticity:        6,
				EIP1559Denominator:       50,
				EIP1559DenominatorCanyon: 250,
			},
			L2CoreDeployConfig: genesis.L2CoreDeployConfig{
				L1ChainID:                 L1ChainID,
				L2ChainID:                 L2ChainID,
				L2BlockTime:               blockTime,
				FinalizationPeriodSeconds: 12,
				MaxSequencerDrift:         600,
				SequencerWindowSize:       seqWindow,
				ChannelTimeoutBedrock:     120,
				BatchInboxAddress:         batchInboxAddr,
			},
		},
		L1DependenciesConfig: genesis.L1DependenciesConfig{
			SystemConfigProxy:   systemConfigAddr,
			OptimismPortalProxy: portalAddr,
		},
	}
	// Karst would need osakaTime = karstTime in the L2 chain config, Lagoon an interop dependency set.
	dc.ActivateForkAtGenesis(forks.Jovian)
	return dc
}

// buildL2Chain creates the L2 genesis, with the given accounts funded, anchored at the L1 block l1Start,
// and the matching rollup config (sequencing window seqWindow L1 blocks), and writes both to dir.
func buildL2Chain(dir string, blockTime, seqWindow uint64, keys Keys, l1Start *types.Header) (*L2Chain, error) {
	dc := deployConfig(blockTime, seqWindow, keys)
	l1StartRef := eth.BlockRefFromHeader(l1Start)
	g, err := genesis.NewL2Genesis(dc, l1StartRef)
	if err != nil {
		return nil, fmt.Errorf("L2 genesis: %w", err)
	}
	for _, key := range keys.L2Accounts {
		g.Alloc[address(key)] = types.Account{Balance: fundedBalance}
	}
	rollupCfg, err := dc.RollupConfig(l1StartRef, g.ToBlock().Hash(), g.Number)
	if err != nil {
		return nil, fmt.Errorf("rollup config: %w", err)
	}
	if err := rollupCfg.Check(); err != nil {
		return nil, fmt.Errorf("invalid rollup config: %w", err)
	}
	chain := &L2Chain{
		Genesis:     g,
		GenesisPath: filepath.Join(dir, "l2-genesis.json"),
		Rollup:      rollupCfg,
		RollupPath:  filepath.Join(dir, "rollup.json"),
	}
	if err := writeJSON(chain.GenesisPath, g); err != nil {
		return nil, err
	}
	if err := writeJSON(chain.RollupPath, rollupCfg); err != nil {
		return nil, err
	}
	return chain, nil
}
