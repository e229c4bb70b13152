// Package plugin is the sequencer replicator: it follows the sequencer's not-yet-batched blocks from external
// sources, inserts them at the tip of the local engine as unsafe only, and on any disagreement rewinds the unsafe
// head to the safe head and halts. The relay (package relay) and the RPC contract (package api) are packages of
// their own. The sources are package source (plugin/source, its doc.go maps them): the sequencer's RPC, other
// nodes' relays, several at once, and how far each is trusted; the pipeline uses them through source.Source and
// source.New. The pipeline, one file a stage:
//
//	pipeline.go      a round's stages overlapped: fetch ahead, verify, hand an idle engine what was verified
//	prefetch.go      blocks fetched ahead, in order, with bounded concurrency
//	verify.go        checks before insertion: next block, above safe, L1 origin canonical on our L1 view
//	l1view.go        our L1 view by height, kept while op-node's L1 head extends it
//	derivation.go    the block must be what derivation would build from L1 (batch rules, payload attributes)
//	insert.go        insertion through op-node's engine controller; the engine's VALID proves hash and state root
//	watch.go         op-node's own events: resets, derivation replacing unsafe blocks, derivation idle
//	check.go         a round's checks before it replicates: the local chain against op-node's view, our L1 view and
//	                 the source's head
//	subfinality.go   replicator_blockStatus: a block's L1 origin on our L1 view
//
// The replicator's core, one owner a component:
//
//	replicator.go      Replicator: the loop that runs the rounds and owns every engine write; Start, Stop, Halt,
//	                   Resume, GateGossip for the Service
//	replicator_new.go  its construction: the components wired to op-node's parts, the state a previous run left
//	halt.go            the running/halted state machine, disagreements and their halt reasons
//	halter.go          the halt: the state machine, the rewind a halt calls for and its retry with backoff, the
//	                   checks that --replicator.l2.rpc is this node's op-geth, the gossip gate
//	rewind.go          the rewind of this node's op-geth itself (debug_setHead over --replicator.l2.rpc)
//	rewind_loop.go     the engine controller's rewind, run on op-node's event loop as op-node's own resets are
//	persist.go         persistence: what is written to the state file, and when
//	state.go           the state file: a halt, its evidence and the last replicated block across restarts
//	state_progress.go  progress written to the state file off the loop
//	mailbox.go         operators' halt and resume requests, handed to the loop; they cut the round in progress short
//	status.go          the snapshot the loop publishes, and replicator_status
//
// Around it:
//
//	service.go       the Service op-node drives: construction, Start, Stop, the gossip gate
//	backend.go       the replicator namespace's reads and requests (api.Backend)
//	errors.go        the errors that end a round without halting, and their kinds on the errors metric
//	metrics.go       Metricer and its Prometheus implementation; metrics_noop.go, a no-op
//
// Everything that runs goroutines starts and stops alike, from the Service down to the replicator, the sources
// (source.Source) and the relay (relay.Server, relay.Client): Start(ctx) error, Stop(ctx) error, ctx bounding the
// call only; Stop stops all its parts whatever ctx says and joins their errors.
//
// Tests run the pipeline against fakes of op-node's parts (fakes_test.go) on the test chain and fake source of
// internal/testkit, which the source package's tests share. Its scenarios (batch insertion, stale heads, invalid
// blocks, disagreements, the halt's rewind and the hold of unsafe input) run against op-node's own engine controller
// too (realengine_test.go): the real-engine harness (realengine_harness_test.go) drives the patched
// engine.EngineController on op-node's event system, drained by a goroutine playing the driver's event loop, with
// op-node's status tracker, over a fake execution engine.
package plugin
