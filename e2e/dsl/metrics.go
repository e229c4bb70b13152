package dsl

// The replicator's metrics, as op-node exports them (namespace op_node_default).
const (
	MetricErrors             = "op_node_default_replicator_errors_total"
	MetricGossipDropped      = "op_node_default_replicator_gossip_dropped_total"
	MetricReplaysDropped     = "op_node_default_replicator_replays_dropped_total"
	MetricBlocksReplicated   = "op_node_default_replicator_blocks_replicated_total"
	MetricRelaySubscribers   = "op_node_default_replicator_relay_subscribers"
	MetricRelayRefused       = "op_node_default_replicator_relay_refused_total"
	MetricRelayForward       = "op_node_default_replicator_relay_forward_seconds"
	MetricGoroutines         = "go_goroutines"
	MetricPrefix             = "op_node_default_replicator_"
	ErrorKindBadSignature    = "bad-signature"
	RelayLimitRate           = "rate-limit"
	RelayLimitConnsPerClient = "max-conns-per-client"
	RelayLimitCallRate       = "call-rate"
)
