package plugin

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: every Start has its Stop or Close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
