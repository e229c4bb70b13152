//go:build soak

package e2e

import (
	"context"
	"fmt"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/op-replicator/op-replicator/e2e/devnet"
	"github.com/op-replicator/op-replicator/e2e/dsl"
	"github.com/op-replicator/op-replicator/plugin/api"
)

// Invariants, as the report names them.
const (
	invSafeNeverRewritten = "no block at or below safe ever rewritten"
	invHaltHeld           = "while halted, op-geth's latest is a derived block"
	invNoGap              = "after every recovery, no gap"
	invHaltsExpected      = "halts only where a fault causes one"
)

// checkNoGap checks that n's blocks from..to are the sequencer's and each one's parent is the block before it.
func (s *soak) checkNoGap(ctx context.Context, n *dsl.Replicator, from, to uint64) error {
	links, err := n.EL.BlockLinks(ctx, devnet.NumberRange(from, to))
	if err != nil {
		return err
	}
	want, err := s.seq.HashesAt(ctx, devnet.NumberRange(from, to))
	if err != nil {
		return err
	}
	for i, l := range links {
		if l.Hash != want[i] {
			return fmt.Errorf("block %d is %s, the sequencer's is %s", from+uint64(i), l.Hash, want[i])
		}
		if i > 0 && l.ParentHash != links[i-1].Hash {
			return fmt.Errorf("block %d's parent is %s, not block %d (%s)", from+uint64(i), l.ParentHash, from+uint64(i)-1, links[i-1].Hash)
		}
	}
	return nil
}

// recordHalt records a halt once (by node and start), as expected if the fault in progress causes it on that node.
func (s *soak) recordHalt(n *dsl.Replicator, st *api.Status, f *soakFault) {
	key := n.Name + "@" + st.Since.String()
	s.mu.Lock()
	if s.seenHalts[key] {
		s.mu.Unlock()
		return
	}
	s.seenHalts[key] = true
	h := haltRecord{node: n.Name, reason: string(st.HaltReason), detail: st.HaltDetail, since: st.Since, fault: "(none)"}
	if f != nil {
		h.fault = f.name
		h.expected = f.target == n.Node && f.expectHalt == st.HaltReason
	}
	s.halts = append(s.halts, h)
	s.checks[invHaltsExpected]++
	s.mu.Unlock()
	s.t.Logf("%s halted (%s: %s) during %s", n.Name, st.HaltReason, st.HaltDetail, h.fault)
	if !h.expected {
		s.violate(invHaltsExpected, fmt.Sprintf("%s halted %s (%s) during %s", n.Name, st.HaltReason, st.HaltDetail, h.fault))
	}
}

func (s *soak) violate(invariant, detail string) {
	s.t.Errorf("invariant violated: %s: %s", invariant, detail)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.violations = append(s.violations, violation{invariant: invariant, detail: detail, at: time.Now()})
}

func (s *soak) count(invariant string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks[invariant]++
}

func (s *soak) violationCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.violations)
}

func (s *soak) currentFault() *soakFault {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fault
}

