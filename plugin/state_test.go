package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ethereum-optimism/optimism/op-node/rollup/derive"
	"github.com/ethereum-optimism/optimism/op-service/eth"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/api"
	"github.com/op-replicator/op-replicator/plugin/internal/testkit"
	"github.com/op-replicator/op-replicator/plugin/relay"
)

func ptr[T any](v T) *T { return &v }

func TestStateFileRoundTrip(t *testing.T) {
	dir := t.TempDir()
	f := &stateFile{path: filepath.Join(dir, "replicator.json")}
	st, err := f.load()
	require.NoError(t, err)
	require.Nil(t, st, "no file: a first start")

	since := time.Unix(1_700_000_000, 0).UTC()
	a, b := signedChain(t, 1, 2, 0), signedChain(t, 1, 2, 5)
	want := &persistedState{State: api.StateHalted, Reason: api.ReasonEquivocation, Detail: "two blocks at 1", Since: since,
		ResumeAt: ptr(since.Add(time.Hour)), Evidence: []*api.Evidence{{Number: 1, First: a[1], Second: b[1], FirstSource: "gossip", SecondSource: "relay"}},
		LastReplicated: &eth.L2BlockRef{Hash: a[1].Envelope.ExecutionPayload.BlockHash, Number: 1}}
	require.NoError(t, f.save(want))
	got, err := f.load()
	require.NoError(t, err)
	// Compared as JSON: an empty extra-data field decodes as empty, not nil.
	wantJSON, err := json.Marshal(want)
	require.NoError(t, err)
	gotJSON, err := json.Marshal(got)
	require.NoError(t, err)
	require.JSONEq(t, string(wantJSON), string(gotJSON))
	require.Equal(t, api.StateHalted, got.State)
	require.Len(t, got.Evidence, 1)

	// Replaced whole, through a temporary file that does not outlive the write.
	want.State, want.Reason, want.Detail, want.ResumeAt = api.StateRunning, "", "", nil
	require.NoError(t, f.save(want))
	got, err = f.load()
	require.NoError(t, err)
	require.Equal(t, api.StateRunning, got.State)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "temporary files left behind: %v", entries)

	// A write interrupted before its rename (a crash) leaves a temporary file and the previous state intact.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "replicator.json.tmp-123"), []byte(`{"version":1,"sta`), 0o600))
	got, err = f.load()
	require.NoError(t, err)
	require.Equal(t, api.StateRunning, got.State)
}

func TestStateFileErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, content, err string
	}{
		{"not json", "garbage", "is corrupt"},
		{"truncated", `{"version":1,"state":"halted","rea`, "is corrupt"},
		{"unknown state", `{"version":1,"state":"paused","since":"2026-11-22T00:00:00Z"}`, `unknown state "paused"`},
		{"halted without reason", `{"version":1,"state":"halted","since":"2026-11-22T00:00:00Z"}`, "without a reason"},
		{"other version", `{"version":7,"state":"running","since":"2026-11-22T00:00:00Z"}`, "has version 7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name+".json")
			require.NoError(t, os.WriteFile(path, []byte(tc.content), 0o600))
			_, err := (&stateFile{path: path}).load()
			require.ErrorContains(t, err, path)
			require.ErrorContains(t, err, tc.err)
		})
	}
	t.Run("unreadable", func(t *testing.T) {
		path := filepath.Join(dir, "a-directory")
		require.NoError(t, os.Mkdir(path, 0o700))
		_, err := (&stateFile{path: path}).load()
		require.ErrorContains(t, err, path)
	})
	t.Run("write into a missing directory", func(t *testing.T) {
		path := filepath.Join(dir, "missing", "replicator.json")
		require.ErrorContains(t, (&stateFile{path: path}).save(&persistedState{State: api.StateRunning}), path)
	})
}

// restarted is h's node after a restart: a new replicator on the same engine (op-geth keeps its chain), L1 and
// source, at the same time, restored from the same state file.
func restarted(t *testing.T, h *harness, policy driverhook.HaltPolicy) *harness {
	t.Helper()
	h.engine.held = false // a restarted op-node takes unsafe input unless the replicator holds it
	return newHarness(t, policy, h.source.Blocks, sharing(h), withStateFile(h.rep.persist.file.path))
}

