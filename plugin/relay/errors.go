package relay

import "errors"

// Why a block from another node is refused. A refused block is never held, never evidence, and never halts
// anything; the replicator counts these (by kind) on its errors metric.
var (
	// ErrBadInput: a malformed message (not a signed block, a block whose hash is not its header's, the wrong
	// block for the height asked).
	ErrBadInput = errors.New("malformed block from relay")
	// ErrBadSignature: a block not signed by the unsafe-block signer.
	ErrBadSignature = errors.New("not signed by the unsafe-block signer")
	// ErrUnavailable: the relay could not be reached, failed, or fell silent (retried with backoff).
	ErrUnavailable = errors.New("relay unavailable")
	// ErrNoBlockYet: the client's first subscription is still being made, or has not delivered its first block: the
	// relay has no head to report yet, and has not failed either (a node starting up). Not a failure, not counted.
	ErrNoBlockYet = errors.New("no block from the relay yet")
)

// Why the store refuses a verified signed block.
var (
	// ErrReplay: the block is at or below op-node's safe head. L1 settled that height; a signed block there is a
	// replay of history (possibly of a legitimate unsafe reorg long since settled), not equivocation.
	ErrReplay = errors.New("signed block at or below the safe head: history L1 already settled")
	// ErrHeightFull: the height holds maxEnvelopesPerHeight blocks already (the first conflicting pair was evidence).
	ErrHeightFull = errors.New("height holds the most signed blocks allowed")
	// ErrBelowWindow: the window is full and the block is below every height held; holding it would evict a
	// higher one.
	ErrBelowWindow = errors.New("signed block below the heights held")
)

// Errors a downstream node gets when the relay refuses it.
var (
	ErrRelayFull      = errors.New("relay: too many subscribers")
	ErrRelayFullForIP = errors.New("relay: too many subscribers from this address")
	// ErrRelayTooLarge: the block asked for is above the relay's message size limit.
	ErrRelayTooLarge = errors.New("relay: block above the message size limit")
)
