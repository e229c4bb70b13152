package relay

import (
	"slices"
)

// Label values of where the window's bytes are (RecordRelayWindowBytes).
const (
	WindowInMemory = "memory"
	WindowOnDisk   = "disk"
)

// SpillTo gives the store a disk window in dir (--replicator.relay.window.dir, wiped now): from then on it keeps
// only the newest memory heights in memory (--replicator.relay.window.memory), and spills the blocks it holds
// below them to disk, already held ones included. Close closes it.
func (s *Store) SpillTo(dir string, memory int) error {
	d, err := openDiskWindow(dir, s.log, s.metrics)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.disk != nil {
		_ = d.close()
		return nil
	}
	s.disk, s.memory = d, max(memory, 1)
	for i := 0; i < len(s.heights)-s.memory; i++ {
		s.spillHeight(s.heights[i])
	}
	s.recordBytes()
	s.log.Info("Relay window spills to disk", "dir", dir, "window", s.window, "memory", s.memory)
	return nil
}

// Close closes the disk window, if any (the service's Stop). Spilled blocks are not held from then on, and no
// more are spilled.
func (s *Store) Close() error {
	s.mu.Lock()
	d := s.disk
	s.disk = nil
	s.mu.Unlock()
	if d == nil {
		return nil
	}
	return d.close()
}

// WindowBytes returns the bytes of the blocks held in memory (as heldSize estimates them: decoded, without the JSON
// a relayed block also keeps) and on disk (their JSON).
func (s *Store) WindowBytes() (memory, disk int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.memBytes, s.diskLen
}

// spillBelowMemory keeps the invariant that the blocks at every height below the newest s.memory are spilled,
// after height n was added to (and the window was trimmed). Only two heights can be left unspilled by that: n
// itself, if it is below the newest s.memory, and the height that n pushed out of them.
func (s *Store) spillBelowMemory(n uint64) {
	if s.disk == nil {
		return
	}
	boundary := len(s.heights) - s.memory // heights[:boundary] are spilled
	if i, ok := slices.BinarySearch(s.heights, n); ok && i < boundary {
		s.spillHeight(n)
	}
	if boundary > 0 {
		s.spillHeight(s.heights[boundary-1])
	}
}

// spillHeight spills the blocks held at height n not spilled yet. A block that cannot be written stays in memory
// (logged and counted): it is still the block the store holds, only not on disk.
func (s *Store) spillHeight(n uint64) {
	for i, h := range s.byNumber[n] {
		if h.Spilled() {
			continue
		}
		msg, err := h.JSON()
		if err == nil {
			err = s.disk.put(h.Hash(), msg)
		}
		if err != nil {
			s.metrics.RecordRelayWindowDiskError()
			s.log.Error("Spilling a held block to the relay window on disk failed: it stays in memory",
				"block", h.ID(), "err", err)
			continue
		}
		spilled := &Held{Source: h.Source, Arrived: h.Arrived, History: h.History, number: h.number, hash: h.hash,
			parent: h.parent, disk: s.disk, size: int64(len(msg))}
		s.byNumber[n][i] = spilled
		s.byHash[h.Hash()] = spilled
		s.memBytes -= h.size
		s.diskLen += spilled.size
	}
}

// forget accounts for a block evicted from the window, and deletes it from disk if it is there.
func (s *Store) forget(h *Held) {
	if !h.Spilled() {
		s.memBytes -= h.size
		return
	}
	s.diskLen -= h.size
	if s.disk != nil {
		s.disk.delete(h.Hash())
	}
}

// loaded returns the blocks held at a height (the conflicts Add returns) with the spilled ones read into memory: the
// evidence they may become needs the blocks. A block that cannot be read is not held (logged and counted), so it
// is not evidence either.
func (s *Store) loaded(held []*Held) []*Held {
	out := make([]*Held, 0, len(held))
	for _, h := range held {
		if !h.Spilled() {
			out = append(out, h)
			continue
		}
		signed, err := h.Signed()
		if err != nil {
			continue
		}
		c := NewHeld(signed, h.Source, h.Arrived)
		c.History = h.History
		out = append(out, c)
	}
	return out
}

// recordBytes reports the window's bytes in memory and on disk.
func (s *Store) recordBytes() {
	s.metrics.RecordRelayWindowBytes(WindowInMemory, s.memBytes)
	s.metrics.RecordRelayWindowBytes(WindowOnDisk, s.diskLen)
}
