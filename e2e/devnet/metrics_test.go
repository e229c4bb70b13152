package devnet

import (
	"math"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/stretchr/testify/require"
)

func TestMetricsSeries(t *testing.T) {
	const text = `# HELP errors_total Errors.
# TYPE errors_total counter
errors_total{kind="bad-signature",source="a\"b"} 3
errors_total{kind="timeout",source="x"} 1.5e+06
# TYPE up gauge
up 1
`
	var parser expfmt.TextParser
	families, err := parser.TextToMetricFamilies(strings.NewReader(text))
	require.NoError(t, err)
	m := Metrics(families)
	require.Equal(t, []string{`{kind="bad-signature",source="a\"b"} 3`, `{kind="timeout",source="x"} 1.5e+06`},
		seriesStrings(m.Series("errors_total")))
	require.Equal(t, []string{" 1"}, seriesStrings(m.Series("up")))
	require.Empty(t, m.Series("absent"))
	v, err := m.Value("errors_total")
	require.NoError(t, err)
	require.Equal(t, 1500003.0, v)
}

func seriesStrings(ss []Series) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.String())
	}
	return out
}

func TestMetricsHistogram(t *testing.T) {
	scrape := func(text string) Metrics {
		var parser expfmt.TextParser
		families, err := parser.TextToMetricFamilies(strings.NewReader(text))
		require.NoError(t, err)
		return Metrics(families)
	}
	const before = `# TYPE forward_seconds histogram
forward_seconds_bucket{le="0.001"} 1
forward_seconds_bucket{le="0.002"} 2
forward_seconds_bucket{le="0.005"} 2
forward_seconds_bucket{le="+Inf"} 2
forward_seconds_sum 0.002
forward_seconds_count 2
`
	const after = `# TYPE forward_seconds histogram
forward_seconds_bucket{le="0.001"} 3
forward_seconds_bucket{le="0.002"} 7
forward_seconds_bucket{le="0.005"} 11
forward_seconds_bucket{le="+Inf"} 12
forward_seconds_sum 0.05
forward_seconds_count 12
`
	h0, err := scrape(before).Histogram("forward_seconds")
	require.NoError(t, err)
	h1, err := scrape(after).Histogram("forward_seconds")
	require.NoError(t, err)
	h := h1.Since(h0)
	require.Equal(t, uint64(10), h.Count)
	require.InDelta(t, 0.048, h.Sum, 1e-12)
	require.Equal(t, []Bucket{{0.001, 2}, {0.002, 5}, {0.005, 9}, {math.Inf(1), 10}}, h.Buckets)
	require.InDelta(t, 0.5, h.Within(0.002), 1e-12, "5 of 10 within 2 ms")
	require.InDelta(t, 0.9, h.Within(0.003), 1e-12, "read at the next bound")
	// The median, rank 5, is the 0.001–0.002 bucket's top; the 0.7-quantile, rank 7, half way into 0.002–0.005.
	require.InDelta(t, 0.002, h.Quantile(0.5), 1e-12)
	require.InDelta(t, 0.0035, h.Quantile(0.7), 1e-12)
	require.InDelta(t, 0.005, h.Quantile(0.99), 1e-12, "in +Inf: the highest finite bound")
	require.True(t, math.IsNaN(Histogram{}.Quantile(0.5)))

	restarted := h1
	restarted.Count = 20 // an earlier scrape of a process that has restarted since
	require.Equal(t, h1, h1.Since(restarted), "a reset: all of it is new")
	_, err = scrape(after).Histogram("forward_seconds", "odd")
	require.ErrorContains(t, err, "not name-value pairs")

	_, err = scrape(after).Value("forward_seconds")
	require.Error(t, err, "a histogram is not a single value")
	_, err = scrape("# TYPE up gauge\nup 1\n").Histogram("up")
	require.ErrorContains(t, err, "not a histogram")
}
