package plugin

import (
	"context"
	"sync"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/ethereum-optimism/optimism/op-service/eth"

	"github.com/op-replicator/op-replicator/driverhook"
)

// l1RefsKept is how many L1 blocks the L1 view keeps by height: more than the L1 blocks a round of catching up spans
// (maxBlocksPerRound L2 blocks, 86-171 L1 blocks with 1-2 s L2 blocks and 12 s L1 blocks), though verification, which
// goes through the L2 blocks in order, reads only the latest two or three again.
const l1RefsKept = 256

// l1View is our L1 view as verification reads it by height: op-node's L1 tracker, with each canonical block read
// kept for as long as op-node's L1 head is the same block or a child of it. The tracker itself only keeps the L1
// heads it saw since op-node started, so while a node catches up every L2 block's origin, and the L1 block after
// it, would otherwise be read from the L1 node: two requests a block, nearly all of them for L1 blocks just read
// for the block before.
//
// A kept block is canonical under the L1 head it was read under. It stays kept while op-node's L1 head moves on one
// block at a time (each new head's parent being the head before, the chain below it did not change); any other
// move of the head (an L1 reorg, or a head that skipped blocks) forgets every kept block. So the view is never
// older than op-node's own L1 head, the view derivation itself works on.
type l1View struct {
	l1 driverhook.L1Chain

	mu   sync.Mutex
	head eth.BlockID // op-node's L1 head the kept blocks are canonical under
	refs *lru.Cache[uint64, eth.L1BlockRef]
}

func newL1View(l1 driverhook.L1Chain) *l1View {
	refs, _ := lru.New[uint64, eth.L1BlockRef](l1RefsKept) // only fails for a non-positive size
	return &l1View{l1: l1, refs: refs}
}

// L1BlockRefByNumber returns our canonical L1 block at num, op-node's L1 head being head (num ≤ head.Number).
func (v *l1View) L1BlockRefByNumber(ctx context.Context, num uint64, head eth.L1BlockRef) (eth.L1BlockRef, error) {
	if ref, ok := v.kept(num, head); ok {
		return ref, nil
	}
	ref, err := v.l1.L1BlockRefByNumber(ctx, num)
	if err != nil {
		return eth.L1BlockRef{}, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if num <= head.Number && v.head == head.ID() {
		v.refs.Add(num, ref)
	}
	return ref, nil
}

// kept returns the block kept at num, after forgetting every kept block if head does not extend the head they were
// read under.
func (v *l1View) kept(num uint64, head eth.L1BlockRef) (eth.L1BlockRef, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	switch {
	case head.Hash == v.head.Hash:
	case head.ParentHash == v.head.Hash && head.Number == v.head.Number+1:
		v.head = head.ID() // one block on: the chain below is the same
	default:
		v.refs.Purge()
		v.head = head.ID()
	}
	if num > head.Number {
		return eth.L1BlockRef{}, false
	}
	return v.refs.Get(num)
}