func TestHaltSurvivesRestart(t *testing.T) {
	for _, policy := range []driverhook.HaltPolicy{driverhook.HaltTimed, driverhook.HaltManual, driverhook.HaltUntilSynced} {
		t.Run(string(policy), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "replicator.json")
			blocks := testkit.BuildChain(t, testkit.RollupConfig(), 6, 0, 0)
			h := newHarness(t, policy, blocks, withStateFile(path))
			h.round()
			require.Equal(t, blocks[5].Ref, h.engine.head())
			h.rep.handle(context.Background(), request{halt: true, detail: "maintenance", done: make(chan error, 1)})
			before := h.rep.halt.Status()
			require.Equal(t, api.StateHalted, before.State)

			h.clock.AdvanceTime(10 * time.Second)
			h2 := restarted(t, h, policy)
			after := h2.rep.halt.Status()
			require.Equal(t, api.StateHalted, after.State, "a restart undid the halt")
			require.Equal(t, api.ReasonOperator, after.Reason)
			require.Equal(t, "maintenance", after.Detail)
			require.True(t, before.Since.Equal(after.Since), "since %s, before the restart %s", after.Since, before.Since)
			require.True(t, h2.engine.held, "unsafe input is held from start-up")
			rewinds := h2.engine.rewinds
			h2.round()
			require.Equal(t, rewinds+1, h2.engine.rewinds, "a node restarted halted rewinds op-geth again")
			require.Zero(t, h2.engine.head().Number)

			switch policy {
			case driverhook.HaltTimed:
				require.True(t, before.ResumeAt.Equal(after.ResumeAt), "resumeAt %s, before the restart %s", after.ResumeAt, before.ResumeAt)
				h2.clock.AdvanceTime(after.ResumeAt.Sub(h2.clock.Now()) - time.Second)
				h2.round()
				require.Equal(t, api.StateHalted, h2.rep.halt.Status().State, "resumed before its original resumeAt")
				h2.clock.AdvanceTime(time.Second)
			case driverhook.HaltManual:
				h2.clock.AdvanceTime(24 * time.Hour)
				h2.round()
				require.Equal(t, api.StateHalted, h2.rep.halt.Status().State)
				done := make(chan error, 1)
				h2.rep.handle(context.Background(), request{done: done})
				require.NoError(t, <-done)
			case driverhook.HaltUntilSynced:
				h2.round()
				require.Equal(t, api.StateHalted, h2.rep.halt.Status().State, "not synced since the restart")
				h2.rep.watch.OnEvent(context.Background(), derive.DeriverIdleEvent{Origin: h2.engine.SyncStatus().HeadL1})
			}
			h2.round()
			h2.requireRunning()
			require.False(t, h2.engine.held, "resumed, unsafe input is taken again")
			require.Equal(t, blocks[5].Ref, h2.engine.head())

			// The resume is kept too.
			st, err := h2.rep.persist.file.load()
			require.NoError(t, err)
			require.Equal(t, api.StateRunning, st.State)
		})
	}
}

func TestEvidenceSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "replicator.json")
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 4, 0, 0)
	h := newHarness(t, driverhook.HaltManual, blocks, withStateFile(path), withStore(plainStore(16)))
	h.round()
	a, b := signedChain(t, 1, 6, 0), signedChain(t, 1, 6, 5)
	h.svc.OnSignedUnsafeL2Payload(context.Background(), a[5])
	h.svc.OnSignedUnsafeL2Payload(context.Background(), b[5])
	h.round()
	h.requireHalted(api.ReasonEquivocation)
	// More evidence while halted is kept at the next round.
	c, d := signedChain(t, 1, 7, 0), signedChain(t, 1, 7, 6)
	h.svc.OnSignedUnsafeL2Payload(context.Background(), c[6])
	h.svc.OnSignedUnsafeL2Payload(context.Background(), d[6])
	h.round()

	h2 := restarted(t, h, driverhook.HaltManual)
	require.Equal(t, api.ReasonEquivocation, h2.rep.halt.Status().Reason)
	evs := h2.rep.evidence.All()
	require.Len(t, evs, 2)
	require.Equal(t, a[5].Envelope.ExecutionPayload.BlockHash, evs[0].First.Envelope.ExecutionPayload.BlockHash)
	require.Equal(t, b[5].Signature, evs[0].Second.Signature)

	done := make(chan error, 1)
	h2.rep.handle(context.Background(), request{done: done})
	require.NoError(t, <-done)
	h2.round()
	h2.requireRunning() // restored evidence is history: it does not halt again
}

