package relay

import (
	"math/big"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/stretchr/testify/require"

	"github.com/ethereum-optimism/optimism/op-node/rollup"
	"github.com/ethereum-optimism/optimism/op-node/rollup/derive"
	"github.com/ethereum-optimism/optimism/op-service/eth"
	opsigner "github.com/ethereum-optimism/optimism/op-service/signer"
	"github.com/ethereum-optimism/optimism/op-service/testutils"
)

// envelopeAt is a signed block at height n, variant v (another variant is another block at that height): all the
// store looks at is the number and the hash.
func envelopeAt(n uint64, v byte) *opsigner.SignedExecutionPayloadEnvelope {
	hash := common.Hash{0x44, v}
	hash[24], hash[25], hash[26], hash[27] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
	return &opsigner.SignedExecutionPayloadEnvelope{Signature: eth.Bytes65{1},
		Envelope: &eth.ExecutionPayloadEnvelope{ExecutionPayload: &eth.ExecutionPayload{BlockNumber: eth.Uint64Quantity(n), BlockHash: hash,
			Timestamp: eth.Uint64Quantity(time.Now().Unix())}}} // made now: not history
}

func hashOf(s *opsigner.SignedExecutionPayloadEnvelope) common.Hash {
	return s.Envelope.ExecutionPayload.BlockHash
}

type collectingListener struct{ got []*Held }

func (c *collectingListener) Offer(h *Held) { c.got = append(c.got, h) }

// safeStatus is a SyncStatus with only a safe head (number 0 with a zero hash: unknown).
type safeStatus struct{ safe atomic.Uint64 }

func (s *safeStatus) SyncStatus() *eth.SyncStatus {
	n := s.safe.Load()
	if n == 0 {
		return &eth.SyncStatus{}
	}
	return &eth.SyncStatus{SafeL2: eth.L2BlockRef{Number: n, Hash: common.Hash{0x5a, byte(n)}}}
}

// replayMetrics counts dropped replays.
type replayMetrics struct {
	countingMetrics
	replays atomic.Int64
}

func (m *replayMetrics) RecordReplayDropped() { m.replays.Add(1) }

func TestEnvelopeStore(t *testing.T) {
	inModes(t, func(t *testing.T, mode storeMode) {
		blocks := buildChain(6, 0, 0)
		other := buildChain(6, 1, 4)
		now := time.Unix(1000, 0)
		s := mode.store(t, 4, nil, NoopMetrics{})

		for _, b := range blocks[:3] {
			_, added, conflicts, err := s.Add(signed(b), "gossip", now)
			require.NoError(t, err)
			require.True(t, added)
			require.Empty(t, conflicts)
		}
		held, added, _, err := s.Add(signed(blocks[1]), "relay", now.Add(time.Second))
		require.NoError(t, err)
		require.False(t, added, "the same block twice is held once")
		require.Equal(t, "gossip", held.Source, "the first copy wins")

		l := &collectingListener{}
		replay := s.Subscribe(2, l)
		require.Len(t, replay, 2)
		require.Equal(t, uint64(2), replay[0].Number())
		require.Equal(t, uint64(3), replay[1].Number())

		_, added, _, err = s.Add(signed(blocks[3]), "gossip", now)
		require.NoError(t, err)
		require.True(t, added)
		_, added, conflicts, err := s.Add(signed(other[3]), "relay", now)
		require.NoError(t, err)
		require.True(t, added, "another block at a held height is held too: equivocation evidence")
		require.Len(t, conflicts, 1)
		require.Equal(t, blocks[3].ExecutionPayload.BlockHash, conflicts[0].Hash())
		require.Len(t, s.ByNumber(4), 2)
		require.Len(t, l.got, 2, "the listener is offered every new envelope")

		s.Unsubscribe(l)
		_, _, _, _ = s.Add(signed(blocks[4]), "gossip", now)
		_, _, _, _ = s.Add(signed(blocks[5]), "gossip", now)
		require.Len(t, l.got, 2)

		require.Equal(t, 4, s.Len(), "the window is bounded by heights")
		require.Empty(t, s.ByNumber(1), "the lowest heights are evicted")
		require.Nil(t, s.ByHash(blocks[0].ExecutionPayload.BlockHash), "evicted from the hash index too")
		require.NotNil(t, s.ByHash(blocks[5].ExecutionPayload.BlockHash))
		require.Equal(t, uint64(6), s.Head())
	})
}

