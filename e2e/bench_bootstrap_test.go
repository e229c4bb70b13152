//go:build bench

package e2e

import (
	"math/rand/v2"
	"slices"
	"time"
)

// pairedDifference is path's p50 and p99 minus anchor's over the blocks both have, each with a 95% interval from a
// bootstrap that resamples blocks (a block's two values kept together): how far the difference of two percentiles
// measured on these blocks can be from what more blocks would show. The resampling is seeded: a run's report is
// reproducible from its data.
type pairedDifference struct {
	n                 int
	p50, p50Lo, p50Hi time.Duration
	p99, p99Lo, p99Hi time.Duration
}

func comparePercentiles(path, anchor map[uint64]time.Duration) (pairedDifference, bool) {
	var blocks []uint64
	for n := range path {
		if _, ok := anchor[n]; ok {
			blocks = append(blocks, n)
		}
	}
	if len(blocks) < 10 {
		return pairedDifference{}, false
	}
	slices.Sort(blocks)
	a := make([]time.Duration, len(blocks))
	b := make([]time.Duration, len(blocks))
	diff := func(sample []uint64) (d50, d99 time.Duration) {
		for i, n := range sample {
			a[i], b[i] = path[n], anchor[n]
		}
		slices.Sort(a)
		slices.Sort(b)
		at := func(s []time.Duration, p float64) time.Duration { return s[int(p/100*float64(len(s)-1))] }
		return at(a, 50) - at(b, 50), at(a, 99) - at(b, 99)
	}
	out := pairedDifference{n: len(blocks)}
	out.p50, out.p99 = diff(blocks)
	const resamples = 2000
	rng := rand.New(rand.NewPCG(1, uint64(len(blocks))))
	d50s := make([]time.Duration, resamples)
	d99s := make([]time.Duration, resamples)
	sample := make([]uint64, len(blocks))
	for r := range resamples {
		for i := range sample {
			sample[i] = blocks[rng.IntN(len(blocks))]
		}
		d50s[r], d99s[r] = diff(sample)
	}
	slices.Sort(d50s)
	slices.Sort(d99s)
	lo, hi := resamples*25/1000, resamples*975/1000
	out.p50Lo, out.p50Hi, out.p99Lo, out.p99Hi = d50s[lo], d50s[hi], d99s[lo], d99s[hi]
	return out, true
}
