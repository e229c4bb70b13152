// Package benchplot draws the benchmarks' sweeps (`make bench`, e2e/bench_*_test.go) from the results they write as
// JSON: blocks/s and head lag against block weight (TestBenchWeight), delivery spread against subscribers
// (TestBenchRelayFanout), catch-up against backlog depth (TestBenchBacklog), and the latency each hop of a relay tree
// adds (TestBenchRelayTree). The benches call it at their end; cmd/benchplot redraws from the JSON files.
package benchplot

import (
	"encoding/json"
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// WeightResults is TestBenchWeight's output (weight.json): one row per load, all measured by one run of the bench,
// each load on its own devnet.
type WeightResults struct {
	When   string      `json:"when"`
	Commit string      `json:"commit"`
	Host   string      `json:"host"`
	CPUs   int         `json:"cpus"`
	Rows   []WeightRow `json:"rows"`
}

// WeightRow is one load. Lags and their differences are in milliseconds; rates in blocks a second.
type WeightRow struct {
	Load string `json:"load"`
	Spec string `json:"spec"` // what the generator was asked to send
	// The follow window: blocks measured, and their means.
	Blocks         uint64  `json:"blocks"`
	GasPerBlock    float64 `json:"gas_per_block"`
	TxsPerBlock    float64 `json:"txs_per_block"` // user transactions (the L1-info deposit not counted)
	BaseFeeGweiEnd float64 `json:"base_fee_gwei_end"`
	// Bytes per block: the block as RLP; on each path, what carries one block to a follower.
	RLPBytes    float64 `json:"rlp_bytes"`
	GossipBytes float64 `json:"gossip_bytes"` // the gossip message: snappy of the signature and the SSZ payload envelope
	RelayBytes  float64 `json:"relay_bytes"`  // the relay's message (relay_envelopeByNumber's answer, as a subscriber gets it)
	WSBytes     float64 `json:"ws_bytes"`     // newHeads notification + debug_getRawBlock answer, as JSON text
	// Catch-up of a fresh node to block CatchUpBlocks (steady rate, mean over the rounds).
	CatchUpBlocks uint64  `json:"catch_up_blocks"`
	Ceiling32     float64 `json:"ceiling_per_32"`
	Stock         float64 `json:"stock"`
	WS            float64 `json:"ws"`
	Relay         float64 `json:"relay,omitempty"`
	// Each catch-up against the ceiling of its own round (replayed minutes before it), averaged over the rounds: a
	// ceiling that drifts within the run weighs on the ratio of the means, not on these.
	WSVsRoundCeiling    float64 `json:"ws_vs_round_ceiling,omitempty"`
	RelayVsRoundCeiling float64 `json:"relay_vs_round_ceiling,omitempty"`
	// Head lag: the gossip anchor's, the relay path's minus gossip's (paired by block, 95% bootstrap interval),
	// each path's beyond its own insert.
	GossipP50              float64 `json:"gossip_lag_p50_ms"`
	GossipP99              float64 `json:"gossip_lag_p99_ms"`
	RelayVsGossipP50       float64 `json:"relay_minus_gossip_p50_ms"`
	RelayVsGossipP50Lo     float64 `json:"relay_minus_gossip_p50_lo_ms"`
	RelayVsGossipP50Hi     float64 `json:"relay_minus_gossip_p50_hi_ms"`
	RelayVsGossipP99       float64 `json:"relay_minus_gossip_p99_ms"`
	RelayVsGossipP99Lo     float64 `json:"relay_minus_gossip_p99_lo_ms"`
	RelayVsGossipP99Hi     float64 `json:"relay_minus_gossip_p99_hi_ms"`
	WSBeyondInsertP50      float64 `json:"ws_beyond_insert_p50_ms"`
	WSBeyondInsertP99      float64 `json:"ws_beyond_insert_p99_ms"`
	GossipBeyondInsertP50  float64 `json:"gossip_beyond_insert_p50_ms"`
	GossipBeyondInsertP99  float64 `json:"gossip_beyond_insert_p99_ms"`
	RelayBeyondInsertP50   float64 `json:"relay_beyond_insert_p50_ms"`
	RelayBeyondInsertP99   float64 `json:"relay_beyond_insert_p99_ms"`
	GossipInsertP50        float64 `json:"gossip_insert_p50_ms"` // the gossip node's own newPayload + forkchoice update
	GossipCPUPer100        float64 `json:"gossip_cpu_s_per_100_blocks"`
	WSCPURatio             float64 `json:"ws_cpu_vs_gossip"`
	RelayCPURatio          float64 `json:"relay_cpu_vs_gossip"`
	MachineCoresBusyFollow float64 `json:"machine_cores_busy_follow"`
}

// FanoutResults is TestBenchRelayFanout's output (fanout.json).
type FanoutResults struct {
	When   string      `json:"when"`
	Commit string      `json:"commit"`
	Host   string      `json:"host"`
	Blocks uint64      `json:"blocks"`
	Rows   []FanoutRow `json:"rows"`
}

// FanoutRow is one subscriber count at one load; times in milliseconds.
type FanoutRow struct {
	// Load is the load preset the devnet ran (empty in results from before the sweep: the light load's 60
	// transfers/s); GasPerBlock its mean gas per block over the row's window.
	Load          string  `json:"load,omitempty"`
	GasPerBlock   float64 `json:"gas_per_block,omitempty"`
	Subscribers   int     `json:"subscribers"`
	AfterFirstP50 float64 `json:"after_first_p50_ms"`
	AfterFirstP99 float64 `json:"after_first_p99_ms"`
	AfterHeadsP50 float64 `json:"after_newheads_p50_ms"`
	AfterHeadsP99 float64 `json:"after_newheads_p99_ms"`
	BaselineP50   float64 `json:"baseline_after_first_p50_ms"`
	BaselineP99   float64 `json:"baseline_after_first_p99_ms"`
	Missing       int     `json:"missing"`
	RelayCPU      float64 `json:"relay_cpu_ms_per_block"` // beyond idle
	ClientCPU     float64 `json:"client_cpu_ms_per_block"`
	MessageBytes  int     `json:"message_bytes"`
}

// BacklogResults is what the backlog plot reads of TestBenchBacklog's output (backlog.json).
type BacklogResults struct {
	When   string       `json:"when"`
	Commit string       `json:"commit"`
	Depths []BacklogRow `json:"depths"`
}

// BacklogRow is one backlog depth: the per-32 ceiling's mean (the anchor) and each path's rounds, in blocks a second.
type BacklogRow struct {
	Depth     uint64        `json:"depth"`
	Anchor    float64       `json:"anchor_blocks_per_s"`
	WS        []BacklogRate `json:"ws"`
	Relay     []BacklogRate `json:"relay"`
	DiskRelay []BacklogRate `json:"disk_relay,omitempty"`
}

// BacklogRate is one round of a path.
type BacklogRate struct {
	BlocksPerSec float64 `json:"blocks_per_s"`
}

// TreeResults is what the tree plot reads of TestBenchRelayTree's output (tree.json).
type TreeResults struct {
	When        string      `json:"when"`
	Commit      string      `json:"commit"`
	Subscribers int         `json:"subscribers"`
	Phases      []TreePhase `json:"phases"`
}

// TreePhase is one phase of the tree bench: "probes" (one subscriber on each relay) or "tree" (the subscribers spread
// over the second tier).
type TreePhase struct {
	Name   string      `json:"name"`
	Relays []TreeRelay `json:"relays"` // the sequencer's first, then the second tier
}

// TreeRelay is one relay of a phase. Hop 1 (the sequencer's relay to this one) is measured for the second tier only;
// hop 2 is the spread of this relay's subscribers after its first; at the relay is its own relay_forward_seconds,
// from a block's arrival there to its write to each subscriber (none in runs before it was measured).
type TreeRelay struct {
	Name        string      `json:"name"`
	Subscribers int         `json:"subscribers"`
	Hop1        Percentiles `json:"hop1_ms"`
	Hop2        Percentiles `json:"hop2_spread_ms"`
	AtRelay     Percentiles `json:"at_relay_ms"`
}

// legs are the latencies the tree plot draws for a relay, by name: the sequencer's own part, or a second-tier
// relay's hop 1, own part and hop 2; those not measured (N 0) left out.
func (r TreeRelay) legs(sequencer bool) []treeLeg {
	all := []treeLeg{{"hop 1", r.Hop1}, {"at the relay", r.AtRelay}, {"hop 2", r.Hop2}}
	if sequencer {
		all = all[1:2]
	}
	return slices.DeleteFunc(all, func(l treeLeg) bool { return l.pct.N == 0 })
}

type treeLeg struct {
	name string
	pct  Percentiles
}

// Percentiles of a latency, in milliseconds, over N blocks (or deliveries).
type Percentiles struct {
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
	N   int     `json:"n"`
}

// Read decodes a results file into v (a *WeightResults, *FanoutResults, *BacklogResults or *TreeResults).
func Read(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// series is one line of a plot.
type series struct {
	name  string
	xs    []float64
	ys    []float64
	color color.Color
	dash  bool
}

var palette = []color.Color{
	color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, // blue
	color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}, // orange
	color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}, // green
	color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}, // red
	color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff}, // purple
	color.RGBA{R: 0x7f, G: 0x7f, B: 0x7f, A: 0xff}, // grey
}

