package e2e

import (
	"context"
	"crypto/ecdsa"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/ethereum-optimism/optimism/op-service/eth"
	opsigner "github.com/ethereum-optimism/optimism/op-service/signer"

	"github.com/op-replicator/op-replicator/e2e/devnet"
	"github.com/op-replicator/op-replicator/e2e/dsl"
	"github.com/op-replicator/op-replicator/plugin/api"
)

// relayTxAccounts leaves the last funded account out of the transfers of the relay tests, for sendFatTransactions.
func relayTxAccounts(sys *dsl.System) []*ecdsa.PrivateKey {
	accounts := sys.Net.Keys.L2Accounts
	return accounts[:len(accounts)-1]
}

// startRelayDevnet starts a devnet whose sequencer serves a relay (with the flags given), under transaction load,
// and returns it with the relay's port.
func startRelayDevnet(t *testing.T, limits ...string) (*dsl.System, int) {
	seqRelay := dsl.FreePort(t)
	sys := dsl.Start(t, devnet.Config{SequencerArgs: dsl.RelayArgs(seqRelay, limits...)})
	sys.StartTxLoadFrom(sys.Sequencer.EL, relayTxAccounts(sys), dsl.TxRate)
	return sys, seqRelay
}

// requireReplicatedSigned waits until rep has replicated the sequencer's head and requires its last replicated
// block to be reported as replicated, signed, and from a relay. The block looked at is one the replicator says it
// replicated: a block of its chain above its safe head may have been derived from L1 instead (pending safe, while a
// span batch is derived; early in the devnet derivation can get there first), and then it was neither replicated
// nor delivered signed.
func requireReplicatedSigned(t *testing.T, sys *dsl.System, rep *dsl.Replicator) {
	t.Helper()
	seq := sys.Sequencer.EL
	last := rep.WaitReplicating(seq, seq.NumberAt(rpc.LatestBlockNumber)).LastReplicated
	st := rep.BlockStatusOf(last.Hash)
	require.Equal(t, last.Number, st.Number)
	require.True(t, st.Replicated, "%s replicated block %s, but blockStatus does not say so", rep.Name, last)
	require.True(t, st.Signed, "%s replicated block %s without the sequencer's signature", rep.Name, last)
	require.Contains(t, st.Source, "relay+ws://")
}

// TestRelayChainDeliversSignedBlocks proves the distributable head of the chain: the sequencer serves its signed
// blocks, a replicator R follows only that relay and relays on, and downstream replicators that have neither P2P
// nor the sequencer's RPC follow R (one of them also a P2P sentry's relay). Each hop replicates the sequencer's head,
// and every block it replicated came signed, from a relay.
func TestRelayChainDeliversSignedBlocks(t *testing.T) {
	sys, seqRelay := startRelayDevnet(t)
	rPort := sys.FreePort()
	r := sys.AddReplicator("relay-r", devnet.WithSource(dsl.RelaySource(seqRelay)), devnet.WithNodeArgs(dsl.RelayArgs(rPort)...),
		devnet.WithMetrics())
	sentryPort := sys.FreePort()
	sys.AddFollower("sentry", devnet.RoleGossipFollower, devnet.WithNodeArgs(dsl.RelayArgs(sentryPort)...))
	d1 := sys.AddReplicator("downstream-1", devnet.WithSource(dsl.RelaySource(rPort)))
	d2 := sys.AddReplicator("downstream-2", devnet.WithSource(dsl.RelaySource(rPort)+","+dsl.RelaySource(sentryPort)))
	for _, n := range []*dsl.Replicator{r, d1, d2} {
		requireReplicatedSigned(t, sys, n)
	}
	// relay-r counts the time each block spent with it before its write to each live downstream subscriber.
	sys.WaitFor(dsl.ReplicationTimeout, "relay-r's forwards counted", r.HistogramIs(func(h devnet.Histogram) bool {
		return h.Count > 0
	}, dsl.MetricRelayForward))
}

