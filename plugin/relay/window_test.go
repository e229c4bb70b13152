package relay

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/log"
	"github.com/ethereum/go-ethereum/rpc"
	"github.com/stretchr/testify/require"

	"github.com/ethereum-optimism/optimism/op-service/eth"
	opsigner "github.com/ethereum-optimism/optimism/op-service/signer"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/api"
)

// storeMode is how a test store holds its window: all in memory (memory 0), or on disk but for its newest memory
// heights.
type storeMode struct {
	name   string
	memory int
}

// storeModes are the modes the store's tests run in: on disk, only the newest height is in memory, so that nearly
// every block the tests look at was spilled.
var storeModes = []storeMode{{name: "memory"}, {name: "disk", memory: 1}}

// inModes runs f in every store mode.
func inModes(t *testing.T, f func(t *testing.T, mode storeMode)) {
	for _, mode := range storeModes {
		t.Run(mode.name, func(t *testing.T) { f(t, mode) })
	}
}

// store is a store of window heights in this mode (its window on disk in a temporary directory, closed at the
// test's end).
func (m storeMode) store(t testing.TB, window int, status SyncStatus, metrics Metricer) *Store {
	s := NewStore(window, log.Root(), status, metrics)
	if m.memory > 0 {
		require.NoError(t, s.SpillTo(t.TempDir(), m.memory))
		t.Cleanup(func() { require.NoError(t, s.Close()) })
	}
	return s
}

// weightyChain is n blocks of about size bytes each (one transaction of that size).
func weightyChain(n, size int) []*opsigner.SignedExecutionPayloadEnvelope {
	out := make([]*opsigner.SignedExecutionPayloadEnvelope, 0, n)
	for i := 1; i <= n; i++ {
		s := envelopeAt(uint64(i), 0)
		tx := make([]byte, size)
		for j := range tx {
			tx[j] = byte(i*31 + j)
		}
		s.Envelope.ExecutionPayload.Transactions = []eth.Data{tx}
		out = append(out, s)
	}
	return out
}

// diskStats counts the disk window's errors.
type diskStats struct {
	NoopMetrics
	diskErrors atomic.Int64
}

func (d *diskStats) RecordRelayWindowDiskError() { d.diskErrors.Add(1) }

// Spilled blocks are served byte for byte as held in memory: by number and by hash, to relay_envelopeByNumber, and to
// a subscriber catching up from the window's start.
func TestWindowOnDiskServesSpilledBlocks(t *testing.T) {
	const n, memory = 40, 8
	blocks := weightyChain(n, 2000)
	mem := newTestStore(64)
	disk := storeMode{name: "disk", memory: memory}.store(t, 64, nil, NoopMetrics{})
	for _, b := range blocks {
		for _, s := range []*Store{mem, disk} {
			_, added, _, err := s.Add(b, "gossip", time.Now())
			require.NoError(t, err)
			require.True(t, added)
		}
	}
	for i, b := range blocks {
		want, err := mem.Latest(uint64(i + 1)).JSON()
		require.NoError(t, err)
		held := disk.Latest(uint64(i + 1))
		require.Equal(t, i < n-memory, held.Spilled(), "block %d: only the newest %d heights stay in memory", i+1, memory)
		got, err := held.JSON()
		require.NoError(t, err)
		require.Equal(t, string(want), string(got), "block %d by number", i+1)
		got, err = disk.ByHash(hashOf(b)).JSON()
		require.NoError(t, err)
		require.Equal(t, string(want), string(got), "block %d by hash", i+1)
		signed, err := held.Signed()
		require.NoError(t, err)
		again, err := json.Marshal(signed)
		require.NoError(t, err)
		require.Equal(t, string(want), string(again), "block %d decoded from disk", i+1)
	}
	memBytes, diskBytes := disk.WindowBytes()
	require.Positive(t, diskBytes)
	require.Less(t, memBytes, int64(memory+1)*3000, "only the newest heights are counted in memory")

	cfg := driverhook.RelayConfig{MaxSubscribers: 4, MaxSubscribersPerIP: 4, SendQueue: 64, Window: 64}
	memRelay, _ := startRelayOn(t, cfg, mem, NoopMetrics{})
	diskRelay, _ := startRelayOn(t, cfg, disk, NoopMetrics{})
	served := func(r *Server) (byNumber, caughtUp []string) {
		c, err := rpc.Dial(r.wsURL())
		require.NoError(t, err)
		defer c.Close()
		for i := range blocks {
			var raw json.RawMessage
			require.NoError(t, c.Call(&raw, "relay_envelopeByNumber", hexutil.Uint64(i+1)))
			byNumber = append(byNumber, string(raw))
		}
		ch := make(chan json.RawMessage, n)
		sub, err := c.Subscribe(context.Background(), api.RelayNamespace, ch, "envelopes", hexutil.Uint64(1))
		require.NoError(t, err)
		defer sub.Unsubscribe()
		for range blocks {
			select {
			case raw := <-ch:
				caughtUp = append(caughtUp, string(raw))
			case <-time.After(5 * time.Second):
				t.Fatal("catch-up stalled")
			}
		}
		return byNumber, caughtUp
	}
	wantByNumber, wantCaughtUp := served(memRelay)
	gotByNumber, gotCaughtUp := served(diskRelay)
	require.Equal(t, wantByNumber, gotByNumber, "relay_envelopeByNumber")
	require.Equal(t, wantCaughtUp, gotCaughtUp, "a subscriber catching up")
	require.Equal(t, wantByNumber, wantCaughtUp)
}

