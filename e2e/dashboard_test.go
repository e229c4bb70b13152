package e2e

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/op-replicator/op-replicator/e2e/devnet"
	"github.com/op-replicator/op-replicator/e2e/dsl"
)

// dashboardMetric finds the metric names a dashboard query uses.
var dashboardMetric = regexp.MustCompile(dsl.MetricPrefix + `[a-z_]+`)

// TestDashboardQueriesExportedMetrics requires every metric that docs/dashboard.json queries to be exported, with
// at least one series, by a running replicator that also serves a relay: a dashboard panel on a misspelt or
// missing metric would stay empty without anyone noticing.
func TestDashboardQueriesExportedMetrics(t *testing.T) {
	raw, err := os.ReadFile("../docs/dashboard.json")
	require.NoError(t, err)
	var dashboard struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(raw, &dashboard))
	queried := map[string][]string{} // metric -> panels
	for _, p := range dashboard.Panels {
		require.NotEmpty(t, p.Targets, "panel %q has no query", p.Title)
		for _, target := range p.Targets {
			for _, name := range dashboardMetric.FindAllString(target.Expr, -1) {
				queried[name] = append(queried[name], p.Title)
			}
		}
	}
	require.NotEmpty(t, queried)

	sys := dsl.Start(t, devnet.Config{})
	seq := sys.Sequencer.EL
	rep := sys.AddReplicator("replicator", devnet.WithSource(seq.WS), devnet.WithMetrics(),
		devnet.WithNodeArgs(dsl.RelayArgs(sys.FreePort())...))
	sys.StartTxLoad(seq)
	rep.WaitReplicating(seq, 5)

	families := rep.Metrics()
	for name, panels := range queried {
		family := name
		if _, ok := families[family]; !ok {
			family = histogramFamily(name) // a histogram is queried through its _bucket, _sum or _count series
		}
		f, ok := families[family]
		require.True(t, ok, "%s (queried by %q) is not exported", name, panels)
		require.NotEmpty(t, f.GetMetric(), "%s (queried by %q) has no series", name, panels)
	}
	names := make([]string, 0, len(queried))
	for name := range queried {
		names = append(names, name)
	}
	slices.Sort(names)
	t.Logf("the dashboard's %d metrics are exported: %v", len(names), names)
}

func histogramFamily(name string) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			return base
		}
	}
	return name
}
