package source

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/op-replicator/op-replicator/plugin/relay"
)

// TestMain fails the package's tests if any goroutine outlives them: every Start has its Stop.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// noopMetrics records nothing.
type noopMetrics struct{ relay.NoopMetrics }

func (noopMetrics) RecordSourceHead(string, uint64) {}
func (noopMetrics) RecordSourceError(string)        {}
