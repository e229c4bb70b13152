package plugin

import (
	"errors"

	"github.com/op-replicator/op-replicator/plugin/relay"
	"github.com/op-replicator/op-replicator/plugin/source"
)

// Errors that end a round without halting (anything that halts is a *Disagreement), each wrapping its cause with
// %w. The round retries; errorKind names the error on the errors metric.
var (
	// errWait: the block cannot be judged yet (the source has no next block, or its L1 origin is beyond our L1
	// view); try again later. Not an error anyone counts.
	errWait = errors.New("not yet verifiable")
	// errStale: the local unsafe head moved while the block was prepared (gossip, derivation); start over.
	errStale = errors.New("local unsafe head moved")
	// errNotOnUnsafeHead (with errStale): op-node's engine controller refused a block whose parent is not its unsafe
	// head. The next round starts from op-node's unsafe head, not op-geth's (localHead).
	errNotOnUnsafeHead = errors.New("its parent is not op-node's unsafe head")
	// errSource: no source answered (every one failed or timed out); retried with backoff.
	errSource = errors.New("source unavailable")
	// errL1: our own L1 view could not be read.
	errL1 = errors.New("L1 view unavailable")
	// errEngine: the local engine failed transiently.
	errEngine = errors.New("local engine error")
	// errRewind: a halt could not rewind op-geth to the safe head yet; retried while halted.
	errRewind = errors.New("rewind to the safe head failed")
	// errState: the state file could not be written.
	errState = errors.New("state file not written")
)

// ErrKind is the label of op_node_default_replicator_errors_total: what kind of error the replicator met and did
// not halt on. Disagreements are counted as halts instead.
type ErrKind string

const (
	ErrKindSource       ErrKind = "source"        // the source failed or timed out (retried with backoff)
	ErrKindL1           ErrKind = "l1"            // our own L1 view could not be read
	ErrKindEngine       ErrKind = "engine"        // the local engine failed transiently
	ErrKindStale        ErrKind = "stale"         // the unsafe head moved under us; the block was not inserted
	ErrKindBadInput     ErrKind = "bad-input"     // a malformed response from a source or relay
	ErrKindBadSignature ErrKind = "bad-signature" // a block from a relay not signed by the sequencer
	ErrKindRewind       ErrKind = "rewind"        // a halt could not rewind op-geth to the safe head yet (retried while halted)
	ErrKindState        ErrKind = "state"         // the state file could not be written
	// ErrKindInternal: an error none of the sentinels classifies. None is expected; one counted here is a defect.
	ErrKindInternal ErrKind = "internal"
)

// errorKinds maps sentinels to kinds, the first match winning: a malformed block is bad input even when no
// source had a good one (errSource wraps it too).
var errorKinds = []struct {
	sentinel error
	kind     ErrKind
}{
	{errStale, ErrKindStale},
	{errL1, ErrKindL1},
	{errEngine, ErrKindEngine},
	{relay.ErrBadSignature, ErrKindBadSignature},
	{source.ErrBadInput, ErrKindBadInput},
	{relay.ErrBadInput, ErrKindBadInput},
	{errSource, ErrKindSource},
	{relay.ErrUnavailable, ErrKindSource},
	{errRewind, ErrKindRewind},
	{errState, ErrKindState},
}

// ErrKinds lists every kind, so that each label exists from the start.
var ErrKinds = []ErrKind{ErrKindSource, ErrKindL1, ErrKindEngine, ErrKindStale, ErrKindBadInput, ErrKindBadSignature,
	ErrKindRewind, ErrKindState, ErrKindInternal}

// errorKind classifies an error by the sentinels it wraps.
func errorKind(err error) ErrKind {
	for _, k := range errorKinds {
		if errors.Is(err, k.sentinel) {
			return k.kind
		}
	}
	return ErrKindInternal
}
