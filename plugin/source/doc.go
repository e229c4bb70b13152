// Package source is where the replicator's blocks come from: the sources of --replicator.source, fanned into one.
// The pipeline (package plugin) uses New, which builds a Multi, through the Source interface, and reads Multi's
// Health and ServedBy for replicator_status and replicator_blockStatus. What a source returns is at most unsafe, and
// checked only as far as a source can: the block asked for, its payload hashing to its block hash. The pipeline
// verifies the rest.
//
//	source.go           Source, New (the sources of --replicator.source), Metricer, ErrBadInput, RedactURL
//	multi.go            Multi: several sources as one (highest head, first source that has a block), their health
//	trust.go            trust per source: signed blocks first, --replicator.require-signature, --replicator.quorum,
//	                    sources set aside
//	relay.go            another node's relay (relay.Client) as a source: every block signed
//
// The sequencer's execution-engine RPC as a source (rpcSource), by concern:
//
//	rpc.go              rpcSource: construction (up to three transports to one endpoint), Start, Stop
//	transport.go        the http(s) transport: responses bounded, connections kept, no gzip
//	heads.go            its head: the one last announced for a block time, else asked for; announcements
//	heads_subscribe.go  a ws(s) source's newHeads subscription, re-subscribed with backoff
//	heads_poll.go       an http(s) source's head polled around when its next block is due (headSchedule)
//	fetch.go            a block fetched as RLP (debug_getRawBlock), falling back to eth_getBlockByNumber
//	fetch_early.go      the block announced, fetched before the pipeline asks for it
//	rlp.go              a block's RLP: its checks and conversion to a payload
//	raw.go              debug_getRawBlock read without go-ethereum's JSON-RPC client (hexResult); raw_http.go over
//	                    http, raw_ws.go over websockets (wire_test.go pins the wire format against go-ethereum)
package source
