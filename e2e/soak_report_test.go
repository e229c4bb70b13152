//go:build soak

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"os"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/op-replicator/op-replicator/e2e/dsl"
)

const (
	// maxWarmUp is the longest start of the soak left out of the resource trend: caches fill, and op-node settles.
	maxWarmUp = 5 * time.Minute
	// flatGrowth is the most the mean of the last third of the samples may exceed that of the first third for the
	// trend to be flat; flatCountSlack is an absolute allowance for goroutines and file descriptors, whose counts
	// are small enough that a few connections more are a large fraction.
	flatGrowth     = 0.20
	flatCountSlack = 10
)

// report prints what the soak saw as markdown, and writes it to $OP_REPLICATOR_SOAK_REPORT if set. It runs when the
// soak ends, also when it fails.
func (s *soak) report(duration time.Duration) {
	md := s.markdown(duration)
	s.t.Logf("soak report:\n%s", md)
	if path := os.Getenv(soakReportEnv); path != "" {
		if err := os.WriteFile(path, []byte(md), 0o644); err != nil {
			s.t.Errorf("write the soak report to %s: %v", path, err)
		}
	}
}

func (s *soak) markdown(duration time.Duration) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	ran := time.Since(s.started)
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }

	p("### Soak run %s", s.started.UTC().Format("2006-01-02 15:04 MST"))
	p("")
	p("- machine: %s", machine())
	p("- duration: %s of faults (asked: %s), after the devnet's start", ran.Round(time.Second), duration)
	if head, err := s.seq.BlockNumber(ctx); err == nil {
		p("- chain: sequencer blocks %d to %d (%d blocks); %d transfers sent, %d refused", s.startHead, head, head-s.startHead, s.txs.Sent(), s.txs.Failed())
	}
	if v, err := s.rep.MetricValue(ctx, dsl.MetricBlocksReplicated); err == nil {
		p("- replicator: %.0f blocks replicated", v)
	}
	p("")

	p("#### Faults injected")
	p("")
	p("| fault | target | injected | longest | slowest recovery |")
	p("|---|---|---|---|---|")
	for _, f := range s.schedule() {
		fs := s.injected[f.name]
		if fs == nil {
			p("| %s | %s | 0 | | |", f.name, f.target.Name)
			continue
		}
		p("| %s | %s | %d | %s | %s |", f.name, fs.target, fs.count, fs.longest.Round(100*time.Millisecond), fs.slowestRecov.Round(100*time.Millisecond))
	}
	p("")

	p("#### Halts")
	p("")
	p("| node | reason | during | expected | count |")
	p("|---|---|---|---|---|")
	type haltKey struct {
		node, reason, fault string
		expected            bool
	}
	halts := map[haltKey]int{}
	for _, h := range s.halts {
		halts[haltKey{h.node, h.reason, h.fault, h.expected}]++
	}
	keys := make([]haltKey, 0, len(halts))
	for k := range halts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return fmt.Sprint(keys[i]) < fmt.Sprint(keys[j]) })
	for _, k := range keys {
		p("| %s | %s | %s | %s | %d |", k.node, k.reason, k.fault, yesNo(k.expected), halts[k])
	}
	if len(keys) == 0 {
		p("| (none) | | | | |")
	}
	p("")

	p("#### Invariants")
	p("")
	p("| invariant | checks | violations |")
	p("|---|---|---|")
	for _, inv := range []string{invSafeNeverRewritten, invHaltHeld, invNoGap, invHaltsExpected} {
		n := 0
		for _, v := range s.violations {
			if v.invariant == inv {
				n++
			}
		}
		p("| %s | %d | **%d** |", inv, s.checks[inv], n)
	}
	for i, v := range s.violations {
		if i == 20 {
			p("")
			p("... and %d more", len(s.violations)-20)
			break
		}
		p("")
		p("- %s %s: %s", v.at.UTC().Format("15:04:05"), v.invariant, v.detail)
	}
	p("")

	warmUp := min(maxWarmUp, duration/6)
	p("#### Resources of the replicator's op-node")
	p("")
	p("Sampled every %s after a warm-up of %s (%d samples); the mean of the first and of the last third of them.", soakCheckPeriod, warmUp, len(s.resources))
	p("")
	p("| resource | first third | last third | growth | slope | min | max | trend |")
	p("|---|---|---|---|---|---|---|---|")
	for _, r := range []struct {
		name   string
		unit   float64
		suffix string
		count  bool
		value  func(resourceSample) float64
	}{
		{"RSS", 1 << 20, " MiB", false, func(r resourceSample) float64 { return float64(r.rss) }},
		{"goroutines", 1, "", true, func(r resourceSample) float64 { return r.goroutines }},
		{"open fds", 1, "", true, func(r resourceSample) float64 { return float64(r.fds) }},
	} {
		tr, ok := s.trend(warmUp, r.value)
		if !ok {
			p("| %s | too few samples | | | | | | |", r.name)
			continue
		}
		flat := tr.growth() <= flatGrowth || (r.count && tr.last-tr.first <= flatCountSlack)
		verdict := "flat"
		if !flat {
			verdict = "**GROWING**"
		}
		f := func(v float64) string { return fmt.Sprintf("%.1f%s", v/r.unit, r.suffix) }
		p("| %s | %s | %s | %+.1f%% | %+.1f%s/h | %s | %s | %s |", r.name, f(tr.first), f(tr.last), 100*tr.growth(),
			tr.slopePerHour/r.unit, r.suffix, f(tr.min), f(tr.max), verdict)
	}
	p("")
	p("Flat: the last third's mean at most %.0f%% above the first third's (goroutines and fds: or at most %d more).", 100*flatGrowth, flatCountSlack)
	p("")

	p("#### Hostile traffic")
	p("")
	for _, line := range s.traffic {
		p("- %s", line)
	}
	return b.String()
}

