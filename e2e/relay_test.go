package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/ethereum-optimism/optimism/op-service/eth"
	opsigner "github.com/ethereum-optimism/optimism/op-service/signer"

	"github.com/op-replicator/op-replicator/e2e/devnet"
)

// relayNode is a follower's relay listener.
type relayNode struct {
	node *devnet.Node
	port int
}

func (r relayNode) source() string { return "relay+ws://127.0.0.1:" + strconv.Itoa(r.port) }

// relayArgs enables a node's relay on port, with room for subscribers unless limits say otherwise.
func relayArgs(port int, limits ...string) []string {
	return append([]string{"--replicator.relay.enabled", "--replicator.relay.port", strconv.Itoa(port)}, limits...)
}

// freePort picks a free port of 127.0.0.1 before a devnet exists (for the sequencer's relay).
func freePort(t *testing.T) int {
	t.Helper()
	p, err := devnet.FreePort()
	require.NoError(t, err)
	return p
}

func devnetPort(t *testing.T, d *devnet.Devnet) int {
	t.Helper()
	p, err := d.FreePort()
	require.NoError(t, err)
	return p
}

// blockStatus calls replicator_blockStatus.
type blockStatusResult struct {
	Hash              common.Hash `json:"hash"`
	Number            uint64      `json:"number"`
	Label             string      `json:"label"`
	L1Origin          eth.BlockID `json:"l1Origin"`
	L1OriginCanonical bool        `json:"l1OriginCanonical"`
	L1OriginDepth     uint64      `json:"l1OriginDepth"`
	L1OriginSafe      bool        `json:"l1OriginSafe"`
	L1OriginFinalized bool        `json:"l1OriginFinalized"`
	Replicated        bool        `json:"replicated"`
	Signed            bool        `json:"signed"`
	Source            string      `json:"source"`
}

func blockStatus(t *testing.T, n *devnet.Node, id any) blockStatusResult {
	t.Helper()
	var st blockStatusResult
	require.NoError(t, n.CL.RPC.CallContext(t.Context(), &st, "replicator_blockStatus", id))
	return st
}

