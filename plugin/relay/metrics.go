package relay

import "time"

// Label values of the refusals the relay counts (RecordRelayRefused), one per limit.
const (
	RefusedMaxSubscribers      = "max-subscribers"
	RefusedMaxSubscribersPerIP = "max-subscribers-per-ip"
	RefusedRateLimit           = "rate-limit"
	RefusedConns               = "max-conns-per-client"
	RefusedMaxConns            = "max-conns"
	// RefusedCallRate counts websocket messages delayed, not refused, until their client's rate had a token for
	// each of their calls.
	RefusedCallRate = "call-rate"
)

// RefusedLimits lists every refusal label, so that each exists from the start.
var RefusedLimits = []string{RefusedMaxSubscribers, RefusedMaxSubscribersPerIP, RefusedRateLimit, RefusedConns,
	RefusedMaxConns, RefusedCallRate}

// Metricer is what the relay, its store and its client record. The replicator's metrics implement it.
type Metricer interface {
	RecordRelaySubscribers(n int)
	RecordRelayRefused(limit string)
	RecordRelayDropped()
	RecordRelayOversized()
	// RecordRelayForward is how long a block was at this relay before it was written to a live subscriber: from
	// its arrival (Held.Arrived: read from the relay's source, or handed on by op-node) to the write, once per
	// subscriber.
	RecordRelayForward(d time.Duration)
	// RecordReplayDropped counts signed blocks the store took as replays: refused at or below the safe head
	// (ErrReplay), or held as history beside another block at their height (never evidence).
	RecordReplayDropped()
	// RecordSourceRequest and RecordClientError are a relay client's requests, and its failures: blocks refused
	// (ErrBadInput, ErrBadSignature) and a lost or silent relay (ErrUnavailable).
	RecordSourceRequest(method string, d time.Duration)
	RecordClientError(err error)
	// RecordRelayWindowBytes is the bytes of the blocks the store holds, where they are: WindowInMemory (estimated
	// as decoded) or WindowOnDisk (their JSON, with --replicator.relay.window.dir).
	RecordRelayWindowBytes(where string, bytes int64)
	// RecordRelayWindowDiskError counts the disk window's failures: a block not spilled, or not read back (then
	// it is not held).
	RecordRelayWindowDiskError()
}

// NoopMetrics records nothing.
type NoopMetrics struct{}

var _ Metricer = NoopMetrics{}

func (NoopMetrics) RecordRelaySubscribers(int)                {}
func (NoopMetrics) RecordRelayRefused(string)                 {}
func (NoopMetrics) RecordRelayDropped()                       {}
func (NoopMetrics) RecordRelayOversized()                     {}
func (NoopMetrics) RecordRelayForward(time.Duration)          {}
func (NoopMetrics) RecordReplayDropped()                      {}
func (NoopMetrics) RecordSourceRequest(string, time.Duration) {}
func (NoopMetrics) RecordClientError(error)                   {}
func (NoopMetrics) RecordRelayWindowBytes(string, int64)      {}
func (NoopMetrics) RecordRelayWindowDiskError()               {}
