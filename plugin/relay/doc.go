// Package relay is the relay: sequencer-signed blocks held by a node and served to downstream nodes, and the
// client that follows another node's relay. It runs with or without the replicator (a sequencer or a P2P sentry
// runs only the relay) and imports nothing of it: it declares what it needs (Signers, SyncStatus, Metricer), and
// the replicator adapts (it wraps a Client as one of its sources, and turns equivocation evidence into a halt).
// Nobody has to trust a relay: every block it passes on carries the sequencer's signature, checked on arrival.
//
//	store.go      Store: verified signed blocks for a window of heights; refuses replays at or below the safe head
//	held.go       Held: a block held, in memory or spilled to disk (its JSON read back for every use)
//	spill.go      the store's window on disk: all but the newest heights spilled, evicted ones deleted
//	window.go     the pebble database of the spilled blocks (--replicator.relay.window.dir), wiped at start
//	signature.go  VerifySigned: the sequencer's signature on a block, as op-node's gossip checks it
//	evidence.go   EvidenceLog: two signed blocks at one height, kept as proof that the sequencer equivocated
//	server.go     Server: the relay's own JSON-RPC listener (relay_subscribe, relay_envelopeByNumber,
//	              relay_envelopesByRange, relay_head)
//	limits.go     per-client connection and request-rate limits on the server's listener
//	websocket.go  the server's websocket codec: go-ethereum's, but for prepared notifications (what it reads of
//	              go-ethereum's unexported messages is pinned by websocket_wire_test.go)
//	calls.go      bounds on the calls inside a websocket: in flight per connection, a rate per client
//	client.go     Client: follows another node's relay into the Store
//	client_range.go  how the Client fetches the blocks below its subscription: many a call (relay_envelopesByRange)
//	errors.go     why a block or a subscriber is refused
//	metrics.go    Metricer, what the relay records, and a no-op
package relay
