package relay

import (
	"crypto/rand"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/log"

	"github.com/ethereum-optimism/optimism/op-service/eth"

	"github.com/op-replicator/op-replicator/driverhook"
)

// BenchmarkCatchUpFromMemory and BenchmarkCatchUpFromDisk measure what a follower catching up through an hour of 1 s
// blocks costs the relay: one op is 3,600 relay_envelopeByNumber reads, in order, of 100 KB blocks (one 100 KB
// transaction each, ~200 KB of JSON), served in-process by the relay's handler (no websocket: the store's read path
// alone). The window holds the 3,600 heights: all in memory, or on disk but for the newest 128
// (--replicator.relay.window.memory's default). Before timing, every block is read once (in memory, its JSON is then
// encoded and cached, as once a block has been relayed). Reported besides ns/op: ns/block, add-µs/block (holding a
// block, spilling included), heap-B/block (live heap after a GC, over the blocks held), mem-B/block and
// disk-B/block (the store's own accounting: relay_window_bytes). Run with a fixed count, e.g.
//
//	GOWORK=$PWD/build/go.work go test -run '^$' -bench 'BenchmarkCatchUpFrom' -benchtime 5x ./plugin/relay/
//
// The light (16 KB) and heavy (1 MB) weights are measured too, for the memory each block takes; 1 MB over 360 blocks
// (3,600 of them in memory would take over 11 GB), with the newest 13 in memory on disk (the same share).
func BenchmarkCatchUpFromMemory(b *testing.B) { benchCatchUp(b, false) }

func BenchmarkCatchUpFromDisk(b *testing.B) { benchCatchUp(b, true) }

func benchCatchUp(b *testing.B, onDisk bool) {
	for _, w := range []struct{ blocks, size, memory int }{
		{3600, 100 << 10, driverhook.DefaultRelayWindowMemory},
		{3600, 16 << 10, driverhook.DefaultRelayWindowMemory},
		{360, 1 << 20, driverhook.DefaultRelayWindowMemory / 10},
	} {
		if !onDisk {
			w.memory = 0
		}
		benchCatchUpOne(b, w.blocks, w.size, w.memory)
	}
}

func benchCatchUpOne(b *testing.B, benchCatchUpBlocks, benchCatchUpBlockSize, memory int) {
	b.Run(fmt.Sprintf("blocks=%d/size=%dKB", benchCatchUpBlocks, benchCatchUpBlockSize>>10), func(b *testing.B) {
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)

		store := NewStore(benchCatchUpBlocks, log.Root(), nil, NoopMetrics{})
		if memory > 0 {
			if err := store.SpillTo(b.TempDir(), memory); err != nil {
				b.Fatal(err)
			}
			defer store.Close()
		}
		tx := make([]byte, benchCatchUpBlockSize)
		_, _ = rand.Read(tx)
		start := time.Now()
		for n := uint64(1); n <= uint64(benchCatchUpBlocks); n++ {
			s := envelopeAt(n, 0)
			own := append([]byte(nil), tx...) // a block of its own, as decoded from the wire
			own[0], own[1] = byte(n), byte(n>>8)
			s.Envelope.ExecutionPayload.Transactions = []eth.Data{own}
			if _, _, _, err := store.Add(s, "gossip", time.Now()); err != nil {
				b.Fatal(err)
			}
		}
		add := time.Since(start)

		api := &relayAPI{r: &Server{store: store, metrics: NoopMetrics{}, cfg: driverhook.RelayConfig{MaxMessageSize: 10 << 20}}}
		var total int64
		catchUp := func() {
			total = 0
			for n := uint64(1); n <= uint64(benchCatchUpBlocks); n++ {
				msg, err := api.EnvelopeByNumber(hexutil.Uint64(n))
				if err != nil || msg == nil {
					b.Fatalf("block %d: %v", n, err)
				}
				total += int64(len(msg))
			}
		}
		catchUp() // relayed once: in memory, every block's JSON is cached now

		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		memBytes, diskBytes := store.WindowBytes()

		b.SetBytes(total)
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			catchUp()
		}
		b.StopTimer()
		blocks := float64(benchCatchUpBlocks)
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/blocks, "ns/block")
		b.ReportMetric(float64(add.Microseconds())/blocks, "add-µs/block")
		b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/blocks, "heap-B/block")
		b.ReportMetric(float64(memBytes)/blocks, "mem-B/block")
		b.ReportMetric(float64(diskBytes)/blocks, "disk-B/block")
		runtime.KeepAlive(store)
	})
}
