package devnet

import (
	"fmt"
	"math"
	"slices"
)

// Histogram is a Prometheus histogram as scraped, its series merged: how many observations, their sum, and the
// cumulative count at each bucket's upper bound (ascending; the last is +Inf).
type Histogram struct {
	Count   uint64
	Sum     float64
	Buckets []Bucket
}

// Bucket is a histogram's cumulative count of observations at or below UpperBound.
type Bucket struct {
	UpperBound float64
	Count      uint64
}

// Histogram returns the named histogram, the series whose labels include the given name-value pairs merged. It is an
// error if the metric is not a histogram or no series matches.
func (m Metrics) Histogram(name string, labels ...string) (Histogram, error) {
	if len(labels)%2 != 0 {
		return Histogram{}, fmt.Errorf("metric %s: labels %q are not name-value pairs", name, labels)
	}
	f, ok := m[name]
	if !ok {
		return Histogram{}, fmt.Errorf("no metric %s", name)
	}
	var h Histogram
	found := false
	for _, series := range f.GetMetric() {
		if !hasLabels(series, labels) {
			continue
		}
		s := series.GetHistogram()
		if s == nil {
			return Histogram{}, fmt.Errorf("metric %s is a %s, not a histogram", name, f.GetType())
		}
		found = true
		h.Count += s.GetSampleCount()
		h.Sum += s.GetSampleSum()
		for _, b := range s.GetBucket() {
			i, ok := slices.BinarySearchFunc(h.Buckets, b.GetUpperBound(), func(x Bucket, ub float64) int {
				switch {
				case x.UpperBound < ub:
					return -1
				case x.UpperBound > ub:
					return 1
				}
				return 0
			})
			if !ok {
				h.Buckets = slices.Insert(h.Buckets, i, Bucket{UpperBound: b.GetUpperBound()})
			}
			h.Buckets[i].Count += b.GetCumulativeCount()
		}
	}
	if !found {
		return Histogram{}, fmt.Errorf("no series of %s with labels %q", name, labels)
	}
	if n := len(h.Buckets); n == 0 || !math.IsInf(h.Buckets[n-1].UpperBound, 1) {
		h.Buckets = append(h.Buckets, Bucket{UpperBound: math.Inf(1), Count: h.Count})
	}
	return h, nil
}

// Since is what was observed after prev, an earlier scrape of the same histogram. A count lower than prev's (the
// process restarted in between) is a reset, as Prometheus takes it: everything h holds was observed since.
func (h Histogram) Since(prev Histogram) Histogram {
	out := Histogram{Count: h.Count - prev.Count, Sum: h.Sum - prev.Sum, Buckets: slices.Clone(h.Buckets)}
	if h.Count < prev.Count {
		return h
	}
	for i := range out.Buckets {
		for _, p := range prev.Buckets {
			if p.UpperBound == out.Buckets[i].UpperBound {
				if out.Buckets[i].Count < p.Count {
					return h
				}
				out.Buckets[i].Count -= p.Count
			}
		}
	}
	return out
}

// Within is the share of the observations at or below bound, read at the lowest bucket bound at or above it: exact
// where bound is a bucket's bound. NaN without observations.
func (h Histogram) Within(bound float64) float64 {
	if h.Count == 0 {
		return math.NaN()
	}
	for _, b := range h.Buckets {
		if b.UpperBound >= bound {
			return float64(b.Count) / float64(h.Count)
		}
	}
	return 1
}

// Quantile estimates the q-quantile (0 < q < 1) as Prometheus' histogram_quantile does: linearly within the bucket
// that holds it (from 0 for the first bucket); in the +Inf bucket it is the highest finite bound. NaN without
// observations.
func (h Histogram) Quantile(q float64) float64 {
	if h.Count == 0 || len(h.Buckets) == 0 {
		return math.NaN()
	}
	rank := q * float64(h.Count)
	lower, below := 0.0, uint64(0)
	for _, b := range h.Buckets {
		if float64(b.Count) >= rank {
			if math.IsInf(b.UpperBound, 1) {
				return lower
			}
			in := b.Count - below
			if in == 0 {
				return b.UpperBound
			}
			return lower + (b.UpperBound-lower)*(rank-float64(below))/float64(in)
		}
		lower, below = b.UpperBound, b.Count
	}
	return lower
}