// addSeries adds ss to p as lines with points, in the order of their xs.
func addSeries(p *plot.Plot, ss []series) error {
	for i, s := range ss {
		if len(s.xs) == 0 {
			continue
		}
		idx := make([]int, len(s.xs))
		for j := range idx {
			idx[j] = j
		}
		slices.SortStableFunc(idx, func(a, b int) int {
			switch {
			case s.xs[a] < s.xs[b]:
				return -1
			case s.xs[a] > s.xs[b]:
				return 1
			}
			return 0
		})
		pts := make(plotter.XYs, len(idx))
		for j, k := range idx {
			pts[j] = plotter.XY{X: s.xs[k], Y: s.ys[k]}
		}
		l, sc, err := plotter.NewLinePoints(pts)
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		c := s.color
		if c == nil {
			c = palette[i%len(palette)]
		}
		l.Color, sc.Color = c, c
		l.Width = vg.Points(1.5)
		sc.Shape = draw.CircleGlyph{}
		sc.Radius = vg.Points(2.5)
		if s.dash {
			l.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
		}
		p.Add(l, sc)
		p.Legend.Add(s.name, l, sc)
	}
	return nil
}

func newPlot(title, x, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = x
	p.Y.Label.Text = y
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	p.Legend.Left = true
	return p
}

