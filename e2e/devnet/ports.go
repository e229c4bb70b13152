package devnet

import (
	"fmt"
	"net"
	"sync"
)

// portAllocator hands out free TCP ports on 127.0.0.1. The OS picks each port; the allocator only
// remembers what it handed out, so that two processes of one devnet never get the same port even if
// the first has not bound it yet.
type portAllocator struct {
	mu   sync.Mutex
	used map[int]bool
}

func newPortAllocator() *portAllocator {
	return &portAllocator{used: make(map[int]bool)}
}

// next returns a port that was free a moment ago and that this allocator never returned before.
func (a *portAllocator) next() (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("find free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		if err := l.Close(); err != nil {
			return 0, fmt.Errorf("release probe port %d: %w", port, err)
		}
		if !a.used[port] {
			a.used[port] = true
			return port, nil
		}
	}
	return 0, fmt.Errorf("no unused free port after 100 attempts")
}