// TestRelays proves the distributable head of the chain on one devnet: the sequencer serves its signed blocks,
// a replicator R follows only that relay and relays on, and downstream replicators that have neither P2P nor the
// sequencer's RPC follow R — through forged blocks from a bad relay, R's death (failing over to a P2P sentry's
// relay), and with every unsafe block tied to its L1 origin. Then an equivocating relay halts a replicator with
// portable evidence, and a relay refuses subscribers beyond its limit.
func TestRelays(t *testing.T) {
	seqRelay := freePort(t)
	d := devnet.Start(t, devnet.Config{SequencerArgs: relayArgs(seqRelay)})
	accounts := d.Keys.L2Accounts
	txs, err := devnet.StartTxGen(t.Context(), d.Sequencer.EL, accounts[:len(accounts)-1], txRate)
	require.NoError(t, err)
	t.Cleanup(txs.Stop)
	seq := d.Sequencer.EL
	seqSigner := crypto.PubkeyToAddress(d.Keys.SequencerP2P.PublicKey)

	r := relayNode{port: devnetPort(t, d)}
	rMetrics := devnetPort(t, d)
	r.node = addFollower(t, d, "relay-r", devnet.RoleReplicator, devnet.WithSource("relay+ws://127.0.0.1:"+strconv.Itoa(seqRelay)),
		devnet.WithNodeArgs(append(relayArgs(r.port, "--replicator.relay.max-subscribers", "3", "--replicator.relay.max-subscribers-per-ip", "3",
			"--replicator.relay.send-queue", "4"),
			"--metrics.enabled", "--metrics.addr", "127.0.0.1", "--metrics.port", strconv.Itoa(rMetrics))...))
	sentry := relayNode{port: devnetPort(t, d)}
	sentry.node = addFollower(t, d, "sentry", devnet.RoleGossipFollower, devnet.WithNodeArgs(relayArgs(sentry.port)...))

	forger := startFakeRelay(t, d.L2.Rollup, seq.HTTP, mustKey(t))
	alterer := startFakeRelay(t, d.L2.Rollup, seq.HTTP, d.Keys.SequencerP2P)
	alterer.set(func(f *fakeRelay) {
		f.alter = func(env *eth.ExecutionPayloadEnvelope) { env.ExecutionPayload.GasLimit-- }
	})
	metricsPort := devnetPort(t, d)
	d1 := addFollower(t, d, "downstream-1", devnet.RoleReplicator, devnet.WithSource(forger.URL+","+alterer.URL+","+r.source()),
		devnet.WithNodeArgs("--metrics.enabled", "--metrics.addr", "127.0.0.1", "--metrics.port", strconv.Itoa(metricsPort)))
	d2 := addFollower(t, d, "downstream-2", devnet.RoleReplicator, devnet.WithSource(r.source()+","+sentry.source()))

	t.Run("relay chain", func(t *testing.T) {
		// Each hop replicates the sequencer's head from a relay, and every block it replicated came signed. The block
		// looked at is one the replicator says it replicated: a block of its chain above its safe head may have been
		// derived from L1 instead (pending safe, while a span batch is derived; early in the devnet derivation can get
		// there first), and then it was neither replicated nor delivered signed.
		for _, n := range []*devnet.Node{r.node, d1, d2} {
			target, err := seq.BlockID(t.Context(), rpc.LatestBlockNumber)
			require.NoError(t, err)
			last := waitReplicating(t, d, n, seq, target.Number).LastReplicated
			st := blockStatus(t, n, last.Hash)
			require.Equal(t, last.Number, st.Number)
			require.True(t, st.Replicated, "%s replicated block %s, but blockStatus does not say so", n.Name, last)
			require.True(t, st.Signed, "%s replicated block %s without the sequencer's signature", n.Name, last)
			require.Contains(t, st.Source, "relay+ws://")
		}
	})

	t.Run("forged and altered blocks are refused", func(t *testing.T) {
		st := status(t, d1)
		require.Equal(t, stateRunning, st.State, "a forging relay must not halt anything")
		url := fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort)
		require.NoError(t, d.WaitFor(t.Context(), replicationTimeout, "bad-signature errors counted", func(ctx context.Context) (bool, error) {
			v, err := metricValue(ctx, url, `op_node_default_replicator_errors_total{kind="bad-signature"}`)
			return err == nil && v > 0, err
		}))
		// Nothing the forger signed is in d1's chain: d1's blocks are the sequencer's.
		head := waitReachesHead(t, d, d1, seq)
		requireSameBlocks(t, d1.EL, seq, head.Number-min(head.Number-1, 10), head.Number)
	})

	t.Run("sub-finality against L1", func(t *testing.T) {
		st := blockStatus(t, d1, "latest")
		require.Equal(t, "unsafe", st.Label)
		origin := header(t, d.L1.EL, rpc.BlockNumber(st.L1Origin.Number))
		require.Equal(t, origin.Hash(), st.L1Origin.Hash, "the L1 origin is L1's block")
		require.True(t, st.L1OriginCanonical)
		l1Head := header(t, d.L1.EL, rpc.LatestBlockNumber).Number.Uint64()
		require.InDelta(t, l1Head-st.L1Origin.Number+1, st.L1OriginDepth, 2, "depth in confirmations")

		safe := blockStatus(t, d1, "safe")
		// The safe head is labelled finalized once L1 finality has caught up with it.
		require.Contains(t, []string{"safe", "finalized"}, safe.Label)
		require.True(t, safe.L1OriginCanonical)
		require.GreaterOrEqual(t, safe.L1OriginDepth, st.L1OriginDepth)
		require.False(t, safe.Replicated && !safe.Signed, "a replicated safe block came signed")
	})

	t.Run("relay limits", func(t *testing.T) {
		// R serves d1 and d2; its limit is 3 (all on 127.0.0.1).
		c, err := rpc.Dial("ws://127.0.0.1:" + strconv.Itoa(r.port))
		require.NoError(t, err)
		defer c.Close()
		ch := make(chan json.RawMessage, 1024)
		sub, err := c.Subscribe(t.Context(), "relay", ch, "envelopes", hexutil.Uint64(0))
		require.NoError(t, err)
		defer sub.Unsubscribe()
		_, err = c.Subscribe(t.Context(), "relay", make(chan json.RawMessage, 1), "envelopes", hexutil.Uint64(0))
		require.ErrorContains(t, err, "relay: too many subscribers")
	})

	t.Run("a subscriber that stops reading is dropped", func(t *testing.T) {
		subscribers := func(ctx context.Context) (float64, error) {
			return metricValue(ctx, fmt.Sprintf("http://127.0.0.1:%d/metrics", rMetrics), "op_node_default_replicator_relay_subscribers")
		}
		// R serves d1 and d2, one subscription each, once the previous subtest's subscriptions are released (the
		// relay notices a closed connection asynchronously): count from there.
		const before = 2
		require.NoError(t, d.WaitFor(t.Context(), replicationTimeout, "R to serve d1 and d2 only", func(ctx context.Context) (bool, error) {
			n, err := subscribers(ctx)
			return n == before, err
		}))
		conn := stuckSubscriber(t, r.port)
		defer conn.Close()
		// Big blocks (zero calldata: cheap to batch, large to relay) fill the socket buffers quickly.
		stopFat := sendFatTransactions(t, seq, accounts[len(accounts)-1])
		require.NoError(t, d.WaitFor(t.Context(), replicationTimeout, "the stuck subscriber to be served", func(ctx context.Context) (bool, error) {
			n, err := subscribers(ctx)
			return n == before+1, err
		}))
		// It never reads: once its socket buffers and its send queue are full, the relay drops it and frees
		// the slot, while the connection is still open.
		require.NoError(t, d.WaitFor(t.Context(), time.Minute, "the stuck subscriber to be dropped", func(ctx context.Context) (bool, error) {
			n, err := subscribers(ctx)
			return n == before, err
		}))
		stopFat()
		waitReachesHead(t, d, d1, seq) // the others are still served
	})

	t.Run("failover when a relay dies", func(t *testing.T) {
		before := waitReachesHead(t, d, d2, seq)
		require.NoError(t, r.node.Kill())
		require.NoError(t, d.WaitFor(t.Context(), replicationTimeout, "the sequencer to move on", func(ctx context.Context) (bool, error) {
			n, err := seq.BlockNumber(ctx)
			return n >= before.Number+5, err
		}))
		after := waitReachesHead(t, d, d2, seq)
		require.Greater(t, after.Number, before.Number)
		requireSameBlocks(t, d2.EL, seq, before.Number, after.Number) // no block lost
		require.Equal(t, stateRunning, status(t, d2).State)
	})

	t.Run("equivocation", func(t *testing.T) {
		// A relay holding the sequencer's key serves, a few blocks behind the head, other blocks than the
		// sequencer's: validly signed conflicting blocks.
		equivocator := startFakeRelay(t, d.L2.Rollup, seq.HTTP, d.Keys.SequencerP2P)
		equivocator.mutate = func(env *eth.ExecutionPayloadEnvelope) { env.ExecutionPayload.PrevRandao = eth.Bytes32{0xee} }
		equivocator.behind = 3
		equivocator.delay = 5 * time.Second // the sequencer's own blocks reach the node first
		d3 := addFollower(t, d, "downstream-3", devnet.RoleReplicator, devnet.WithSource(sentry.source()+","+equivocator.URL),
			devnet.WithHaltPolicy("manual"))
		waitHalted(t, d, d3, "equivocation")

		var evidence []struct {
			Number uint64                                   `json:"number"`
			First  *opsigner.SignedExecutionPayloadEnvelope `json:"first"`
			Second *opsigner.SignedExecutionPayloadEnvelope `json:"second"`
		}
		require.NoError(t, d3.CL.RPC.CallContext(t.Context(), &evidence, "replicator_equivocationEvidence"))
		require.NotEmpty(t, evidence)
		ev := evidence[0]
		require.Equal(t, ev.Number, uint64(ev.First.Envelope.ExecutionPayload.BlockNumber))
		require.Equal(t, ev.Number, uint64(ev.Second.Envelope.ExecutionPayload.BlockNumber))
		require.NotEqual(t, ev.First.Envelope.ExecutionPayload.BlockHash, ev.Second.Envelope.ExecutionPayload.BlockHash)
		auth := &opsigner.OPStackP2PBlockAuthV1{Allowed: seqSigner, Chain: eth.ChainIDFromBig(d.L2.Rollup.L2ChainID)}
		for _, s := range []*opsigner.SignedExecutionPayloadEnvelope{ev.First, ev.Second} {
			_, ok := s.Envelope.CheckBlockHash()
			require.True(t, ok)
			require.NoError(t, s.VerifySignature(auth), "each envelope of the evidence verifies on its own")
		}

		// The halt and its evidence survive a crash of op-node.
		halted := status(t, d3)
		rawEvidence := func() []json.RawMessage {
			var raw []json.RawMessage
			require.NoError(t, d3.CL.RPC.CallContext(t.Context(), &raw, "replicator_equivocationEvidence"))
			require.NotEmpty(t, raw)
			return raw
		}
		before := rawEvidence()
		require.NoError(t, d3.OpNode.Kill())
		require.NoError(t, d3.Start(t.Context()))
		after := status(t, d3)
		require.Equal(t, stateHalted, after.State, "a restart undid the equivocation halt")
		require.Equal(t, "equivocation", after.HaltReason)
		require.Equal(t, halted.HaltDetail, after.HaltDetail)
		require.True(t, halted.Since.Equal(after.Since))
		// The pair that halted it is kept (the equivocating relay goes on adding pairs at new heights).
		require.JSONEq(t, string(before[0]), string(rawEvidence()[0]), "the evidence changed across the restart")
		requireNoUnsafeBeyondDerived(t, d3)
	})
}

func mustKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := crypto.GenerateKey()
	require.NoError(t, err)
	return k
}

// TestSignerRotation rotates the unsafe-block signer on L1 while a replicator follows the sequencer's relay, and
// a second relay keeps serving blocks signed with the old key. Replication goes on across the change: the old
// key is accepted during op-node's grace period, the sequencer (restarted with the new key) signs with the new
// one, and once a block of the new signer has been verified the grace period ends and the old key is refused.
func TestSignerRotation(t *testing.T) {
	seqRelay := freePort(t)
	d := devnet.Start(t, devnet.Config{SequencerArgs: relayArgs(seqRelay)})
	startTxLoad(t, d, d.Sequencer.EL)
	seq := d.Sequencer.EL
	oldKeyRelay := startFakeRelay(t, d.L2.Rollup, seq.HTTP, d.Keys.SequencerP2P)
	metricsPort := devnetPort(t, d)
	rep := addFollower(t, d, "replicator", devnet.RoleReplicator,
		devnet.WithSource("relay+ws://127.0.0.1:"+strconv.Itoa(seqRelay)+","+oldKeyRelay.URL),
		devnet.WithNodeArgs("--metrics.enabled", "--metrics.addr", "127.0.0.1", "--metrics.port", strconv.Itoa(metricsPort)))
	badSignatures := func() float64 {
		v, err := metricValue(t.Context(), fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort),
			`op_node_default_replicator_errors_total{kind="bad-signature"}`)
		require.NoError(t, err)
		return v
	}
	waitReachesHead(t, d, rep, seq)
	require.Zero(t, badSignatures(), "before the rotation both relays serve the signer's blocks")

	newKey := mustKey(t)
	require.NoError(t, d.RotateSigner(t.Context(), crypto.PubkeyToAddress(newKey.PublicKey)))
	waitLogged(t, d, rep, "p2p signer rotated, grace period started")
	waitReachesHead(t, d, rep, seq) // still the old key, within the grace period
	require.Zero(t, badSignatures(), "the old key is accepted during the grace period")

	require.NoError(t, d.Sequencer.OpNode.Stop())
	require.NoError(t, d.Sequencer.OpNode.SetArg("--p2p.sequencer.key", hex.EncodeToString(crypto.FromECDSA(newKey))))
	require.NoError(t, d.Sequencer.Start(t.Context()))
	waitLogged(t, d, rep, "new signer confirmed in use, ending grace period")
	waitReachesHead(t, d, rep, seq) // replication continues with the new key
	require.NoError(t, d.WaitFor(t.Context(), replicationTimeout, "the old key to be refused", func(context.Context) (bool, error) {
		return badSignatures() > 0, nil
	}))
	waitReachesHead(t, d, rep, seq)
	require.Equal(t, stateRunning, status(t, rep).State, "refused blocks never halt")
}