// labels names each point of xs, ys by names (the loads).
func labels(p *plot.Plot, xs, ys []float64, names []string) error {
	pts := make(plotter.XYs, len(xs))
	for i := range xs {
		pts[i] = plotter.XY{X: xs[i], Y: ys[i]}
	}
	l, err := plotter.NewLabels(plotter.XYLabels{XYs: pts, Labels: names})
	if err != nil {
		return err
	}
	for i := range l.TextStyle {
		l.TextStyle[i].Font.Size = vg.Points(8)
		l.Offset = vg.Point{X: vg.Points(4), Y: vg.Points(4)}
	}
	p.Add(l)
	return nil
}

// Weight draws res into dir: weight-catchup.png (catch-up blocks/s of the per-32 engine ceiling, stock derivation
// and the ws and relay replicators against gas per block) and weight-lag.png (the relay path's head lag beyond
// gossip's and the ws path's beyond its local insert, p50 and p99, against gas per block). It returns the files'
// paths.
func Weight(res WeightResults, dir string) ([]string, error) {
	if len(res.Rows) == 0 {
		return nil, fmt.Errorf("no rows to plot")
	}
	var gas, ceil, stock, ws, relay, relayGas []float64
	var names []string
	var rp50, rp99, wp50, wp99, gi50 []float64
	for _, r := range res.Rows {
		m := r.GasPerBlock / 1e6
		gas = append(gas, m)
		names = append(names, r.Load)
		ceil, stock, ws = append(ceil, r.Ceiling32), append(stock, r.Stock), append(ws, r.WS)
		if r.Relay > 0 {
			relay, relayGas = append(relay, r.Relay), append(relayGas, m)
		}
		rp50, rp99 = append(rp50, r.RelayVsGossipP50), append(rp99, r.RelayVsGossipP99)
		wp50, wp99 = append(wp50, r.WSBeyondInsertP50), append(wp99, r.WSBeyondInsertP99)
		gi50 = append(gi50, r.GossipInsertP50)
	}
	sub := fmt.Sprintf(" (%s, %s)", day(res.When), res.Commit)
	const xLabel = "gas per block (Mgas, 1 s blocks)"

	p := newPlot("Catch-up against block weight"+sub, xLabel, "blocks/s (steady part)")
	p.Y.Min = 0
	if err := addSeries(p, []series{
		{name: "engine ceiling, fcu per 32 (anchor)", xs: gas, ys: ceil, color: palette[5], dash: true},
		{name: "replicator, ws source", xs: gas, ys: ws, color: palette[0]},
		{name: "replicator, relay source", xs: relayGas, ys: relay, color: palette[2]},
		{name: "stock op-node, L1 derivation", xs: gas, ys: stock, color: palette[3]},
	}); err != nil {
		return nil, err
	}
	if err := labels(p, gas, ceil, names); err != nil {
		return nil, err
	}
	p.Legend.Left = false
	var out []string
	path := filepath.Join(dir, "weight-catchup.png")
	if err := save(p, path); err != nil {
		return nil, err
	}
	out = append(out, path)

	p = newPlot("Head lag against block weight"+sub, xLabel, "ms")
	if err := addSeries(p, []series{
		{name: "relay − gossip, p50", xs: gas, ys: rp50, color: palette[2]},
		{name: "relay − gossip, p99", xs: gas, ys: rp99, color: palette[2], dash: true},
		{name: "ws beyond its local insert, p50", xs: gas, ys: wp50, color: palette[0]},
		{name: "ws beyond its local insert, p99", xs: gas, ys: wp99, color: palette[0], dash: true},
		{name: "gossip node's own insert, p50", xs: gas, ys: gi50, color: palette[5]},
	}); err != nil {
		return nil, err
	}
	if err := labels(p, gas, wp99, names); err != nil {
		return nil, err
	}
	path = filepath.Join(dir, "weight-lag.png")
	if err := save(p, path); err != nil {
		return nil, err
	}
	return append(out, path), nil
}

