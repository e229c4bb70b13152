package driverhook

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/ethereum-optimism/optimism/op-service/cliiface"
)

// RelayConfig configures the relay that serves held sequencer-signed blocks to downstream nodes.
type RelayConfig struct {
	Enabled bool
	Addr    string
	Port    int
	Window  int
	// WindowDir, when set, holds the window's older heights on disk; WindowMemory heights stay in memory.
	WindowDir           string
	WindowMemory        int
	MaxSubscribers      int
	MaxSubscribersPerIP int
	SendQueue           int
	MaxMessageSize      int
	MaxConnsPerClient   int
	MaxConns            int
	RateLimit           float64
}

// Check returns an error an operator can act on. A disabled relay is valid but for its window on disk, which the
// signed blocks a replicator holds use too.
func (c *RelayConfig) Check() error {
	if err := c.checkWindowDir(); err != nil {
		return err
	}
	if !c.Enabled {
		return nil
	}
	if c.Port < 0 || c.Port > 65535 {
		return fmt.Errorf("--%s %d is not a port", RelayPortFlagName, c.Port)
	}
	for _, v := range []struct {
		name  string
		value int
	}{
		{RelayWindowFlagName, c.Window},
		{RelayMaxSubscribersFlagName, c.MaxSubscribers},
		{RelayMaxSubscribersPerIPFlagName, c.MaxSubscribersPerIP},
		{RelaySendQueueFlagName, c.SendQueue},
		{RelayMaxMessageSizeFlagName, c.MaxMessageSize},
		{RelayMaxConnsPerClientFlagName, c.MaxConnsPerClient},
		{RelayMaxConnsFlagName, c.MaxConns},
	} {
		if v.value <= 0 {
			return fmt.Errorf("--%s must be positive, got %d", v.name, v.value)
		}
	}
	if c.RateLimit <= 0 {
		return fmt.Errorf("--%s must be positive, got %v", RelayRateLimitFlagName, c.RateLimit)
	}
	if c.MaxSubscribersPerIP > c.MaxSubscribers {
		return fmt.Errorf("--%s (%d) is above --%s (%d)", RelayMaxSubscribersPerIPFlagName, c.MaxSubscribersPerIP,
			RelayMaxSubscribersFlagName, c.MaxSubscribers)
	}
	if c.MaxSubscribers > c.MaxConns {
		return fmt.Errorf("--%s (%d) is above --%s (%d): each subscription holds a connection",
			RelayMaxSubscribersFlagName, c.MaxSubscribers, RelayMaxConnsFlagName, c.MaxConns)
	}
	if c.MaxConnsPerClient > c.MaxConns {
		return fmt.Errorf("--%s (%d) is above --%s (%d)", RelayMaxConnsPerClientFlagName, c.MaxConnsPerClient,
			RelayMaxConnsFlagName, c.MaxConns)
	}
	return nil
}

// RelayWindowSubdir is the directory the window on disk owns inside --replicator.relay.window.dir, and wipes at
// start: not the directory given itself, so that a mistyped path never empties a directory of something else.
const RelayWindowSubdir = "relay-window"

// checkWindowDir checks the window on disk: memory heights within the window, and a directory that can be created.
func (c *RelayConfig) checkWindowDir() error {
	if c.WindowDir == "" {
		return nil
	}
	window := c.Window
	if window <= 0 {
		window = DefaultRelayWindow
	}
	if c.WindowMemory <= 0 || c.WindowMemory > window {
		return fmt.Errorf("--%s must be between 1 and --%s (%d), got %d", RelayWindowMemoryFlagName,
			RelayWindowFlagName, window, c.WindowMemory)
	}
	if err := os.MkdirAll(c.WindowDir, 0o755); err != nil {
		return fmt.Errorf("--%s: %w", RelayWindowDirFlagName, err)
	}
	return nil
}

// CLIConfig is the replicator's configuration as read from the command line.
type CLIConfig struct {
	Enabled        bool
	Sources        []string
	ReadTimeout    time.Duration
	PollInterval   time.Duration
	RequestTimeout time.Duration
	HaltPolicy     HaltPolicy
	HaltDuration   time.Duration
	// L2RPC is this node's op-geth user RPC with the debug namespace, for rewinding its chain at a halt.
	L2RPC string
	// StatePath is the state file ("" keeps the state in memory only).
	StatePath string
	// RequireSignature: every block inserted carries the sequencer's signature.
	RequireSignature bool
	// Quorum is how many unsigned (RPC) sources must agree on a block's hash before it is inserted (0 is 1).
	Quorum int
	Relay  RelayConfig

	// haltDurationSet records an explicit --replicator.halt.duration, which only makes sense with the timed policy.
	haltDurationSet bool
}