// The last replicated block survives a restart: derivation replacing it while the node was down is an unsafe
// reorg. An engine that lost it in a crash (no block at that height) is not.
func TestLastReplicatedSurvivesRestart(t *testing.T) {
	cfg := testkit.RollupConfig()
	for _, tc := range []struct {
		name   string
		engine []testkit.Block // the engine's chain after the restart
		halt   bool
	}{
		{"derivation replaced it", testkit.BuildChain(t, cfg, 5, 1, 3), true},
		{"the engine lost it", testkit.BuildChain(t, cfg, 3, 0, 0), false},
		{"still there", testkit.BuildChain(t, cfg, 5, 0, 0), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "replicator.json")
			blocks := testkit.BuildChain(t, cfg, 5, 0, 0)
			h := newHarness(t, driverhook.HaltManual, blocks, withStateFile(path))
			h.round()
			require.Equal(t, blocks[4].Ref.ID(), h.rep.lastReplicated().ID())
			st, err := h.rep.persist.file.load()
			require.NoError(t, err)
			require.Equal(t, blocks[4].Ref.ID(), st.LastReplicated.ID(), "the last replicated block was not kept")

			h.engine.setChain(tc.engine)
			h.engine.setSafe(2)
			h.source.Set(blocks[:2], 2, nil) // the source says nothing about the replaced blocks
			h2 := restarted(t, h, driverhook.HaltManual)
			require.Equal(t, blocks[4].Ref.ID(), h2.rep.lastReplicated().ID())
			h2.round()
			if tc.halt {
				h2.requireHalted(api.ReasonUnsafeReorg)
				return
			}
			h2.requireRunning()
			if tc.name == "still there" {
				// Checked once since the restart: an engine dropping it now is op-node's doing again.
				h2.engine.setChain(tc.engine[:3])
				h2.round()
				h2.requireHalted(api.ReasonUnsafeReorg)
			}
		})
	}
}

// An operator's halt takes effect while a round waits on a source that answers only when its request times
// out: the round's requests are cancelled. The source here never answers on its own, so the halt returning at
// all proves it.
func TestOperatorHaltInterruptsSlowRound(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 6, 0, 0)
	h := newHarness(t, driverhook.HaltManual, blocks)
	h.engine.setSafe(0)
	h.rep.cfg.RequestTimeout = time.Hour
	ctx := context.Background()
	require.NoError(t, h.svc.Start(ctx))
	t.Cleanup(func() { require.NoError(t, h.svc.Stop(ctx)) })
	require.Eventually(t, func() bool { return h.engine.head().Number == 6 }, 5*time.Second, 10*time.Millisecond)

	h.source.Mu.Lock()
	h.source.Slow = true
	calls := h.source.Calls
	h.source.Mu.Unlock()
	require.Eventually(t, func() bool { // a round is waiting on the source
		h.clock.AdvanceTime(h.rep.cfg.PollInterval) // the next round is due
		h.source.Mu.Lock()
		defer h.source.Mu.Unlock()
		return h.source.Calls > calls
	}, 5*time.Second, 10*time.Millisecond)

	reqCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	require.NoError(t, h.client().Halt(reqCtx, ""), "the halt waited for the slow round")
	st := h.rep.halt.Status()
	require.Equal(t, api.StateHalted, st.State)
	require.Equal(t, api.ReasonOperator, st.Reason)
	require.Empty(t, st.Detail, "replicator_halt without a detail")
	require.Zero(t, h.engine.head().Number, "halt rewinds to safe")

	require.NoError(t, h.client().Resume(reqCtx), "the resume waited for a slow round")
	require.Equal(t, api.StateRunning, h.rep.halt.Status().State)
}

// Equivocation evidence that arrives while a round fetches a block halts before that block is inserted.
func TestEvidenceMidRoundHaltsBeforeInsert(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 6, 0, 0)
	h := newHarness(t, driverhook.HaltManual, blocks)
	a, b := signedChain(t, 1, 8, 0), signedChain(t, 1, 8, 5)
	h.source.OnPayload = func(n uint64) {
		if n == 4 {
			h.rep.evidence.Record(relay.NewHeld(a[7], "x", time.Time{}), relay.NewHeld(b[7], "y", time.Time{}))
		}
	}
	h.round()
	h.requireHalted(api.ReasonEquivocation)
	// Blocks are fetched ahead while earlier ones are inserted: the evidence arrives with block 4's request, at
	// the latest while block 3 is verified, and nothing is inserted after it.
	require.Less(t, h.engine.inserted, 4, "block 4 was inserted after the evidence arrived")
}

