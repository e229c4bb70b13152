// Package wsdial dials websocket connections as go-ethereum's JSON-RPC client dials them, for the replicator's
// readers that take messages off a websocket of their own instead of through go-ethereum's client (which reads every
// message several times over before it hands it on): a source's blocks (plugin/source) and a relay's subscription
// (plugin/relay).
package wsdial

import (
	"context"
	"encoding/base64"
	"net/http"
	"net/url"

	"github.com/gorilla/websocket"
)

// Dialer dials one URL.
type Dialer struct {
	url       string
	header    http.Header
	dialer    websocket.Dialer
	readLimit int64
}

// New is a dialer of rawURL whose connections refuse a message above readLimit bytes. The URL's user info is sent as
// basic authentication, and left out of the URL, as go-ethereum's client does; proxies come from the environment.
func New(rawURL string, readLimit int64) (*Dialer, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	header := make(http.Header)
	if u.User != nil {
		header.Set("authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(u.User.String())))
		u.User = nil
	}
	return &Dialer{url: u.String(), header: header, readLimit: readLimit,
		dialer: websocket.Dialer{ReadBufferSize: 1024, WriteBufferSize: 1024, Proxy: http.ProxyFromEnvironment}}, nil
}

// Dial opens a connection, within ctx.
func (d *Dialer) Dial(ctx context.Context) (*websocket.Conn, error) {
	conn, resp, err := d.dialer.DialContext(ctx, d.url, d.header)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		return nil, err
	}
	conn.SetReadLimit(d.readLimit)
	return conn, nil
}