// The window holds the highest heights: replaying old blocks, in any order and however many, never evicts a
// recent one (here an equivocating pair), and blocks below a full window are refused.
func TestEnvelopeStoreWindowEvictsLowest(t *testing.T) {
	inModes(t, func(t *testing.T, mode storeMode) {
		const window, recentFrom, recentTo, pairAt = 1024, 3001, 3100, 3100
		old := make([]uint64, 0, 2000)
		for n := uint64(1001); n <= 3000; n++ {
			old = append(old, n)
		}
		descending := make([]uint64, len(old))
		for i, n := range old {
			descending[len(old)-1-i] = n
		}
		shuffled := make([]uint64, len(old))
		for i := range old {
			shuffled[i] = old[(i*7919)%len(old)] // 7919 is prime to 2000: a permutation
		}
		for _, tc := range []struct {
			name   string
			replay []uint64
		}{
			{"ascending", old},
			{"descending", descending},
			{"shuffled", shuffled},
		} {
			t.Run(tc.name, func(t *testing.T) {
				s := mode.store(t, window, nil, NoopMetrics{})
				for n := uint64(recentFrom); n <= recentTo; n++ {
					_, _, _, err := s.Add(envelopeAt(n, 0), "gossip", time.Now())
					require.NoError(t, err)
				}
				_, _, conflicts, err := s.Add(envelopeAt(pairAt, 1), "relay", time.Now())
				require.NoError(t, err)
				require.Len(t, conflicts, 1)

				for _, n := range tc.replay {
					held, _, _, err := s.Add(envelopeAt(n, 9), "relay", time.Now())
					if err != nil {
						require.ErrorIs(t, err, ErrBelowWindow)
						require.Nil(t, held)
						require.Nil(t, s.ByHash(hashOf(envelopeAt(n, 9))), "a refused block is not held")
					}
				}
				require.Equal(t, window, s.Len())
				require.Equal(t, uint64(recentTo), s.Head())
				for n := uint64(recentFrom); n <= recentTo; n++ {
					require.NotNil(t, s.Latest(n), "recent height %d evicted", n)
				}
				require.Len(t, s.ByNumber(pairAt), 2, "the recent pair is still held")
				require.NotNil(t, s.ByHash(hashOf(envelopeAt(pairAt, 0))))
				require.NotNil(t, s.ByHash(hashOf(envelopeAt(pairAt, 1))))
				// Whatever was kept of the replay is the highest old heights.
				lowest := uint64(recentTo - window + 1)
				require.NotNil(t, s.Latest(lowest))
				require.Nil(t, s.Latest(lowest-1))
				_, _, _, err = s.Add(envelopeAt(lowest-1, 3), "relay", time.Now())
				require.ErrorIs(t, err, ErrBelowWindow, "below a full window")
			})
		}
	})
}

