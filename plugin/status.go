package plugin

import (
	"sync"
	"time"

	"github.com/ethereum-optimism/optimism/op-service/eth"

	"github.com/op-replicator/op-replicator/plugin/api"
)

// snapshot is what the loop, the halt and persistence publish for replicator_status.
type snapshot struct {
	lastReplicated   eth.L2BlockRef
	lastReplicatedAt time.Time
	sourceHead       eth.BlockID
	// rewindErr is why the halt's rewind has not succeeded yet ("" once it has, or while running).
	rewindErr string
	// stateErr is why the state file could not be written ("" once it is).
	stateErr string
	// l2RPCErr is why --replicator.l2.rpc was taken for another node while running ("" unless it was).
	l2RPCErr string
}

// statusBoard holds the published snapshot. It is safe for concurrent use: the loop, the insert stage and the
// identity check write it, the RPC API reads it.
type statusBoard struct {
	mu   sync.Mutex // guards snap
	snap snapshot
}

func (b *statusBoard) publish(f func(*snapshot)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	f(&b.snap)
}

func (b *statusBoard) snapshot() snapshot {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.snap
}

func (b *statusBoard) lastReplicated() eth.L2BlockRef { return b.snapshot().lastReplicated }

// healthReporter is a source that reports the health of each source it fans in (source.Multi).
type healthReporter interface {
	Health() []api.SourceHealth
}

// Status is the replicator's state and the chain heads it works with (replicator_status).
func (r *Replicator) Status() *api.Status {
	h := r.halt.Status()
	snap := r.board.snapshot()
	sync := r.status.SyncStatus()
	st := &api.Status{
		State:          h.State,
		HaltReason:     h.Reason,
		HaltDetail:     h.Detail,
		Since:          h.Since,
		HaltPolicy:     string(r.cfg.HaltPolicy),
		Source:         r.source.Name(),
		SourceHead:     snap.sourceHead,
		LastReplicated: snap.lastReplicated.ID(),
		Unsafe:         sync.UnsafeL2,
		Safe:           sync.SafeL2,
		Finalized:      sync.FinalizedL2,
		Lag:            lag(snap.sourceHead.Number, sync.UnsafeL2.Number),
		RewindError:    snap.rewindErr,
		StateFileError: snap.stateErr,
		L2RPCError:     snap.l2RPCErr,
	}
	if m, ok := r.source.(healthReporter); ok {
		st.Sources = m.Health()
		for i := range st.Sources {
			st.Sources[i].Lag = lag(st.Sources[i].Head.Number, sync.UnsafeL2.Number)
		}
	}
	if !h.ResumeAt.IsZero() {
		st.ResumeAt = &h.ResumeAt
	}
	if !snap.lastReplicatedAt.IsZero() {
		st.LastReplicatedAt = &snap.lastReplicatedAt
	}
	return st
}

func lag(source, local uint64) uint64 {
	if source > local {
		return source - local
	}
	return 0
}
