package dsl

import (
	"strconv"

	"github.com/op-replicator/op-replicator/e2e/devnet"
)

// RelayArgs are the op-node flags that serve a relay on port, with room for subscribers unless limits (more flags)
// say otherwise.
func RelayArgs(port int, limits ...string) []string {
	return append([]string{"--replicator.relay.enabled", "--replicator.relay.port", strconv.Itoa(port)}, limits...)
}

// RelaySource is the replicator source of a relay listening on port of 127.0.0.1.
func RelaySource(port int) string { return "relay+ws://127.0.0.1:" + strconv.Itoa(port) }

// DialRelay connects to the relay listening on port of 127.0.0.1 (websocket), closed at the end of the test.
func (s *System) DialRelay(port int) *devnet.Relay {
	s.t.Helper()
	r, err := devnet.DialRelay(s.ctx(), "ws://127.0.0.1:"+strconv.Itoa(port))
	s.require.NoError(err)
	s.t.Cleanup(r.Close)
	return r
}