func TestEnvelopeStoreBelowWindow(t *testing.T) {
	inModes(t, func(t *testing.T, mode storeMode) {
		s := mode.store(t, 4, nil, NoopMetrics{})
		for n := uint64(10); n <= 13; n++ {
			_, _, _, err := s.Add(envelopeAt(n, 0), "gossip", time.Now())
			require.NoError(t, err)
		}
		for _, tc := range []struct {
			name    string
			n       uint64
			v       byte
			err     error
			evicted uint64 // 0: nothing
			lowest  uint64
		}{
			{name: "below a full window is refused", n: 5, err: ErrBelowWindow, lowest: 10},
			{name: "another block at the lowest height held is held", n: 10, v: 1, lowest: 10},
			{name: "a new highest height evicts the lowest", n: 14, evicted: 10, lowest: 11},
			{name: "an evicted height is below the window now", n: 10, v: 2, err: ErrBelowWindow, lowest: 11},
			{name: "a gap inside the window evicts the lowest", n: 20, evicted: 11, lowest: 12},
		} {
			t.Run(tc.name, func(t *testing.T) {
				held, added, _, err := s.Add(envelopeAt(tc.n, tc.v), "relay", time.Now())
				if tc.err != nil {
					require.ErrorIs(t, err, tc.err)
					require.Nil(t, held)
					require.False(t, added)
				} else {
					require.NoError(t, err)
					require.True(t, added)
				}
				if tc.evicted != 0 {
					require.Empty(t, s.ByNumber(tc.evicted))
				}
				require.Equal(t, 4, s.Len())
				replay := s.Subscribe(0, &collectingListener{})
				require.Equal(t, tc.lowest, replay[0].Number())
			})
		}
	})
}

// A height holds at most maxEnvelopesPerHeight distinct blocks, as op-node's gossip accepts.
func TestEnvelopeStorePerHeightCap(t *testing.T) {
	inModes(t, func(t *testing.T, mode storeMode) {
		s := mode.store(t, 8, nil, NoopMetrics{})
		for v := range byte(maxEnvelopesPerHeight) {
			_, added, conflicts, err := s.Add(envelopeAt(7, v), "relay", time.Now())
			require.NoError(t, err)
			require.True(t, added)
			require.Len(t, conflicts, int(v), "every block held at the height is a conflict")
		}
		held, added, conflicts, err := s.Add(envelopeAt(7, maxEnvelopesPerHeight), "relay", time.Now())
		require.ErrorIs(t, err, ErrHeightFull)
		require.Nil(t, held)
		require.False(t, added)
		require.Empty(t, conflicts, "a refused block is not evidence")
		require.Nil(t, s.ByHash(hashOf(envelopeAt(7, maxEnvelopesPerHeight))))
		require.Len(t, s.ByNumber(7), maxEnvelopesPerHeight)

		held, added, _, err = s.Add(envelopeAt(7, 0), "gossip", time.Now())
		require.NoError(t, err, "a block held already is no new block")
		require.False(t, added)
		require.Equal(t, hashOf(envelopeAt(7, 0)), held.Hash())
		_, _, _, err = s.Add(envelopeAt(8, 0), "gossip", time.Now())
		require.NoError(t, err, "other heights are not affected")
	})
}

// The latest arrived block at a height is the sequencer's current one (after an unsafe reorg): what is followed
// and relayed. ByNumber keeps all of them, first arrived first.
func TestEnvelopeStoreLatest(t *testing.T) {
	inModes(t, func(t *testing.T, mode storeMode) {
		s := mode.store(t, 8, nil, NoopMetrics{})
		require.Nil(t, s.Latest(3))
		for _, v := range []byte{0, 1, 2} {
			_, _, _, err := s.Add(envelopeAt(3, v), "relay", time.Now())
			require.NoError(t, err)
		}
		_, _, _, err := s.Add(envelopeAt(4, 0), "relay", time.Now())
		require.NoError(t, err)
		_, added, _, err := s.Add(envelopeAt(3, 0), "relay", time.Now()) // the orphan again
		require.NoError(t, err)
		require.False(t, added)

		require.Equal(t, hashOf(envelopeAt(3, 2)), s.Latest(3).Hash(), "a block arriving again does not become the latest")
		all := s.ByNumber(3)
		require.Len(t, all, 3)
		for i, h := range all {
			require.Equal(t, hashOf(envelopeAt(3, byte(i))), h.Hash())
		}
		replay := s.Subscribe(3, &collectingListener{})
		require.Len(t, replay, 2, "one block a height")
		require.Equal(t, hashOf(envelopeAt(3, 2)), replay[0].Hash())
		require.Equal(t, uint64(4), replay[1].Number())
	})
}

