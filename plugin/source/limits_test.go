package source

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/internal/testkit"
	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/log"

	"github.com/ethereum-optimism/optimism/op-service/clock"
	"github.com/ethereum-optimism/optimism/op-service/eth"
	"github.com/ethereum-optimism/optimism/op-service/testlog"
)

func TestLimitedTransport(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := 100
		if r.URL.Path == "/long" {
			n = 101
		}
		_, _ = w.Write([]byte(strings.Repeat("a", n)))
	}))
	defer srv.Close()
	c := &http.Client{Transport: limitedTransport{next: http.DefaultTransport, limit: 100}}
	for path, wantErr := range map[string]bool{"/exact": false, "/long": true} {
		resp, err := c.Get(srv.URL + path)
		require.NoError(t, err)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if wantErr {
			require.ErrorIs(t, err, errResponseTooLarge, path)
		} else {
			require.NoError(t, err, path)
			require.Len(t, body, 100)
		}
	}
}

// An http source streaming an endless body is cut at maxSourceResponse: a bad-input error, memory bounded.
func TestHTTPSourceEndlessBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("content-type", "application/json")
		_, _ = w.Write([]byte(`{"jsonrpc":"2.0","id":1,"result":"`))
		chunk := []byte(strings.Repeat("a", 64<<10))
		for r.Context().Err() == nil {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	src, err := newRPCSource(testlog.Logger(t, log.LevelInfo), srv.URL, testkit.RollupConfig(), 10*time.Second, driverhook.DefaultPollInterval, noopMetrics{}, clock.SystemClock)
	require.NoError(t, err)
	defer func() { require.NoError(t, src.Stop(context.Background())) }()
	_, err = src.Head(context.Background())
	require.ErrorIs(t, err, errResponseTooLarge)
}

// blockingSource answers Head only when released.
type blockingSource struct {
	*testkit.Source
	release chan struct{}
}

func (s *blockingSource) Head(context.Context) (eth.BlockID, error) {
	<-s.release
	return eth.BlockID{}, context.DeadlineExceeded // it timed out
}

// A blackholed source does not hold up the heads of the others: every round gets the healthy source's head
// although the blackholed one never answers in time.
func TestMultiSourceHeadDoesNotWaitForBlackholed(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 3, 0, 0)
	hole := &blockingSource{Source: testkit.NewSource(nil), release: make(chan struct{})}
	good := testkit.NewSource(blocks)
	m := NewMulti([]Source{hole, good}, noopMetrics{}, clock.SystemClock)
	defer func() { require.NoError(t, m.Stop(context.Background())) }()
	ctx := context.Background()
	// head runs one Head; the hole answers only when released, so a Head that waits for it never returns.
	head := func() (eth.BlockID, error) {
		type result struct {
			id  eth.BlockID
			err error
		}
		done := make(chan result, 1)
		go func() {
			id, err := m.Head(ctx)
			done <- result{id, err}
		}()
		select {
		case r := <-done:
			return r.id, r.err
		case <-time.After(5 * time.Second):
			t.Fatal("Head waited for the blackholed source")
			return eth.BlockID{}, nil
		}
	}
	for round := 0; round < 3; round++ {
		id, err := head()
		require.NoError(t, err, "round %d", round)
		require.Equal(t, blocks[2].Ref.ID(), id)
	}
	close(hole.release)
	require.Eventually(t, func() bool { return m.Health()[0].Errors > 0 }, 5*time.Second, 10*time.Millisecond)
	id, err := head()
	require.NoError(t, err)
	require.Equal(t, blocks[2].Ref.ID(), id)
}