// fakeRewinder stands for op-geth's rewind over --replicator.l2.rpc.
type fakeRewinder struct {
	err   error
	calls int
}

func (f *fakeRewinder) Rewind(context.Context, eth.L2BlockRef, eth.BlockID) error {
	f.calls++
	return f.err
}

// A rewind that does not reach op-geth is retried while halted, with backoff: not at every round or event, and not
// again once it succeeded.
func TestFailedRewindRetriedWithBackoff(t *testing.T) {
	h, _ := haltedHarness(t, driverhook.HaltManual)
	rw := &fakeRewinder{err: errors.New("connection refused")}
	h.rep.halt.rewinder = rw
	h.rep.halt.rewindPending = true // as after a failed rewind
	h.round()
	require.Equal(t, 1, rw.calls)
	require.True(t, h.rep.halt.rewindPending)
	for range 5 {
		h.round()
	}
	require.Equal(t, 1, rw.calls, "retried before the backoff")
	h.clock.AdvanceTime(time.Minute)
	h.round()
	require.Equal(t, 2, rw.calls)

	rw.err = nil
	h.clock.AdvanceTime(time.Minute)
	h.round()
	require.Equal(t, 3, rw.calls)
	require.False(t, h.rep.halt.rewindPending)
	h.clock.AdvanceTime(time.Minute)
	h.round()
	require.Equal(t, 3, rw.calls, "rewound again after success")
	require.Equal(t, api.StateHalted, h.rep.halt.Status().State)
}

// Evidence that arrives while halted (a second equivocation) halts again once resumed, while its height is above
// the safe head; once L1 settled it, it ends with the halt: resumed, the replicator replicates (as after a restart).
func TestEvidenceWhileHalted(t *testing.T) {
	for _, tc := range []struct {
		name        string
		settled     bool // the safe head passed the evidence's height during the halt
		haltedAgain bool
	}{
		{name: "above the safe head at the resume halts again", haltedAgain: true},
		{name: "settled by the resume ends with the halt", settled: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := haltedHarness(t, driverhook.HaltManual)
			a, b := signedChain(t, 1, 8, 0), signedChain(t, 1, 8, 5)
			h.rep.evidence.Record(relay.NewHeld(a[7], "x", time.Time{}), relay.NewHeld(b[7], "y", time.Time{}))
			h.round()
			if tc.settled { // derivation got to block 8 during the halt
				h.engine.setChain(testkit.BuildChain(t, testkit.RollupConfig(), 8, 0, 0))
				h.engine.setSafe(8)
			}
			done := make(chan error, 1)
			h.rep.handle(context.Background(), request{done: done})
			require.NoError(t, <-done)
			h.round()
			require.Len(t, h.rep.evidence.All(), 1, "the evidence is kept")
			if tc.haltedAgain {
				h.requireHalted(api.ReasonEquivocation)
				require.Contains(t, h.rep.halt.Status().Detail, "at height 8")
				return
			}
			h.requireRunning()
		})
	}
}

// Progress alone is written at most every persistEvery (a write and two fsyncs per block cost a following node 5%
// of its CPU), and when the loop stops; new evidence and halts are written at once (other tests).
func TestProgressPersistedAtMostEveryIntervalAndAtStop(t *testing.T) {
	cfg := testkit.RollupConfig()
	path := filepath.Join(t.TempDir(), "replicator.json")
	blocks := testkit.BuildChain(t, cfg, 10, 0, 0)
	h := newHarness(t, driverhook.HaltManual, blocks, withStateFile(path))
	saved := func() eth.BlockID {
		st, err := h.rep.persist.file.load()
		require.NoError(t, err)
		require.NotNil(t, st.LastReplicated)
		return st.LastReplicated.ID()
	}
	h.source.Set(blocks, 5, nil)
	h.round()
	require.Equal(t, blocks[4].Ref.ID(), saved(), "the first progress is written at once")

	h.source.Set(blocks, 8, nil)
	h.round()
	require.Equal(t, blocks[7].Ref.ID(), h.rep.lastReplicated().ID())
	require.Equal(t, blocks[4].Ref.ID(), saved(), "written again within persistEvery")
	h.clock.AdvanceTime(persistEvery)
	h.round()
	require.Equal(t, blocks[7].Ref.ID(), saved(), "progress older than persistEvery is written")

	h.source.Set(blocks, 10, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.rep.run(ctx)
	}()
	require.Eventually(t, func() bool { return h.rep.lastReplicated().Number == 10 }, 5*time.Second, time.Millisecond)
	cancel()
	<-done
	require.Equal(t, blocks[9].Ref.ID(), saved(), "the loop writes its progress when it stops")
}