// Signed blocks at or below the safe head are replays of settled history: dropped, counted, never evidence. Above
// the safe head, two signed blocks at one height still are.
func TestEnvelopeStoreDropsSettled(t *testing.T) {
	inModes(t, func(t *testing.T, mode storeMode) {
		for _, tc := range []struct {
			name      string
			safe      uint64 // 0: unknown
			height    uint64
			dropped   bool
			conflicts int
		}{
			{name: "below the safe head", safe: 10, height: 4, dropped: true},
			{name: "at the safe head", safe: 10, height: 10, dropped: true},
			{name: "above the safe head", safe: 10, height: 11, conflicts: 1},
			{name: "safe head unknown", safe: 0, height: 1, conflicts: 1},
		} {
			t.Run(tc.name, func(t *testing.T) {
				status, m := &safeStatus{}, &replayMetrics{}
				status.safe.Store(tc.safe)
				s := mode.store(t, 16, status, m)
				var conflicts []*Held
				for _, v := range []byte{0, 1} {
					held, _, c, err := s.Add(envelopeAt(tc.height, v), "relay", time.Now())
					if tc.dropped {
						require.ErrorIs(t, err, ErrReplay)
						require.Nil(t, held)
					} else {
						require.NoError(t, err)
					}
					conflicts = append(conflicts, c...)
				}
				require.Len(t, conflicts, tc.conflicts)
				if tc.dropped {
					require.Equal(t, int64(2), m.replays.Load())
					require.Empty(t, s.ByNumber(tc.height))
					require.Zero(t, s.Len())
				} else {
					require.Zero(t, m.replays.Load())
					require.Len(t, s.ByNumber(tc.height), 2)
				}
			})
		}

		t.Run("a height becoming safe", func(t *testing.T) {
			status, m := &safeStatus{}, &replayMetrics{}
			status.safe.Store(5)
			s := mode.store(t, 16, status, m)
			_, _, _, err := s.Add(envelopeAt(6, 0), "gossip", time.Now())
			require.NoError(t, err)
			status.safe.Store(6)
			_, _, conflicts, err := s.Add(envelopeAt(6, 1), "relay", time.Now())
			require.ErrorIs(t, err, ErrReplay, "a conflicting block arriving once its height is settled is a replay")
			require.Empty(t, conflicts)
			require.Equal(t, int64(1), m.replays.Load())
			require.NotNil(t, s.Latest(6), "what was held stays held (and relayed)")
		})
	})
}

// A replayed old pair is never evidence, whatever the safe head: a block older than ReplayAge when it arrives, at a
// height already held, is held as history. The block followed there is the one the chain above builds on,
// whichever arrived first; a fresh pair is still evidence, and its last arrived is followed.
func TestEnvelopeStoreHistoryIsNotEvidence(t *testing.T) {
	inModes(t, func(t *testing.T, mode storeMode) {
		genuine := buildChain(6, 0, 0)
		orphan := buildChain(6, 1, 3) // another block at height 3, and its descendants
		blockTime := func(n int) time.Time { return time.Unix(int64(genuine[n-1].ExecutionPayload.Timestamp), 0) }
		late := blockTime(6).Add(ReplayAge + time.Second) // every block is history by now
		m := &replayMetrics{}
		s := mode.store(t, 16, nil, m)

		// The orphan arrives first, then the genuine chain: no evidence, and the genuine block is followed at 3 once
		// its child is held.
		_, _, conflicts, err := s.Add(signed(orphan[2]), "replayer", late)
		require.NoError(t, err)
		require.Empty(t, conflicts)
		for _, b := range genuine {
			_, added, conflicts, err := s.Add(signed(b), "sequencer-relay", late)
			require.NoError(t, err)
			require.True(t, added)
			require.Empty(t, conflicts, "block %d: history is not evidence", b.ExecutionPayload.BlockNumber)
		}
		require.Len(t, s.ByNumber(3), 2, "both held")
		require.Equal(t, int64(1), m.replays.Load(), "the late one at a held height is counted as a replay")
		require.Equal(t, hashOf(signed(genuine[2])), s.Latest(3).Hash(), "the block the chain above builds on")
		replay := s.Subscribe(1, &collectingListener{})
		for i, h := range replay {
			require.Equal(t, hashOf(signed(genuine[i])), h.Hash(), "a relay serves the genuine chain")
		}

		// Without a child held, neither is followed yet.
		s2 := mode.store(t, 16, nil, NoopMetrics{})
		_, _, _, _ = s2.Add(signed(orphan[4]), "replayer", late)
		_, _, conflicts, _ = s2.Add(signed(genuine[4]), "sequencer-relay", late)
		require.Empty(t, conflicts)
		require.Nil(t, s2.Latest(5), "undecided until the chain above is held")
		require.Empty(t, s2.Subscribe(5, &collectingListener{}), "nor relayed")
		_, _, _, _ = s2.Add(signed(genuine[5]), "sequencer-relay", late)
		require.Equal(t, hashOf(signed(genuine[4])), s2.Latest(5).Hash())

		// A pair arriving while young is evidence, and the last arrived is followed.
		s3 := mode.store(t, 16, nil, NoopMetrics{})
		_, _, _, _ = s3.Add(signed(genuine[3]), "gossip", blockTime(4))
		_, _, conflicts, err = s3.Add(signed(orphan[3]), "relay", blockTime(4).Add(ReplayAge))
		require.NoError(t, err)
		require.Len(t, conflicts, 1, "a block within gossip's age window conflicting is evidence")
		require.Equal(t, hashOf(signed(orphan[3])), s3.Latest(4).Hash())
	})
}

