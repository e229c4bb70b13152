package plugin

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ethereum-optimism/optimism/op-service/eth"
	opsigner "github.com/ethereum-optimism/optimism/op-service/signer"
)

func signed(b chainBlock) *opsigner.SignedExecutionPayloadEnvelope {
	return &opsigner.SignedExecutionPayloadEnvelope{Envelope: b.env, Signature: eth.Bytes65{1}}
}

type collectingListener struct{ got []*heldEnvelope }

func (c *collectingListener) offer(h *heldEnvelope) { c.got = append(c.got, h) }

func TestEnvelopeStore(t *testing.T) {
	cfg := testRollupConfig()
	blocks := buildChain(t, cfg, 6, 0, 0)
	other := buildChain(t, cfg, 6, 1, 4)
	now := time.Unix(1000, 0)
	s := newEnvelopeStore(4)

	for _, b := range blocks[:3] {
		_, added, conflicts := s.Add(signed(b), "gossip", now)
		require.True(t, added)
		require.Empty(t, conflicts)
	}
	held, added, _ := s.Add(signed(blocks[1]), "relay", now.Add(time.Second))
	require.False(t, added, "the same block twice is held once")
	require.Equal(t, "gossip", held.Source, "the first copy wins")

	l := &collectingListener{}
	replay := s.Subscribe(2, l)
	require.Len(t, replay, 2)
	require.Equal(t, uint64(2), replay[0].number())
	require.Equal(t, uint64(3), replay[1].number())

	_, added, _ = s.Add(signed(blocks[3]), "gossip", now)
	require.True(t, added)
	_, added, conflicts := s.Add(signed(other[3]), "relay", now)
	require.True(t, added, "another block at a held height is held too: equivocation evidence")
	require.Len(t, conflicts, 1)
	require.Equal(t, blocks[3].ref.Hash, conflicts[0].hash())
	require.Len(t, s.ByNumber(4), 2)
	require.Len(t, l.got, 2, "the listener is offered every new envelope")

	s.Unsubscribe(l)
	_, _, _ = s.Add(signed(blocks[4]), "gossip", now)
	_, _, _ = s.Add(signed(blocks[5]), "gossip", now)
	require.Len(t, l.got, 2)

	require.Equal(t, 4, s.Len(), "the window is bounded by heights")
	require.Empty(t, s.ByNumber(1), "the oldest heights are evicted")
	require.Nil(t, s.ByHash(blocks[0].ref.Hash), "evicted from the hash index too")
	require.NotNil(t, s.ByHash(blocks[5].ref.Hash))
	require.Equal(t, uint64(6), s.Head())
}
