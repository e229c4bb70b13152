package devnet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/log"
	gethnode "github.com/ethereum/go-ethereum/node"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/ethereum-optimism/optimism/op-service/client"
	"github.com/ethereum-optimism/optimism/op-service/eth"
	"github.com/ethereum-optimism/optimism/op-service/sources"
)

// The engine ceiling: how fast an op-geth of this devnet, started fresh from the same genesis with the same flags
// as every node's, executes blocks the sequencer already produced when they are handed to it over the engine API
// as fast as it takes them (engine_newPayload, engine_forkchoiceUpdated; no op-node, no fetching, no checks). It is
// the anchor of catch-up benchmarks: no node can catch up faster than its engine executes.

// Engine is a bare op-geth of the devnet's chain with no op-node: the caller drives it over the engine API.
type Engine struct {
	Name   string
	OpGeth *Process
	// EL is the op-geth's user RPC.
	EL *EL
	// API is an engine API client of the op-geth (JWT-authenticated), with the devnet's rollup config choosing
	// the method versions.
	API *sources.EngineAPIClient

	rpc client.RPC
}

// StartEngine initialises a fresh op-geth from the devnet's L2 genesis, named name (unique in the devnet; it names
// its data directory and log), starts it with the same flags as every node's op-geth, and returns once its user
// RPC and engine API answer. Stop it with Engine.Stop; Devnet.Close does not.
func (d *Devnet) StartEngine(ctx context.Context, name string) (*Engine, error) {
	dir := filepath.Join(d.cfg.Dir, name)
	gethDir := filepath.Join(dir, "op-geth")
	if err := os.MkdirAll(gethDir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	secret := eth.Bytes32(crypto.Keccak256Hash([]byte("op-replicator/devnet/jwt/" + name)))
	jwtPath := filepath.Join(dir, "jwt.hex")
	if err := os.WriteFile(jwtPath, []byte(secret.String()), 0o600); err != nil {
		return nil, fmt.Errorf("write JWT secret of %s: %w", name, err)
	}
	gethLog := d.logPath(name + "-op-geth")
	if err := runToCompletion(gethLog, d.bin("geth"), "init", "--datadir", gethDir, "--state.scheme", "hash", d.L2.GenesisPath); err != nil {
		return nil, fmt.Errorf("init op-geth of %s: %w", name, err)
	}
	var ports nodePorts
	var err error
	if ports.http, ports.ws, ports.auth, err = d.ports3(); err != nil {
		return nil, err
	}
	if ports.gethP2P, err = portPool.next(); err != nil {
		return nil, err
	}
	el, err := newEL(httpURL(ports.http), wsURL(ports.ws))
	if err != nil {
		return nil, err
	}
	e := &Engine{
		Name:   name,
		OpGeth: newProcess(name+"/op-geth", gethLog, d.bin("geth"), d.opGethArgs(nodeSpec{name: name, role: RoleVerifier}, gethDir, jwtPath, ports), d.processExited),
		EL:     el,
	}
	if err := e.OpGeth.Start(); err != nil {
		return nil, err
	}
	if err := d.WaitFor(ctx, startTimeout, e.OpGeth.Name+" RPC", func(ctx context.Context) (bool, error) {
		_, err := e.EL.ChainID(ctx)
		return err == nil, err
	}); err != nil {
		return nil, errors.Join(err, e.Stop())
	}
	auth := rpc.WithHTTPAuth(gethnode.NewJWTAuth(secret))
	if e.rpc, err = client.NewRPC(ctx, log.NewLogger(log.DiscardHandler()), httpURL(ports.auth), client.WithGethRPCOptions(auth)); err != nil {
		return nil, errors.Join(fmt.Errorf("dial engine API of %s: %w", name, err), e.Stop())
	}
	e.API = sources.NewEngineAPIClient(e.rpc, log.NewLogger(log.DiscardHandler()), d.L2.Rollup)
	return e, nil
}

// Stop stops the op-geth. Its data directory stays.
func (e *Engine) Stop() error {
	if e.rpc != nil {
		e.rpc.Close()
	}
	return e.OpGeth.Stop()
}

// FetchPayloads fetches the blocks from..to (inclusive) of el, in order, as execution payload envelopes (full
// transactions, parent beacon block root), with up to 8 requests in flight.
func (d *Devnet) FetchPayloads(ctx context.Context, el *EL, from, to uint64) ([]*eth.ExecutionPayloadEnvelope, error) {
	if to < from {
		return nil, fmt.Errorf("fetch payloads: empty range %d..%d", from, to)
	}
	l2, err := sources.NewL2Client(client.NewBaseRPCClient(el.RPC), log.NewLogger(log.DiscardHandler()), nil,
		sources.L2ClientDefaultConfig(d.L2.Rollup, true))
	if err != nil {
		return nil, err
	}
	envs := make([]*eth.ExecutionPayloadEnvelope, to-from+1)
	numbers := make(chan uint64)
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range numbers {
				env, err := l2.PayloadByNumber(ctx, n)
				if err != nil {
					errs <- fmt.Errorf("payload %d from %s: %w", n, el.HTTP, err)
					cancel()
					return
				}
				envs[n-from] = env
			}
		}()
	}