// Only heights below the newest memory ones are spilled, whatever order heights arrive in (a gap filled late, a
// second block at a spilled height), and every block evicted from the window is deleted from disk.
func TestWindowOnDiskSpillsBelowMemoryAndEvictsFromDisk(t *testing.T) {
	const window, memory = 6, 2
	s := storeMode{name: "disk", memory: memory}.store(t, window, nil, NoopMetrics{})
	add := func(n uint64, v byte) {
		_, added, _, err := s.Add(envelopeAt(n, v), "relay", time.Now())
		require.NoError(t, err)
		require.True(t, added)
	}
	onDisk := func(n uint64, v byte) bool {
		_, closer, err := s.disk.db.Get(hashOf(envelopeAt(n, v)).Bytes())
		if errors.Is(err, pebble.ErrNotFound) {
			return false
		}
		require.NoError(t, err)
		require.NoError(t, closer.Close())
		return true
	}
	check := func(spilled ...uint64) {
		t.Helper()
		s.mu.Lock()
		heights := append([]uint64(nil), s.heights...)
		s.mu.Unlock()
		want := map[uint64]bool{}
		for _, n := range spilled {
			want[n] = true
		}
		var diskBytes int64
		for _, n := range heights {
			for _, h := range s.ByNumber(n) {
				require.Equal(t, want[n], h.Spilled(), "height %d", n)
				if h.Spilled() {
					diskBytes += h.size
				}
			}
		}
		_, got := s.WindowBytes()
		require.Equal(t, diskBytes, got, "the disk's bytes are the spilled blocks' JSON")
	}
	for _, n := range []uint64{10, 11, 13, 14} {
		add(n, 0)
	}
	check(10, 11)
	add(12, 0) // a gap filled below the newest two
	check(10, 11, 12)
	add(11, 1) // a second block at a spilled height
	check(10, 11, 12)
	require.True(t, onDisk(11, 1))
	add(15, 0)
	check(10, 11, 12, 13)
	add(16, 0) // the window is full: 10 goes
	check(11, 12, 13, 14)
	require.False(t, onDisk(10, 0), "evicted from disk")
	add(20, 0)
	require.False(t, onDisk(11, 0))
	require.False(t, onDisk(11, 1), "every block at an evicted height")
	require.True(t, onDisk(12, 0))
	check(12, 13, 14, 15)
}

// failingDB fails every read while fail is set.
type failingDB struct {
	windowDB
	fail atomic.Bool
}

func (f *failingDB) Get(key []byte) ([]byte, io.Closer, error) {
	if f.fail.Load() {
		return nil, nil, errors.New("injected read error")
	}
	return f.windowDB.Get(key)
}

