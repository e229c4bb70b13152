package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/rpc"
	"github.com/stretchr/testify/require"
)

// hexResultCases are answers to debug_getRawBlock: the compact one go-ethereum writes, and others an http source
// could send.
var hexResultCases = []struct {
	name string
	body string
	fast bool // read by the one-pass path
}{
	{"compact", `{"jsonrpc":"2.0","id":1,"result":"0x01aBff"}`, true},
	{"result first", `{"result":"0x0102","jsonrpc":"2.0","id":1}`, true},
	{"empty", `{"jsonrpc":"2.0","id":1,"result":"0x"}`, true},
	{"trailing data", `{"jsonrpc":"2.0","id":1,"result":"0x0102"}` + "\n" + `{"result":"0x03"}`, true},
	{"spaces", `{"jsonrpc": "2.0", "id": 1, "result": "0x0102"}`, false},
	{"upper-case prefix", `{"jsonrpc":"2.0","id":1,"result":"0X0102"}`, false},
	{"escaped", `{"jsonrpc":"2.0","id":1,"result":"0x01\u00302"}`, false},
	{"odd length", `{"jsonrpc":"2.0","id":1,"result":"0x010"}`, false},
	{"not hex", `{"jsonrpc":"2.0","id":1,"result":"0x01zz"}`, false},
	{"null", `{"jsonrpc":"2.0","id":1,"result":null}`, false},
	{"no result", `{"jsonrpc":"2.0","id":1}`, false},
	{"not a string", `{"jsonrpc":"2.0","id":1,"result":12}`, false},
	{"error", `{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"the method debug_getRawBlock does not exist/is not available"}}`, false},
	{"error and result", `{"jsonrpc":"2.0","id":1,"result":"0x0102","error":{"code":-32000,"message":"header not found"}}`, false},
	{"nested result", `{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"x","data":{"result":"0x0102"}}}`, false},
	{"a later result", `{"jsonrpc":"2.0","id":1,"result":"0x0102","result":"0x03"}`, false},
	{"a later result in other case", `{"jsonrpc":"2.0","id":1,"result":"0x0102","RESULT":"0x"}`, false},
	{"an earlier result", `{"jsonrpc":"2.0","id":1,"RESULT":"0x03","result":"0x0102"}`, true},
	{"past the first value", `{"jsonrpc":"2.0","id":1} {"result":"0x0102"}`, false},
	{"bad field type", `{"jsonrpc":"2.0","id":1,"method":5,"result":"0x0102"}`, false},
	{"not JSON", `{"jsonrpc":"2.0","id":1,"result":"0x0102"`, false},
}

// TestHexResultAsGoEthereum: what rawBlockHTTP makes of an answer is what go-ethereum's http client makes of it
// (the same bytes, or an error, with the same JSON-RPC error code and message), and the compact answers are read in
// one pass.
func TestHexResultAsGoEthereum(t *testing.T) {
	for _, tc := range hexResultCases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				var req struct {
					Method string   `json:"method"`
					Params []string `json:"params"`
				}
				require.NoError(t, json.NewDecoder(r.Body).Decode(&req))
				require.Equal(t, rawBlockMethod, req.Method)
				require.Equal(t, []string{"0x7"}, req.Params)
				require.Equal(t, "application/json", r.Header.Get("content-type"))
				w.Header().Set("content-type", "application/json")
				_, _ = w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			ctx := context.Background()
			geth, err := rpc.DialOptions(ctx, srv.URL)
			require.NoError(t, err)
			defer geth.Close()
			var want hexutil.Bytes
			wantErr := geth.CallContext(ctx, &want, rawBlockMethod, hexutil.EncodeUint64(7))

			got, err := (&rawBlockHTTP{client: http.DefaultClient, url: srv.URL}).getRawBlock(ctx, 7)
			if wantErr != nil {
				require.Error(t, err, "go-ethereum's client fails with %v", wantErr)
				var wantRPC, gotRPC rpc.Error
				if errors.As(wantErr, &wantRPC) {
					require.ErrorAs(t, err, &gotRPC)
					require.Equal(t, wantRPC.ErrorCode(), gotRPC.ErrorCode())
					require.Equal(t, wantRPC.Error(), gotRPC.Error())
				}
				require.Equal(t, errors.Is(wantErr, rpc.ErrNoResult), errors.Is(err, rpc.ErrNoResult))
				return
			}
			require.NoError(t, err)
			require.Equal(t, want, got)
			_, fast := fastHexResult([]byte(tc.body))
			require.Equal(t, tc.fast, fast, "read in one pass")
		})
	}
}

// TestRawBlockHTTPStatus: an answer with an HTTP error status is go-ethereum's HTTPError, its body included (proxyd's
// refusal of a method is a 403 whose body says so).
func TestRawBlockHTTPStatus(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		_, _ = w.Write([]byte(`{"jsonrpc":"2.0","id":1,"error":{"code":-32001,"message":"rpc method is not whitelisted"}}`))
	}))
	defer srv.Close()
	_, err := (&rawBlockHTTP{client: http.DefaultClient, url: srv.URL}).getRawBlock(context.Background(), 1)
	var httpErr rpc.HTTPError
	require.ErrorAs(t, err, &httpErr)
	require.Equal(t, http.StatusForbidden, httpErr.StatusCode)
	require.True(t, rawBlockUnserved(err))
}

// FuzzHexResult: the one-pass read of a hex result gives exactly what encoding/json makes of the whole answer.
func FuzzHexResult(f *testing.F) {
	for _, tc := range hexResultCases {
		f.Add([]byte(tc.body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		fast, ok := fastHexResult(body)
		if !ok {
			return
		}
		msg, err := decodeResponse(body)
		require.NoError(t, err)
		require.Nil(t, msg.Error)
		var want hexutil.Bytes
		require.NoError(t, json.Unmarshal(msg.Result, &want))
		require.Equal(t, want, fast)
	})
}

// BenchmarkRawBlockHTTP fetches a 32 KB block over loopback http, as a compact debug_getRawBlock answer, with
// go-ethereum's client and with rawBlockHTTP (the server only writes the same bytes each time):
//
//	GOWORK=$PWD/build/go.work go test -run '^$' -bench BenchmarkRawBlockHTTP ./plugin/
func BenchmarkRawBlockHTTP(b *testing.B) {
	block := make([]byte, 32<<10)
	for i := range block {
		block[i] = byte(i * 7)
	}
	body := []byte(`{"jsonrpc":"2.0","id":1,"result":"` + hexutil.Encode(block) + `"}`)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("content-type", "application/json")
		_, _ = w.Write(body)
	}))
	defer srv.Close()
	ctx := context.Background()
	b.Run("go-ethereum", func(b *testing.B) {
		geth, err := rpc.DialOptions(ctx, srv.URL)
		require.NoError(b, err)
		defer geth.Close()
		for b.Loop() {
			var raw hexutil.Bytes
			require.NoError(b, geth.CallContext(ctx, &raw, rawBlockMethod, "0x1"))
		}
	})
	b.Run("rawBlockHTTP", func(b *testing.B) {
		h := &rawBlockHTTP{client: &http.Client{}, url: srv.URL}
		for b.Loop() {
			_, err := h.getRawBlock(ctx, 1)
			require.NoError(b, err)
		}
	})
}