// waitLogged waits until n's op-node log has a line containing text.
func waitLogged(t *testing.T, d *devnet.Devnet, n *devnet.Node, text string) {
	t.Helper()
	require.NoError(t, d.WaitFor(t.Context(), replicationTimeout, fmt.Sprintf("%q in %s's log", text, n.Name), func(context.Context) (bool, error) {
		b, err := os.ReadFile(n.OpNode.LogPath)
		return err == nil && bytes.Contains(b, []byte(text)), err
	}))
}

// stuckSubscriber subscribes to a relay from block 0 over a websocket whose receive buffer is tiny, and never
// reads from it: a subscriber that stopped reading.
func stuckSubscriber(t *testing.T, port int) *websocket.Conn {
	t.Helper()
	dialer := websocket.Dialer{NetDialContext: (&net.Dialer{Control: devnet.ShrinkReceiveBuffer(2048)}).DialContext}
	conn, _, err := dialer.DialContext(t.Context(), "ws://127.0.0.1:"+strconv.Itoa(port), nil)
	require.NoError(t, err)
	req := `{"jsonrpc":"2.0","id":1,"method":"relay_subscribe","params":["envelopes","0x0"]}`
	require.NoError(t, conn.WriteMessage(websocket.TextMessage, []byte(req)))
	return conn
}

// sendFatTransactions sends transactions with 100 KB of zero calldata from key until stopped.
func sendFatTransactions(t *testing.T, el *devnet.EL, key *ecdsa.PrivateKey) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	chainID, err := el.ChainID(ctx)
	require.NoError(t, err)
	signer := types.LatestSignerForChainID(chainID)
	from := crypto.PubkeyToAddress(key.PublicKey)
	done := make(chan struct{})
	go func() {
		defer close(done)
		ticker := time.NewTicker(100 * time.Millisecond)
		defer ticker.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
			}
			nonce, err := el.PendingNonceAt(ctx, from)
			if err != nil {
				continue
			}
			tx, err := types.SignNewTx(key, signer, &types.DynamicFeeTx{ChainID: chainID, Nonce: nonce, To: &from,
				Gas: 3_000_000, GasFeeCap: big.NewInt(10e9), GasTipCap: big.NewInt(1e9), Data: make([]byte, 100_000)})
			if err == nil {
				_ = el.SendTransaction(ctx, tx)
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}
