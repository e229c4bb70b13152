package source

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/rpc"
	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/op-replicator/op-replicator/plugin/internal/testkit"
)

// These tests pin the JSON-RPC wire format that raw.go, raw_http.go and raw_ws.go read and write
// without go-ethereum's client, against go-ethereum's own server and client running in process: a go-ethereum
// upgrade that changes the format fails here, not on a node.

// wireBlock is the RLP that wireDebugAPI serves as block 7.
var wireBlock = hexutil.Bytes{0xf9, 0x01, 0x02, 0xab, 0xcd, 0xef}

// wireDebugAPI is a debug namespace with go-ethereum's debug_getRawBlock signature: block 7, and an error with a
// code and data for any other block.
type wireDebugAPI struct{}

func (wireDebugAPI) GetRawBlock(_ context.Context, id rpc.BlockNumberOrHash) (hexutil.Bytes, error) {
	if n, ok := id.Number(); ok && n == 7 {
		return wireBlock, nil
	}
	return nil, wireError{}
}

type wireError struct{}

func (wireError) Error() string  { return "header not found" }
func (wireError) ErrorCode() int { return -32000 }
func (wireError) ErrorData() any { return map[string]any{"block": "0x8"} }

// wireServer is go-ethereum's JSON-RPC server with wireDebugAPI, over http and over websockets.
func wireServer(t *testing.T) (httpURL, wsURL string) {
	srv := rpc.NewServer()
	t.Cleanup(srv.Stop)
	require.NoError(t, srv.RegisterName("debug", wireDebugAPI{}))
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	ws := httptest.NewServer(srv.WebsocketHandler([]string{"*"}))
	t.Cleanup(ws.Close)
	return hs.URL, "ws" + strings.TrimPrefix(ws.URL, "http")
}

// The request rawBlockRequest writes is, byte for byte, the one go-ethereum's client writes for debug_getRawBlock
// (over http with the same content headers; over a websocket, gorilla's WriteJSON adds a newline).
func TestWireRequestIsGoEthereumClients(t *testing.T) {
	var mu sync.Mutex
	var body []byte
	var header http.Header
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		body, header = b, r.Header.Clone()
		mu.Unlock()
		w.Header().Set("content-type", "application/json")
		_, _ = w.Write([]byte(`{"jsonrpc":"2.0","id":1,"result":"0x"}`))
	}))
	defer hs.Close()
	_, _ = gethRawBlock(t, hs.URL)
	mu.Lock()
	require.Equal(t, string(rawBlockRequest("1", 7)), string(body))
	require.Equal(t, "application/json", header.Get("content-type"))
	require.Equal(t, "application/json", header.Get("accept"))
	mu.Unlock()

	messages := make(chan []byte, 1)
	ws := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer conn.Close()
		_, msg, err := conn.ReadMessage()
		if err != nil {
			return
		}
		messages <- msg
		_ = conn.WriteMessage(websocket.TextMessage, []byte(`{"jsonrpc":"2.0","id":1,"result":"0x"}`))
	}))
	defer ws.Close()
	_, _ = gethRawBlock(t, "ws"+strings.TrimPrefix(ws.URL, "http"))
	msg := <-messages
	require.Equal(t, string(rawBlockRequest("1", 7))+"\n", string(msg))
}