// Fanout draws res into dir/fanout.png: each subscriber's delivery after the first subscriber's (p99 solid, p50
// dashed) against the subscriber count (log scale), one colour per load, with the trivial server's p99 (grey) when
// there is a single load. It returns the file's path.
func Fanout(res FanoutResults, dir string) (string, error) {
	if len(res.Rows) == 0 {
		return "", fmt.Errorf("no rows to plot")
	}
	type line struct{ xs, p50, p99, b99 []float64 }
	var order []string
	lines := map[string]*line{}
	for _, r := range res.Rows {
		if r.Subscribers < 2 { // no spread with one subscriber
			continue
		}
		name := r.Load
		if name == "" {
			name = "light"
		}
		l, ok := lines[name]
		if !ok {
			l = &line{}
			lines[name] = l
			order = append(order, name)
		}
		l.xs = append(l.xs, float64(r.Subscribers))
		l.p50, l.p99, l.b99 = append(l.p50, r.AfterFirstP50), append(l.p99, r.AfterFirstP99), append(l.b99, r.BaselineP99)
	}
	if len(order) == 0 {
		return "", fmt.Errorf("no subscriber count above 1 to plot")
	}
	p := newPlot(fmt.Sprintf("Relay delivery spread (%s, %s)", day(res.When), res.Commit), "subscribers", "after the first subscriber (ms)")
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Y.Min = 0
	var ss []series
	for i, name := range order {
		l, c := lines[name], palette[i%(len(palette)-1)] // grey is the baseline's
		ss = append(ss, series{name: name + ", p99", xs: l.xs, ys: l.p99, color: c},
			series{name: name + ", p50", xs: l.xs, ys: l.p50, color: c, dash: true})
	}
	if len(order) == 1 {
		l := lines[order[0]]
		ss = append(ss, series{name: "trivial in-process server, p99", xs: l.xs, ys: l.b99, color: palette[5], dash: true})
	}
	if err := addSeries(p, ss); err != nil {
		return "", err
	}
	path := filepath.Join(dir, "fanout.png")
	return path, save(p, path)
}

