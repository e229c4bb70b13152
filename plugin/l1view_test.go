package plugin

import (
	"context"
	"testing"

	"github.com/op-replicator/op-replicator/plugin/internal/testkit"
	"github.com/stretchr/testify/require"

	"github.com/ethereum-optimism/optimism/op-service/eth"
)

// countingL1 counts the L1 blocks read by height.
type countingL1 struct {
	fakeL1
	reads int
}

func (l *countingL1) L1BlockRefByNumber(ctx context.Context, n uint64) (eth.L1BlockRef, error) {
	l.reads++
	return l.fakeL1.L1BlockRefByNumber(ctx, n)
}

func TestL1ViewKeepsBlocksWhileTheL1HeadExtendsThem(t *testing.T) {
	ctx := context.Background()
	l1 := &countingL1{}
	v := newL1View(l1)
	read := func(n uint64, head eth.L1BlockRef) eth.L1BlockRef {
		t.Helper()
		ref, err := v.L1BlockRefByNumber(ctx, n, head)
		require.NoError(t, err)
		return ref
	}

	head := testkit.L1Block(10, 0)
	require.Equal(t, testkit.L1Block(5, 0), read(5, head))
	require.Equal(t, testkit.L1Block(5, 0), read(5, head))
	require.Equal(t, 1, l1.reads, "the same head: block 5 is read once")

	head = testkit.L1Block(11, 0)
	require.Equal(t, testkit.L1Block(5, 0), read(5, head))
	require.Equal(t, 1, l1.reads, "the head moved on by a child: the chain below it is the same")

	// An L1 reorg from block 4: op-node's head is now on the fork, whose block 12 is not a child of 11.
	l1.reorg(4, 9)
	head = testkit.L1Block(12, 9)
	require.Equal(t, testkit.L1Block(5, 9), read(5, head), "a reorged head forgets every kept block")
	require.Equal(t, 2, l1.reads)

	head = testkit.L1Block(14, 9)
	read(5, head)
	require.Equal(t, 3, l1.reads, "a head that skipped blocks forgets every kept block")

	read(20, head)
	read(20, head)
	require.Equal(t, 5, l1.reads, "a block beyond the head is not kept")
}

func TestL1ViewErrorIsNotKept(t *testing.T) {
	ctx := context.Background()
	l1 := &countingL1{fakeL1: fakeL1{err: errL1}}
	v := newL1View(l1)
	head := testkit.L1Block(10, 0)
	_, err := v.L1BlockRefByNumber(ctx, 5, head)
	require.ErrorIs(t, err, errL1)
	l1.err = nil
	ref, err := v.L1BlockRefByNumber(ctx, 5, head)
	require.NoError(t, err)
	require.Equal(t, testkit.L1Block(5, 0), ref)
	require.Equal(t, 2, l1.reads)
}