// TestBlockStatusTiesUnsafeBlocksToL1 checks sub-finality on a replicator following a relay: its latest block is
// unsafe, and its L1 origin is L1's block at that height, canonical, with as many confirmations as L1 has above it;
// its safe block is labelled safe (or finalized), its origin canonical and at least as deep, and, if replicated,
// came signed.
func TestBlockStatusTiesUnsafeBlocksToL1(t *testing.T) {
	sys, seqRelay := startRelayDevnet(t)
	rep := sys.AddReplicator("replicator", devnet.WithSource(dsl.RelaySource(seqRelay)))
	requireReplicatedSigned(t, sys, rep)
	// A safe block derived from a batch, not genesis.
	sys.WaitFor(time.Minute, "the replicator's first safe block", func(ctx context.Context) (bool, error) {
		safe, err := rep.EL.BlockID(ctx, rpc.SafeBlockNumber)
		return err == nil && safe.Number > 0, err
	})

	st := rep.BlockStatusAt(rpc.LatestBlockNumber)
	require.Equal(t, api.LabelUnsafe, st.Label)
	require.Equal(t, sys.L1.HashAt(rpc.BlockNumber(st.L1Origin.Number)), st.L1Origin.Hash, "the L1 origin is L1's block")
	require.True(t, st.L1OriginCanonical)
	l1Head := sys.L1.NumberAt(rpc.LatestBlockNumber)
	require.InDelta(t, l1Head-st.L1Origin.Number+1, st.L1OriginDepth, 2, "depth in confirmations")

	safe := rep.BlockStatusAt(rpc.SafeBlockNumber)
	// The safe head is labelled finalized once L1 finality has caught up with it.
	require.Contains(t, []api.Label{api.LabelSafe, api.LabelFinalized}, safe.Label)
	require.True(t, safe.L1OriginCanonical)
	require.GreaterOrEqual(t, safe.L1OriginDepth, st.L1OriginDepth)
	require.False(t, safe.Replicated && !safe.Signed, "a replicated safe block came signed")
	t.Logf("latest %d: %s, origin %d, depth %d; safe %d: %s, origin %d, depth %d",
		st.Number, st.Label, st.L1Origin.Number, st.L1OriginDepth, safe.Number, safe.Label, safe.L1Origin.Number, safe.L1OriginDepth)
}

// TestRelayForgedAndAlteredBlocksAreRefused gives a replicator, besides an honest relay, a relay that signs the
// sequencer's blocks with another key and one that alters them after the sequencer's signature: it stays running,
// counts the refusals (errors_total{kind="bad-signature"}), and its chain is the sequencer's.
func TestRelayForgedAndAlteredBlocksAreRefused(t *testing.T) {
	sys, seqRelay := startRelayDevnet(t)
	seq := sys.Sequencer.EL
	forger := startFakeRelay(t, sys.Net.L2.Rollup, seq.HTTP, mustKey(t))
	alterer := startFakeRelay(t, sys.Net.L2.Rollup, seq.HTTP, sys.Net.Keys.SequencerP2P)
	alterer.set(func(f *fakeRelay) {
		f.alter = func(env *eth.ExecutionPayloadEnvelope) { env.ExecutionPayload.GasLimit-- }
	})
	rep := sys.AddReplicator("replicator", devnet.WithSource(forger.URL+","+alterer.URL+","+dsl.RelaySource(seqRelay)),
		devnet.WithMetrics())
	requireReplicatedSigned(t, sys, rep)

	rep.RequireRunning() // a forging relay must not halt anything
	sys.WaitFor(dsl.ReplicationTimeout, "bad-signature errors counted",
		rep.MetricIs(dsl.Positive, dsl.MetricErrors, "kind", dsl.ErrorKindBadSignature))
	// Nothing the forger signed is in the replicator's chain: its blocks are the sequencer's.
	head := rep.WaitReachesHead(seq)
	rep.EL.RequireSameBlocks(seq, head.Number-min(head.Number-1, 10), head.Number)
}