// l1HeadStatus is a SyncStatus with an L1 head and no safe head.
type l1HeadStatus struct{ head uint64 }

func (s l1HeadStatus) SyncStatus() *eth.SyncStatus {
	return &eth.SyncStatus{HeadL1: eth.L1BlockRef{Number: s.head, Hash: common.Hash{0x11}}}
}

// With JudgeOrigins, a block whose L1 origin is outside the sequencing window of our L1 head is history, however
// young its timestamp looks to this node's clock: a pair of such blocks is not evidence.
func TestEnvelopeStoreOriginOutsideTheWindowIsNotEvidence(t *testing.T) {
	inModes(t, func(t *testing.T, mode storeMode) {
		cfg := &rollup.Config{L2ChainID: testRollup.L2ChainID, BlockTime: 2, SeqWindowSize: 10}
		at := func(origin uint64, v byte) *opsigner.SignedExecutionPayloadEnvelope {
			info := &testutils.MockBlockInfo{InfoNum: origin, InfoHash: common.Hash{0x11, byte(origin)}, InfoBaseFee: big.NewInt(1)}
			dep, err := derive.L1InfoDepositBytes(cfg, nil, eth.SystemConfig{}, 0, info, chainStart)
			require.NoError(t, err)
			env := &eth.ExecutionPayloadEnvelope{ExecutionPayload: &eth.ExecutionPayload{BlockNumber: 7, Timestamp: eth.Uint64Quantity(chainStart),
				StateRoot: eth.Bytes32{v}, Transactions: []eth.Data{dep}, GasLimit: 30_000_000}}
			env.ExecutionPayload.BlockHash, _ = env.CheckBlockHash()
			return signed(env)
		}
		now := time.Unix(int64(chainStart), 0) // young by the clock
		for _, tc := range []struct {
			name     string
			origin   uint64
			evidence bool
		}{
			{name: "origin inside the window", origin: 95, evidence: true},
			{name: "origin at the window's edge", origin: 90, evidence: true},
			{name: "origin outside the window", origin: 89},
		} {
			t.Run(tc.name, func(t *testing.T) {
				s := mode.store(t, 8, l1HeadStatus{head: 100}, NoopMetrics{})
				s.JudgeOrigins(cfg)
				_, _, _, err := s.Add(at(tc.origin, 0), "gossip", now)
				require.NoError(t, err)
				_, _, conflicts, err := s.Add(at(tc.origin, 1), "relay", now)
				require.NoError(t, err)
				if tc.evidence {
					require.Len(t, conflicts, 1)
				} else {
					require.Empty(t, conflicts)
				}
			})
		}
	})
}
