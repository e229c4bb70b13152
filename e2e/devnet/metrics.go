package devnet

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// Metrics is one scrape of a Prometheus endpoint, parsed with the Prometheus text parser: the metric families by
// name.
type Metrics map[string]*dto.MetricFamily

// ScrapeMetrics reads the Prometheus endpoint at url.
func ScrapeMetrics(ctx context.Context, url string) (Metrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: status %d", url, resp.StatusCode)
	}
	var parser expfmt.TextParser
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parse metrics of %s: %w", url, err)
	}
	return families, nil
}

// ScrapeMetrics scrapes the node's op-node metrics (WithMetrics).
func (n *Node) ScrapeMetrics(ctx context.Context) (Metrics, error) {
	if n.MetricsURL == "" {
		return nil, fmt.Errorf("%s has no metrics endpoint (WithMetrics)", n.Name)
	}
	return ScrapeMetrics(ctx, n.MetricsURL)
}

// Value returns the sum of the series of the named counter, gauge or untyped metric whose labels include the given
// name-value pairs (e.g. Value(name, "kind", "bad-signature")). It is an error if no series matches.
func (m Metrics) Value(name string, labels ...string) (float64, error) {
	if len(labels)%2 != 0 {
		return 0, fmt.Errorf("metric %s: labels %q are not name-value pairs", name, labels)
	}
	f, ok := m[name]
	if !ok {
		return 0, fmt.Errorf("no metric %s", name)
	}
	var sum float64
	found := false
	for _, series := range f.GetMetric() {
		if !hasLabels(series, labels) {
			continue
		}
		switch {
		case series.Counter != nil:
			sum += series.GetCounter().GetValue()
		case series.Gauge != nil:
			sum += series.GetGauge().GetValue()
		case series.Untyped != nil:
			sum += series.GetUntyped().GetValue()
		default:
			return 0, fmt.Errorf("metric %s is a %s, not a single value", name, f.GetType())
		}
		found = true
	}
	if !found {
		return 0, fmt.Errorf("no series of %s with labels %q", name, labels)
	}
	return sum, nil
}

func hasLabels(series *dto.Metric, labels []string) bool {
	for i := 0; i < len(labels); i += 2 {
		match := false
		for _, l := range series.GetLabel() {
			if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
				match = true
				break
			}
		}
		if !match {
			return false
		}
	}
	return true
}

// MetricValue scrapes the node's metrics and returns Metrics.Value of a metric.
func (n *Node) MetricValue(ctx context.Context, name string, labels ...string) (float64, error) {
	m, err := n.ScrapeMetrics(ctx)
	if err != nil {
		return 0, err
	}
	return m.Value(name, labels...)
}

// Series is one series of a metric: its labels, in the order of the scrape, and its value.
type Series struct {
	Labels []*dto.LabelPair
	Value  float64
}

// String is the series as the Prometheus text format writes it, without the metric's name: {name="value",...} and
// the value.
func (s Series) String() string {
	var b strings.Builder
	if len(s.Labels) > 0 {
		b.WriteByte('{')
		for i, l := range s.Labels {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "%s=\"%s\"", l.GetName(), labelValueEscaper.Replace(l.GetValue()))
		}
		b.WriteByte('}')
	}
	b.WriteByte(' ')
	b.WriteString(strconv.FormatFloat(s.Value, 'g', -1, 64))
	return b.String()
}

var labelValueEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)

// Series returns the series of the named counter, gauge or untyped metric, none if it has none.
func (m Metrics) Series(name string) []Series {
	var out []Series
	for _, series := range m[name].GetMetric() {
		var v float64
		switch {
		case series.Counter != nil:
			v = series.GetCounter().GetValue()
		case series.Gauge != nil:
			v = series.GetGauge().GetValue()
		case series.Untyped != nil:
			v = series.GetUntyped().GetValue()
		default:
			continue
		}
		out = append(out, Series{Labels: series.GetLabel(), Value: v})
	}
	return out
}
