package devnet

import (
	"math/big"
	"testing"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/vm/runtime"
	"github.com/stretchr/testify/require"
)

// TestLoadContract runs the hand-assembled load contract in an in-memory EVM: its creation code returns it, and each
// call writes the next slots, keeps the counter and emits its logs within CallGas.
func TestLoadContract(t *testing.T) {
	cfg := &runtime.Config{GasLimit: 10_000_000, Origin: common.HexToAddress("0x1234")}
	code, addr, _, err := runtime.Create(LoadContractInitCode(), cfg)
	require.NoError(t, err)
	require.Equal(t, loadRuntime, code)
	const slots, logs = 20, 10
	for call := 1; call <= 2; call++ {
		cfg.GasLimit = 10_000_000
		_, left, err := runtime.Call(addr, LoadCallData(slots, logs), cfg)
		require.NoError(t, err)
		used := cfg.GasLimit - left + 21_000 + 2*16 + 62*4
		require.Less(t, used, CallGas(slots, logs), "call %d", call)
		require.Greater(t, used, uint64(slots*22_100), "call %d", call)
		require.Equal(t, common.BigToHash(big.NewInt(int64(call*slots))), cfg.State.GetState(addr, common.Hash{}))
		for i := 1; i <= call*slots; i++ {
			h := common.BigToHash(big.NewInt(int64(i)))
			require.Equal(t, h, cfg.State.GetState(addr, h), "slot %d", i)
		}
		t.Logf("call %d: %d gas (limit %d)", call, used, CallGas(slots, logs))
	}
	require.Len(t, cfg.State.Logs(), 2*logs)
	l := cfg.State.Logs()[0]
	require.Len(t, l.Topics, 2)
	require.Equal(t, common.BigToHash(big.NewInt(logs)), l.Topics[0])
	require.Equal(t, common.BytesToHash(cfg.Origin.Bytes()), l.Topics[1])
	require.Len(t, l.Data, 64)

	for _, s := range []string{"light", "10x", "mix", "max", "x:t=10,c=2,s=3,l=4"} {
		spec, err := ParseLoad(s)
		require.NoError(t, err, s)
		require.Positive(t, spec.Transfers+spec.Calls, s)
	}
	_, err = ParseLoad("nope")
	require.Error(t, err)
}
