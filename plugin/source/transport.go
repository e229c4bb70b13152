package source

import (
	"fmt"
	"io"
	"net/http"
)

// maxSourceResponse bounds one response of an http(s) source, as go-ethereum's websocket client bounds a message:
// a source (or a man in the middle on plain http) cannot stream an endless body into op-node's memory.
const maxSourceResponse = 32 << 20

// errResponseTooLarge: an http(s) source answered with a body above maxSourceResponse.
var errResponseTooLarge = fmt.Errorf("%w: response above %d bytes", ErrBadInput, maxSourceResponse)

// limitedTransport cuts every response body at limit bytes: reading past it fails with errResponseTooLarge.
type limitedTransport struct {
	next  http.RoundTripper
	limit int64
}

func (t limitedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body = &limitedBody{ReadCloser: resp.Body, left: t.limit}
	return resp, nil
}

// NewHTTPClient is the client of an http(s) source: responses bounded by maxSourceResponse, sourceTransport's
// connections, no gzip. The replicator's other clients of op-geth (--replicator.l2.rpc) use one too.
func NewHTTPClient() *http.Client {
	return &http.Client{Transport: limitedTransport{next: sourceTransport(), limit: maxSourceResponse}}
}

// sourceTransport is http.DefaultTransport keeping as many idle connections to the source as a prefetcher has
// requests in flight (the default keeps 2), so that catching up does not open and close connections per block, and
// not asking for gzip: go-ethereum's http server compresses every answer a client accepts gzip for, which costs
// the source (the sequencer's op-geth, most often) and this node CPU per block and per poll, for a block of a few
// tens of KB: what a source is for is sparing the sequencer's own work.
func sourceTransport() http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = MaxInFlight
	t.DisableCompression = true
	return t
}

type limitedBody struct {
	io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// One byte more tells a body of exactly the limit from a longer one.
		var one [1]byte
		if n, err := b.ReadCloser.Read(one[:]); n > 0 {
			return 0, errResponseTooLarge
		} else if err != nil {
			return 0, err
		}
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	return n, err
}