// resourceTrend summarises samples after the warm-up.
type resourceTrend struct {
	first, last, min, max, slopePerHour float64
}

func (t resourceTrend) growth() float64 {
	if t.first == 0 {
		return 0
	}
	return (t.last - t.first) / t.first
}

// trend computes the trend of one resource from the samples taken after warmUp: the means of the first and last
// thirds, the extremes, and the least-squares slope per hour. It needs at least three samples.
func (s *soak) trend(warmUp time.Duration, value func(resourceSample) float64) (resourceTrend, bool) {
	var samples []resourceSample
	for _, r := range s.resources {
		if r.at.Sub(s.started) >= warmUp {
			samples = append(samples, r)
		}
	}
	third := len(samples) / 3
	if third == 0 {
		return resourceTrend{}, false
	}
	mean := func(rs []resourceSample) float64 {
		var sum float64
		for _, r := range rs {
			sum += value(r)
		}
		return sum / float64(len(rs))
	}
	tr := resourceTrend{first: mean(samples[:third]), last: mean(samples[len(samples)-third:]), min: math.Inf(1), max: math.Inf(-1)}
	var sx, sy, sxx, sxy float64
	n := float64(len(samples))
	for _, r := range samples {
		x, y := r.at.Sub(samples[0].at).Hours(), value(r)
		sx, sy, sxx, sxy = sx+x, sy+y, sxx+x*x, sxy+x*y
		tr.min, tr.max = math.Min(tr.min, y), math.Max(tr.max, y)
	}
	if d := n*sxx - sx*sx; d > 0 {
		tr.slopePerHour = (n*sxy - sx*sy) / d
	}
	return tr, true
}

// machine describes the machine the soak ran on: CPU, memory, kernel, Go.
func machine() string {
	cpu := "unknown CPU"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		scanner := bufio.NewScanner(f)
		for scanner.Scan() {
			if name, value, ok := strings.Cut(scanner.Text(), ":"); ok && strings.TrimSpace(name) == "model name" {
				cpu = strings.TrimSpace(value)
				break
			}
		}
		f.Close()
	}
	mem := ""
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		if kb, err := statusKB(string(data), "MemTotal"); err == nil {
			mem = fmt.Sprintf(", %.1f GiB RAM", float64(kb)/(1<<20))
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return fmt.Sprintf("%d × %s%s, %s/%s, kernel %s, %s", runtime.NumCPU(), cpu, mem, runtime.GOOS, runtime.GOARCH,
		strings.TrimSpace(string(kernel)), runtime.Version())
}

// statusKB returns a "Key:   1234 kB" field of a /proc file.
func statusKB(data, key string) (uint64, error) {
	for _, line := range strings.Split(data, "\n") {
		if name, value, ok := strings.Cut(line, ":"); ok && name == key {
			var kb uint64
			_, err := fmt.Sscanf(strings.TrimSpace(value), "%d kB", &kb)
			return kb, err
		}
	}
	return 0, fmt.Errorf("no %s", key)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "**no**"
}
