package driverhook

import "net/http"

// engineWriteBuffer is how much of an engine API request a replicating op-node writes to op-geth's socket at once:
// the JSON of a newPayload request (a 1.28 Mgas block of 60 transfers is 16 KiB; a busy chain's blocks are a few
// hundred KiB) and its headers.
const engineWriteBuffer = 1 << 20

// EngineHTTPClient is the HTTP client a replicating op-node uses for the engine API on an http --l2 (op-geth's
// authenticated RPC; on ws or IPC it is not used). Without it op-node uses geth's RPC client default, net/http's
// default transport, whose 4 KiB write buffer sends a 16 KiB newPayload request in five writes to the socket: the
// first wakes op-geth, and on a machine with its cores busy the writer can lose the CPU before it wrote the rest,
// while op-geth waits for it: the replicator's whole extra insert time over a gossip node's was that write
// (docs/benchmarks-history.md). With a write buffer that holds the request, it is one write, and op-geth reads it at
// once.
//
// It returns nil (geth's default) unless cfg enables replication.
func EngineHTTPClient(cfg CLIConfig) *http.Client {
	if !cfg.Enabled {
		return nil
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.WriteBufferSize = engineWriteBuffer
	return &http.Client{Transport: tr}
}
