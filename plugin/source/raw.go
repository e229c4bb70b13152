package source

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"

	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/rpc"
)

// rawBlockFetcher asks a source for a block's RLP with debug_getRawBlock, and reads the answer with hexResult
// rather than go-ethereum's JSON-RPC client: rawBlockHTTP, rawBlockWS. go-ethereum's client runs encoding/json's
// scanner over an answer about four times (reading it, parsing the message, then the result), which for a block's
// hex was most of what a replicator with an rpc source spent beyond a stock gossip node (docs/benchmarks-history.md,
// BenchmarkRawBlock). What the source sees is what go-ethereum's client sends.
type rawBlockFetcher interface {
	getRawBlock(ctx context.Context, num uint64) (hexutil.Bytes, error)
	Close()
}

// responseBuffers holds buffers for a rawBlockFetcher's answers, read whole: those of blocks are kept for the next.
var responseBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// responseBufferKept is the largest buffer kept for another answer: one that grew for an answer of up to
// maxSourceResponse bytes is left to the garbage collector.
const responseBufferKept = 1 << 20

func getResponseBuffer() *bytes.Buffer {
	buf := responseBuffers.Get().(*bytes.Buffer)
	buf.Reset()
	return buf
}

func putResponseBuffer(buf *bytes.Buffer) {
	if buf.Cap() <= responseBufferKept {
		responseBuffers.Put(buf)
	}
}

// rawBlockRequest is the JSON-RPC request for the block at num, as go-ethereum's client writes it.
func rawBlockRequest(id string, num uint64) []byte {
	return []byte(`{"jsonrpc":"2.0","id":` + id + `,"method":"` + rawBlockMethod + `","params":["` + hexutil.EncodeUint64(num) + `"]}`)
}

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
//
// Where id is not empty, the answer must be to the request with that JSON-RPC id (over a websocket, where
// go-ethereum's client matches answers to requests by id).
func hexResult(body []byte, id string) (hexutil.Bytes, error) {
	if out, ok := fastHexResult(body, id); ok {
		return out, nil
	}
	msg, err := decodeResponse(body)
	if err != nil {
		return nil, err
	}
	switch {
	case id != "" && string(msg.ID) != id:
		return nil, fmt.Errorf("%w: an answer to request %s, not to %s", ErrBadInput, msg.ID, id)
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

func fastHexResult(body []byte, id string) (hexutil.Bytes, bool) {
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
		if err != nil || msg.Error != nil || string(msg.Result) != `"0x`+digits+`"` || id != "" && string(msg.ID) != id {
			return nil, false
		}
	}
	return out, true
}
