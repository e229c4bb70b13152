package source

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/rpc"
	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/op-replicator/op-replicator/plugin/internal/wsdial"
)

// hexResultCases are answers to debug_getRawBlock: the compact one go-ethereum writes, and others an http source
// could send.
var hexResultCases = []struct {
	name string
	body string
	fast bool // read by the one-pass path
	// stricter over ws: go-ethereum's websocket client ignores a field of the wrong type in a message (its http
	// client does not); rawBlockWS refuses the answer, as both do over http.
	stricterOverWS bool
}{
	{"compact", `{"jsonrpc":"2.0","id":1,"result":"0x01aBff"}`, true, false},
	{"result first", `{"result":"0x0102","jsonrpc":"2.0","id":1}`, true, false},
	{"empty", `{"jsonrpc":"2.0","id":1,"result":"0x"}`, true, false},
	{"trailing data", `{"jsonrpc":"2.0","id":1,"result":"0x0102"}` + "\n" + `{"result":"0x03"}`, true, false},
	{"spaces", `{"jsonrpc": "2.0", "id": 1, "result": "0x0102"}`, false, false},
	{"upper-case prefix", `{"jsonrpc":"2.0","id":1,"result":"0X0102"}`, false, false},
	{"escaped", `{"jsonrpc":"2.0","id":1,"result":"0x01\u00302"}`, false, false},
	{"odd length", `{"jsonrpc":"2.0","id":1,"result":"0x010"}`, false, false},
	{"not hex", `{"jsonrpc":"2.0","id":1,"result":"0x01zz"}`, false, false},
	{"null", `{"jsonrpc":"2.0","id":1,"result":null}`, false, false},
	{"no result", `{"jsonrpc":"2.0","id":1}`, false, false},
	{"not a string", `{"jsonrpc":"2.0","id":1,"result":12}`, false, false},
	{"error", `{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"the method debug_getRawBlock does not exist/is not available"}}`, false, false},
	{"error and result", `{"jsonrpc":"2.0","id":1,"result":"0x0102","error":{"code":-32000,"message":"header not found"}}`, false, false},
	{"nested result", `{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"x","data":{"result":"0x0102"}}}`, false, false},
	{"a later result", `{"jsonrpc":"2.0","id":1,"result":"0x0102","result":"0x03"}`, false, false},
	{"a later result in other case", `{"jsonrpc":"2.0","id":1,"result":"0x0102","RESULT":"0x"}`, false, false},
	{"an earlier result", `{"jsonrpc":"2.0","id":1,"RESULT":"0x03","result":"0x0102"}`, true, false},
	{"past the first value", `{"jsonrpc":"2.0","id":1} {"result":"0x0102"}`, false, false},
	{"bad field type", `{"jsonrpc":"2.0","id":1,"method":5,"result":"0x0102"}`, false, true},
	{"not JSON", `{"jsonrpc":"2.0","id":1,"result":"0x0102"`, false, false},
}

// TestHexResultAsGoEthereum: what rawBlockHTTP makes of an answer is what go-ethereum's http client makes of it (the
// same bytes, or an error, with the same JSON-RPC error code and message), and so is what rawBlockWS makes of it over
// a websocket; the compact answers are read in one pass.
func TestHexResultAsGoEthereum(t *testing.T) {
	for _, tc := range hexResultCases {
		t.Run(tc.name, func(t *testing.T) {
			_, fast := fastHexResult([]byte(tc.body), "")
			require.Equal(t, tc.fast, fast, "read in one pass")

			url := serveAnswer(t, tc.body, false)
			want, wantErr := gethRawBlock(t, url)
			got, err := (&rawBlockHTTP{client: http.DefaultClient, url: url}).getRawBlock(context.Background(), 7)
			requireSameAnswer(t, want, wantErr, got, err)

			wsURL := serveAnswer(t, tc.body, true)
			fetch, err := newRawBlockWS(wsURL)
			require.NoError(t, err)
			defer fetch.Close()
			fetch.nextID.Store(41) // not go-ethereum's first id, 1: the answer must be to this request
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			got, err = fetch.getRawBlock(ctx, 7)
			if tc.stricterOverWS {
				gethWS, gethWSErr := gethRawBlock(t, wsURL)
				require.NoError(t, gethWSErr, "go-ethereum's websocket client takes it")
				require.NotEmpty(t, gethWS)
				require.Error(t, err, "as go-ethereum's http client does, rawBlockWS refuses it")
				return
			}
			require.NoError(t, ctx.Err(), "waited for an answer")
			requireSameAnswer(t, want, wantErr, got, err)
		})
	}
}