// A spilled block that cannot be read is not held: a miss for every reader (by number, evidence, subscribers),
// logged and counted, never a panic or another block.
func TestWindowOnDiskReadErrorIsAMiss(t *testing.T) {
	m := &diskStats{}
	s := storeMode{name: "disk", memory: 1}.store(t, 16, nil, m)
	for n := uint64(1); n <= 4; n++ {
		_, _, _, err := s.Add(envelopeAt(n, 0), "gossip", time.Now())
		require.NoError(t, err)
	}
	db := &failingDB{windowDB: s.disk.db}
	s.disk.db = db
	db.fail.Store(true)

	held := s.Latest(2)
	require.True(t, held.Spilled())
	_, err := held.JSON()
	require.ErrorIs(t, err, ErrNotHeld)
	_, err = held.Signed()
	require.ErrorIs(t, err, ErrNotHeld)
	require.Equal(t, int64(2), m.diskErrors.Load(), "each failed read is counted")

	_, _, conflicts, err := s.Add(envelopeAt(2, 1), "relay", time.Now())
	require.NoError(t, err)
	require.Empty(t, conflicts, "an unreadable block is not held, so not evidence")

	r, _ := startRelayOn(t, driverhook.RelayConfig{MaxSubscribers: 4, MaxSubscribersPerIP: 4, SendQueue: 16, Window: 16}, s, m)
	c := relayClient(t, r)
	msg, err := c.EnvelopeByNumberRaw(context.Background(), 1)
	require.Error(t, err, "served as a gap (null)")
	require.Nil(t, msg)
	ch, sub, err := subscribe(t, r, 1)
	require.NoError(t, err)
	defer sub.Unsubscribe()
	require.Equal(t, hashOf(envelopeAt(4, 0)), hashOf(receive(t, ch)), "the unreadable blocks are skipped, the held one is sent")

	db.fail.Store(false)
	got, err := s.Latest(2).Signed()
	require.NoError(t, err, "read again once the disk answers")
	require.Equal(t, hashOf(envelopeAt(2, 1)), hashOf(got), "the latest arrived at 2")
}

// A spilled block whose bytes on disk are not the block written is not held, and never served as another block.
func TestWindowOnDiskWrongBytesAreNotABlock(t *testing.T) {
	m := &diskStats{}
	s := storeMode{name: "disk", memory: 1}.store(t, 16, nil, m)
	for n := uint64(1); n <= 3; n++ {
		_, _, _, err := s.Add(envelopeAt(n, 0), "gossip", time.Now())
		require.NoError(t, err)
	}
	other, err := json.Marshal(envelopeAt(7, 0))
	require.NoError(t, err)
	require.NoError(t, s.disk.put(hashOf(envelopeAt(1, 0)), other))
	_, err = s.Latest(1).Signed()
	require.ErrorIs(t, err, ErrNotHeld)
	require.Equal(t, int64(1), m.diskErrors.Load())
}

// The window's directory is wiped at start (nothing is trusted from a previous run), and only the subdirectory it
// owns; after Close spilled blocks are misses.
func TestWindowOnDiskWipedAtStartAndClosed(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, WindowSubdir, "stale")
	require.NoError(t, os.MkdirAll(stale, 0o755))
	sibling := filepath.Join(dir, "keep")
	require.NoError(t, os.WriteFile(sibling, []byte("x"), 0o600))

	s := newTestStore(8)
	for n := uint64(1); n <= 4; n++ {
		_, _, _, err := s.Add(envelopeAt(n, 0), "gossip", time.Now())
		require.NoError(t, err)
	}
	require.NoError(t, s.SpillTo(dir, 2))
	require.NoDirExists(t, stale)
	require.FileExists(t, sibling)
	require.True(t, s.Latest(1).Spilled(), "blocks held before are spilled too")
	require.False(t, s.Latest(3).Spilled())
	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "idempotent")
	_, err := s.Latest(1).JSON()
	require.ErrorIs(t, err, ErrNotHeld)
	_, _, _, err = s.Add(envelopeAt(5, 0), "gossip", time.Now())
	require.NoError(t, err, "a closed window spills nothing more")
}
