package plugin

import (
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/api"
	"github.com/op-replicator/op-replicator/plugin/internal/testkit"
	"github.com/op-replicator/op-replicator/plugin/relay"
)

// FuzzStateFile feeds state files through what a start-up does with one: stateFile.decode (load's parsing and
// checks), then Replicator.restore under each halt policy. A file is refused with an error naming it, or it is a
// valid state that saves (encode) to a file that loads and saves again to the same bytes; and the restored
// replicator holds the file's halt, evidence and last replicated block.
func FuzzStateFile(f *testing.F) {
	file := &stateFile{path: "/var/lib/op-node/replicator.json"}
	cfg := testkit.RollupConfig()
	f.Add([]byte(`{"version":1,"state":"halted","reason":"operator","detail":"maintenance","since":"2026-11-22T00:00:00Z"}`))

	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := file.decode(data)
		if err != nil {
			require.Nil(t, st)
			require.ErrorContains(t, err, file.path, "an error that does not name the file")
			return
		}
		require.Equal(t, stateVersion, st.Version)
		require.Contains(t, []api.State{api.StateRunning, api.StateHalted}, st.State)
		if st.State == api.StateHalted {
			require.NotEmpty(t, st.Reason, "halted without a reason")
		}

		saved, err := file.encode(st)
		require.NoError(t, err, "a state file that loads does not save")
		again, err := file.decode(saved)
		require.NoError(t, err, "a saved state file does not load:\n%s", saved)
		// Compared as saved: times keep their instant, not necessarily their location (an offset of zero is Z).
		resaved, err := file.encode(again)
		require.NoError(t, err)
		require.Equal(t, string(saved), string(resaved), "the state changed from one restart to the next")

		for _, policy := range []driverhook.HaltPolicy{driverhook.HaltManual, driverhook.HaltTimed, driverhook.HaltUntilSynced} {
			now := time.Unix(1_800_000_000, 0)
			engine, board := newFakeEngine(cfg), &statusBoard{}
			r := &Replicator{halt: &halter{haltState: newHaltState(policy, time.Minute, now), engine: engine, board: board},
				persist: &persister{}, board: board, evidence: relay.NewEvidenceLog(), engine: engine, metrics: NoopMetrics{}}
			r.restore(st)

			h := r.halt.Status()
			require.Equal(t, st.State, h.State)
			if st.State == api.StateHalted {
				require.Equal(t, st.Reason, h.Reason)
				require.Equal(t, st.Detail, h.Detail)
				require.True(t, st.Since.Equal(h.Since), "halted since %s, restored since %s", st.Since, h.Since)
				switch {
				case policy != driverhook.HaltTimed:
					require.Zero(t, h.ResumeAt)
				case st.ResumeAt != nil:
					require.True(t, st.ResumeAt.Equal(h.ResumeAt), "resumes at %s, restored at %s", st.ResumeAt, h.ResumeAt)
				default:
					require.True(t, st.Since.Add(time.Minute).Equal(h.ResumeAt), "a timed halt without resumeAt")
				}
			} else {
				require.Equal(t, now, h.Since, "running since the start")
			}
			require.True(t, slices.Equal(st.Evidence, r.evidence.All()), "evidence")
			if st.LastReplicated != nil {
				require.Equal(t, *st.LastReplicated, r.lastReplicated())
			}
		}
	})
}
