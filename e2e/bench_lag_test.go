//go:build bench

package e2e

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/op-replicator/op-replicator/e2e/devnet"
	"github.com/op-replicator/op-replicator/e2e/dsl"
)

// insertTimes reads, from an op-node's log, how long each unsafe block it inserted took in the engine, from the
// engine_newPayload call to the end of the forkchoice update that made it the head: insert_time of "Inserted new L2
// unsafe block" (the engine controller's ProcessPayload: the replicator's path) or total_time of "Inserted new L2
// unsafe block (synchronous)" (the gossip path).
func insertTimes(t *testing.T, logPath string) map[uint64]time.Duration {
	f, err := os.Open(logPath)
	require.NoError(t, err)
	defer f.Close()
	times := make(map[uint64]time.Duration)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		key := "insert_time"
		switch {
		case strings.Contains(line, `msg="Inserted new L2 unsafe block"`):
		case strings.Contains(line, `msg="Inserted new L2 unsafe block (synchronous)"`):
			key = "total_time"
		default:
			continue
		}
		num, ok1 := logField(line, "number")
		dur, ok2 := logField(line, key)
		if !ok1 || !ok2 {
			continue
		}
		n, err1 := strconv.ParseUint(num, 10, 64)
		d, err2 := time.ParseDuration(dur)
		if err1 == nil && err2 == nil {
			times[n] = d
		}
	}
	require.NoError(t, sc.Err())
	return times
}

// logField returns the value of key in a logfmt line.
func logField(line, key string) (string, bool) {
	i := strings.Index(line, " "+key+"=")
	if i < 0 {
		return "", false
	}
	v := line[i+len(key)+2:]
	if j := strings.IndexByte(v, ' '); j >= 0 {
		v = v[:j]
	}
	return v, true
}

// beyondInsert is each block's lag minus its local insertion time (insertTimes), for the blocks in both: what a
// path adds to the engine's own work. It returns the p50 and p99, and how many blocks they are over.
func beyondInsert(lags []devnet.BlockLag, inserts map[uint64]time.Duration) (p50, p99 time.Duration, n int) {
	var rest []time.Duration
	for _, l := range lags {
		if d, ok := inserts[l.Number]; ok {
			rest = append(rest, l.Lag-d)
		}
	}
	if len(rest) == 0 {
		return 0, 0, 0
	}
	slices.Sort(rest)
	at := func(p float64) time.Duration { return rest[int(p/100*float64(len(rest)-1))] }
	return at(50), at(99), len(rest)
}

// beyondInsertByBlock is each block's lag minus the node's own insert of it, for the blocks both are known of.
func beyondInsertByBlock(lags []devnet.BlockLag, inserts map[uint64]time.Duration) map[uint64]time.Duration {
	out := make(map[uint64]time.Duration, len(lags))
	for _, l := range lags {
		if d, ok := inserts[l.Number]; ok {
			out[l.Number] = l.Lag - d
		}
	}
	return out
}

// lagsByBlock is each block's lag.
func lagsByBlock(lags []devnet.BlockLag) map[uint64]time.Duration {
	out := make(map[uint64]time.Duration, len(lags))
	for _, l := range lags {
		out[l.Number] = l.Lag
	}
	return out
}

// With OP_REPLICATOR_BENCH_DUMP (a directory), the follow bench writes each block's figures, to look into a
// distribution's tail: lag-<path>.csv (block, lag and local insert in µs) and epochs.csv (block and its position in
// its L1 origin's epoch: 0 is the first block of an epoch, which derivation builds with the origin's deposits).
func dumpLags(t *testing.T, id string, lags []devnet.BlockLag, inserts map[uint64]time.Duration) {
	dir := os.Getenv("OP_REPLICATOR_BENCH_DUMP")
	if dir == "" {
		return
	}
	var b strings.Builder
	b.WriteString("block,lag_us,insert_us\n")
	for _, l := range lags {
		ins, ok := inserts[l.Number]
		if !ok {
			ins = -1
		}
		fmt.Fprintf(&b, "%d,%d,%d\n", l.Number, l.Lag.Microseconds(), ins.Microseconds())
	}
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "lag-"+id+".csv"), []byte(b.String()), 0o644))
}

func dumpEpochs(t *testing.T, el *dsl.EL, from, to uint64) {
	dir := os.Getenv("OP_REPLICATOR_BENCH_DUMP")
	if dir == "" {
		return
	}
	var b strings.Builder
	b.WriteString("block,seq,txs\n")
	for n := from; n <= to; n++ {
		block, err := el.BlockByNumber(t.Context(), new(big.Int).SetUint64(n))
		require.NoError(t, err)
		// The L1-info deposit's calldata (Ecotone on): selector, two fee scalars (4 bytes each), sequence number.
		data := block.Transactions()[0].Data()
		require.GreaterOrEqual(t, len(data), 20)
		fmt.Fprintf(&b, "%d,%d,%d\n", n, binary.BigEndian.Uint64(data[12:20]), len(block.Transactions()))
	}
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "epochs.csv"), []byte(b.String()), 0o644))
}