// TestRelayRefusesSubscribersBeyondLimit has the sequencer's relay serve at most 3 subscribers (all on 127.0.0.1):
// with a replicator and two more subscriptions, the next one is refused.
func TestRelayRefusesSubscribersBeyondLimit(t *testing.T) {
	sys, seqRelay := startRelayDevnet(t, "--replicator.relay.max-subscribers", "3", "--replicator.relay.max-subscribers-per-ip", "3")
	rep := sys.AddReplicator("replicator", devnet.WithSource(dsl.RelaySource(seqRelay)))
	requireReplicatedSigned(t, sys, rep)

	relay := sys.DialRelay(seqRelay)
	for range 2 {
		sub, err := relay.SubscribeEnvelopesRaw(t.Context(), 0, make(chan json.RawMessage, 1024))
		require.NoError(t, err)
		defer sub.Unsubscribe()
	}
	_, err := relay.SubscribeEnvelopesRaw(t.Context(), 0, make(chan json.RawMessage, 1))
	require.ErrorContains(t, err, "relay: too many subscribers")
}

// TestRelayDropsSubscriberThatStopsReading has a subscriber that never reads subscribe to a replicator's relay
// (send queue of 4 blocks) while big blocks are relayed: once its socket buffers and its send queue are full, the
// relay drops it and frees the slot, while the connection is still open, and goes on serving the downstream
// replicator that reads.
func TestRelayDropsSubscriberThatStopsReading(t *testing.T) {
	sys, seqRelay := startRelayDevnet(t)
	seq := sys.Sequencer.EL
	rPort := sys.FreePort()
	r := sys.AddReplicator("relay-r", devnet.WithSource(dsl.RelaySource(seqRelay)), devnet.WithMetrics(),
		devnet.WithNodeArgs(dsl.RelayArgs(rPort, "--replicator.relay.send-queue", "4")...))
	down := sys.AddReplicator("downstream", devnet.WithSource(dsl.RelaySource(rPort)))
	requireReplicatedSigned(t, sys, down)

	subscribers := func(n float64) func(ctx context.Context) (bool, error) {
		return r.MetricIs(dsl.Equal(n), dsl.MetricRelaySubscribers)
	}
	const before = 1 // the downstream replicator
	sys.WaitFor(dsl.ReplicationTimeout, "R to serve the downstream replicator only", subscribers(before))
	conn := stuckSubscriber(t, rPort)
	defer conn.Close()
	// Big blocks (zero calldata: cheap to batch, large to relay) fill the socket buffers quickly.
	stopFat := sendFatTransactions(t, seq.EL, sys.Net.Keys.L2Accounts[len(sys.Net.Keys.L2Accounts)-1])
	sys.WaitFor(dsl.ReplicationTimeout, "the stuck subscriber to be served", subscribers(before+1))
	// It never reads: once its socket buffers and its send queue are full, the relay drops it and frees
	// the slot, while the connection is still open.
	sys.WaitFor(time.Minute, "the stuck subscriber to be dropped", subscribers(before))
	stopFat()
	down.WaitReachesHead(seq) // the downstream is still served
}

// TestReplicatorFailsOverWhenItsRelayDies kills the relay R a replicator follows, next to a P2P sentry's relay: the
// replicator goes on from the sentry's relay, running, with no block lost.
func TestReplicatorFailsOverWhenItsRelayDies(t *testing.T) {
	sys, seqRelay := startRelayDevnet(t)
	seq := sys.Sequencer.EL
	rPort := sys.FreePort()
	r := sys.AddReplicator("relay-r", devnet.WithSource(dsl.RelaySource(seqRelay)), devnet.WithNodeArgs(dsl.RelayArgs(rPort)...),
		devnet.WithMetrics())
	sentryPort := sys.FreePort()
	sys.AddFollower("sentry", devnet.RoleGossipFollower, devnet.WithNodeArgs(dsl.RelayArgs(sentryPort)...))
	rep := sys.AddReplicator("downstream", devnet.WithSource(dsl.RelaySource(rPort)+","+dsl.RelaySource(sentryPort)))
	requireReplicatedSigned(t, sys, rep)

	before := rep.WaitReachesHead(seq)
	require.NoError(t, r.Kill())
	sys.WaitFor(dsl.ReplicationTimeout, "the sequencer to move on", func(ctx context.Context) (bool, error) {
		n, err := seq.BlockNumber(ctx)
		return n >= before.Number+5, err
	})
	after := rep.WaitReachesHead(seq)
	require.Greater(t, after.Number, before.Number)
	rep.EL.RequireSameBlocks(seq, before.Number, after.Number) // no block lost
	rep.RequireRunning()
}

