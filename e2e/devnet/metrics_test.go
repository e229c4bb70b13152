package devnet

import (
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
