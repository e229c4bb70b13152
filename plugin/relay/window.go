package relay

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/cockroachdb/pebble"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/log"

	"github.com/op-replicator/op-replicator/driverhook"
)

// The disk window (--replicator.relay.window.dir): the store keeps its newest heights in memory and spills the
// older blocks it holds to a pebble database, each as its JSON (what Held.JSON returns, so that catch-up reads
// serve it as read, without decoding it) under its block hash. It is a cache of blocks this run verified: it is
// wiped when it is opened, and nothing in it is trusted from a previous run. A block that cannot be read back is
// not held: the error is logged and counted (RecordRelayWindowDiskError), and the caller sees ErrNotHeld.

// WindowSubdir is the directory, inside --replicator.relay.window.dir, that the disk window owns and wipes at start.
const WindowSubdir = driverhook.RelayWindowSubdir

// ErrNotHeld is a spilled block that could not be read from the disk window (or was evicted meanwhile): the
// block is treated as not held.
var ErrNotHeld = errors.New("relay: block not held")

// diskWindow is the pebble database of the spilled blocks.
type diskWindow struct {
	log     log.Logger
	metrics Metricer

	mu sync.RWMutex // Close against the reads and writes still under way
	db windowDB     // nil once closed
}

// windowDB is what the window uses of a pebble database (tests put failures in between).
type windowDB interface {
	Get(key []byte) ([]byte, io.Closer, error)
	Set(key, value []byte, opts *pebble.WriteOptions) error
	Delete(key []byte, opts *pebble.WriteOptions) error
	Close() error
}

// openDiskWindow wipes dir/WindowSubdir and opens an empty database there.
func openDiskWindow(dir string, lgr log.Logger, m Metricer) (*diskWindow, error) {
	path := filepath.Join(dir, WindowSubdir)
	if err := os.RemoveAll(path); err != nil {
		return nil, fmt.Errorf("relay window: wiping %s: %w", path, err)
	}
	if err := os.MkdirAll(path, 0o755); err != nil {
		return nil, fmt.Errorf("relay window: %w", err)
	}
	lgr = lgr.New("window", path)
	db, err := pebble.Open(path, &pebble.Options{
		// A cache: nothing is recovered after a crash (it is wiped at start), so no write-ahead log and no syncs.
		DisableWAL: true,
		Logger:     pebbleLogger{lgr},
	})
	if err != nil {
		return nil, fmt.Errorf("relay window: opening %s: %w", path, err)
	}
	return &diskWindow{log: lgr, metrics: m, db: db}, nil
}

// put writes a block's JSON under its hash.
func (d *diskWindow) put(hash common.Hash, msg []byte) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.db == nil {
		return pebble.ErrClosed
	}
	return d.db.Set(hash[:], msg, pebble.NoSync)
}

// get reads a block's JSON (a copy, the caller's). Any failure is ErrNotHeld; a disk error is logged and counted,
// a block evicted meanwhile (or a window closed at Stop) is not an error of the disk.
func (d *diskWindow) get(hash common.Hash) ([]byte, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.db == nil {
		return nil, fmt.Errorf("%w: %s: the window is closed", ErrNotHeld, hash)
	}
	v, closer, err := d.db.Get(hash[:])
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		return nil, fmt.Errorf("%w: %s: evicted", ErrNotHeld, hash)
	case err != nil:
		return nil, d.failed("Reading a spilled block failed", hash, err)
	}
	msg := append([]byte(nil), v...)
	if err := closer.Close(); err != nil {
		return nil, d.failed("Reading a spilled block failed", hash, err)
	}
	return msg, nil
}

// delete removes a block evicted from the window.
func (d *diskWindow) delete(hash common.Hash) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.db == nil {
		return
	}
	if err := d.db.Delete(hash[:], pebble.NoSync); err != nil {
		_ = d.failed("Deleting an evicted block failed", hash, err)
	}
}

// corrupt is a spilled block whose JSON does not decode to the block written: not held.
func (d *diskWindow) corrupt(hash common.Hash, err error) error {
	if err == nil {
		err = errors.New("another block was read back")
	}
	return d.failed("A spilled block read back wrong", hash, err)
}

// failed logs and counts a disk error, and returns it as ErrNotHeld.
func (d *diskWindow) failed(msg string, hash common.Hash, err error) error {
	d.metrics.RecordRelayWindowDiskError()
	d.log.Error(msg, "block", hash, "err", err)
	return fmt.Errorf("%w: %s: %w", ErrNotHeld, hash, err)
}

// close closes the database; reads after it are misses.
func (d *diskWindow) close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.db == nil {
		return nil
	}
	err := d.db.Close()
	d.db = nil
	return err
}

// pebbleLogger has pebble log to the node's log. Pebble calls Fatalf on broken invariants of its own state (a
// failed MANIFEST write among them) and does not expect it to return: it is logged, then panics, as pebble's
// default logger would exit.
type pebbleLogger struct{ log log.Logger }

func (l pebbleLogger) Infof(format string, args ...any)  { l.log.Debug(fmt.Sprintf(format, args...)) }
func (l pebbleLogger) Errorf(format string, args ...any) { l.log.Error(fmt.Sprintf(format, args...)) }
func (l pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.log.Error("Relay window database failed", "err", msg)
	panic("relay window: " + msg)
}
