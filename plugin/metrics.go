package plugin

import (
	"time"

	"github.com/op-replicator/op-replicator/plugin/api"
	"github.com/op-replicator/op-replicator/plugin/relay"
	"github.com/op-replicator/op-replicator/plugin/source"
	"github.com/prometheus/client_golang/prometheus"

	opnodemetrics "github.com/ethereum-optimism/optimism/op-node/metrics"
	opmetrics "github.com/ethereum-optimism/optimism/op-service/metrics"
)

// Namespace and subsystem of the replicator's metrics on op-node's registry: op_node_default_replicator_*. The
// namespace is op-node's own: op-node/metrics.Namespace and the process name op-node's main registers under.
const (
	metricsNamespace = opnodemetrics.Namespace + "_default"
	metricsSubsystem = "replicator"
)

// Metricer is what the replicator and its relay record (NoopMetrics records nothing).
type Metricer interface {
	source.Metricer
	RecordReplicated(number uint64)
	RecordHalt(reason api.Reason)
	RecordState(state api.State)
	RecordHeadLag(blocks uint64)
	RecordError(kind ErrKind)
	RecordGossipDropped()
	RecordUnsafeOriginDepth(confirmations uint64)
	RecordInsert(step string, d time.Duration)
}

type metrics struct {
	replicated     prometheus.Counter
	lastReplicated prometheus.Gauge
	halts          *prometheus.CounterVec
	state          *prometheus.GaugeVec
	headLag        prometheus.Gauge
	sourceRequest  *prometheus.HistogramVec
	insert         *prometheus.HistogramVec
	errors         *prometheus.CounterVec
	gossipDropped  prometheus.Counter
	replayDropped  prometheus.Counter
	originDepth    prometheus.Gauge

	relaySubscribers prometheus.Gauge
	relayRefused     *prometheus.CounterVec
	relayDropped     prometheus.Counter
	relayOversized   prometheus.Counter
	relayForward     prometheus.Histogram
	relayWindowBytes *prometheus.GaugeVec
	relayWindowDisk  prometheus.Counter

	sourceHead   *prometheus.GaugeVec
	sourceErrors *prometheus.CounterVec
}

var _ Metricer = (*metrics)(nil)

// NewMetrics registers the replicator's metrics on the given registry (op-node's).
func NewMetrics(registry prometheus.Registerer) Metricer {
	f := opmetrics.With(registry)
	m := &metrics{
		replicated: f.NewCounter(prometheus.CounterOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem,
			Name: "blocks_replicated_total",
			Help: "Blocks taken from the source, executed locally and inserted as unsafe.",
		}),
		lastReplicated: f.NewGauge(prometheus.GaugeOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem,
			Name: "last_replicated_block",
			Help: "Number of the last replicated block.",
		}),
		halts: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem,
			Name: "halts_total",
			Help: "Halts (unsafe head rewound to safe), by reason.",
		}, []string{"reason"}),
		state: f.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem,
			Name: "state",
			Help: "1 for the replicator's current state (running or halted), 0 for the other.",
		}, []string{"state"}),
		headLag: f.NewGauge(prometheus.GaugeOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem,
			Name: "head_lag_blocks",
			Help: "Blocks between the source's head and the local unsafe head.",
		}),
		sourceRequest: f.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem,
			Name:    "source_request_seconds",
			Help:    "Latency of requests to the source, by method.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"method"}),
		insert: f.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem,
			Name:    "insert_seconds",
			Help:    "Time of the insert stage per batch, by step: engine (the batch's NewPayloads and forkchoice update), loop_turn (the wait for op-node's loop to handle the batch), idle (the wait for the batch, from the round's start or the batch before: fetching and verifying did not keep up).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"step"}),
		errors: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem,
			Name: "errors_total",
			Help: "Errors that did not halt the replicator, by kind.",
		}, []string{"kind"}),
		gossipDropped: f.NewCounter(prometheus.CounterOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem,
			Name: "gossip_dropped_total",
			Help: "Gossiped unsafe blocks dropped because the replicator was halted.",
		}),
		replayDropped: f.NewCounter(prometheus.CounterOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem,
			Name: "replays_dropped_total",
			Help: "Replayed sequencer-signed blocks (from gossip or relays), never equivocation evidence: at or below the safe head (dropped), or older than 60 s beside another block at their height (held as history).",
		}),
		originDepth: f.NewGauge(prometheus.GaugeOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem,
			Name: "unsafe_origin_depth",
			Help: "L1 confirmations of the unsafe head's L1 origin on our L1 view (sub-finality).",
		}),
		relaySubscribers: f.NewGauge(prometheus.GaugeOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem,
			Name: "relay_subscribers",
			Help: "Relay subscriptions being served.",
		}),
		relayRefused: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem,
			Name: "relay_refused_total",
			Help: "Relay connections, requests and subscriptions refused, and websocket calls delayed (call-rate), by limit.",
		}, []string{"limit"}),
		relayDropped: f.NewCounter(prometheus.CounterOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem,
			Name: "relay_dropped_total",
			Help: "Relay subscribers dropped because their send queue was full.",
		}),
		relayOversized: f.NewCounter(prometheus.CounterOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem,
			Name: "relay_oversized_total",
			Help: "Signed blocks not relayed because they exceed the message size limit.",
		}),
		relayForward: f.NewHistogram(prometheus.HistogramOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem,
			Name:    "relay_forward_seconds",
			Help:    "Time a signed block spends at this relay before its write to each live subscriber: from its arrival (a relay source's message read, before decoding and the signature check; a fetched block's answer received; or handed on by op-node) to the write. One observation per subscriber and block: its p50 with many subscribers is the median subscriber's place in the fan-out. The blocks a new subscription replays are not counted, but a block that arrives meanwhile waits behind them.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5},
		}),
		relayWindowBytes: f.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem,
			Name: "relay_window_bytes",
			Help: "Bytes of the signed blocks held, by where: memory (estimated as decoded, without the JSON a relayed block also keeps) or disk (their JSON, with --replicator.relay.window.dir).",
		}, []string{"where"}),
		relayWindowDisk: f.NewCounter(prometheus.CounterOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem,
			Name: "relay_window_disk_errors_total",
			Help: "Failures of the relay's window on disk: a block not spilled (kept in memory) or not read back (not held).",
		}),
		sourceHead: f.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem,
			Name: "source_head",
			Help: "Each source's head block number, as last seen.",
		}, []string{"source"}),
		sourceErrors: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem,
			Name: "source_errors_total",
			Help: "Failed requests to each source.",
		}, []string{"source"}),
	}
	for _, r := range api.Reasons {
		m.halts.WithLabelValues(string(r))
	}
	for _, k := range ErrKinds {
		m.errors.WithLabelValues(string(k))
	}
	for _, l := range relay.RefusedLimits {
		m.relayRefused.WithLabelValues(l)
	}
	for _, w := range []string{relay.WindowInMemory, relay.WindowOnDisk} {
		m.relayWindowBytes.WithLabelValues(w)
	}
	m.RecordState(api.StateRunning)
	return m
}

