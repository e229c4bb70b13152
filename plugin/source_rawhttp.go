package plugin

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"sync"

	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/rpc"
)

// rawBlockHTTP asks an http(s) source for a block with debug_getRawBlock itself, on the source's http.Client, and
// reads the answer without go-ethereum's JSON-RPC client. That client runs encoding/json's scanner over a response
// about four times (reading it, parsing the message, then the result), which for a block's ~64 KB of hex is ~0.7 ms
// of CPU per block, most of what a replicator with an http source spent beyond a stock gossip node (docs/
// benchmarks.md). hexResult reads the hex result in one pass, and everything else of the answer with encoding/json.
// What the source sees is what go-ethereum's client sends: one JSON-RPC request per POST, with its headers.
type rawBlockHTTP struct {
	client *http.Client
	url    string
}

func (h *rawBlockHTTP) getRawBlock(ctx context.Context, num uint64) (hexutil.Bytes, error) {
	body := []byte(`{"jsonrpc":"2.0","id":1,"method":"` + rawBlockMethod + `","params":["` + hexutil.EncodeUint64(num) + `"]}`)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("accept", "application/json")
	req.Header.Set("content-type", "application/json")
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	// The answer is read into a buffer kept for the next one: hexResult copies out what it returns.
	buf := responseBuffers.Get().(*bytes.Buffer)
	defer responseBuffers.Put(buf)
	buf.Reset()
	_, readErr := buf.ReadFrom(resp.Body)
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		// As go-ethereum's client: the status, and the body (proxyd says "not whitelisted" there).
		return nil, rpc.HTTPError{Status: resp.Status, StatusCode: resp.StatusCode, Body: bytes.Clone(buf.Bytes())}
	}
	if readErr != nil {
		return nil, readErr
	}
	return hexResult(buf.Bytes())
}

// responseBuffers holds buffers for rawBlockHTTP's answers, which are read whole (and at most maxSourceResponse).
var responseBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// rpcResponse is go-ethereum's JSON-RPC message as its client decodes a response (rpc.jsonrpcMessage, unexported).
type rpcResponse struct {
	Version string          `json:"jsonrpc,omitempty"`
	ID      json.RawMessage `json:"id,omitempty"`
	Method  string          `json:"method,omitempty"`
	Params  json.RawMessage `json:"params,omitempty"`
	Error   *rpcError       `json:"error,omitempty"`
	Result  json.RawMessage `json:"result,omitempty"`
}

// decodeResponse decodes a response as go-ethereum's http client does: the first JSON value of the body.
func decodeResponse(body []byte) (rpcResponse, error) {
	var msg rpcResponse
	err := json.NewDecoder(bytes.NewReader(body)).Decode(&msg)
	return msg, err
}

// rpcError is a JSON-RPC error answer as go-ethereum's client returns it (rpc.jsonError, unexported).
type rpcError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Data    any    `json:"data,omitempty"`
}

func (e *rpcError) Error() string {
	if e.Message == "" {
		return "json-rpc error " + strconv.Itoa(e.Code)
	}
	return e.Message
}

func (e *rpcError) ErrorCode() int { return e.Code }
func (e *rpcError) ErrorData() any { return e.Data }

var (
	_ rpc.Error     = (*rpcError)(nil)
	_ rpc.DataError = (*rpcError)(nil)
)

// hexResultKey is how the result of a compact JSON-RPC response starts when it is a hex string: how go-ethereum's
// server, and proxies that pass its answer on, write it.
var hexResultKey = []byte(`"result":"0x`)

// hexResult decodes the result of a JSON-RPC response that answers a hex byte string exactly as go-ethereum's http
// client decodes it into hexutil.Bytes: the response's error if it has one, rpc.ErrNoResult without a result.
//
// The hex digits after the first `"result":"0x` are found and decoded in one pass. That they are the response's
// result is proven with encoding/json on the rest of the response, twice, with two different strings in their
// place: the response decodes as go-ethereum's client decodes it, without an error, and its result is the string put
// there both times, so it is that token's (not one nested deeper, a later duplicate key, or past the first JSON
// value). Anything else is decoded by encoding/json whole, as go-ethereum's client would. FuzzHexResult compares the
// two.
func hexResult(body []byte) (hexutil.Bytes, error) {
	if out, ok := fastHexResult(body); ok {
		return out, nil
	}
	msg, err := decodeResponse(body)
	if err != nil {
		return nil, err
	}
	switch {
	case msg.Error != nil:
		return nil, msg.Error
	case len(msg.Result) == 0:
		return nil, rpc.ErrNoResult
	}
	var out hexutil.Bytes
	if err := json.Unmarshal(msg.Result, &out); err != nil {
		return nil, err
	}
	return out, nil
}

func fastHexResult(body []byte) (hexutil.Bytes, bool) {
	at := bytes.Index(body, hexResultKey)
	if at < 0 {
		return nil, false
	}
	start := at + len(hexResultKey)
	n := bytes.IndexByte(body[start:], '"')
	if n < 0 || n%2 != 0 {
		return nil, false
	}
	out := make(hexutil.Bytes, n/2)
	if _, err := hex.Decode(out, body[start:start+n]); err != nil {
		return nil, false
	}
	// The digits' place holds "0x", then "0x0": the response's result must follow.
	for _, digits := range []string{"", "0"} {
		msg, err := decodeResponse(slices.Concat(body[:start], []byte(digits), body[start+n:]))
		if err != nil || msg.Error != nil || string(msg.Result) != `"0x`+digits+`"` {
			return nil, false
		}
	}
	return out, true
}
