//go:build bench

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/op-replicator/op-replicator/e2e/devnet"
)

// profileChunk is the length of one CPU profile of a catching-up op-node: profiles are taken back to back while it
// catches up, and the one in flight when it reaches its target is dropped, so that they cover catch-up only.
const profileChunk = 3 * time.Second

// captureProfiles takes CPU profiles of the op-node at pprofPort back to back, writing them to
// $OP_REPLICATOR_BENCH_PPROF/<name>-<i>.pprof (merge them with `go tool pprof -top <files>`), until stop is called.
func captureProfiles(t *testing.T, pprofPort int, name string) (stop func()) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		url := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", pprofPort, int(profileChunk/time.Second))
		for i := 0; ctx.Err() == nil; i++ {
			path := filepath.Join(os.Getenv("OP_REPLICATOR_BENCH_PPROF"), fmt.Sprintf("%s-%d.pprof", name, i))
			if err := fetchTo(ctx, url, path); err != nil {
				_ = os.Remove(path)
				if ctx.Err() == nil {
					t.Logf("profile %s: %v", path, err)
					time.Sleep(100 * time.Millisecond)
				}
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// captureHeap writes a heap profile of the op-node at pprofPort, after a garbage collection, to
// $OP_REPLICATOR_BENCH_PPROF/<name>.pprof: what the follow bench's window starts and ends with, to tell what the
// resident memory it reports grows with (go tool pprof -sample_index=inuse_space -diff_base <start> <end>).
func captureHeap(t *testing.T, pprofPort int, name string) {
	url := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/heap?gc=1", pprofPort)
	path := filepath.Join(os.Getenv("OP_REPLICATOR_BENCH_PPROF"), name+".pprof")
	if err := fetchTo(t.Context(), url, path); err != nil {
		t.Logf("heap profile %s: %v", path, err)
	}
}

// liveHeap is the op-node at pprofPort's heap in use right after a garbage collection (runtime.MemStats.HeapAlloc,
// as its heap profile's text form reports it): what it holds, without the garbage and the memory the runtime has
// not returned to the system yet that its resident memory also counts.
func liveHeap(ctx context.Context, pprofPort int) (uint64, error) {
	url := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/heap?gc=1&debug=1", pprofPort)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s: %s", url, resp.Status)
	}
	lines := bufio.NewScanner(resp.Body)
	lines.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for lines.Scan() {
		if v, ok := strings.CutPrefix(lines.Text(), "# HeapAlloc = "); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	if err := lines.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s: no HeapAlloc", url)
}

func fetchTo(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// gethProfile starts a CPU profile of the op-geth behind el (go-ethereum's debug_startCPUProfile, on its HTTP RPC)
// when OP_REPLICATOR_BENCH_GETH_PPROF names a directory, and returns what ends it: op-geth then writes
// <dir>/<name>-op-geth.pprof. It tells where an engine's CPU goes in a catch-up against the same engine replaying
// the ceiling (docs/benchmarks.md, W2). Without the setting it does nothing.
func gethProfile(t *testing.T, el *devnet.EL, name string) (stop func()) {
	dir := os.Getenv("OP_REPLICATOR_BENCH_GETH_PPROF")
	if dir == "" {
		return func() {}
	}
	dir, err := filepath.Abs(dir)
	if err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	if err == nil {
		err = el.RPC.CallContext(t.Context(), nil, "debug_startCPUProfile", filepath.Join(dir, name+"-op-geth.pprof"))
	}
	if err != nil {
		t.Logf("op-geth profile of %s not taken: %v", name, err)
		return func() {}
	}
	return func() {
		if err := el.RPC.CallContext(context.Background(), nil, "debug_stopCPUProfile"); err != nil {
			t.Logf("op-geth profile of %s not written: %v", name, err)
		}
	}
}