func (m *metrics) RecordReplicated(number uint64) {
	m.replicated.Inc()
	m.lastReplicated.Set(float64(number))
}

func (m *metrics) RecordHalt(reason api.Reason) { m.halts.WithLabelValues(string(reason)).Inc() }

func (m *metrics) RecordState(state api.State) {
	for _, s := range []api.State{api.StateRunning, api.StateHalted} {
		v := 0.0
		if s == state {
			v = 1
		}
		m.state.WithLabelValues(string(s)).Set(v)
	}
}

func (m *metrics) RecordHeadLag(blocks uint64) { m.headLag.Set(float64(blocks)) }

func (m *metrics) RecordSourceRequest(method string, d time.Duration) {
	m.sourceRequest.WithLabelValues(method).Observe(d.Seconds())
}

// RecordInsert records how long one step of inserting a batch took (insertStep*).
func (m *metrics) RecordInsert(step string, d time.Duration) {
	m.insert.WithLabelValues(step).Observe(d.Seconds())
}

func (m *metrics) RecordError(kind ErrKind) { m.errors.WithLabelValues(string(kind)).Inc() }

// RecordClientError counts a relay client's failure by its kind (errorKind).
func (m *metrics) RecordClientError(err error) { m.RecordError(errorKind(err)) }

func (m *metrics) RecordGossipDropped() { m.gossipDropped.Inc() }

func (m *metrics) RecordReplayDropped() { m.replayDropped.Inc() }

func (m *metrics) RecordUnsafeOriginDepth(confirmations uint64) {
	m.originDepth.Set(float64(confirmations))
}

func (m *metrics) RecordRelaySubscribers(n int) { m.relaySubscribers.Set(float64(n)) }

func (m *metrics) RecordRelayRefused(limit string) { m.relayRefused.WithLabelValues(limit).Inc() }

func (m *metrics) RecordRelayDropped() { m.relayDropped.Inc() }

func (m *metrics) RecordRelayOversized() { m.relayOversized.Inc() }

func (m *metrics) RecordRelayForward(d time.Duration) { m.relayForward.Observe(d.Seconds()) }

func (m *metrics) RecordRelayWindowBytes(where string, bytes int64) {
	m.relayWindowBytes.WithLabelValues(where).Set(float64(bytes))
}

func (m *metrics) RecordRelayWindowDiskError() { m.relayWindowDisk.Inc() }

func (m *metrics) RecordSourceHead(source string, number uint64) {
	m.sourceHead.WithLabelValues(source).Set(float64(number))
	m.sourceErrors.WithLabelValues(source) // its error count exists from the source's first head on, at 0
}

func (m *metrics) RecordSourceError(source string) { m.sourceErrors.WithLabelValues(source).Inc() }
