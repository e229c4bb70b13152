package api

import (
	"time"

	"github.com/ethereum/go-ethereum/common"

	"github.com/ethereum-optimism/optimism/op-service/eth"
	opsigner "github.com/ethereum-optimism/optimism/op-service/signer"
)

// State is the replicator's state.
type State string

const (
	// StateRunning: blocks from the source are verified and inserted as unsafe.
	StateRunning State = "running"
	// StateHalted: the unsafe head was rewound to the safe head and nothing is replicated (nor taken from
	// gossip) until the halt policy resumes the replicator. The node is a plain L1 verifier meanwhile.
	StateHalted State = "halted"
)

// Reason says why the replicator halted. Logs, metrics labels and replicator_status use the same words.
type Reason string

const (
	// ReasonHeadMismatch: the local unsafe head is not the source's block at that height, or the source's next
	// block does not build on it (the sequencer's chain and ours disagree).
	ReasonHeadMismatch Reason = "head-mismatch"
	// ReasonInvalidPayload: the local engine executed the source's block and found it INVALID.
	ReasonInvalidPayload Reason = "invalid-payload"
	// ReasonExecutionMismatch: after insertion, the local block hash or state root differs from the source's. The
	// engine's VALID already proves they match, so no halt has this reason any more; it stays listed so that
	// metrics labels, dashboards and alerts that name it keep working.
	ReasonExecutionMismatch Reason = "execution-mismatch"
	// ReasonL1OriginMismatch: the block's L1 origin is not the block our own L1 view has at that height, or is
	// neither the parent's origin nor its successor.
	ReasonL1OriginMismatch Reason = "l1-origin-mismatch"
	// ReasonAttributesMismatch: the block is not what derivation would build on its parent from its L1 origin
	// (timestamp, prev-randao, deposits, L1-info fields, gas limit, fee recipient, sequencer drift, ...).
	ReasonAttributesMismatch Reason = "attributes-mismatch"
	// ReasonL1OriginReorged: an L1 reorg removed the L1 origin of an unsafe block we hold.
	ReasonL1OriginReorged Reason = "l1-origin-reorged"
	// ReasonUnsafeReorg: op-node itself replaced or dropped replicated unsafe blocks (derivation from L1
	// contradicted them, or the engine was reset below them).
	ReasonUnsafeReorg Reason = "unsafe-reorg"
	// ReasonEquivocation: two different blocks at one height, both validly signed by the sequencer (from any
	// sources); both are kept as evidence (replicator_equivocationEvidence).
	ReasonEquivocation Reason = "equivocation"
	// ReasonOperator: an operator called replicator_halt.
	ReasonOperator Reason = "operator"
)

// Reasons lists every halt reason (for metrics, so each label exists from the start).
var Reasons = []Reason{ReasonHeadMismatch, ReasonInvalidPayload, ReasonExecutionMismatch, ReasonL1OriginMismatch,
	ReasonAttributesMismatch, ReasonL1OriginReorged, ReasonUnsafeReorg, ReasonEquivocation, ReasonOperator}

// Status is the result of replicator_status.
type Status struct {
	State      State     `json:"state"`
	HaltReason Reason    `json:"haltReason,omitempty"`
	HaltDetail string    `json:"haltDetail,omitempty"`
	Since      time.Time `json:"since"`
	// ResumeAt is when a timed halt ends.
	ResumeAt   *time.Time `json:"resumeAt,omitempty"`
	HaltPolicy string     `json:"haltPolicy"`

	Source           string      `json:"source"`
	SourceHead       eth.BlockID `json:"sourceHead"`
	LastReplicated   eth.BlockID `json:"lastReplicated"`
	LastReplicatedAt *time.Time  `json:"lastReplicatedAt,omitempty"`

	Unsafe    eth.L2BlockRef `json:"unsafe"`
	Safe      eth.L2BlockRef `json:"safe"`
	Finalized eth.L2BlockRef `json:"finalized"`
	// Lag is the number of blocks between the source's head and our unsafe head.
	Lag uint64 `json:"lag"`
	// Sources is each source's health: its head, last success, errors.
	Sources []SourceHealth `json:"sources"`
	// RewindError is why a halt has not rewound op-geth to the safe head yet (retried while halted); empty once it
	// has. While it is set, op-node's heads stay on the chain op-geth holds and unsafe input stays held.
	RewindError string `json:"rewindError,omitempty"`
	// StateFileError is why the state file could not be written (retried every round); empty once it is.
	StateFileError string `json:"stateFileError,omitempty"`
	// L2RPCError is set once --replicator.l2.rpc was found, while running, not to be this node's op-geth: every
	// rewind is refused until op-node is restarted with the right one.
	L2RPCError string `json:"l2RpcError,omitempty"`
}