// TestEquivocatingRelayHaltsWithPortableEvidence has a relay holding the sequencer's key serve, a few blocks behind
// the head, other blocks than the sequencer's: validly signed conflicting blocks. The replicator following it and
// the sequencer's relay halts with equivocation; the evidence is a pair of different blocks at one height, each of
// whose signatures verifies on its own against the sequencer's signer; the halt and its evidence survive a SIGKILL
// of op-node, and halted it holds nothing above what derivation produced.
func TestEquivocatingRelayHaltsWithPortableEvidence(t *testing.T) {
	sys, seqRelay := startRelayDevnet(t)
	seq := sys.Sequencer.EL
	seqSigner := crypto.PubkeyToAddress(sys.Net.Keys.SequencerP2P.PublicKey)
	equivocator := startFakeRelay(t, sys.Net.L2.Rollup, seq.HTTP, sys.Net.Keys.SequencerP2P)
	equivocator.mutate = func(env *eth.ExecutionPayloadEnvelope) { env.ExecutionPayload.PrevRandao = eth.Bytes32{0xee} }
	equivocator.behind = 3
	equivocator.delay = 5 * time.Second // the sequencer's own blocks reach the node first
	rep := sys.AddReplicator("replicator", devnet.WithSource(dsl.RelaySource(seqRelay)+","+equivocator.URL),
		devnet.WithHaltPolicy("manual"))
	rep.WaitHalted(api.ReasonEquivocation)

	evidence := rep.EquivocationEvidence()
	require.NotEmpty(t, evidence)
	ev := evidence[0]
	require.Equal(t, ev.Number, uint64(ev.First.Envelope.ExecutionPayload.BlockNumber))
	require.Equal(t, ev.Number, uint64(ev.Second.Envelope.ExecutionPayload.BlockNumber))
	require.NotEqual(t, ev.First.Envelope.ExecutionPayload.BlockHash, ev.Second.Envelope.ExecutionPayload.BlockHash)
	auth := &opsigner.OPStackP2PBlockAuthV1{Allowed: seqSigner, Chain: eth.ChainIDFromBig(sys.Net.L2.Rollup.L2ChainID)}
	for _, s := range []*opsigner.SignedExecutionPayloadEnvelope{ev.First, ev.Second} {
		_, ok := s.Envelope.CheckBlockHash()
		require.True(t, ok)
		require.NoError(t, s.VerifySignature(auth), "each envelope of the evidence verifies on its own")
	}

	// Halted, it holds nothing above what derivation produced.
	waitNoUnsafeBeyondDerived(sys, rep, "the halt to rewind the unsafe chain")

	// The halt and its evidence survive a crash of op-node.
	halted := rep.Status()
	before := rep.EquivocationEvidence()
	require.NotEmpty(t, before)
	require.NoError(t, rep.OpNode.Kill())
	rep.StartAgain()
	after := rep.Status()
	require.Equal(t, api.StateHalted, after.State, "a restart undid the equivocation halt")
	require.Equal(t, api.ReasonEquivocation, after.HaltReason)
	require.Equal(t, halted.HaltDetail, after.HaltDetail)
	require.True(t, halted.Since.Equal(after.Since))
	// The pair that halted it is kept (the equivocating relay goes on adding pairs at new heights).
	kept := rep.EquivocationEvidence()
	require.NotEmpty(t, kept)
	require.JSONEq(t, string(mustJSON(t, before[0])), string(mustJSON(t, kept[0])), "the evidence changed across the restart")
	// op-node forgets its safe head across a restart: until derivation runs again, its pending safe head is where its
	// sync start put it, below blocks derived before the kill, and the restored halt rewinds op-geth to it.
	waitNoUnsafeBeyondDerived(sys, rep, "the restored halt to rewind the unsafe chain")
}