// Backlog draws res into dir/backlog.png: each path's catch-up through an unsafe-only backlog, as a ratio to the
// per-32 engine ceiling measured at the same depth (each round a point, the line through the rounds' means),
// against the backlog's depth, with the 0.9× target. It returns the file's path.
func Backlog(res BacklogResults, dir string) (string, error) {
	if len(res.Depths) == 0 {
		return "", fmt.Errorf("no depths to plot")
	}
	type path struct {
		name  string
		rates func(BacklogRow) []BacklogRate
		color color.Color
	}
	paths := []path{
		{"replicator, ws source", func(r BacklogRow) []BacklogRate { return r.WS }, palette[0]},
		{"replicator, relay source", func(r BacklogRow) []BacklogRate { return r.Relay }, palette[2]},
		{"replicator, relay with its window on disk", func(r BacklogRow) []BacklogRate { return r.DiskRelay }, palette[4]},
	}
	p := newPlot(fmt.Sprintf("Catch-up through an unsafe-only backlog (%s, %s)", day(res.When), res.Commit),
		"backlog (blocks)", "blocks/s ÷ engine ceiling (fcu per 32)")
	p.Y.Min = 0
	var depths []float64
	for _, r := range res.Depths {
		depths = append(depths, float64(r.Depth))
	}
	ss := []series{{name: "target (0.9× the ceiling)", xs: depths, ys: slices.Repeat([]float64{0.9}, len(depths)), color: palette[5], dash: true}}
	for _, pa := range paths {
		var xs, means, rx, ry []float64
		for _, r := range res.Depths {
			rates := pa.rates(r)
			if len(rates) == 0 || r.Anchor <= 0 {
				continue
			}
			var sum float64
			for _, x := range rates {
				sum += x.BlocksPerSec / r.Anchor
				rx, ry = append(rx, float64(r.Depth)), append(ry, x.BlocksPerSec/r.Anchor)
			}
			xs, means = append(xs, float64(r.Depth)), append(means, sum/float64(len(rates)))
		}
		if len(xs) == 0 {
			continue
		}
		ss = append(ss, series{name: pa.name, xs: xs, ys: means, color: pa.color})
		pts := make(plotter.XYs, len(rx))
		for i := range rx {
			pts[i] = plotter.XY{X: rx[i], Y: ry[i]}
		}
		sc, err := plotter.NewScatter(pts)
		if err != nil {
			return "", err
		}
		sc.Color, sc.Shape, sc.Radius = pa.color, draw.RingGlyph{}, vg.Points(3)
		p.Add(sc)
	}
	if err := addSeries(p, ss); err != nil {
		return "", err
	}
	p.Legend.Top, p.Legend.Left = false, true
	out := filepath.Join(dir, "backlog.png")
	return out, save(p, out)
}

// treeTarget is issue 28's target for what each hop of a relay tree adds at p50.
const treeTarget = 2.0 // ms

