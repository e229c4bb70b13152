package driverhook

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

// countWrites makes tr count the writes its connections make to their sockets.
func countWrites(tr *http.Transport) *atomic.Int64 {
	var writes atomic.Int64
	var d net.Dialer
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return writeCounter{Conn: c, n: &writes}, nil
	}
	return &writes
}

type writeCounter struct {
	net.Conn
	n *atomic.Int64
}

func (c writeCounter) Write(b []byte) (int, error) {
	c.n.Add(1)
	return c.Conn.Write(b)
}

// writesFor posts body with tr and returns how many socket writes the request took.
func writesFor(t *testing.T, tr *http.Transport, body []byte) int64 {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, err := io.ReadAll(r.Body)
		require.NoError(t, err)
		require.Len(t, got, len(body))
	}))
	defer srv.Close()
	writes := countWrites(tr)
	resp, err := (&http.Client{Transport: tr}).Post(srv.URL, "application/json", bytes.NewReader(body))
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	tr.CloseIdleConnections()
	return writes.Load()
}

// A newPayload request of a busy block (here 200 KiB of JSON) goes to op-geth in one write; net/http's default
// transport splits it into 4 KiB writes.
func TestEngineHTTPClientWritesARequestAtOnce(t *testing.T) {
	body := bytes.Repeat([]byte("a"), 200<<10)
	tr, ok := EngineHTTPClient(CLIConfig{Enabled: true}).Transport.(*http.Transport)
	require.True(t, ok)
	require.EqualValues(t, 1, writesFor(t, tr, body))
	require.Greater(t, writesFor(t, http.DefaultTransport.(*http.Transport).Clone(), body), int64(1))
	require.Nil(t, EngineHTTPClient(CLIConfig{}), "without the replicator, op-node keeps geth's default client")
}
