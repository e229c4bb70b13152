package driverhook

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/urfave/cli/v2"
)

// readFlags parses args with the replicator's flags, as op-node would.
func readFlags(t *testing.T, args ...string) CLIConfig {
	t.Helper()
	set := flag.NewFlagSet("test", flag.ContinueOnError)
	for _, f := range CLIFlags("OP_NODE", Category) {
		require.NoError(t, f.Apply(set))
	}
	require.NoError(t, set.Parse(args))
	return ReadCLIConfig(cli.NewContext(cli.NewApp(), set, nil))
}

func TestDefaults(t *testing.T) {
	cfg := readFlags(t)
	require.False(t, cfg.Enabled)
	require.NoError(t, cfg.Check(), "disabled is always valid")
	require.Equal(t, HaltTimed, cfg.HaltPolicy)
	require.Equal(t, DefaultHaltDuration, cfg.HaltDuration)
	require.Equal(t, DefaultPollInterval, cfg.PollInterval)
	require.False(t, cfg.RequireSignature)
	require.Equal(t, 1, cfg.Quorum)
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		err  string
	}{
		{"http source", []string{"--replicator.enabled", "--replicator.source=http://127.0.0.1:9545"}, ""},
		{"ws source, manual", []string{"--replicator.enabled", "--replicator.source=wss://seq:8546", "--replicator.halt.policy=manual"}, ""},
		{"until-synced", []string{"--replicator.enabled", "--replicator.source=http://seq", "--replicator.halt.policy=until-synced"}, ""},
		{"timed with duration", []string{"--replicator.enabled", "--replicator.source=http://seq", "--replicator.halt.duration=30s"}, ""},
		{"no source", []string{"--replicator.enabled"}, "--replicator.source is required"},
		{"bad scheme", []string{"--replicator.enabled", "--replicator.source=ftp://seq"}, "scheme must be"},
		{"several sources", []string{"--replicator.enabled", "--replicator.source=http://seq,relay+ws://relay:9546", "--replicator.source=relay+wss://r2"}, ""},
		{"relay over http", []string{"--replicator.enabled", "--replicator.source=relay+http://relay:9546"}, "relay+ws or relay+wss"},
		{"one bad among several", []string{"--replicator.enabled", "--replicator.source=http://seq,ftp://x"}, "scheme must be"},
		{"zero read timeout", []string{"--replicator.enabled", "--replicator.source=http://seq", "--replicator.read-timeout=0s"}, "must be positive"},
		{"no host", []string{"--replicator.enabled", "--replicator.source=http://"}, "has no host"},
		{"unknown policy", []string{"--replicator.enabled", "--replicator.source=http://seq", "--replicator.halt.policy=never"}, "is not one of"},
		{"zero duration", []string{"--replicator.enabled", "--replicator.source=http://seq", "--replicator.halt.duration=0s"}, "must be positive"},
		{"duration without timed", []string{"--replicator.enabled", "--replicator.source=http://seq", "--replicator.halt.policy=manual", "--replicator.halt.duration=1m"}, "only applies to"},
		{"zero poll interval", []string{"--replicator.enabled", "--replicator.source=http://seq", "--replicator.poll-interval=0s"}, "must be positive"},
		{"zero timeout", []string{"--replicator.enabled", "--replicator.source=http://seq", "--replicator.request-timeout=0s"}, "must be positive"},
		{"relay only", []string{"--replicator.relay.enabled"}, ""},
		{"relay bad port", []string{"--replicator.relay.enabled", "--replicator.relay.port=70000"}, "is not a port"},
		{"relay zero queue", []string{"--replicator.relay.enabled", "--replicator.relay.send-queue=0"}, "must be positive"},
		{"relay per-ip above total", []string{"--replicator.relay.enabled", "--replicator.relay.max-subscribers=2",
			"--replicator.relay.max-subscribers-per-ip=3"}, "is above"},
		{"relay subscribers above connections", []string{"--replicator.relay.enabled", "--replicator.relay.max-subscribers=300",
			"--replicator.relay.max-subscribers-per-ip=8"}, "each subscription holds a connection"},
		{"relay per-client connections above total", []string{"--replicator.relay.enabled",
			"--replicator.relay.max-conns-per-client=300"}, "is above --replicator.relay.max-conns"},
		{"relay 1,000 subscribers", []string{"--replicator.relay.enabled", "--replicator.relay.max-subscribers=1000",
			"--replicator.relay.max-conns=1100"}, ""},
		{"relay zero connections", []string{"--replicator.relay.enabled", "--replicator.relay.max-conns=0"}, "must be positive"},
		{"relay limits ignored when off", []string{"--replicator.relay.send-queue=0"}, ""},
		{"l2 rpc is the source", []string{"--replicator.enabled", "--replicator.source=http://127.0.0.1:8545"}, "is the same endpoint as --replicator.source"},
		{"l2 rpc is the source over ws", []string{"--replicator.enabled", "--replicator.source=relay+ws://localhost:8545"}, "is the same endpoint"},
		{"l2 rpc is one of the sources", []string{"--replicator.enabled", "--replicator.source=ws://seq:8546,http://LOCALHOST:8545/"}, "is the same endpoint"},
		{"l2 rpc on another port", []string{"--replicator.enabled", "--replicator.source=http://127.0.0.1:8546"}, ""},
		{"l2 rpc over IPC", []string{"--replicator.enabled", "--replicator.source=http://127.0.0.1:8545", "--replicator.l2.rpc=/data/geth.ipc"}, ""},
		{"no l2 rpc", []string{"--replicator.enabled", "--replicator.source=http://seq", "--replicator.l2.rpc="}, "--replicator.l2.rpc is required"},
		{"quorum of two RPC sources", []string{"--replicator.enabled", "--replicator.source=http://a,ws://b,relay+ws://r", "--replicator.quorum=2"}, ""},
		{"quorum above the RPC sources", []string{"--replicator.enabled", "--replicator.source=http://a,relay+ws://r,relay+ws://s", "--replicator.quorum=2"},
			"must be between 1 and the number of RPC sources in --replicator.source (1)"},
		{"negative quorum", []string{"--replicator.enabled", "--replicator.source=http://a", "--replicator.quorum=-1"}, "must be between 1"},
		{"signatures required", []string{"--replicator.enabled", "--replicator.source=ws://seq,relay+ws://r", "--replicator.require-signature"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Every enabled case has this node's op-geth RPC unless it says otherwise (a later flag wins).
			args := append([]string{"--replicator.l2.rpc=http://127.0.0.1:8545"}, tc.args...)
			cfg := readFlags(t, args...)
			err := cfg.Check()
			if tc.err == "" {
				require.NoError(t, err)
			} else {
				require.ErrorContains(t, err, tc.err)
			}
		})
	}
}