// gethRawBlock asks url for block 7 with go-ethereum's client.
func gethRawBlock(t *testing.T, url string) (hexutil.Bytes, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	geth, err := rpc.DialOptions(ctx, url)
	require.NoError(t, err)
	defer geth.Close()
	var raw hexutil.Bytes
	err = geth.CallContext(ctx, &raw, rawBlockMethod, hexutil.EncodeUint64(7))
	require.NoError(t, ctx.Err(), "go-ethereum's client waited for an answer")
	return raw, err
}

func requireSameAnswer(t *testing.T, want hexutil.Bytes, wantErr error, got hexutil.Bytes, err error) {
	t.Helper()
	if wantErr == nil {
		require.NoError(t, err)
		require.Equal(t, want, got)
		return
	}
	require.Error(t, err, "go-ethereum's client fails with %v", wantErr)
	var wantRPC, gotRPC rpc.Error
	if errors.As(wantErr, &wantRPC) {
		require.ErrorAs(t, err, &gotRPC)
		require.Equal(t, wantRPC.ErrorCode(), gotRPC.ErrorCode())
		require.Equal(t, wantRPC.Error(), gotRPC.Error())
	}
	require.Equal(t, errors.Is(wantErr, rpc.ErrNoResult), errors.Is(err, rpc.ErrNoResult))
}

// serveAnswer serves body as the answer to every debug_getRawBlock request for block 7, over http, or over a
// websocket with the request's id in place of body's id 1. It returns the URL.
func serveAnswer(t *testing.T, body string, ws bool) string {
	check := func(msg []byte) (id string, ok bool) {
		var req struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
			Params []string        `json:"params"`
		}
		require.NoError(t, json.Unmarshal(msg, &req))
		if req.Method == "" {
			return "", false // go-ethereum's client answering what it took for a request
		}
		require.Equal(t, rawBlockMethod, req.Method)
		require.Equal(t, []string{"0x7"}, req.Params)
		return string(req.ID), true
	}
	var srv *httptest.Server
	if ws {
		upgrader := websocket.Upgrader{}
		srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			conn, err := upgrader.Upgrade(w, r, nil)
			require.NoError(t, err)
			defer conn.Close()
			for {
				_, msg, err := conn.ReadMessage()
				if err != nil {
					return
				}
				id, ok := check(msg)
				if !ok {
					continue
				}
				answer := strings.Replace(strings.Replace(body, `"id":1`, `"id":`+id, 1), `"id": 1`, `"id": `+id, 1)
				if conn.WriteMessage(websocket.TextMessage, []byte(answer)) != nil {
					return
				}
			}
		}))
		t.Cleanup(srv.Close)
		return "ws" + strings.TrimPrefix(srv.URL, "http")
	}
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		msg, err := io.ReadAll(r.Body)
		require.NoError(t, err)
		_, ok := check(msg)
		require.True(t, ok)
		require.Equal(t, "application/json", r.Header.Get("content-type"))
		w.Header().Set("content-type", "application/json")
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
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