// ReadCLIConfig reads the replicator flags.
func ReadCLIConfig(ctx cliiface.Context) CLIConfig {
	return CLIConfig{
		Enabled:          ctx.Bool(EnabledFlagName),
		Sources:          ctx.StringSlice(SourceFlagName),
		ReadTimeout:      ctx.Duration(ReadTimeoutFlagName),
		PollInterval:     ctx.Duration(PollIntervalFlagName),
		RequestTimeout:   ctx.Duration(RequestTimeoutFlagName),
		HaltPolicy:       HaltPolicy(ctx.String(HaltPolicyFlagName)),
		HaltDuration:     ctx.Duration(HaltDurationFlagName),
		haltDurationSet:  ctx.IsSet(HaltDurationFlagName),
		L2RPC:            ctx.String(L2RPCFlagName),
		StatePath:        ctx.String(StatePathFlagName),
		RequireSignature: ctx.Bool(RequireSignatureFlagName),
		Quorum:           ctx.Int(QuorumFlagName),
		Relay: RelayConfig{
			Enabled:             ctx.Bool(RelayEnabledFlagName),
			Addr:                ctx.String(RelayAddrFlagName),
			Port:                ctx.Int(RelayPortFlagName),
			Window:              ctx.Int(RelayWindowFlagName),
			WindowDir:           ctx.String(RelayWindowDirFlagName),
			WindowMemory:        ctx.Int(RelayWindowMemoryFlagName),
			MaxSubscribers:      ctx.Int(RelayMaxSubscribersFlagName),
			MaxSubscribersPerIP: ctx.Int(RelayMaxSubscribersPerIPFlagName),
			SendQueue:           ctx.Int(RelaySendQueueFlagName),
			MaxMessageSize:      ctx.Int(RelayMaxMessageSizeFlagName),
			MaxConnsPerClient:   ctx.Int(RelayMaxConnsPerClientFlagName),
			MaxConns:            ctx.Int(RelayMaxConnsFlagName),
			RateLimit:           ctx.Float64(RelayRateLimitFlagName),
		},
	}
}

// Check returns an error an operator can act on for an invalid configuration. A disabled replicator (and relay) is
// always valid.
func (c *CLIConfig) Check() error {
	if err := c.Relay.Check(); err != nil {
		return err
	}
	if !c.Enabled {
		return nil
	}
	if len(c.Sources) == 0 {
		return fmt.Errorf("--%s is required with --%s", SourceFlagName, EnabledFlagName)
	}
	for _, src := range c.Sources {
		if err := checkSource(src); err != nil {
			return err
		}
	}
	if c.L2RPC == "" {
		return fmt.Errorf("--%s is required with --%s: a halt rewinds this node's op-geth with debug_setHead over it",
			L2RPCFlagName, EnabledFlagName)
	}
	for _, src := range c.Sources {
		if sameEndpoint(c.L2RPC, src) {
			return fmt.Errorf("--%s %s is the same endpoint as --%s %s: a halt rewinds the node at --%s with "+
				"debug_setHead; point it at this node's own op-geth (the one behind --l2)", L2RPCFlagName, c.L2RPC,
				SourceFlagName, src, L2RPCFlagName)
		}
	}
	if unsigned := c.UnsignedSources(); c.Quorum < 0 || c.Quorum > max(unsigned, 1) {
		return fmt.Errorf("--%s %d: must be between 1 and the number of RPC sources in --%s (%d)", QuorumFlagName,
			c.Quorum, SourceFlagName, unsigned)
	}
	if c.ReadTimeout <= 0 {
		return fmt.Errorf("--%s must be positive, got %s", ReadTimeoutFlagName, c.ReadTimeout)
	}
	if c.PollInterval <= 0 {
		return fmt.Errorf("--%s must be positive, got %s", PollIntervalFlagName, c.PollInterval)
	}
	if c.RequestTimeout <= 0 {
		return fmt.Errorf("--%s must be positive, got %s", RequestTimeoutFlagName, c.RequestTimeout)
	}
	switch c.HaltPolicy {
	case HaltTimed:
		if c.HaltDuration <= 0 {
			return fmt.Errorf("--%s must be positive with --%s=%s", HaltDurationFlagName, HaltPolicyFlagName, HaltTimed)
		}
	case HaltManual, HaltUntilSynced:
		if c.haltDurationSet {
			return fmt.Errorf("--%s only applies to --%s=%s, not %q", HaltDurationFlagName, HaltPolicyFlagName, HaltTimed, c.HaltPolicy)
		}
	default:
		return fmt.Errorf("--%s %q is not one of %v", HaltPolicyFlagName, c.HaltPolicy, haltPolicies)
	}
	return nil
}

