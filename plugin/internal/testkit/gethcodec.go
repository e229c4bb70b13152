package testkit

import (
	"encoding/json"
	"io"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/rpc"
)

// GethCodecMessages serves request with srv on a codec of functions and returns the first count messages srv hands
// it to write, as they are (go-ethereum's own message values).
func GethCodecMessages(t testing.TB, srv *rpc.Server, request string, count int) []any {
	t.Helper()
	in := make(chan json.RawMessage, 1)
	in <- json.RawMessage(request)
	out := make(chan any, count)
	done := make(chan struct{})
	encode := func(v any, _ bool) error {
		select {
		case out <- v:
			return nil
		case <-done:
			return io.EOF
		}
	}
	decode := func(v any) error {
		select {
		case msg := <-in:
			*(v.(*json.RawMessage)) = msg
			return nil
		case <-done:
			return io.EOF
		}
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.ServeCodec(rpc.NewFuncCodec(nopDeadline{}, encode, decode), 0)
	}()
	defer func() { close(done); <-served }()
	var msgs []any
	for range count {
		select {
		case v := <-out:
			msgs = append(msgs, v)
		case <-time.After(5 * time.Second):
			t.Fatalf("go-ethereum's server wrote %d messages, not %d", len(msgs), count)
		}
	}
	return msgs
}

type nopDeadline struct{}

func (nopDeadline) Close() error                     { return nil }
func (nopDeadline) SetWriteDeadline(time.Time) error { return nil }
