//go:build bench

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/op-replicator/op-replicator/e2e/devnet"
)

// Helpers of the catch-up and fan-out benchmarks. They use the devnet package only (not the scenarios' helpers,
// which are being reworked into a DSL), so that the benchmarks build on either.

func benchFreePort(t *testing.T) int {
	t.Helper()
	p, err := devnet.FreePort()
	require.NoError(t, err)
	return p
}

// benchRelayArgs enables a node's relay on port, with extra flags.
func benchRelayArgs(port int, extra ...string) []string {
	return append([]string{"--replicator.relay.enabled", "--replicator.relay.port", strconv.Itoa(port)}, extra...)
}

// benchRelaySource is the --replicator.source of a relay listening on port.
func benchRelaySource(port int) string { return "relay+ws://127.0.0.1:" + strconv.Itoa(port) }

func benchFollower(t *testing.T, d *devnet.Devnet, name string, role devnet.Role, opts ...devnet.FollowerOption) *devnet.Node {
	t.Helper()
	n, err := d.AddFollower(t.Context(), name, role, opts...)
	require.NoError(t, err, "add %s", name)
	return n
}

func benchHeader(t *testing.T, el *devnet.EL, n rpc.BlockNumber) *types.Header {
	t.Helper()
	h, err := el.Header(t.Context(), n)
	require.NoError(t, err)
	return h
}

// benchMetric returns the sum of every series of the named metric at a Prometheus endpoint.
func benchMetric(ctx context.Context, url, name string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	var sum float64
	found := false
	scanner := bufio.NewScanner(resp.Body)
	for scanner.Scan() {
		line := scanner.Text()
		if !strings.HasPrefix(line, name+" ") && !strings.HasPrefix(line, name+"{") {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("metric line %q: %w", line, err)
		}
		sum, found = sum+v, true
	}
	if err := scanner.Err(); err != nil {
		return 0, err
	}
	if !found {
		return 0, fmt.Errorf("no metric %s at %s", name, url)
	}
	return sum, nil
}