// SourceHealth is one source's standing, in replicator_status.
type SourceHealth struct {
	Name   string      `json:"name"`
	Head   eth.BlockID `json:"head"`
	LastOK *time.Time  `json:"lastOk,omitempty"`
	// Lag is the number of blocks our unsafe head is behind this source's head.
	Lag       uint64 `json:"lag"`
	Errors    uint64 `json:"errors"`
	LastError string `json:"lastError,omitempty"`
	// Signed: the source's blocks carry the sequencer's signature (a relay). An RPC source's are trusted for content.
	Signed bool `json:"signed"`
	// SetAsideUntil is set while the source is set aside: it served a block that a signed block at its height, or
	// the other RPC sources of a quorum, contradict. SetAsideReason says which.
	SetAsideUntil  *time.Time `json:"setAsideUntil,omitempty"`
	SetAsideReason string     `json:"setAsideReason,omitempty"`
}

// Label is a block's L2 safety, in BlockStatus.
type Label string

const (
	LabelUnsafe    Label = "unsafe"
	LabelSafe      Label = "safe"
	LabelFinalized Label = "finalized"
)

// BlockStatus is the result of replicator_blockStatus: a local block's safety label and its L1 origin's standing on
// the node's own L1 view (sub-finality: Polymer's consistency check, RIP-7789).
type BlockStatus struct {
	Hash   common.Hash `json:"hash"`
	Number uint64      `json:"number"`
	// Label is the block's L2 safety: unsafe, safe (derived from L1) or finalized.
	Label Label `json:"label"`

	L1Origin eth.BlockID `json:"l1Origin"`
	// L1OriginCanonical: our L1 view has this origin at its height. False also when the origin is beyond our L1 head.
	L1OriginCanonical bool `json:"l1OriginCanonical"`
	// L1OriginDepth is the number of L1 confirmations of the origin (1 = it is our L1 head); 0 if not canonical.
	L1OriginDepth uint64 `json:"l1OriginDepth"`
	// L1OriginSafe / L1OriginFinalized: the origin is canonical and at or below our L1 safe / finalized block.
	L1OriginSafe      bool `json:"l1OriginSafe"`
	L1OriginFinalized bool `json:"l1OriginFinalized"`

	// Replicated: the block came from a replicator source (not from gossip or derivation). Source and ArrivedAt
	// say from which and when; they are kept for a bounded window of recent blocks.
	Replicated bool       `json:"replicated"`
	Signed     bool       `json:"signed"`
	Source     string     `json:"source,omitempty"`
	ArrivedAt  *time.Time `json:"arrivedAt,omitempty"`
}

// Evidence is two different blocks at one height, both validly signed by the sequencer: a portable proof that
// the sequencer equivocated. Anyone can check both signatures against the unsafe-block signer on L1.
type Evidence struct {
	Number uint64                                   `json:"number"`
	First  *opsigner.SignedExecutionPayloadEnvelope `json:"first"`
	Second *opsigner.SignedExecutionPayloadEnvelope `json:"second"`
	// Sources say where each came from.
	FirstSource  string `json:"firstSource"`
	SecondSource string `json:"secondSource"`
}
