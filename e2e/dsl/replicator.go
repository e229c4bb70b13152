package dsl

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/ethereum-optimism/optimism/op-service/eth"

	"github.com/op-replicator/op-replicator/plugin/api"
)

// Replicator is a node running the replicator (--replicator.enabled). API is its replicator_ namespace
// (plugin/api's typed client), for calls inside wait conditions.
type Replicator struct {
	*Node
	API *api.Client
}

// Status returns replicator_status.
func (r *Replicator) Status() *api.Status {
	r.t.Helper()
	st, err := r.API.Status(r.ctx())
	r.require.NoError(err, "status of %s", r.Name)
	return st
}

// BlockStatus returns replicator_blockStatus of a block number, label or hash.
func (r *Replicator) BlockStatus(id rpc.BlockNumberOrHash) *api.BlockStatus {
	r.t.Helper()
	st, err := r.API.BlockStatus(r.ctx(), id)
	r.require.NoError(err, "block status of %s at %s", r.Name, id.String())
	r.require.NotNil(st, "%s has no block %s", r.Name, id.String())
	return st
}

// BlockStatusOf returns replicator_blockStatus of the block with hash h.
func (r *Replicator) BlockStatusOf(h common.Hash) *api.BlockStatus {
	r.t.Helper()
	return r.BlockStatus(rpc.BlockNumberOrHashWithHash(h, false))
}

// BlockStatusAt returns replicator_blockStatus of the block at a number or label.
func (r *Replicator) BlockStatusAt(n rpc.BlockNumber) *api.BlockStatus {
	r.t.Helper()
	return r.BlockStatus(rpc.BlockNumberOrHashWithNumber(n))
}

// EquivocationEvidence returns replicator_equivocationEvidence.
func (r *Replicator) EquivocationEvidence() []*api.Evidence {
	r.t.Helper()
	ev, err := r.API.EquivocationEvidence(r.ctx())
	r.require.NoError(err)
	return ev
}

// Halt calls replicator_halt with a detail (none if empty); it must succeed.
func (r *Replicator) Halt(detail string) {
	r.t.Helper()
	r.require.NoError(r.API.Halt(r.ctx(), detail), "halt %s", r.Name)
}

// Resume calls replicator_resume; it must succeed.
func (r *Replicator) Resume() {
	r.t.Helper()
	r.require.NoError(r.API.Resume(r.ctx()), "resume %s", r.Name)
}

// RequireState fails unless the replicator is in state now, and returns its status.
func (r *Replicator) RequireState(state api.State) *api.Status {
	r.t.Helper()
	st := r.Status()
	r.require.Equal(state, st.State, "state of %s (halt: %s: %s)", r.Name, st.HaltReason, st.HaltDetail)
	return st
}

// RequireRunning fails unless the replicator is running now.
func (r *Replicator) RequireRunning() *api.Status {
	r.t.Helper()
	return r.RequireState(api.StateRunning)
}

// WaitReplicating waits until the replicator has replicated src's blocks up to at least height minHeight: the last
// block it replicated is src's block at that height and above its safe head (so it came from the source, not from
// derivation), and its latest block is src's block too. It returns that status.
func (r *Replicator) WaitReplicating(src *EL, minHeight uint64) *api.Status {
	r.t.Helper()
	var st *api.Status
	r.sys.WaitFor(ReplicationTimeout, fmt.Sprintf("%s to replicate up to block %d", r.Name, minHeight),
		func(ctx context.Context) (bool, error) {
			var err error
			if st, err = r.API.Status(ctx); err != nil {
				return false, err
			}
			last := st.LastReplicated
			if st.State != api.StateRunning || last.Number < max(minHeight, 1) || last.Number <= st.Safe.Number {
				return false, nil
			}
			want, err := src.BlockID(ctx, rpc.BlockNumber(last.Number))
			if err != nil || want != last {
				return false, err
			}
			latest, err := r.EL.BlockID(ctx, rpc.LatestBlockNumber)
			if err != nil {
				return false, err
			}
			srcLatest, err := src.BlockID(ctx, rpc.BlockNumber(latest.Number))
			return err == nil && srcLatest == latest, err
		})
	return st
}