// A progress write is the progress writer's: the loop hands it over and goes on with the next round while the file
// is still being written (here: held), and a halt written meanwhile is not replaced by the older progress.
func TestProgressIsWrittenOffTheLoopAndNeverOverAHalt(t *testing.T) {
	cfg := testkit.RollupConfig()
	path := filepath.Join(t.TempDir(), "replicator.json")
	blocks := testkit.BuildChain(t, cfg, 10, 0, 0)
	h := newHarness(t, driverhook.HaltManual, blocks, withStateFile(path))
	h.rep.persist.progress = startProgressWriter(h.rep.persist.file, h.rep.log, h.rep.metrics)
	h.source.Set(blocks, 5, nil)

	h.rep.persist.file.mu.Lock() // a write on its way
	rounds := make(chan time.Duration)
	go func() { rounds <- h.round() }()
	select {
	case <-rounds:
	case <-time.After(5 * time.Second):
		t.Fatal("the round waited for the state file")
	}
	require.Equal(t, blocks[4].Ref, h.rep.lastReplicated())

	// A halt is written by the loop itself, once the file is free, and the progress waiting behind it is older.
	halted := make(chan struct{})
	go func() {
		defer close(halted)
		h.rep.haltNow(context.Background(), api.ReasonHeadMismatch, "test")
	}()
	h.rep.persist.file.mu.Unlock()
	<-halted
	require.NoError(t, h.rep.persist.progress.Stop(context.Background()))
	st, err := h.rep.persist.file.load()
	require.NoError(t, err)
	require.Equal(t, api.StateHalted, st.State, "the progress taken before the halt must not replace it")
}

func TestSaveInOrderKeepsTheLaterSnapshot(t *testing.T) {
	f := &stateFile{path: filepath.Join(t.TempDir(), "replicator.json")}
	require.NoError(t, f.saveInOrder(2, &persistedState{State: api.StateHalted, Reason: api.ReasonHeadMismatch}))
	require.NoError(t, f.saveInOrder(1, &persistedState{State: api.StateRunning}))
	st, err := f.load()
	require.NoError(t, err)
	require.Equal(t, api.StateHalted, st.State)
	require.NoError(t, f.saveInOrder(3, &persistedState{State: api.StateRunning}))
	st, err = f.load()
	require.NoError(t, err)
	require.Equal(t, api.StateRunning, st.State)
}

// A halt whose state-file write fails is not forgotten: the write is retried every round, replicator_status shows
// why meanwhile, and once the file can be written it holds the halt.
func TestHaltStateWriteRetried(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 6, 0, 0)
	dir := filepath.Join(t.TempDir(), "not-yet")
	path := filepath.Join(dir, "state.json")
	h := newHarness(t, driverhook.HaltManual, blocks, withStateFile(path))
	h.round()

	done := make(chan error, 1)
	h.rep.handle(context.Background(), request{halt: true, detail: "disk full", done: done})
	require.NoError(t, <-done)
	st, err := h.svc.Status(context.Background())
	require.NoError(t, err)
	require.NotEmpty(t, st.StateFileError, "a failed state-file write must be shown")
	h.round()
	require.NoFileExists(t, path)

	require.NoError(t, os.MkdirAll(dir, 0o755))
	h.round()
	saved, err := (&stateFile{path: path}).load()
	require.NoError(t, err)
	require.NotNil(t, saved, "the halt was not written once the file could be")
	require.Equal(t, api.StateHalted, saved.State)
	require.Equal(t, "disk full", saved.Detail)
	st, err = h.svc.Status(context.Background())
	require.NoError(t, err)
	require.Empty(t, st.StateFileError)
}