func TestEnvVars(t *testing.T) {
	t.Setenv("OP_NODE_REPLICATOR_ENABLED", "true")
	t.Setenv("OP_NODE_REPLICATOR_SOURCE", "ws://seq:8546")
	t.Setenv("OP_NODE_REPLICATOR_HALT_POLICY", "manual")
	t.Setenv("OP_NODE_REPLICATOR_POLL_INTERVAL", "250ms")
	t.Setenv("OP_NODE_REPLICATOR_L2_RPC", "/data/op-geth/geth.ipc")
	t.Setenv("OP_NODE_REPLICATOR_STATE_PATH", "/data/op-node/replicator.json")
	t.Setenv("OP_NODE_REPLICATOR_REQUIRE_SIGNATURE", "true")
	t.Setenv("OP_NODE_REPLICATOR_QUORUM", "1")
	cfg := readFlags(t)
	require.True(t, cfg.RequireSignature)
	require.Equal(t, 1, cfg.Quorum)
	require.True(t, cfg.Enabled)
	require.Equal(t, []string{"ws://seq:8546"}, cfg.Sources)
	require.Equal(t, HaltManual, cfg.HaltPolicy)
	require.Equal(t, 250*time.Millisecond, cfg.PollInterval)
	require.Equal(t, "/data/op-geth/geth.ipc", cfg.L2RPC)
	require.Equal(t, "/data/op-node/replicator.json", cfg.StatePath)
	require.NoError(t, cfg.Check())
}

func TestNewDisabledIsNil(t *testing.T) {
	// Neither replication nor the relay: no service at all, op-node runs as stock.
	svc, err := New(CLIConfig{}, Deps{})
	require.NoError(t, err)
	require.Nil(t, svc)
}

// CheckNode refuses the replicator on a sequencer and on a light CL node, and is Check otherwise; a disabled
// replicator (the relay alone, or nothing) is valid on either.
func TestCheckNode(t *testing.T) {
	on := CLIConfig{Enabled: true}
	require.ErrorIs(t, on.CheckNode(true, false), ErrSequencer)
	require.ErrorIs(t, on.CheckNode(false, true), ErrFollowSource)
	require.ErrorContains(t, on.CheckNode(false, false), "--replicator.source is required")
	off := CLIConfig{}
	require.NoError(t, off.CheckNode(true, true))
}

// The window on disk: off by default; with a directory, the heights kept in memory are within the window, and the
// directory is created (or the configuration refused).
func TestRelayWindowDir(t *testing.T) {
	cfg := readFlags(t)
	require.Empty(t, cfg.Relay.WindowDir, "the whole window is in memory by default")
	require.Equal(t, DefaultRelayWindowMemory, cfg.Relay.WindowMemory)

	dir := filepath.Join(t.TempDir(), "a", "b")
	cfg = readFlags(t, "--replicator.relay.enabled", "--replicator.relay.window.dir="+dir, "--replicator.relay.window.memory=64")
	require.NoError(t, cfg.Check())
	require.Equal(t, 64, cfg.Relay.WindowMemory)
	require.DirExists(t, dir, "created by the check")

	t.Setenv("OP_NODE_REPLICATOR_RELAY_WINDOW_DIR", dir)
	require.Equal(t, dir, readFlags(t).Relay.WindowDir, "from the environment")
	cfg = readFlags(t)
	require.NoError(t, cfg.Check(), "checked with the relay disabled too: the replicator's signed blocks use it")

	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	for _, tc := range []struct {
		name string
		args []string
		err  string
	}{
		{"zero memory", []string{"--replicator.relay.window.dir=" + dir, "--replicator.relay.window.memory=0"}, "must be between 1"},
		{"memory above window", []string{"--replicator.relay.window.dir=" + dir, "--replicator.relay.window=100",
			"--replicator.relay.window.memory=101"}, "must be between 1"},
		{"not creatable", []string{"--replicator.relay.window.dir=" + filepath.Join(file, "sub")}, "--replicator.relay.window.dir"},
		{"memory ignored without a dir", []string{"--replicator.relay.window=100", "--replicator.relay.window.memory=101"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("OP_NODE_REPLICATOR_RELAY_WINDOW_DIR", "")
			cfg := readFlags(t, append([]string{"--replicator.relay.enabled"}, tc.args...)...)
			err := cfg.Check()
			if tc.err == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.err)
		})
	}
}
