package driverhook

import (
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ethereum-optimism/optimism/op-service/cliiface"
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
	EnabledFlagName        = flagName("enabled")
	SourceFlagName         = flagName("source")
	PollIntervalFlagName   = flagName("poll-interval")
	RequestTimeoutFlagName = flagName("request-timeout")
	HaltPolicyFlagName     = flagName("halt.policy")
	HaltDurationFlagName   = flagName("halt.duration")
)

const (
	DefaultPollInterval   = 500 * time.Millisecond
	DefaultRequestTimeout = 5 * time.Second
	DefaultHaltDuration   = 5 * time.Minute
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
		&cli.StringFlag{
			Name:     SourceFlagName,
			Usage:    "HTTP(S) or WS(S) URL of the sequencer's execution-engine RPC. With WS(S), new heads are subscribed to and polling stays on as a fallback.",
			EnvVars:  envVars(envPrefix, "SOURCE"),
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
	}
}

// CLIConfig is the replicator's configuration as read from the command line.
type CLIConfig struct {
	Enabled        bool
	Source         string
	PollInterval   time.Duration
	RequestTimeout time.Duration
	HaltPolicy     HaltPolicy
	HaltDuration   time.Duration

	// haltDurationSet records an explicit --replicator.halt.duration, which only makes sense with the timed policy.
	haltDurationSet bool
}

// ReadCLIConfig reads the replicator flags.
func ReadCLIConfig(ctx cliiface.Context) CLIConfig {
	return CLIConfig{
		Enabled:         ctx.Bool(EnabledFlagName),
		Source:          ctx.String(SourceFlagName),
		PollInterval:    ctx.Duration(PollIntervalFlagName),
		RequestTimeout:  ctx.Duration(RequestTimeoutFlagName),
		HaltPolicy:      HaltPolicy(ctx.String(HaltPolicyFlagName)),
		HaltDuration:    ctx.Duration(HaltDurationFlagName),
		haltDurationSet: ctx.IsSet(HaltDurationFlagName),
	}
}

// Check returns an error an operator can act on for an invalid configuration. A disabled replicator is always valid.
func (c *CLIConfig) Check() error {
	if !c.Enabled {
		return nil
	}
	if c.Source == "" {
		return fmt.Errorf("--%s is required with --%s", SourceFlagName, EnabledFlagName)
	}
	u, err := url.Parse(c.Source)
	if err != nil {
		return fmt.Errorf("--%s %q is not a URL: %w", SourceFlagName, c.Source, err)
	}
	switch u.Scheme {
	case "http", "https", "ws", "wss":
	default:
		return fmt.Errorf("--%s %q: scheme must be http, https, ws or wss", SourceFlagName, c.Source)
	}
	if u.Host == "" {
		return fmt.Errorf("--%s %q has no host", SourceFlagName, c.Source)
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

// ErrSequencer is returned for a replicator configured on a sequencer: a sequencer builds its own chain.
var ErrSequencer = errors.New("--replicator.enabled cannot be combined with --sequencer.enabled: a sequencer builds the chain it would replicate")