feed:
	for n := from; n <= to; n++ {
		select {
		case numbers <- n:
		case <-ctx.Done():
			break feed
		}
	}
	close(numbers)
	wg.Wait()
	select {
	case err := <-errs:
		return nil, err
	default:
	}
	return envs, ctx.Err()
}

// ReplayResult is how long an engine took to take a run of blocks.
type ReplayResult struct {
	Blocks int
	// Elapsed runs from the first engine_newPayload call to the answer of the last engine_forkchoiceUpdated.
	Elapsed time.Duration
	// CPU is free text for the caller: where the machine's CPU went during the replay.
	CPU string
}

// BlocksPerSecond is the replay rate.
func (r ReplayResult) BlocksPerSecond() float64 { return float64(r.Blocks) / r.Elapsed.Seconds() }

// Replay executes envs (consecutive blocks on the engine's head) with engine_newPayload, one after the other, and
// makes the last of every fcuEvery blocks (and the last block) the head with engine_forkchoiceUpdated (head only:
// safe and finalized unchanged). Every payload must be VALID.
func (e *Engine) Replay(ctx context.Context, envs []*eth.ExecutionPayloadEnvelope, fcuEvery int) (ReplayResult, error) {
	if fcuEvery < 1 {
		fcuEvery = 1
	}
	res := ReplayResult{Blocks: len(envs)}
	start := time.Now()
	pending := 0
	for i, env := range envs {
		p := env.ExecutionPayload
		status, err := e.API.NewPayload(ctx, p, env.ParentBeaconBlockRoot)
		if err != nil {
			return res, fmt.Errorf("%s: engine_newPayload of block %d: %w", e.Name, uint64(p.BlockNumber), err)
		}
		if status.Status != eth.ExecutionValid {
			return res, fmt.Errorf("%s: engine_newPayload of block %d: %s %v", e.Name, uint64(p.BlockNumber), status.Status, status.ValidationError)
		}
		pending++
		if pending < fcuEvery && i < len(envs)-1 {
			continue
		}
		fc := &eth.ForkchoiceState{HeadBlockHash: p.BlockHash, SafeBlockHash: common.Hash{}, FinalizedBlockHash: common.Hash{}}
		upd, err := e.API.ForkchoiceUpdate(ctx, fc, nil)
		if err != nil {
			return res, fmt.Errorf("%s: engine_forkchoiceUpdated to block %d: %w", e.Name, uint64(p.BlockNumber), err)
		}
		if upd.PayloadStatus.Status != eth.ExecutionValid {
			return res, fmt.Errorf("%s: engine_forkchoiceUpdated to block %d: %s", e.Name, uint64(p.BlockNumber), upd.PayloadStatus.Status)
		}
		pending = 0
	}
	res.Elapsed = time.Since(start)
	return res, nil
}
