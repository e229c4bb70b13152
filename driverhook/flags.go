package driverhook

// The replicator's flags: names, defaults, environment variables and help.

import (
	"time"

	"github.com/urfave/cli/v2"
)

// Category is the `op-node --help` section the replicator flags are listed in.
const Category = "9. SEQUENCER REPLICATOR"

// HaltPolicy says how a halted replicator comes back.
type HaltPolicy string

const (
	// HaltTimed resumes after --replicator.halt.duration.
	HaltTimed HaltPolicy = "timed"
	// HaltManual stays halted until an operator calls replicator_resume.
	HaltManual HaltPolicy = "manual"
	// HaltUntilSynced resumes once derivation has caught up with L1.
	HaltUntilSynced HaltPolicy = "until-synced"
)

var haltPolicies = []HaltPolicy{HaltTimed, HaltManual, HaltUntilSynced}

var (
	EnabledFlagName          = flagName("enabled")
	SourceFlagName           = flagName("source")
	PollIntervalFlagName     = flagName("poll-interval")
	RequestTimeoutFlagName   = flagName("request-timeout")
	ReadTimeoutFlagName      = flagName("read-timeout")
	HaltPolicyFlagName       = flagName("halt.policy")
	HaltDurationFlagName     = flagName("halt.duration")
	L2RPCFlagName            = flagName("l2.rpc")
	StatePathFlagName        = flagName("state.path")
	RequireSignatureFlagName = flagName("require-signature")
	QuorumFlagName           = flagName("quorum")

	RelayEnabledFlagName             = flagName("relay.enabled")
	RelayAddrFlagName                = flagName("relay.addr")
	RelayPortFlagName                = flagName("relay.port")
	RelayWindowFlagName              = flagName("relay.window")
	RelayWindowDirFlagName           = flagName("relay.window.dir")
	RelayWindowMemoryFlagName        = flagName("relay.window.memory")
	RelayMaxSubscribersFlagName      = flagName("relay.max-subscribers")
	RelayMaxSubscribersPerIPFlagName = flagName("relay.max-subscribers-per-ip")
	RelaySendQueueFlagName           = flagName("relay.send-queue")
	RelayMaxMessageSizeFlagName      = flagName("relay.max-message-size")
	RelayMaxConnsPerClientFlagName   = flagName("relay.max-conns-per-client")
	RelayMaxConnsFlagName            = flagName("relay.max-conns")
	RelayRateLimitFlagName           = flagName("relay.rate-limit")
)

const (
	DefaultPollInterval   = 500 * time.Millisecond
	DefaultRequestTimeout = 5 * time.Second
	DefaultReadTimeout    = 12 * time.Second
	DefaultHaltDuration   = 5 * time.Minute

	DefaultRelayAddr                = "127.0.0.1"
	DefaultRelayPort                = 9546
	DefaultRelayWindow              = 1024
	DefaultRelayWindowMemory        = 128
	DefaultRelayMaxSubscribers      = 64
	DefaultRelayMaxSubscribersPerIP = 8
	DefaultRelaySendQueue           = 256
	DefaultRelayMaxMessageSize      = 10 << 20 // op-node's own limit on a gossiped block
	DefaultRelayMaxConnsPerClient   = 16
	DefaultRelayMaxConns            = 256
	DefaultRelayRateLimit           = 50.0
)

func flagName(v string) string { return "replicator." + v }

func envVars(envPrefix, v string) []string { return []string{envPrefix + "_REPLICATOR_" + v} }

