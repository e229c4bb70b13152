package plugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/ethereum-optimism/optimism/op-service/eth"
	"github.com/op-replicator/op-replicator/plugin/api"
)

// stateVersion is the state file's format version.
const stateVersion = 1

// persistedState is what survives a restart (--replicator.state.path): the halt state, the equivocation
// evidence, and the last replicated block, so that derivation replacing blocks replicated before the restart is
// still seen as an unsafe reorg.
type persistedState struct {
	Version int        `json:"version"`
	State   api.State  `json:"state"`
	Reason  api.Reason `json:"reason,omitempty"`
	Detail  string     `json:"detail,omitempty"`
	// Since is when the current state began.
	Since time.Time `json:"since"`
	// ResumeAt is when a timed halt ends.
	ResumeAt       *time.Time      `json:"resumeAt,omitempty"`
	Evidence       []*api.Evidence `json:"evidence,omitempty"`
	LastReplicated *eth.L2BlockRef `json:"lastReplicated,omitempty"`
}

// lastReplicated is the last replicated block the state names, zero if none.
func (st *persistedState) lastReplicated() eth.L2BlockRef {
	if st.LastReplicated == nil {
		return eth.L2BlockRef{}
	}
	return *st.LastReplicated
}

// stateFile keeps persistedState in one file, replaced atomically: a crash at any point leaves either the previous
// state or the new one.
type stateFile struct {
	path string

	mu      sync.Mutex // one write at a time
	written uint64     // the number of the last snapshot written by saveInOrder
}

// saveInOrder writes st, the loop's snapshot number seq, unless a later snapshot was written already: progress is
// written on a goroutine of its own (progressWriter), and must never replace a halt written after it.
func (f *stateFile) saveInOrder(seq uint64, st *persistedState) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if seq <= f.written {
		return nil
	}
	if err := f.save(st); err != nil {
		return err
	}
	f.written = seq
	return nil
}

// load reads the state file. A missing file is no state (nil, nil): a first start. Anything else that cannot be
// read or decoded is an error naming the file: the operator must look at it, not have a halt silently forgotten.
func (f *stateFile) load() (*persistedState, error) {
	data, err := os.ReadFile(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("replicator state file %s: %w", f.path, err)
	}
	return f.decode(data)
}

// decode parses and checks the state file's contents, data. Errors name the file.
func (f *stateFile) decode(data []byte) (*persistedState, error) {
	var st persistedState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("replicator state file %s is corrupt (move it away to start without the halt state it held): %w", f.path, err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("replicator state file %s has version %d, this op-node reads version %d", f.path, st.Version, stateVersion)
	}
	switch st.State {
	case api.StateRunning:
	case api.StateHalted:
		if st.Reason == "" {
			return nil, fmt.Errorf("replicator state file %s is corrupt: halted without a reason", f.path)
		}
	default:
		return nil, fmt.Errorf("replicator state file %s is corrupt: unknown state %q", f.path, st.State)
	}
	return &st, nil
}

// save writes the state to a temporary file next to the state file, syncs it, renames it over the state file and
// syncs the directory.
func (f *stateFile) save(st *persistedState) error {
	data, err := f.encode(st)
	if err != nil {
		return err
	}
	dir := filepath.Dir(f.path)
	tmp, err := os.CreateTemp(dir, filepath.Base(f.path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("replicator state file %s: %w", f.path, err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing left to remove
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("replicator state file %s: write: %w", f.path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("replicator state file %s: sync: %w", f.path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("replicator state file %s: %w", f.path, err)
	}
	if err := os.Rename(tmp.Name(), f.path); err != nil {
		return fmt.Errorf("replicator state file %s: rename: %w", f.path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("replicator state file %s: %w", f.path, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("replicator state file %s: sync directory: %w", f.path, err)
	}
	return nil
}

// encode is the state file's contents for st (at the current version).
func (f *stateFile) encode(st *persistedState) ([]byte, error) {
	st.Version = stateVersion
	return json.MarshalIndent(st, "", "  ")
}
