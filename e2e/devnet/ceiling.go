package devnet

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/log"
	gethnode "github.com/ethereum/go-ethereum/node"
	"github.com/ethereum/go-ethereum/rlp"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/ethereum-optimism/optimism/op-service/client"
	"github.com/ethereum-optimism/optimism/op-service/eth"
	"github.com/ethereum-optimism/optimism/op-service/sources"

	"github.com/op-replicator/op-replicator/driverhook"
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
	// the method versions, on the HTTP client a replicating op-node uses (driverhook.EngineHTTPClient); DefaultAPI is
	// the same on geth's default HTTP client, as the replays used before 2026-12-08 (ReplayDefaultClient).
	API, DefaultAPI *sources.EngineAPIClient

	rpc, defaultRPC client.RPC
}

// StartEngine initialises a fresh op-geth from the devnet's L2 genesis, named name (unique in the devnet; it names
// its data directory and log), starts it with the flags a replicator's op-geth runs with (op-geth's defaults: path
// scheme, --gcmode full), so that it is the ceiling of the engine the replicators insert into, and returns once its
// user RPC and engine API answer. Stop it with Engine.Stop; Devnet.Close does not.
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
	spec := nodeSpec{name: name, role: RoleReplicator}
	if err := runToCompletion(gethLog, d.bin("geth"), "init", "--datadir", gethDir, "--state.scheme", spec.stateScheme(), d.L2.GenesisPath); err != nil {
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
	if err := d.engineMetricsPort(&ports); err != nil {
		return nil, err
	}
	el, err := newEL(httpURL(ports.http), wsURL(ports.ws))
	if err != nil {
		return nil, err
	}
	el.setMetrics(ports.gethMetrics)
	e := &Engine{
		Name:   name,
		OpGeth: newProcess(name+"/op-geth", gethLog, d.bin("geth"), d.opGethArgs(spec, gethDir, jwtPath, ports), d.processExited),
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
	// The HTTP client a replicating op-node calls its engine with (a write buffer that holds a whole newPayload
	// request): with geth's default client a request goes out in 4 KiB writes, which on this machine cost the
	// replayer more per call than op-geth's own time serving it, and the ceiling would carry a cost no replicator has.
	hc := driverhook.EngineHTTPClient(driverhook.CLIConfig{Enabled: true})
	if e.rpc, err = client.NewRPC(ctx, log.NewLogger(log.DiscardHandler()), httpURL(ports.auth),
		client.WithGethRPCOptions(auth, rpc.WithHTTPClient(hc))); err != nil {
		return nil, errors.Join(fmt.Errorf("dial engine API of %s: %w", name, err), e.Stop())
	}
	e.API = sources.NewEngineAPIClient(e.rpc, log.NewLogger(log.DiscardHandler()), d.L2.Rollup)
	if e.defaultRPC, err = client.NewRPC(ctx, log.NewLogger(log.DiscardHandler()), httpURL(ports.auth),
		client.WithGethRPCOptions(auth)); err != nil {
		return nil, errors.Join(fmt.Errorf("dial engine API of %s: %w", name, err), e.Stop())
	}
	e.DefaultAPI = sources.NewEngineAPIClient(e.defaultRPC, log.NewLogger(log.DiscardHandler()), d.L2.Rollup)
	return e, nil
}

// Stop stops the op-geth. Its data directory stays.
func (e *Engine) Stop() error {
	for _, c := range []client.RPC{e.rpc, e.defaultRPC} {
		if c != nil {
			c.Close()
		}
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
	// SteadyBlocks and SteadyElapsed are the replay's steady part, as a catch-up's is counted: from the block a tenth
	// of the way (its engine_newPayload call) to the end, past the fresh engine's first blocks.
	SteadyBlocks  int
	SteadyElapsed time.Duration
	// CPU is free text for the caller: where the machine's CPU went during the replay.
	CPU string
	// SteadyNewPayload and SteadyForkchoice are the replayer's time in its engine_newPayload and
	// engine_forkchoiceUpdated calls over the steady part, from sending each to its answer.
	SteadyNewPayload, SteadyForkchoice time.Duration
	// SteadyNewPayloadMedian is the median of the replayer's engine_newPayload calls over the steady part.
	SteadyNewPayloadMedian time.Duration
	// Engine is where op-geth's own time went over the steady part, when it has metrics (Config.EngineMetrics).
	Engine *EngineTimes
}

// BlocksPerSecond is the replay rate.
func (r ReplayResult) BlocksPerSecond() float64 { return float64(r.Blocks) / r.Elapsed.Seconds() }

// SteadyBlocksPerSecond is the rate over the replay's steady part.
func (r ReplayResult) SteadyBlocksPerSecond() float64 {
	return float64(r.SteadyBlocks) / r.SteadyElapsed.Seconds()
}

// Replay executes envs (consecutive blocks on the engine's head) with engine_newPayload, one after the other, and
// makes the last of every fcuEvery blocks (and the last block) the head with engine_forkchoiceUpdated (head only:
// safe and finalized unchanged). Every payload must be VALID.
func (e *Engine) Replay(ctx context.Context, envs []*eth.ExecutionPayloadEnvelope, fcuEvery int) (ReplayResult, error) {
	return e.replay(ctx, e.API, len(envs), func(i int) (*eth.ExecutionPayloadEnvelope, error) { return envs[i], nil }, fcuEvery)
}

// ReplayDefaultClient is Replay on geth's default HTTP client (DefaultAPI), whose 4 KiB write buffer sends a
// newPayload request in several writes: what the transport alone costs a caller.
func (e *Engine) ReplayDefaultClient(ctx context.Context, envs []*eth.ExecutionPayloadEnvelope, fcuEvery int) (ReplayResult, error) {
	return e.replay(ctx, e.DefaultAPI, len(envs), func(i int) (*eth.ExecutionPayloadEnvelope, error) { return envs[i], nil }, fcuEvery)
}

// ReplayFetching is Replay of blocks from..to of src, fetched while they are replayed as a replicator with an
// rpc source fetches them: debug_getRawBlock (the block's RLP, in a hex string) over src's http endpoint, inFlight
// requests at a time and at most lookahead blocks ahead of the replay, replayed in order as they arrive. Where src
// runs on the same machine, its rate is the engine's ceiling with the source's own work (reading, encoding and
// serving each block) taking its share of the cores, as it does from a replicator catching up from that source; the
// fetch starts with the clock.
func (d *Devnet) ReplayFetching(ctx context.Context, e *Engine, src *EL, from, to uint64, fcuEvery, inFlight, lookahead int) (ReplayResult, error) {
	if to < from {
		return ReplayResult{}, fmt.Errorf("replay: empty range %d..%d", from, to)
	}
	type slot struct {
		env  *eth.ExecutionPayloadEnvelope
		err  error
		done chan struct{}
	}
	slots := make([]slot, to-from+1)
	for i := range slots {
		slots[i].done = make(chan struct{})
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: inFlight, DisableCompression: true}}
	defer hc.CloseIdleConnections()
	sem := make(chan struct{}, inFlight)
	ahead := make(chan struct{}, lookahead) // a token per block fetched and not yet replayed
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() { // in order, inFlight at a time, lookahead ahead of the replay at most
		defer wg.Done()
		for i := range slots {
			select {
			case ahead <- struct{}{}:
			case <-ctx.Done():
				return
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				slots[i].env, slots[i].err = fetchRawPayload(ctx, hc, src.HTTP, from+uint64(i), d.L2.Rollup)
				close(slots[i].done)
			}()
		}
	}()
	return e.replay(ctx, e.API, len(slots), func(i int) (*eth.ExecutionPayloadEnvelope, error) {
		select {
		case <-slots[i].done:
			<-ahead
			return slots[i].env, slots[i].err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}, fcuEvery)
}

// fetchRawPayload fetches block n from an op-geth's http endpoint with debug_getRawBlock. A test tool's reading of
// a trusted local op-geth's answer: the hex after "result":"0x is the block.
func fetchRawPayload(ctx context.Context, hc *http.Client, url string, n uint64, forks eth.HardforkConfig) (*eth.ExecutionPayloadEnvelope, error) {
	body := fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"method":"debug_getRawBlock","params":["%#x"]}`, n)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("content-type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("block %d: %w", n, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("block %d: %w", n, err)
	}
	const key = `"result":"0x`
	i := bytes.Index(answer, []byte(key))
	j := bytes.LastIndexByte(answer, '"')
	if i < 0 || j < i+len(key) {
		return nil, fmt.Errorf("block %d: unexpected answer %.200s", n, answer)
	}
	raw, err := hex.DecodeString(string(answer[i+len(key) : j]))
	if err != nil {
		return nil, fmt.Errorf("block %d: %w", n, err)
	}
	var block types.Block
	if err := rlp.DecodeBytes(raw, &block); err != nil {
		return nil, fmt.Errorf("block %d: %w", n, err)
	}
	return eth.BlockAsPayloadEnv(&block, forks)
}

// replay executes the n blocks get returns, in order, as Replay.
func (e *Engine) replay(ctx context.Context, api *sources.EngineAPIClient, n int, get func(i int) (*eth.ExecutionPayloadEnvelope, error), fcuEvery int) (ReplayResult, error) {
	if fcuEvery < 1 {
		fcuEvery = 1
	}
	res := ReplayResult{Blocks: n, SteadyBlocks: n - n/10}
	start := time.Now()
	steadyStart := start
	pending := 0
	steady := false
	// timed runs a call, counting its time into *sum over the steady part, and into *each if not nil.
	var newPayloads []time.Duration
	timed := func(sum *time.Duration, each *[]time.Duration, call func()) {
		start := time.Now()
		call()
		if steady {
			d := time.Since(start)
			*sum += d
			if each != nil {
				*each = append(*each, d)
			}
		}
	}
	for i := range n {
		if i == n/10 {
			if e.EL.MetricsURL != "" {
				if _, err := e.EL.EngineTimes(ctx); err != nil { // restarts op-geth's timers for the steady part
					return res, err
				}
			}
			steadyStart, steady = time.Now(), true
		}
		env, err := get(i)
		if err != nil {
			return res, fmt.Errorf("%s: block %d of the replay: %w", e.Name, i, err)
		}
		p := env.ExecutionPayload
		var status *eth.PayloadStatusV1
		timed(&res.SteadyNewPayload, &newPayloads, func() { status, err = api.NewPayload(ctx, p, env.ParentBeaconBlockRoot) })
		if err != nil {
			return res, fmt.Errorf("%s: engine_newPayload of block %d: %w", e.Name, uint64(p.BlockNumber), err)
		}
		if status.Status != eth.ExecutionValid {
			return res, fmt.Errorf("%s: engine_newPayload of block %d: %s %v", e.Name, uint64(p.BlockNumber), status.Status, status.ValidationError)
		}
		pending++
		if pending < fcuEvery && i < n-1 {
			continue
		}
		fc := &eth.ForkchoiceState{HeadBlockHash: p.BlockHash, SafeBlockHash: common.Hash{}, FinalizedBlockHash: common.Hash{}}
		var upd *eth.ForkchoiceUpdatedResult
		timed(&res.SteadyForkchoice, nil, func() { upd, err = api.ForkchoiceUpdate(ctx, fc, nil) })
		if err != nil {
			return res, fmt.Errorf("%s: engine_forkchoiceUpdated to block %d: %w", e.Name, uint64(p.BlockNumber), err)
		}
		if upd.PayloadStatus.Status != eth.ExecutionValid {
			return res, fmt.Errorf("%s: engine_forkchoiceUpdated to block %d: %s", e.Name, uint64(p.BlockNumber), upd.PayloadStatus.Status)
		}
		pending = 0
	}
	res.Elapsed, res.SteadyElapsed = time.Since(start), time.Since(steadyStart)
	if len(newPayloads) > 0 {
		slices.Sort(newPayloads)
		res.SteadyNewPayloadMedian = newPayloads[len(newPayloads)/2]
	}
	if e.EL.MetricsURL != "" {
		t, err := e.EL.EngineTimes(ctx)
		if err != nil {
			return res, err
		}
		res.Engine = &t
	}
	return res, nil
}
