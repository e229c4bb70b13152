package devnet

import (
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
)

// Devnet ports come from below the kernel's ephemeral port range (32768-60999 on Linux by default). A port the OS
// picks for a probe listener is in that range, where an outgoing connection of any process (the devnet's own RPC
// clients, a test's load, anything else on the machine) can take it between the probe and the moment the devnet
// process binds it; the process then fails with "address already in use".
const (
	portLow  = 20000
	portHigh = 32000
)

// portAllocator hands out TCP ports that were free a moment ago, from [portLow, portHigh). It starts at a random
// port and remembers what it handed out, so that two processes never get the same port even if the first has
// not bound it yet. One allocator serves every devnet of a test binary (portPool), and ports picked before a
// devnet exists (FreePort).
type portAllocator struct {
	mu     sync.Mutex
	cursor int
	used   map[int]bool
}

var portPool = &portAllocator{cursor: portLow + rand.IntN(portHigh-portLow), used: make(map[int]bool)}

// FreePort returns a port of 127.0.0.1 that no devnet of this process will hand out, e.g. for a sequencer's relay
// given in Config.SequencerArgs.
func FreePort() (int, error) { return portPool.next() }

// next returns a port that was free on every interface a moment ago and that this allocator never returned before.
func (a *portAllocator) next() (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for range portHigh - portLow {
		port := a.cursor
		a.cursor++
		if a.cursor == portHigh {
			a.cursor = portLow
		}
		if a.used[port] {
			continue
		}
		// All interfaces: op-geth binds its devp2p listener on ":port".
		l, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
		if err != nil {
			continue // in use
		}
		if err := l.Close(); err != nil {
			return 0, fmt.Errorf("release probe port %d: %w", port, err)
		}
		a.used[port] = true
		return port, nil
	}
	return 0, fmt.Errorf("no free port in [%d, %d)", portLow, portHigh)
}