// FuzzHexResult: the one-pass read of a hex result gives exactly what encoding/json makes of the whole answer, for
// the request with id (none: 0).
func FuzzHexResult(f *testing.F) {
	for _, tc := range hexResultCases {
		f.Add([]byte(tc.body), uint16(0))
		f.Add([]byte(tc.body), uint16(1))
	}
	f.Fuzz(func(t *testing.T, body []byte, id uint16) {
		wantID := ""
		if id != 0 {
			wantID = strconv.Itoa(int(id))
		}
		fast, ok := fastHexResult(body, wantID)
		if !ok {
			return
		}
		msg, err := decodeResponse(body)
		require.NoError(t, err)
		require.Nil(t, msg.Error)
		if wantID != "" {
			require.Equal(t, wantID, string(msg.ID))
		}
		var want hexutil.Bytes
		require.NoError(t, json.Unmarshal(msg.Result, &want))
		require.Equal(t, want, fast)
	})
}

// wsAnswerer serves every request over websockets with answer(id), counting connections and requests; a
// connection is closed when the source's side of it ends (closed counts those).
type wsAnswerer struct {
	conns, requests, closed atomic.Int32
	answer                  func(id string) []byte
}

func (a *wsAnswerer) serve(t *testing.T) string {
	upgrader := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := upgrader.Upgrade(w, r, nil)
		require.NoError(t, err)
		defer a.closed.Add(1)
		defer conn.Close()
		a.conns.Add(1)
		for {
			_, msg, err := conn.ReadMessage()
			if err != nil {
				return
			}
			a.requests.Add(1)
			var req struct {
				ID json.RawMessage `json:"id"`
			}
			require.NoError(t, json.Unmarshal(msg, &req))
			if conn.WriteMessage(websocket.TextMessage, a.answer(string(req.ID))) != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

// TestRawBlockWSAnswerTooLarge: an answer above the read limit fails its fetch as bad input, on a kept connection
// too, once: the block is not asked for again on another connection.
func TestRawBlockWSAnswerTooLarge(t *testing.T) {
	var large atomic.Bool
	a := &wsAnswerer{answer: func(id string) []byte {
		size := 16
		if large.Load() {
			size = 1024
		}
		return []byte(`{"jsonrpc":"2.0","id":` + id + `,"result":"0x` + strings.Repeat("00", size) + `"}`)
	}}
	url := a.serve(t)
	fetch, err := newRawBlockWS(url)
	require.NoError(t, err)
	defer fetch.Close()
	fetch.dialer, err = wsdial.New(url, 1024)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = fetch.getRawBlock(ctx, 1)
	require.NoError(t, err, "answered: the connection is kept")

	large.Store(true)
	_, err = fetch.getRawBlock(ctx, 1)
	require.ErrorIs(t, err, errResponseTooLarge)
	require.ErrorIs(t, err, ErrBadInput)
	require.EqualValues(t, 2, a.requests.Load(), "asked once")
	require.EqualValues(t, 1, a.conns.Load(), "on the kept connection")
}

// TestRawBlockWSClosesIdleConnections: a connection kept unused for idleKept is closed, without another fetch.
func TestRawBlockWSClosesIdleConnections(t *testing.T) {
	a := &wsAnswerer{answer: func(id string) []byte { return []byte(`{"jsonrpc":"2.0","id":` + id + `,"result":"0x01"}`) }}
	fetch, err := newRawBlockWS(a.serve(t))
	require.NoError(t, err)
	defer fetch.Close()
	fetch.idleKept = 100 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = fetch.getRawBlock(ctx, 1)
	require.NoError(t, err)
	require.EqualValues(t, 0, a.closed.Load(), "kept")
	require.Eventually(t, func() bool { return a.closed.Load() == 1 }, 5*time.Second, 10*time.Millisecond,
		"the kept connection is closed once unused for idleKept")
}

// BenchmarkRawBlock fetches a 32 KB block over loopback, as a compact debug_getRawBlock answer, with go-ethereum's
// client and with rawBlockHTTP, then over a websocket with go-ethereum's client and rawBlockWS (the server only
// writes the same bytes each time):
//
//	GOWORK=$PWD/build/go.work go test -run '^$' -bench BenchmarkRawBlock -benchmem ./plugin/
func BenchmarkRawBlock(b *testing.B) {
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
	upgrader := websocket.Upgrader{}
	wsSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := upgrader.Upgrade(w, r, nil)
		require.NoError(b, err)
		defer conn.Close()
		for {
			_, msg, err := conn.ReadMessage()
			if err != nil {
				return
			}
			var req struct {
				ID json.RawMessage `json:"id"`
			}
			require.NoError(b, json.Unmarshal(msg, &req))
			answer := bytes.Replace(body, []byte(`"id":1`), []byte(`"id":`+string(req.ID)), 1)
			if conn.WriteMessage(websocket.TextMessage, answer) != nil {
				return
			}
		}
	}))
	defer wsSrv.Close()
	wsURL := "ws" + strings.TrimPrefix(wsSrv.URL, "http")
	for _, url := range []string{srv.URL, wsURL} {
		b.Run("go-ethereum "+url[:strings.Index(url, ":")], func(b *testing.B) {
			geth, err := rpc.DialOptions(ctx, url)
			require.NoError(b, err)
			defer geth.Close()
			for b.Loop() {
				var raw hexutil.Bytes
				require.NoError(b, geth.CallContext(ctx, &raw, rawBlockMethod, "0x1"))
			}
		})
	}
	b.Run("rawBlockHTTP", func(b *testing.B) {
		h := &rawBlockHTTP{client: &http.Client{}, url: srv.URL}
		for b.Loop() {
			_, err := h.getRawBlock(ctx, 1)
			require.NoError(b, err)
		}
	})
	b.Run("rawBlockWS", func(b *testing.B) {
		h, err := newRawBlockWS(wsURL)
		require.NoError(b, err)
		defer h.Close()
		for b.Loop() {
			_, err := h.getRawBlock(ctx, 1)
			require.NoError(b, err)
		}
	})
}

