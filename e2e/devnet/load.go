package devnet

import (
	"context"
	"crypto/ecdsa"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/params"
)

// A block-weight load: plain transfers (TxGen) beside calls of a small contract that, per call, writes fresh
// storage slots and emits logs, so that a block's gas can be raised well past what transfers alone give without
// its bytes growing with it (a call is ~150 bytes of transaction for ~0.5 Mgas).

// LoadSpec is a load: transfers and contract calls a second, and what each call does.
type LoadSpec struct {
	// Name names the load in reports.
	Name string
	// Transfers is plain 1-wei transfers a second (TxGen).
	Transfers float64
	// Calls is contract calls a second; each writes Slots storage slots never written before (zero to non-zero:
	// 22,100 gas each, and one more trie leaf) and emits Logs logs (two topics, 64 bytes of data).
	Calls       float64
	Slots, Logs int
}

// Load presets, by name: "light" is the devnet's usual load (about 60 transfers and 1.3 Mgas a block); "10x" ten
// times it in transfers alone; "mix" about ten times its gas in a contract-heavy mix (storage writes and logs
// beside the same transfers); "max" the heaviest contract-heavy mix measured to keep 1 s blocks here with a gossip
// node and two replicators following (see docs/benchmarks.md).
var LoadPresets = map[string]LoadSpec{
	"light": {Name: "light", Transfers: 60},
	"10x":   {Name: "10x", Transfers: 600},
	"mix":   {Name: "mix", Transfers: 60, Calls: 24, Slots: 20, Logs: 10},
	"max":   {Name: "max", Transfers: 60, Calls: 60, Slots: 20, Logs: 10},
}

// ParseLoad reads a load: a preset's name, or name:key=value,... with keys t (transfers/s), c (calls/s), s (slots
// per call) and l (logs per call), e.g. "heavy:t=60,c=80,s=20,l=10".
func ParseLoad(s string) (LoadSpec, error) {
	s = strings.TrimSpace(s)
	if spec, ok := LoadPresets[s]; ok {
		return spec, nil
	}
	name, rest, ok := strings.Cut(s, ":")
	if !ok {
		return LoadSpec{}, fmt.Errorf("load %q: neither a preset (light, 10x, mix, max) nor name:t=…,c=…,s=…,l=…", s)
	}
	spec := LoadSpec{Name: name}
	for _, kv := range strings.Split(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return LoadSpec{}, fmt.Errorf("load %q: %q is not key=value", s, kv)
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 {
			return LoadSpec{}, fmt.Errorf("load %q: %s=%q is not a number ≥ 0", s, k, v)
		}
		switch k {
		case "t":
			spec.Transfers = f
		case "c":
			spec.Calls = f
		case "s":
			spec.Slots = int(f)
		case "l":
			spec.Logs = int(f)
		default:
			return LoadSpec{}, fmt.Errorf("load %q: unknown key %q (t, c, s, l)", s, k)
		}
	}
	return spec, nil
}

func (s LoadSpec) String() string {
	out := fmt.Sprintf("%s: %g transfers/s", s.Name, s.Transfers)
	if s.Calls > 0 {
		out += fmt.Sprintf(", %g calls/s of %d fresh storage slots and %d logs", s.Calls, s.Slots, s.Logs)
	}
	return out
}

// CallGas is the gas limit of a call writing slots slots and emitting logs logs: an upper bound of what it uses
// (21,000 + calldata, 22,100 and a few loop opcodes per slot, a cold read and a write of the counter, 375 + 2 × 375
// + 64 × 8 and the loop per log).
func CallGas(slots, logs int) uint64 {
	return 60_000 + uint64(slots)*22_400 + uint64(logs)*1_800
}