// CLIFlags returns the replicator's flags, in op-alt-da's idiom: op-node appends them to its own.
func CLIFlags(envPrefix string, category string) []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{
			Name: EnabledFlagName,
			Usage: "Replicate the sequencer's not-yet-batched blocks from --replicator.source into the local engine " +
				"as unsafe blocks (never at or below the safe head). Off: op-node behaves as stock.",
			EnvVars:  envVars(envPrefix, "ENABLED"),
			Category: category,
		},
		&cli.StringSliceFlag{
			Name: SourceFlagName,
			Usage: "Where blocks come from; several may be given (comma-separated or repeated), the first valid copy of " +
				"a block wins. Each is the sequencer's execution-engine RPC as an http(s):// or ws(s):// URL (with ws(s), " +
				"new heads are subscribed to; polling stays on), or another node's relay as relay+ws(s)://host:port " +
				"(blocks must carry the sequencer's signature).",
			EnvVars:  envVars(envPrefix, "SOURCE"),
			Category: category,
		},
		&cli.DurationFlag{
			Name:     ReadTimeoutFlagName,
			Usage:    "A relay source that sends nothing for this long is reconnected.",
			Value:    DefaultReadTimeout,
			EnvVars:  envVars(envPrefix, "READ_TIMEOUT"),
			Category: category,
		},
		&cli.DurationFlag{
			Name:     PollIntervalFlagName,
			Usage:    "How often the source is polled for new blocks and the local head checked against it.",
			Value:    DefaultPollInterval,
			EnvVars:  envVars(envPrefix, "POLL_INTERVAL"),
			Category: category,
		},
		&cli.DurationFlag{
			Name:     RequestTimeoutFlagName,
			Usage:    "Timeout of one request to the source.",
			Value:    DefaultRequestTimeout,
			EnvVars:  envVars(envPrefix, "REQUEST_TIMEOUT"),
			Category: category,
		},
		&cli.StringFlag{
			Name: HaltPolicyFlagName,
			Usage: "How a halted replicator resumes: 'timed' (after --replicator.halt.duration), 'manual' " +
				"(replicator_resume over the admin RPC) or 'until-synced' (once derivation has caught up with L1).",
			Value:    string(HaltTimed),
			EnvVars:  envVars(envPrefix, "HALT_POLICY"),
			Category: category,
		},
		&cli.DurationFlag{
			Name:     HaltDurationFlagName,
			Usage:    "With --replicator.halt.policy=timed: how long a halt lasts.",
			Value:    DefaultHaltDuration,
			EnvVars:  envVars(envPrefix, "HALT_DURATION"),
			Category: category,
		},
		&cli.StringFlag{
			Name: L2RPCFlagName,
			Usage: "This node's own op-geth (the engine behind --l2), its user RPC as an http(s)://, ws(s):// URL or IPC " +
				"path, with the debug namespace enabled. A halt rewinds op-geth's chain to the safe head with debug_setHead: " +
				"a forkchoice update alone leaves op-geth serving the rejected blocks as latest. Required with " +
				"--replicator.enabled; checked at start-up. Keep it on loopback or IPC: debug_setHead rewrites the chain.",
			EnvVars:  envVars(envPrefix, "L2_RPC"),
			Category: category,
		},
		&cli.BoolFlag{
			Name: RequireSignatureFlagName,
			Usage: "Insert only blocks carrying the sequencer's signature (from a relay source or this node's P2P " +
				"gossip), whichever source delivered them: an RPC source still announces new heads, but its block is " +
				"inserted only once the matching signed block is held.",
			EnvVars:  envVars(envPrefix, "REQUIRE_SIGNATURE"),
			Category: category,
		},
		&cli.IntFlag{
			Name: QuorumFlagName,
			Usage: "How many RPC sources (unsigned: trusted for content) must serve a block with the same hash before it " +
				"is inserted. Sources that disagree are set aside for a while; nothing halts. A signed block held at " +
				"that height wins over any of them.",
			Value:    1,
			EnvVars:  envVars(envPrefix, "QUORUM"),
			Category: category,
		},
		&cli.StringFlag{
			Name: StatePathFlagName,
			Usage: "File that keeps the halt state (state, reason, detail, since, resumeAt), the equivocation evidence and " +
				"the last replicated block across restarts, written atomically. Without it a restart forgets a halt.",
			EnvVars:  envVars(envPrefix, "STATE_PATH"),
			Category: category,
		},
		&cli.BoolFlag{
			Name: RelayEnabledFlagName,
			Usage: "Serve the sequencer-signed blocks this node holds (accepted from P2P gossip) to downstream nodes, " +
				"on a JSON-RPC listener of its own (relay_subscribe \"envelopes\", relay_envelopeByNumber). Also on a sequencer.",
			EnvVars:  envVars(envPrefix, "RELAY_ENABLED"),
			Category: category,
		},
		&cli.StringFlag{
			Name:     RelayAddrFlagName,
			Usage:    "Relay listening address.",
			Value:    DefaultRelayAddr,
			EnvVars:  envVars(envPrefix, "RELAY_ADDR"),
			Category: category,
		},
		&cli.IntFlag{
			Name:     RelayPortFlagName,
			Usage:    "Relay listening port (HTTP and websocket).",
			Value:    DefaultRelayPort,
			EnvVars:  envVars(envPrefix, "RELAY_PORT"),
			Category: category,
		},
		&cli.IntFlag{
			Name:     RelayWindowFlagName,
			Usage:    "How many recent block heights of signed blocks are held for relaying.",
			Value:    DefaultRelayWindow,
			EnvVars:  envVars(envPrefix, "RELAY_WINDOW"),
			Category: category,
		},
		&cli.StringFlag{
			Name: RelayWindowDirFlagName,
			Usage: "Directory for the window of signed blocks on disk: all but the newest heights (--" +
				RelayWindowMemoryFlagName + ") are kept there rather than in memory. Its " + RelayWindowSubdir +
				" subdirectory is wiped at start. Empty: the whole window is in memory.",
			EnvVars:  envVars(envPrefix, "RELAY_WINDOW_DIR"),
			Category: category,
		},
		&cli.IntFlag{
			Name:     RelayWindowMemoryFlagName,
			Usage:    "With --" + RelayWindowDirFlagName + ": how many of the newest heights of the window are kept in memory.",
			Value:    DefaultRelayWindowMemory,
			EnvVars:  envVars(envPrefix, "RELAY_WINDOW_MEMORY"),
			Category: category,
		},
		&cli.IntFlag{
			Name:     RelayMaxSubscribersFlagName,
			Usage:    "Most relay subscriptions at once; more are refused.",
			Value:    DefaultRelayMaxSubscribers,
			EnvVars:  envVars(envPrefix, "RELAY_MAX_SUBSCRIBERS"),
			Category: category,
		},
		&cli.IntFlag{
			Name:     RelayMaxSubscribersPerIPFlagName,
			Usage:    "Most relay subscriptions from one IP address at once; more are refused.",
			Value:    DefaultRelayMaxSubscribersPerIP,
			EnvVars:  envVars(envPrefix, "RELAY_MAX_SUBSCRIBERS_PER_IP"),
			Category: category,
		},
		&cli.IntFlag{
			Name:     RelaySendQueueFlagName,
			Usage:    "Signed blocks queued for one relay subscriber; a subscriber that falls this far behind is dropped.",
			Value:    DefaultRelaySendQueue,
			EnvVars:  envVars(envPrefix, "RELAY_SEND_QUEUE"),
			Category: category,
		},
		&cli.IntFlag{
			Name: RelayMaxConnsPerClientFlagName,
			Usage: "Most open TCP connections (idle or not: HTTP, websockets) from one client: an IPv4 address or " +
				"an IPv6 /64; more are closed as soon as they are accepted. A replicator following this relay holds two " +
				"(its subscription and its calls).",
			Value:    DefaultRelayMaxConnsPerClient,
			EnvVars:  envVars(envPrefix, "RELAY_MAX_CONNS_PER_CLIENT"),
			Category: category,
		},
		&cli.IntFlag{
			Name: RelayMaxConnsFlagName,
			Usage: "Most open TCP connections to the relay from all clients together (idle or not: HTTP, " +
				"websockets); more are closed as soon as they are accepted. At least --" + RelayMaxSubscribersFlagName +
				": each subscription holds one.",
			Value:    DefaultRelayMaxConns,
			EnvVars:  envVars(envPrefix, "RELAY_MAX_CONNS"),
			Category: category,
		},
		&cli.Float64Flag{
			Name: RelayRateLimitFlagName,
			Usage: "HTTP requests and websocket connections per second from one client (IPv4 address or IPv6 /64), with " +
				"a burst of as many; more are refused with HTTP 429. Calls on the client's websockets (each call of a batch) " +
				"take from the same budget, and wait for it rather than being refused.",
			Value:    DefaultRelayRateLimit,
			EnvVars:  envVars(envPrefix, "RELAY_RATE_LIMIT"),
			Category: category,
		},
		&cli.IntFlag{
			Name:     RelayMaxMessageSizeFlagName,
			Usage:    "Largest relay message in bytes; larger signed blocks are not relayed.",
			Value:    DefaultRelayMaxMessageSize,
			EnvVars:  envVars(envPrefix, "RELAY_MAX_MESSAGE_SIZE"),
			Category: category,
		},
	}
}
