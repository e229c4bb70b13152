package devnet

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSetNiceSetsEveryThread checks SetNice against what the kernel reports for each of the process's threads
// (field 19 of /proc/<pid>/task/<tid>/stat).
func TestSetNiceSetsEveryThread(t *testing.T) {
	// A Go program, as every devnet binary is: this test binary, blocked in TestMain.
	t.Setenv("DEVNET_SET_NICE_HELPER", "1")
	p := newProcess("helper", filepath.Join(t.TempDir(), "helper.log"), os.Args[0], nil, nil)
	require.NoError(t, p.Start())
	t.Cleanup(func() { _ = p.Kill() })
	var tasks []string
	require.Eventually(t, func() bool { // the Go runtime has started its threads
		tasks, _ = filepath.Glob(filepath.Join("/proc", strconv.Itoa(p.Pid()), "task", "*", "stat"))
		return len(tasks) >= 3
	}, 10*time.Second, 10*time.Millisecond)

	require.NoError(t, p.SetNice(7))
	for _, task := range tasks {
		stat, err := os.ReadFile(task)
		require.NoError(t, err)
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		require.Equal(t, "7", fields[16], "nice of %s", task) // field 19 of the line, 17th after the name
	}
	require.Error(t, newProcess("idle", "", os.Args[0], nil, nil).SetNice(7), "a process that is not running")
}

// A process's env reaches the child on top of the test's own environment (/proc/<pid>/environ).
func TestProcessEnvReachesTheChild(t *testing.T) {
	t.Setenv("DEVNET_ENV_INHERITED", "yes")
	p := newProcess("helper", filepath.Join(t.TempDir(), "helper.log"), os.Args[0], nil, nil)
	p.env = []string{"DEVNET_SET_NICE_HELPER=1", "GOMAXPROCS=1"}
	require.NoError(t, p.Start())
	t.Cleanup(func() { _ = p.Kill() })
	environ, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p.Pid()), "environ"))
	require.NoError(t, err)
	vars := strings.Split(string(environ), "\x00")
	require.Contains(t, vars, "GOMAXPROCS=1")
	require.Contains(t, vars, "DEVNET_SET_NICE_HELPER=1")
	require.Contains(t, vars, "DEVNET_ENV_INHERITED=yes")
}

// TestMain makes this test binary TestSetNiceSetsEveryThread's child process when asked: it then blocks until killed.
func TestMain(m *testing.M) {
	if os.Getenv("DEVNET_SET_NICE_HELPER") == "1" {
		time.Sleep(time.Hour) // killed by the test long before
	}
	os.Exit(m.Run())
}