// loadRuntime is the contract's code. Calldata: two words, n and m. It reads a counter c from slot 0, writes
// c+1..c+n into the slots of those numbers (each a slot never written before), stores c+n into slot 0, then emits
// m logs LOG2(data = m and a zero word, topics m, caller).
var loadRuntime = assemble(
	op(0x60, 0x00), op(0x35), // PUSH1 0 CALLDATALOAD: n
	op(0x60, 0x00), op(0x54), // PUSH1 0 SLOAD: n c
	label("slots"), op(0x5b), // JUMPDEST (stack, top first: c n)
	op(0x81), op(0x15), jumpTo("slotsDone"), op(0x57), // DUP2 ISZERO PUSH2 slotsDone JUMPI
	op(0x60, 0x01), op(0x01), // PUSH1 1 ADD: c+1 n
	op(0x80), op(0x80), op(0x55), // DUP1 DUP1 SSTORE: sstore(c+1, c+1)
	op(0x90), op(0x60, 0x01), op(0x90), op(0x03), op(0x90), // SWAP1 PUSH1 1 SWAP1 SUB SWAP1: c+1 n-1
	jumpTo("slots"), op(0x56), // PUSH2 slots JUMP
	label("slotsDone"), op(0x5b), // JUMPDEST: c 0
	op(0x60, 0x00), op(0x55), op(0x50), // PUSH1 0 SSTORE POP: sstore(0, c)
	op(0x60, 0x20), op(0x35), // PUSH1 32 CALLDATALOAD: m
	label("logs"), op(0x5b), // JUMPDEST: m
	op(0x80), op(0x15), jumpTo("done"), op(0x57), // DUP1 ISZERO PUSH2 done JUMPI
	op(0x80), op(0x60, 0x00), op(0x52), // DUP1 PUSH1 0 MSTORE: mem[0:32] = m
	op(0x33), op(0x81), op(0x60, 0x40), op(0x60, 0x00), op(0xa2), // CALLER DUP2 PUSH1 64 PUSH1 0 LOG2
	op(0x60, 0x01), op(0x90), op(0x03), // PUSH1 1 SWAP1 SUB: m-1
	jumpTo("logs"), op(0x56), // PUSH2 logs JUMP
	label("done"), op(0x5b), op(0x00), // JUMPDEST STOP
)

// LoadContractInitCode is the contract's creation code: it returns loadRuntime.
func LoadContractInitCode() []byte {
	const prefix = 13
	n := len(loadRuntime)
	init := []byte{
		0x61, byte(n >> 8), byte(n), // PUSH2 len
		0x80,                                  // DUP1
		0x61, byte(prefix >> 8), byte(prefix), // PUSH2 offset
		0x60, 0x00, // PUSH1 0
		0x39,       // CODECOPY
		0x60, 0x00, // PUSH1 0
		0xf3, // RETURN
	}
	return append(init, loadRuntime...)
}

// LoadCallData is a call's calldata: n (slots) and m (logs) as two words.
func LoadCallData(slots, logs int) []byte {
	data := make([]byte, 64)
	binary.BigEndian.PutUint64(data[24:32], uint64(slots))
	binary.BigEndian.PutUint64(data[56:64], uint64(logs))
	return data
}

// asm is a piece of assembly: bytes, a label, or a PUSH2 of a label's offset.
type asm struct {
	code  []byte
	label string
	jump  string
}

func op(b ...byte) asm       { return asm{code: b} }
func label(name string) asm  { return asm{label: name} }
func jumpTo(name string) asm { return asm{jump: name} }
func assemble(parts ...asm) []byte {
	offsets := map[string]int{}
	pc := 0
	for _, p := range parts {
		switch {
		case p.label != "":
			offsets[p.label] = pc
		case p.jump != "":
			pc += 3
		default:
			pc += len(p.code)
		}
	}
	var out []byte
	for _, p := range parts {
		switch {
		case p.label != "":
		case p.jump != "":
			at, ok := offsets[p.jump]
			if !ok {
				panic("assemble: no label " + p.jump)
			}
			out = append(out, 0x61, byte(at>>8), byte(at))
		default:
			out = append(out, p.code...)
		}
	}
	return out
}

// Load is a running LoadSpec: TxGens for the transfers and callers for the contract calls, each on its own accounts.
type Load struct {
	Spec     LoadSpec
	Contract common.Address

	transfers []*TxGen
	callers   []*callGen
}

// maxRatePerSender is the most transactions a second one sender goroutine is given: an RPC round trip to op-geth
// takes about a millisecond here, and a goroutine sends one at a time.
const maxRatePerSender = 100