// TestRawBlockWSKeepsAndRedials: rawBlockWS fetches on one kept connection; one the source closed while kept is
// followed by a new one, with no fetch failing; an answer to another request fails its fetch and its connection
// is not kept.
func TestRawBlockWSKeepsAndRedials(t *testing.T) {
	var conns atomic.Int32
	var closeAfterAnswer, wrongID atomic.Bool
	upgrader := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := upgrader.Upgrade(w, r, nil)
		require.NoError(t, err)
		defer conn.Close()
		conns.Add(1)
		for served := 0; ; served++ {
			_, msg, err := conn.ReadMessage()
			if err != nil || (served > 0 && closeAfterAnswer.Load()) {
				return // with closeAfterAnswer, a connection is closed once it answered: a kept one is found closed
			}
			var req struct {
				ID json.RawMessage `json:"id"`
			}
			require.NoError(t, json.Unmarshal(msg, &req))
			id := string(req.ID)
			if wrongID.Load() {
				id = "0"
			}
			if conn.WriteMessage(websocket.TextMessage, []byte(`{"jsonrpc":"2.0","id":`+id+`,"result":"0x0102"}`)) != nil {
				return
			}
		}
	}))
	defer srv.Close()
	fetch, err := newRawBlockWS("ws" + strings.TrimPrefix(srv.URL, "http"))
	require.NoError(t, err)
	defer fetch.Close()
	ctx := context.Background()
	get := func() error {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		raw, err := fetch.getRawBlock(ctx, 1)
		if err == nil {
			require.Equal(t, hexutil.Bytes{1, 2}, raw)
		}
		return err
	}

	for range 3 {
		require.NoError(t, get())
	}
	require.EqualValues(t, 1, conns.Load(), "one connection, kept")

	closeAfterAnswer.Store(true)
	for range 3 {
		require.NoError(t, get(), "the connection the source closed is followed by a new one")
	}
	require.EqualValues(t, 4, conns.Load(), "each fetch found its kept connection closed and answered on a new one")

	closeAfterAnswer.Store(false)
	require.NoError(t, get())
	n := conns.Load()
	wrongID.Store(true)
	require.ErrorIs(t, get(), ErrBadInput)
	wrongID.Store(false)
	require.NoError(t, get())
	require.Equal(t, n+1, conns.Load(), "the connection that answered another request is not kept")
}