// startChecks checks the invariants and samples the replicator's resources every soakCheckPeriod, in a goroutine of
// its own, until the returned stop is called (once or more).
func (s *soak) startChecks() (stop func()) {
	ctx, cancel := context.WithCancel(s.t.Context())
	histories := make([]*safeHistory, 0, 4)
	for _, n := range []*dsl.Node{s.sys.Sequencer, s.rep.Node, s.sentry, s.down.Node} {
		histories = append(histories, &safeHistory{node: n, hashes: make(map[uint64]common.Hash)})
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		ticker := time.NewTicker(soakCheckPeriod)
		defer ticker.Stop()
		for {
			for _, h := range histories {
				s.checkSafeHistory(ctx, h)
			}
			for _, n := range s.replicators() {
				s.checkHaltHeld(ctx, n)
			}
			s.sampleResources(ctx)
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// safeHistory is every block hash at or below a node's safe head the soak has seen, by height.
type safeHistory struct {
	node   *dsl.Node
	hashes map[uint64]common.Hash
	next   uint64 // the lowest height not recorded yet
	cursor uint64 // where the rolling re-check of old heights is
}

const (
	// safeRecheckRecent is how many of the highest recorded heights are checked again every second: a rewind below
	// the safe head would hit them first.
	safeRecheckRecent = 64
	// safeRecheckRolling is how many older heights are checked again every second, in turn, so that every recorded
	// height is checked again every few seconds to minutes, however long the soak.
	safeRecheckRolling = 64
	// safeRecordBatch bounds the new heights recorded in one second.
	safeRecordBatch = 512
)

// checkSafeHistory records the hashes of h's node's blocks up to its safe head, and checks that none recorded before
// has changed (or gone). A node that does not answer (restarting) is skipped.
func (s *soak) checkSafeHistory(ctx context.Context, h *safeHistory) {
	safe, err := h.node.EL.BlockID(ctx, rpc.SafeBlockNumber)
	if err != nil {
		return
	}
	var nums []uint64
	for n := h.next; n <= safe.Number && len(nums) < safeRecordBatch; n++ {
		nums = append(nums, n)
	}
	recorded := len(nums)
	for n := h.next - min(h.next, safeRecheckRecent); n < h.next; n++ {
		nums = append(nums, n)
	}
	if h.next > safeRecheckRecent {
		for range safeRecheckRolling {
			nums = append(nums, h.cursor%(h.next-safeRecheckRecent))
			h.cursor++
		}
	}
	hashes, err := h.node.EL.OptionalHashesAt(ctx, nums)
	if err != nil {
		return
	}
	s.count(invSafeNeverRewritten)
	for i, n := range nums {
		got := hashes[i]
		if i < recorded {
			if got == nil { // below the safe head the node just reported: a restart in between; next time
				break
			}
			h.hashes[n] = *got
			h.next = n + 1
			continue
		}
		switch want := h.hashes[n]; {
		case got == nil:
			s.violate(invSafeNeverRewritten, fmt.Sprintf("%s no longer has block %d (%s), at or below its safe head", h.node.Name, n, want))
		case *got != want:
			s.violate(invSafeNeverRewritten, fmt.Sprintf("%s rewrote block %d at or below its safe head: %s, was %s", h.node.Name, n, *got, want))
			h.hashes[n] = *got // reported once
		}
	}
}

// checkHaltHeld checks, while n is halted (from dsl.RewindDeadline after the halt on), that its op-geth's latest block
// is one derivation produced: not above op-node's pending safe head, and the sequencer's block at that height (as
// dsl.HeadSamples.RequireHaltHeld). It records the halt too. The status is read again afterwards: a look that a resume
// overtook is not a check.
func (s *soak) checkHaltHeld(ctx context.Context, n *dsl.Replicator) {
	st, err := n.API.Status(ctx)
	if err != nil || st.State != api.StateHalted {
		return
	}
	s.recordHalt(n, st, s.currentFault())
	if time.Since(st.Since) < dsl.RewindDeadline {
		return
	}
	latest, err := n.EL.BlockID(ctx, rpc.LatestBlockNumber)
	if err != nil {
		return
	}
	ss, err := dsl.PendingSafeAfter(ctx, n.CL, latest)
	if err != nil {
		return
	}
	again, err := n.API.Status(ctx)
	if err != nil || again.State != api.StateHalted || !again.Since.Equal(st.Since) {
		return
	}
	s.count(invHaltHeld)
	if latest.Number > ss.PendingSafeL2.Number {
		s.violate(invHaltHeld, fmt.Sprintf("%s halted (%s) since %s: op-geth's latest %s is above the pending safe head %s",
			n.Name, st.HaltReason, time.Since(st.Since).Round(time.Millisecond), latest, ss.PendingSafeL2))
		return
	}
	want, err := s.seq.BlockID(ctx, rpc.BlockNumber(latest.Number))
	if err == nil && want != latest {
		s.violate(invHaltHeld, fmt.Sprintf("%s halted (%s): op-geth's latest %s is not the sequencer's block %s", n.Name, st.HaltReason, latest, want))
	}
}

// sampleResources samples the replicator op-node's resident memory and open file descriptors (/proc) and its
// goroutines (go_goroutines).
func (s *soak) sampleResources(ctx context.Context) {
	res, err := s.rep.OpNode.Resources()
	if err != nil {
		return
	}
	goroutines, err := s.rep.MetricValue(ctx, dsl.MetricGoroutines)
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resources = append(s.resources, resourceSample{at: time.Now(), rss: res.RSS, goroutines: goroutines, fds: res.FDs})
}