// StartLoad deploys the load contract (if the spec calls it) from the first key, then sends the spec's load to el
// until Stop: the keys are split between the transfer senders and the callers, in proportion to their rates, with
// at least one key each; each sender sends at most maxRatePerSender transactions a second.
func StartLoad(ctx context.Context, el *EL, keys []*ecdsa.PrivateKey, spec LoadSpec) (*Load, error) {
	total := spec.Transfers + spec.Calls
	if total <= 0 {
		return nil, errors.New("load: no transactions to send")
	}
	senders := func(rate float64) int {
		if rate <= 0 {
			return 0
		}
		return max(1, int((rate+maxRatePerSender-1)/maxRatePerSender))
	}
	nt, nc := senders(spec.Transfers), senders(spec.Calls)
	if len(keys) < nt+nc {
		return nil, fmt.Errorf("load %s needs %d accounts, has %d", spec.Name, nt+nc, len(keys))
	}
	l := &Load{Spec: spec}
	chainID, err := el.ChainID(ctx)
	if err != nil {
		return nil, fmt.Errorf("load: chain ID: %w", err)
	}
	signer := types.LatestSignerForChainID(chainID)
	// Keys: the callers' share in proportion to their rate, the rest for transfers.
	callKeys := 0
	if nc > 0 {
		callKeys = min(len(keys)-nt, max(nc, int(float64(len(keys))*spec.Calls/total)))
	}
	tKeys, cKeys := keys[:len(keys)-callKeys], keys[len(keys)-callKeys:]
	if nc > 0 {
		if l.Contract, err = deployLoadContract(ctx, el, signer, cKeys[0]); err != nil {
			return nil, err
		}
	}
	for i := range nt {
		g, err := StartTxGen(ctx, el, share(tKeys, i, nt), spec.Transfers/float64(nt))
		if err != nil {
			l.Stop()
			return nil, err
		}
		l.transfers = append(l.transfers, g)
	}
	for i := range nc {
		c, err := startCallGen(ctx, el, signer, share(cKeys, i, nc), spec.Calls/float64(nc), l.Contract, spec.Slots, spec.Logs)
		if err != nil {
			l.Stop()
			return nil, err
		}
		l.callers = append(l.callers, c)
	}
	return l, nil
}

// share is the i-th of n parts of keys.
func share(keys []*ecdsa.PrivateKey, i, n int) []*ecdsa.PrivateKey {
	return keys[i*len(keys)/n : (i+1)*len(keys)/n]
}

// Stop stops every sender.
func (l *Load) Stop() {
	for _, g := range l.transfers {
		g.Stop()
	}
	for _, c := range l.callers {
		c.stop()
	}
}

// Sent is the transactions the engine accepted; Failed those it refused or that could not be sent.
func (l *Load) Sent() (transfers, calls uint64) {
	for _, g := range l.transfers {
		transfers += g.Sent()
	}
	for _, c := range l.callers {
		calls += c.sent.Load()
	}
	return transfers, calls
}

func (l *Load) Failed() uint64 {
	var n uint64
	for _, g := range l.transfers {
		n += g.Failed()
	}
	for _, c := range l.callers {
		n += c.failed.Load()
	}
	return n
}