// Tree draws res into dir/tree.png: for each second-tier relay, the latency hop 1 (the sequencer's relay to it), its
// own part (at the relay) and hop 2 (its subscribers after its first), and the sequencer relay's own part, p50
// (filled) and p99 (ring), one colour per phase, on a log scale, with the 2 ms p50 target. It returns the file's path.
func Tree(res TreeResults, dir string) (string, error) {
	// One column per relay and leg measured in any phase: relay by relay, each's legs in their order.
	measured := map[string]bool{}
	var relays []string
	tier2 := false
	for _, ph := range res.Phases {
		for i, r := range ph.Relays {
			tier2 = tier2 || i > 0
			if !slices.Contains(relays, r.Name) {
				relays = append(relays, r.Name)
			}
			for _, leg := range r.legs(i == 0) {
				measured[r.Name+", "+leg.name] = true
			}
		}
	}
	var names []string
	for _, r := range relays {
		for _, leg := range []string{"hop 1", "at the relay", "hop 2"} {
			if measured[r+", "+leg] {
				names = append(names, r+", "+leg)
			}
		}
	}
	if !tier2 || len(names) == 0 {
		return "", fmt.Errorf("no second-tier relay to plot")
	}
	p := newPlot(fmt.Sprintf("Relay tree: what each hop and each relay adds (%s, %s, %d subscribers)", day(res.When), res.Commit, res.Subscribers),
		"", "ms (log scale)")
	p.NominalX(names...)
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.X.Tick.Label.Font.Size = vg.Points(6)
	// Labels turned ~30° (in radians), right-aligned under their column: a dozen of them fit.
	p.X.Tick.Label.Rotation, p.X.Tick.Label.XAlign, p.X.Tick.Label.YAlign = 0.5, draw.XRight, draw.YCenter
	target, err := plotter.NewLine(plotter.XYs{{X: -0.5, Y: treeTarget}, {X: float64(len(names)) - 0.5, Y: treeTarget}})
	if err != nil {
		return "", err
	}
	target.Color, target.Dashes = palette[5], []vg.Length{vg.Points(5), vg.Points(3)}
	p.Add(target)
	p.Legend.Add("target: 2 ms p50 per hop", target)
	lowest, highest := treeTarget, treeTarget
	for i, ph := range res.Phases {
		offset := (float64(i) - float64(len(res.Phases)-1)/2) * 0.2
		var p50, p99 plotter.XYs
		for j, r := range ph.Relays {
			for _, hop := range r.legs(j == 0) {
				// A log scale has no zero: a hop under 10 µs is drawn at 10 µs.
				x := float64(slices.Index(names, r.Name+", "+hop.name)) + offset
				p50 = append(p50, plotter.XY{X: x, Y: max(hop.pct.P50, 0.01)})
				p99 = append(p99, plotter.XY{X: x, Y: max(hop.pct.P99, 0.01)})
				lowest, highest = min(lowest, max(hop.pct.P50, 0.01)), max(highest, hop.pct.P99)
			}
		}
		c := palette[i%(len(palette)-1)]
		for _, pts := range []struct {
			xys   plotter.XYs
			shape draw.GlyphDrawer
			what  string
		}{{p50, draw.CircleGlyph{}, "p50"}, {p99, draw.RingGlyph{}, "p99"}} {
			if len(pts.xys) == 0 {
				continue
			}
			sc, err := plotter.NewScatter(pts.xys)
			if err != nil {
				return "", err
			}
			sc.Color, sc.Shape, sc.Radius = c, pts.shape, vg.Points(3.5)
			p.Add(sc)
			p.Legend.Add(fmt.Sprintf("%s, %s", ph.Name, pts.what), sc)
		}
	}
	// Room above the highest point for the legend (a log scale: a factor).
	p.Y.Min, p.Y.Max = lowest/2, highest*8
	out := filepath.Join(dir, "tree.png")
	return out, save(p, out)
}

func save(p *plot.Plot, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return p.Save(18*vg.Centimeter, 11*vg.Centimeter, path)
}

// day is the date of an RFC 3339 time.
func day(when string) string {
	if len(when) >= 10 {
		return when[:10]
	}
	return when
}
