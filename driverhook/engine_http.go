package driverhook

import "net/http"

// engineWriteBuffer is how much of an engine API request a replicating op-node writes to op-geth's socket at once:
// the JSON of a newPayload request (a 1.28 Mgas block of 60 transfers is 16 KiB; a busy chain's blocks are a few
// hundred KiB) plus its headers.
const engineWriteBuffer = 1 << 20

// EngineHTTPClient is the HTTP client a replicating op-node uses for the engine API on an http(s) --l2 (op-node
// otherwise uses geth's RPC client default: net/http's default transport). The difference is the write buffer.
// net/http's 4 KiB writes a 16 KiB newPayload request in five writes to the socket, and the first wakes op-geth,
// which on a busy machine may take the CPU from the writer before it wrote the rest: measured on this repo's devnet
// (docs/benchmarks.md), the replicator's request took 10 ms at p90 to write (a stock gossip op-node's 0.1 ms),
// the whole of its extra insert time. With a buffer that holds the request it is one write, and op-geth reads
// the whole request at once.
func EngineHTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.WriteBufferSize = engineWriteBuffer
	return &http.Client{Transport: tr}
}