// deployLoadContract deploys the load contract from key and waits for its receipt.
func deployLoadContract(ctx context.Context, el *EL, signer types.Signer, key *ecdsa.PrivateKey) (common.Address, error) {
	from := address(key)
	nonce, err := el.PendingNonceAt(ctx, from)
	if err != nil {
		return common.Address{}, fmt.Errorf("load contract: nonce: %w", err)
	}
	tx, err := types.SignNewTx(key, signer, &types.DynamicFeeTx{
		Nonce:     nonce,
		GasTipCap: big.NewInt(params.GWei),
		GasFeeCap: big.NewInt(loadFeeCap),
		Gas:       300_000,
		Data:      LoadContractInitCode(),
	})
	if err != nil {
		return common.Address{}, err
	}
	if err := el.SendTransaction(ctx, tx); err != nil {
		return common.Address{}, fmt.Errorf("load contract: deploy: %w", err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		r, err := el.TransactionReceipt(ctx, tx.Hash())
		if err == nil {
			if r.Status != types.ReceiptStatusSuccessful {
				return common.Address{}, fmt.Errorf("load contract: deploy %s failed", tx.Hash())
			}
			code, err := el.CodeAt(ctx, r.ContractAddress, nil)
			if err != nil || len(code) != len(loadRuntime) {
				return common.Address{}, fmt.Errorf("load contract: %d bytes of code at %s (%v)", len(code), r.ContractAddress, err)
			}
			return r.ContractAddress, nil
		}
		if time.Now().After(deadline) {
			return common.Address{}, fmt.Errorf("load contract: no receipt for %s: %w", tx.Hash(), err)
		}
		select {
		case <-ctx.Done():
			return common.Address{}, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// loadFeeCap is the callers' fee cap: a block well above the gas target (10 Mgas) raises the base fee by up to 2%,
// and a heavy load must not price its own calls out within a run (TxGen's transfers stop at 100 gwei). Gas times the
// cap must stay under op-geth's --rpc.txfeecap (1 ether): 1,000 gwei allows calls of up to 1 Mgas.
const loadFeeCap = 1_000 * params.GWei

// callGen sends contract calls round-robin from its accounts at a fixed rate, as TxGen sends transfers.
type callGen struct {
	el       *EL
	signer   types.Signer
	keys     []*ecdsa.PrivateKey
	nonces   []uint64
	to       common.Address
	data     []byte
	gas      uint64
	interval time.Duration

	sent, failed atomic.Uint64
	cancel       context.CancelFunc
	done         sync.WaitGroup
}

func startCallGen(ctx context.Context, el *EL, signer types.Signer, keys []*ecdsa.PrivateKey, rate float64, to common.Address,
	slots, logs int) (*callGen, error) {
	if rate <= 0 || len(keys) == 0 {
		return nil, fmt.Errorf("call generator needs a positive rate and at least one key (rate %v, %d keys)", rate, len(keys))
	}
	c := &callGen{el: el, signer: signer, keys: keys, nonces: make([]uint64, len(keys)), to: to,
		data: LoadCallData(slots, logs), gas: CallGas(slots, logs), interval: time.Duration(float64(time.Second) / rate)}
	if err := c.resyncNonces(ctx); err != nil {
		return nil, err
	}
	ctx, c.cancel = context.WithCancel(context.WithoutCancel(ctx))
	c.done.Add(1)
	go c.run(ctx)
	return c, nil
}

func (c *callGen) stop() {
	c.cancel()
	c.done.Wait()
}

func (c *callGen) run(ctx context.Context) {
	defer c.done.Done()
	ticker := time.NewTicker(c.interval)
	defer ticker.Stop()
	resync := time.NewTicker(nonceResyncInterval)
	defer resync.Stop()
	for i := 0; ; i = (i + 1) % len(c.keys) {
		select {
		case <-ctx.Done():
			return
		case <-resync.C:
			_ = c.resyncNonces(ctx)
			continue
		case <-ticker.C:
		}
		if err := c.send(ctx, i); err != nil {
			c.failed.Add(1)
			_ = c.resyncNonces(ctx)
		} else {
			c.sent.Add(1)
		}
	}
}

func (c *callGen) send(ctx context.Context, i int) error {
	tx, err := types.SignNewTx(c.keys[i], c.signer, &types.DynamicFeeTx{
		Nonce:     c.nonces[i],
		GasTipCap: big.NewInt(params.GWei),
		GasFeeCap: big.NewInt(loadFeeCap),
		Gas:       c.gas,
		To:        &c.to,
		Data:      c.data,
	})
	if err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.el.SendTransaction(ctx, tx); err != nil {
		return err
	}
	c.nonces[i]++
	return nil
}

func (c *callGen) resyncNonces(ctx context.Context) error {
	for i, key := range c.keys {
		n, err := c.el.PendingNonceAt(ctx, address(key))
		if err != nil {
			return fmt.Errorf("call generator: nonce of %s: %w", address(key), err)
		}
		c.nonces[i] = n
	}
	return nil
}
