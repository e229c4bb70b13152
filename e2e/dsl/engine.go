package dsl

import (
	"github.com/op-replicator/op-replicator/e2e/devnet"
)

// Engine is a bare op-geth of the devnet's chain with no op-node (devnet.Engine): the engine ceiling of the catch-up
// benchmarks, driven over the engine API. EL is its user RPC; the embedded devnet.Engine gives its process, its
// engine API client, Replay and Stop.
type Engine struct {
	base
	*devnet.Engine
	EL *EL
}

// StartEngine starts a fresh op-geth from the devnet's L2 genesis, named name (devnet.Devnet.StartEngine), stopped
// at the end of the test if it is still running.
func (s *System) StartEngine(name string) *Engine {
	s.t.Helper()
	e, err := s.Net.StartEngine(s.ctx(), name)
	s.require.NoError(err)
	s.t.Cleanup(func() { _ = e.Stop() })
	return &Engine{base: s.base, Engine: e, EL: s.el(e.EL)}
}