// CheckNode is Check, and the refusal of a replicator on a node it cannot run on: a sequencer (ErrSequencer) or a
// light CL node (ErrFollowSource).
func (c *CLIConfig) CheckNode(sequencer, followSource bool) error {
	switch {
	case c.Enabled && sequencer:
		return ErrSequencer
	case c.Enabled && followSource:
		return ErrFollowSource
	}
	return c.Check()
}

// UnsignedSources counts the sources that are not relays: RPC sources, whose blocks carry no signature.
func (c *CLIConfig) UnsignedSources() int {
	n := 0
	for _, src := range c.Sources {
		if !IsRelaySource(src) {
			n++
		}
	}
	return n
}

// ErrSequencer is returned for a replicator configured on a sequencer: a sequencer builds its own chain.
var ErrSequencer = errors.New("--replicator.enabled cannot be combined with --sequencer.enabled: a sequencer builds the chain it would replicate")

// ErrFollowSource is returned for a replicator configured on a light CL node (--l2.follow.source). Such a node takes
// its safe chain from another op-node instead of deriving it: a halt rewinds to a safe head that the node does not
// derive itself, and while halted it would stop following (op-node resets on its follow source's heads, which are
// above the rewound engine's). The replicator needs a node that derives its own safe chain from L1.
var ErrFollowSource = errors.New("--replicator.enabled cannot be combined with --l2.follow.source: a halt rewinds to the " +
	"safe head this node derives from L1, and a light CL node does not derive it; run the replicator on a node without --l2.follow.source")

// RelayScheme prefixes a source URL that is another node's relay, e.g. relay+ws://relay.example:9546.
const RelayScheme = "relay+"

// IsRelaySource tells a relay source from a sequencer execution-engine RPC.
func IsRelaySource(src string) bool { return strings.HasPrefix(src, RelayScheme) }

func checkSource(src string) error {
	u, err := url.Parse(strings.TrimPrefix(src, RelayScheme))
	if err != nil {
		return fmt.Errorf("--%s %q is not a URL: %w", SourceFlagName, src, err)
	}
	switch {
	case IsRelaySource(src) && u.Scheme != "ws" && u.Scheme != "wss":
		return fmt.Errorf("--%s %q: a relay is subscribed to, its scheme must be relay+ws or relay+wss", SourceFlagName, src)
	case !IsRelaySource(src) && u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "ws" && u.Scheme != "wss":
		return fmt.Errorf("--%s %q: scheme must be http, https, ws, wss, relay+ws or relay+wss", SourceFlagName, src)
	case u.Host == "":
		return fmt.Errorf("--%s %q has no host", SourceFlagName, src)
	}
	return nil
}

// sameEndpoint reports whether two RPC URLs name the same host and port (whatever the scheme: op-geth can serve http
// and ws on one port). An IPC path has no host and matches nothing.
func sameEndpoint(a, b string) bool {
	ha, pa, okA := endpoint(a)
	hb, pb, okB := endpoint(b)
	return okA && okB && ha == hb && pa == pb
}

func endpoint(raw string) (host, port string, ok bool) {
	u, err := url.Parse(strings.TrimPrefix(raw, RelayScheme))
	if err != nil || u.Host == "" {
		return "", "", false
	}
	host, port = strings.ToLower(u.Hostname()), u.Port()
	if host == "localhost" || host == "::1" {
		host = "127.0.0.1"
	}
	if port == "" {
		port = map[string]string{"http": "80", "ws": "80", "https": "443", "wss": "443"}[u.Scheme]
	}
	return host, port, true
}