// waitNoUnsafeBeyondDerived waits until every block of rep's unsafe chain came from L1 derivation (its unsafe head
// is not above its pending safe head), as the halt's rewind makes it within the halt timeout. Right after a start,
// op-node answers with a status whose heads are all zero until its engine controller has found them: that is no
// answer yet.
func waitNoUnsafeBeyondDerived(sys *dsl.System, rep *dsl.Replicator, what string) {
	sys.WaitFor(dsl.HaltTimeout, what, func(ctx context.Context) (bool, error) {
		ss, err := rep.CL.SyncStatus(ctx)
		return err == nil && ss.PendingSafeL2.Hash != (common.Hash{}) && ss.UnsafeL2.Number <= ss.PendingSafeL2.Number, err
	})
	rep.RequireNoUnsafeBeyondDerived()
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
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
	seqRelay := dsl.FreePort(t)
	sys := dsl.Start(t, devnet.Config{SequencerArgs: dsl.RelayArgs(seqRelay)})
	seq := sys.Sequencer.EL
	sys.StartTxLoad(seq)
	oldKeyRelay := startFakeRelay(t, sys.Net.L2.Rollup, seq.HTTP, sys.Net.Keys.SequencerP2P)
	rep := sys.AddReplicator("replicator", devnet.WithSource(dsl.RelaySource(seqRelay)+","+oldKeyRelay.URL), devnet.WithMetrics())
	badSignatures := func() float64 { return rep.Metric(dsl.MetricErrors, "kind", dsl.ErrorKindBadSignature) }
	rep.WaitReachesHead(seq)
	require.Zero(t, badSignatures(), "before the rotation both relays serve the signer's blocks")

	newKey := mustKey(t)
	require.NoError(t, sys.Net.RotateSigner(t.Context(), crypto.PubkeyToAddress(newKey.PublicKey)))
	rep.WaitLogged("p2p signer rotated, grace period started")
	rep.WaitReachesHead(seq) // still the old key, within the grace period
	require.Zero(t, badSignatures(), "the old key is accepted during the grace period")

	require.NoError(t, sys.Sequencer.OpNode.Stop())
	require.NoError(t, sys.Sequencer.OpNode.SetArg("--p2p.sequencer.key", hex.EncodeToString(crypto.FromECDSA(newKey))))
	sys.Sequencer.StartAgain()
	rep.WaitLogged("new signer confirmed in use, ending grace period")
	rep.WaitReachesHead(seq) // replication continues with the new key
	sys.WaitFor(dsl.ReplicationTimeout, "the old key to be refused",
		rep.MetricIs(dsl.Positive, dsl.MetricErrors, "kind", dsl.ErrorKindBadSignature))
	rep.WaitReachesHead(seq)
	rep.RequireRunning() // refused blocks never halt
}

// stuckSubscriber subscribes to a relay from block 0 over a websocket whose receive buffer is tiny, and never
// reads from it: a subscriber that stopped reading.
func stuckSubscriber(t *testing.T, port int) *websocket.Conn {
	t.Helper()
	dialer := websocket.Dialer{NetDialContext: (&net.Dialer{Control: devnet.ShrinkReceiveBuffer(2048)}).DialContext}
	conn, _, err := dialer.DialContext(t.Context(), "ws://127.0.0.1:"+strconv.Itoa(port), nil)
	require.NoError(t, err)
	req := fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"method":%q,"params":[%q,"0x0"]}`, api.MethodRelaySubscribe, api.RelayEnvelopes)
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