// WaitReachesHead takes src's current head as a target and waits until the replicator's chain has src's block at
// that height and the replicator has inserted a block at or above it: it is back at the head by replication.
// (Whether the target block itself was replicated is a race with derivation, which in this devnet is 2 to 4
// blocks behind the head: after an outage the replicator may start one block behind derivation, and overtake it.)
// It returns the target.
func (r *Replicator) WaitReachesHead(src *EL) eth.BlockID {
	r.t.Helper()
	target := src.IDAt(rpc.LatestBlockNumber)
	r.sys.WaitFor(ReplicationTimeout, fmt.Sprintf("%s to reach block %s by replication", r.Name, target),
		func(ctx context.Context) (bool, error) {
			got, err := r.EL.BlockID(ctx, rpc.BlockNumber(target.Number))
			if errors.Is(err, ethereum.NotFound) {
				return false, nil
			} else if err != nil {
				return false, err
			}
			r.require.Equal(target, got, "%s has another block at the source's height", r.Name)
			st, err := r.API.Status(ctx)
			if err != nil || st.LastReplicated.Number < target.Number {
				return false, err
			}
			replicated, err := src.BlockID(ctx, rpc.BlockNumber(st.LastReplicated.Number))
			if err != nil {
				return false, err
			}
			r.require.Equal(replicated, st.LastReplicated, "%s replicated a block the source does not have", r.Name)
			return true, nil
		})
	return target
}

// WaitState waits up to timeout until the replicator reports state, and returns that status.
func (r *Replicator) WaitState(state api.State, timeout time.Duration) *api.Status {
	r.t.Helper()
	var st *api.Status
	r.sys.WaitFor(timeout, fmt.Sprintf("%s to be %s", r.Name, state), func(ctx context.Context) (bool, error) {
		var err error
		st, err = r.API.Status(ctx)
		return err == nil && st.State == state, err
	})
	return st
}

// WaitRunning waits until the replicator runs (ReplicationTimeout), and returns that status.
func (r *Replicator) WaitRunning() *api.Status {
	r.t.Helper()
	return r.WaitState(api.StateRunning, ReplicationTimeout)
}

// WaitHalted waits until the replicator is halted (HaltTimeout), requires the halt reason to be reason, and
// returns that status.
func (r *Replicator) WaitHalted(reason api.Reason) *api.Status {
	r.t.Helper()
	st := r.WaitState(api.StateHalted, HaltTimeout)
	r.require.Equal(reason, st.HaltReason, "halt reason of %s (detail: %s)", r.Name, st.HaltDetail)
	r.t.Logf("%s halted: %s: %s", r.Name, st.HaltReason, st.HaltDetail)
	return st
}

// RequireHaltLogged waits (briefly: the state changes just before the rewind, the line is logged after it) for an
// error-level "Replicator halted" line with the given reason in the op-node's log.
func (r *Replicator) RequireHaltLogged(reason api.Reason) {
	r.t.Helper()
	path := r.OpNode.LogPath
	r.sys.WaitFor(5*time.Second, fmt.Sprintf("an error-level 'Replicator halted' line with reason=%s in %s", reason, path),
		func(context.Context) (bool, error) { return haltLogged(path, reason) })
}

func haltLogged(path string, reason api.Reason) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	scanner := bufio.NewScanner(f)
	scanner.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for scanner.Scan() {
		line := scanner.Text()
		if strings.Contains(line, "lvl=error") && strings.Contains(line, "Replicator halted") &&
			strings.Contains(line, "reason="+string(reason)) {
			return true, nil
		}
	}
	return false, scanner.Err()
}

// HaltByOperator halts the running replicator with replicator_halt and a detail, and checks the halt right away:
// halted with reason operator and that detail, the unsafe head rewound (nothing in the unsafe chain that
// derivation did not produce), and the halt logged. It returns the halted status.
//
// The halt is called once the replicator has unsafe blocks above its safe head, so that there is something to
// rewind. A replicator that replicates has some nearly all the time, but not always: a batch that lands on L1
// within a second of the sequencer's last block it holds makes the safe head catch up with the unsafe head until
// the next block.
func (r *Replicator) HaltByOperator(detail string) *api.Status {
	r.t.Helper()
	r.sys.WaitFor(ReplicationTimeout, fmt.Sprintf("%s to have unsafe blocks above its safe head", r.Name),
		func(context.Context) (bool, error) {
			st := r.RequireRunning()
			return st.Unsafe.Number > st.Safe.Number, nil
		})
	r.Halt(detail)
	r.RequireNoUnsafeBeyondDerived()
	st := r.RequireState(api.StateHalted)
	r.require.Equal(api.ReasonOperator, st.HaltReason)
	r.require.Equal(detail, st.HaltDetail)
	r.RequireHaltLogged(api.ReasonOperator)
	return st
}

// RequireHaltedByOperator fails unless the replicator is halted with reason operator and has no unsafe block
// derivation did not produce.
func (r *Replicator) RequireHaltedByOperator() {
	r.t.Helper()
	st := r.Status()
	r.require.Equal(api.StateHalted, st.State, "%s resumed", r.Name)
	r.require.Equal(api.ReasonOperator, st.HaltReason)
	r.RequireNoUnsafeBeyondDerived()
}