// go-ethereum's server takes rawBlockHTTP's and rawBlockWS's requests, and they read its answers: a result (in one
// pass: its compact `"result":"0x` is what fastHexResult looks for) and an error, whose code, message and data are
// what go-ethereum's client returns.
func TestWireAgainstGoEthereumServer(t *testing.T) {
	httpURL, wsURL := wireServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// The answers as go-ethereum's server writes them.
	resp, err := http.Post(httpURL, "application/json", bytes.NewReader(rawBlockRequest("1", 7)))
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	raw, ok := fastHexResult(body, "")
	require.True(t, ok, "go-ethereum's answer is not read in one pass: %s", body)
	require.Equal(t, wireBlock, raw)

	conn, _, err := websocket.DefaultDialer.DialContext(ctx, wsURL, nil)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.WriteMessage(websocket.TextMessage, rawBlockRequest("41", 7)))
	_, msg, err := conn.ReadMessage()
	require.NoError(t, err)
	raw, ok = fastHexResult(msg, "41")
	require.True(t, ok, "go-ethereum's answer over a websocket is not read in one pass: %s", msg)
	require.Equal(t, wireBlock, raw)
	msgResp, err := decodeResponse(msg)
	require.NoError(t, err)
	require.Equal(t, "41", string(msgResp.ID), "the answer carries the request's id as it was sent")

	wsFetch, err := newRawBlockWS(wsURL)
	require.NoError(t, err)
	defer wsFetch.Close()
	wsFetch.nextID.Store(41)
	fetchers := map[string]rawBlockFetcher{"http": &rawBlockHTTP{client: http.DefaultClient, url: httpURL}, "ws": wsFetch}
	for name, fetch := range fetchers {
		url := map[string]string{"http": httpURL, "ws": wsURL}[name]
		t.Run(name, func(t *testing.T) {
			got, err := fetch.getRawBlock(ctx, 7)
			require.NoError(t, err)
			require.Equal(t, wireBlock, got)

			_, err = fetch.getRawBlock(ctx, 8)
			want := gethError(t, url, 8)
			requireSameAnswer(t, nil, want, nil, err)
			var wantData, gotData rpc.DataError
			require.ErrorAs(t, want, &wantData)
			require.ErrorAs(t, err, &gotData)
			require.Equal(t, wantData.ErrorData(), gotData.ErrorData())
			require.Equal(t, map[string]any{"block": "0x8"}, gotData.ErrorData())
		})
	}
}

// gethError asks url for block num with go-ethereum's client and returns its error.
func gethError(t *testing.T, url string, num uint64) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	geth, err := rpc.DialOptions(ctx, url)
	require.NoError(t, err)
	defer geth.Close()
	var raw hexutil.Bytes
	err = geth.CallContext(ctx, &raw, rawBlockMethod, hexutil.EncodeUint64(num))
	require.Error(t, err)
	return err
}

// rpcResponse and rpcError are go-ethereum's JSON-RPC message and error (rpc.jsonrpcMessage, rpc.jsonError; both
// unexported): the same fields, types and JSON names, as the message go-ethereum's server hands its codec shows.
func TestWireMessageShapes(t *testing.T) {
	srv := rpc.NewServer()
	defer srv.Stop()
	require.NoError(t, srv.RegisterName("debug", wireDebugAPI{}))
	answer := testkit.GethCodecMessages(t, srv, string(rawBlockRequest("1", 7)), 1)[0]
	gethType := reflect.TypeOf(answer)
	require.Equal(t, reflect.Pointer, gethType.Kind(), "go-ethereum's answer is a %T", answer)
	requireSameShape(t, gethType.Elem(), reflect.TypeFor[rpcResponse]())
}

// requireSameShape requires two struct types to have the same fields, in order, with the same JSON names and types;
// pointers to structs are compared as their structs.
func requireSameShape(t *testing.T, geth, ours reflect.Type) {
	t.Helper()
	require.Equal(t, geth.NumField(), ours.NumField(), "%s has %d fields, %s %d", geth, geth.NumField(), ours, ours.NumField())
	for i := range geth.NumField() {
		g, o := geth.Field(i), ours.Field(i)
		require.Equal(t, g.Name, o.Name, "field %d of %s", i, geth)
		require.Equal(t, g.Tag.Get("json"), o.Tag.Get("json"), "%s.%s", geth, g.Name)
		if g.Type.Kind() == reflect.Pointer && g.Type.Elem().Kind() == reflect.Struct {
			require.Equal(t, reflect.Pointer, o.Type.Kind(), "%s.%s", geth, g.Name)
			requireSameShape(t, g.Type.Elem(), o.Type.Elem())
			continue
		}
		require.Equal(t, g.Type, o.Type, "%s.%s", geth, g.Name)
	}
}
