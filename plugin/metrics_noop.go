package plugin

import (
	"time"

	"github.com/op-replicator/op-replicator/plugin/api"
)

// NoopMetrics records nothing.
type NoopMetrics struct{}

var _ Metricer = NoopMetrics{}

func (NoopMetrics) RecordReplicated(uint64)                   {}
func (NoopMetrics) RecordHalt(api.Reason)                     {}
func (NoopMetrics) RecordState(api.State)                     {}
func (NoopMetrics) RecordHeadLag(uint64)                      {}
func (NoopMetrics) RecordSourceRequest(string, time.Duration) {}
func (NoopMetrics) RecordError(ErrKind)                       {}
func (NoopMetrics) RecordClientError(error)                   {}
func (NoopMetrics) RecordGossipDropped()                      {}
func (NoopMetrics) RecordReplayDropped()                      {}
func (NoopMetrics) RecordUnsafeOriginDepth(uint64)            {}
func (NoopMetrics) RecordRelaySubscribers(int)                {}
func (NoopMetrics) RecordRelayRefused(string)                 {}
func (NoopMetrics) RecordRelayDropped()                       {}
func (NoopMetrics) RecordRelayOversized()                     {}
func (NoopMetrics) RecordRelayForward(time.Duration)          {}
func (NoopMetrics) RecordRelayWindowBytes(string, int64)      {}
func (NoopMetrics) RecordRelayWindowDiskError()               {}
func (NoopMetrics) RecordSourceHead(string, uint64)           {}
func (NoopMetrics) RecordSourceError(string)                  {}
func (NoopMetrics) RecordInsert(string, time.Duration)        {}
