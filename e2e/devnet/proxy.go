package devnet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
)

// Failure is how a Proxy fails every request.
type Failure int

const (
	// FailNone forwards requests.
	FailNone Failure = iota
	// FailErrors answers every call with a JSON-RPC error.
	FailErrors
	// FailDown answers every request with HTTP 503, as an unreachable node behind a load balancer would.
	FailDown
)

// maxBodySize bounds requests and responses passing through a Proxy.
const maxBodySize = 32 << 20

// Proxy is an HTTP JSON-RPC reverse proxy in front of an execution engine, e.g. as the replicator's
// source. Tests switch it at runtime to misbehave like a faulty or lying sequencer:
//   - TamperFrom: eth_getBlockByNumber and eth_getBlockByHash return, for blocks from a number onwards, a
//     different state root with the block hash recomputed (and the parent hashes of later blocks relinked),
//     so every header is self-consistent and only executing the block shows it is wrong;
//   - SetUpstream: forward to another node, e.g. another sequencer's chain;
//   - SetFailure: return errors or be down;
//   - SetLyingTags: answer the "safe" and "finalized" labels with the "latest" block;
//   - SetDelay: answer every request only after a delay, as a slow or overloaded source would.
//
// Only single HTTP requests and batches are proxied, not websockets. The zero value is not usable; use
// NewProxy.
type Proxy struct {
	// URL is the proxy's HTTP endpoint.
	URL string

	server *http.Server
	client *http.Client
	served sync.WaitGroup

	mu       sync.Mutex
	upstream string
	failure  Failure
	lieTags  bool
	delay    time.Duration
	tamper   *tampering // nil while not tampering
}

// NewProxy starts a proxy on a free port of 127.0.0.1, forwarding to upstream (an HTTP URL).
func NewProxy(upstream string) (*Proxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("proxy listen: %w", err)
	}
	p := &Proxy{
		URL:      "http://" + l.Addr().String(),
		client:   &http.Client{Timeout: 30 * time.Second},
		upstream: upstream,
	}
	p.server = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	p.served.Add(1)
	go func() {
		defer p.served.Done()
		_ = p.server.Serve(l) // returns http.ErrServerClosed on Close
	}()
	return p, nil
}

// Close stops the proxy, waiting for requests in flight.
func (p *Proxy) Close() error {
	err := p.server.Shutdown(context.Background())
	p.served.Wait()
	return err
}

// SetUpstream makes the proxy forward to another node from now on.
func (p *Proxy) SetUpstream(url string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.upstream = url
}

// SetFailure makes the proxy fail every request in the given way, or, with FailNone, forward again.
func (p *Proxy) SetFailure(f Failure) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failure = f
}

// SetLyingTags makes eth_getBlockByNumber with "safe" or "finalized" return the "latest" block.
func (p *Proxy) SetLyingTags(lie bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lieTags = lie
}

// SetDelay makes the proxy hold every request for d before forwarding it (0: no delay).
func (p *Proxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.delay = d
}

// TamperFrom makes blocks with number n or higher carry a wrong state root, as described on Proxy.
func (p *Proxy) TamperFrom(n uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tamper = &tampering{
		from:     n,
		tampered: make(map[common.Hash]common.Hash),
		original: make(map[common.Hash]common.Hash),
	}
}

// StopTampering returns blocks unchanged again.
func (p *Proxy) StopTampering() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tamper = nil
}

// rpcMessage is a JSON-RPC request or response.
type rpcMessage struct {
	Version string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id,omitempty"`
	Method  string          `json:"method,omitempty"`
	Params  json.RawMessage `json:"params,omitempty"`
	Result  json.RawMessage `json:"result,omitempty"`
	Error   *rpcError       `json:"error,omitempty"`
}

type rpcError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// ServeHTTP proxies one HTTP request: a JSON-RPC call or batch.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	upstream, failure, lieTags, tamper, delay := p.upstream, p.failure, p.lieTags, p.tamper, p.delay
	p.mu.Unlock()

	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	if failure == FailDown {
		http.Error(w, "proxy: down", http.StatusServiceUnavailable)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBodySize))
	if err != nil {
		http.Error(w, "proxy: read request: "+err.Error(), http.StatusBadRequest)
		return
	}
	reqs, batch, err := decodeMessages(body)
	if err != nil {
		http.Error(w, "proxy: "+err.Error(), http.StatusBadRequest)
		return
	}
	if failure == FailErrors {
		resps := make([]rpcMessage, len(reqs))
		for i, req := range reqs {
			resps[i] = rpcMessage{Version: "2.0", ID: req.ID, Error: &rpcError{Code: -32000, Message: "proxy: injected failure"}}
		}
		writeMessages(w, http.StatusOK, resps, batch)
		return
	}

	rewritten := false
	for i := range reqs {
		changed, err := rewriteRequest(&reqs[i], lieTags, tamper)
		if err != nil {
			http.Error(w, "proxy: "+err.Error(), http.StatusBadRequest)
			return
		}
		rewritten = rewritten || changed
	}
	if rewritten {
		body = encodeMessages(reqs, batch)
	}
	status, respBody, err := p.forward(r.Context(), upstream, body)
	if err != nil {
		http.Error(w, "proxy: "+err.Error(), http.StatusBadGateway)
		return
	}
	if tamper == nil || status != http.StatusOK {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write(respBody)
		return
	}
	resps, _, err := decodeMessages(respBody)
	if err != nil {
		http.Error(w, "proxy: upstream response: "+err.Error(), http.StatusBadGateway)
		return
	}
	methods := make(map[string]string, len(reqs))
	for _, req := range reqs {
		methods[string(req.ID)] = req.Method
	}
	for i := range resps {
		switch methods[string(resps[i].ID)] {
		case "eth_getBlockByNumber", "eth_getBlockByHash":
			if err := p.tamperBlock(r.Context(), upstream, tamper, &resps[i].Result); err != nil {
				resps[i].Result = nil
				resps[i].Error = &rpcError{Code: -32000, Message: "proxy: tamper: " + err.Error()}
			}
		}
	}
	writeMessages(w, status, resps, batch)
}

// rewriteRequest applies the request-side lies: "safe" and "finalized" become "latest", and a tampered
// block hash is looked up as the original block.
func rewriteRequest(req *rpcMessage, lieTags bool, tamper *tampering) (bool, error) {
	if req.Method != "eth_getBlockByNumber" && req.Method != "eth_getBlockByHash" {
		return false, nil
	}
	var params []json.RawMessage
	if err := json.Unmarshal(req.Params, &params); err != nil || len(params) == 0 {
		return false, fmt.Errorf("%s: bad params %s", req.Method, req.Params)
	}
	var arg string
	if err := json.Unmarshal(params[0], &arg); err != nil {
		return false, fmt.Errorf("%s: first param %s is not a string", req.Method, params[0])
	}
	switch {
	case req.Method == "eth_getBlockByNumber" && lieTags && (arg == "safe" || arg == "finalized"):
		arg = "latest"
	case req.Method == "eth_getBlockByHash" && tamper != nil:
		orig, ok := tamper.originalOf(common.HexToHash(arg))
		if !ok {
			return false, nil
		}
		arg = orig.Hex()
	default:
		return false, nil
	}
	params[0], _ = json.Marshal(arg)
	req.Params, _ = json.Marshal(params)
	return true, nil
}

// forward posts a JSON-RPC body to upstream and returns the response status and body.
func (p *Proxy) forward(ctx context.Context, upstream string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, upstream, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("upstream %s: %w", upstream, err)
	}
	defer resp.Body.Close()
	respBody, err := io.ReadAll(io.LimitReader(resp.Body, maxBodySize))
	if err != nil {
		return 0, nil, fmt.Errorf("read upstream response: %w", err)
	}
	return resp.StatusCode, respBody, nil
}

// tampering is the state of TamperFrom: which blocks are rewritten, and the hashes given out so far.
type tampering struct {
	from uint64

	mu       sync.Mutex
	tampered map[common.Hash]common.Hash // original block hash → tampered hash
	original map[common.Hash]common.Hash // tampered block hash → original hash
}

func (t *tampering) originalOf(h common.Hash) (common.Hash, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	orig, ok := t.original[h]
	return orig, ok
}

func (t *tampering) tamperedOf(h common.Hash) (common.Hash, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	tampered, ok := t.tampered[h]
	return tampered, ok
}

func (t *tampering) record(orig, tampered common.Hash) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.tampered[orig] = tampered
	t.original[tampered] = orig
}

// tamperBlock rewrites a block result (with or without full transactions) in place if its number is in
// the tampered range: a different state root, the parent hash of the tampered parent, and the block hash
// recomputed over the new header. A null result (unknown block) is left alone.
func (p *Proxy) tamperBlock(ctx context.Context, upstream string, t *tampering, result *json.RawMessage) error {
	if len(*result) == 0 || string(*result) == "null" {
		return nil
	}
	var block map[string]json.RawMessage
	if err := json.Unmarshal(*result, &block); err != nil {
		return fmt.Errorf("decode block: %w", err)
	}
	var header types.Header
	if err := json.Unmarshal(*result, &header); err != nil {
		return fmt.Errorf("decode header: %w", err)
	}
	var reported common.Hash
	if err := json.Unmarshal(block["hash"], &reported); err != nil {
		return fmt.Errorf("decode block hash: %w", err)
	}
	orig := header.Hash()
	if orig != reported {
		return fmt.Errorf("header of block %d hashes to %s, not the reported %s", header.Number, orig, reported)
	}
	number := header.Number.Uint64()
	if number < t.from {
		return nil
	}
	if number > t.from {
		parent, err := p.tamperedParent(ctx, upstream, t, header.ParentHash, number-1)
		if err != nil {
			return err
		}
		header.ParentHash = parent
	}
	header.Root = crypto.Keccak256Hash([]byte("tampered"), header.Root.Bytes())
	hash := header.Hash()
	t.record(orig, hash)

	block["stateRoot"], _ = json.Marshal(header.Root)
	block["parentHash"], _ = json.Marshal(header.ParentHash)
	block["hash"], _ = json.Marshal(hash)
	var txs []map[string]json.RawMessage
	if err := json.Unmarshal(block["transactions"], &txs); err == nil { // full transactions, not hashes
		for _, tx := range txs {
			tx["blockHash"] = block["hash"]
		}
		block["transactions"], _ = json.Marshal(txs)
	}
	rewritten, err := json.Marshal(block)
	if err != nil {
		return fmt.Errorf("encode block: %w", err)
	}
	*result = rewritten
	return nil
}

// tamperedParent returns the tampered hash of the block with hash orig at number n, tampering it (and,
// recursively, its own tampered ancestors) first if it has not been served yet.
func (p *Proxy) tamperedParent(ctx context.Context, upstream string, t *tampering, orig common.Hash, n uint64) (common.Hash, error) {
	if h, ok := t.tamperedOf(orig); ok {
		return h, nil
	}
	req, _ := json.Marshal(rpcMessage{
		Version: "2.0", ID: json.RawMessage("1"), Method: "eth_getBlockByHash",
		Params: json.RawMessage(fmt.Sprintf(`["%s",false]`, orig.Hex())),
	})
	status, body, err := p.forward(ctx, upstream, req)
	if err != nil {
		return common.Hash{}, fmt.Errorf("fetch parent %d: %w", n, err)
	}
	var resp rpcMessage
	if err := json.Unmarshal(body, &resp); err != nil || status != http.StatusOK {
		return common.Hash{}, fmt.Errorf("fetch parent %d: status %d: %s", n, status, body)
	}
	if resp.Error != nil || string(resp.Result) == "null" {
		return common.Hash{}, fmt.Errorf("fetch parent %d (%s): not available: %s", n, orig, body)
	}
	if err := p.tamperBlock(ctx, upstream, t, &resp.Result); err != nil {
		return common.Hash{}, err
	}
	h, ok := t.tamperedOf(orig)
	if !ok {
		return common.Hash{}, errors.New("parent was not tampered")
	}
	return h, nil
}

// decodeMessages decodes a JSON-RPC body: a single message or a batch.
func decodeMessages(body []byte) ([]rpcMessage, bool, error) {
	body = bytes.TrimSpace(body)
	if len(body) > 0 && body[0] == '[' {
		var msgs []rpcMessage
		if err := json.Unmarshal(body, &msgs); err != nil {
			return nil, true, fmt.Errorf("decode JSON-RPC batch: %w", err)
		}
		return msgs, true, nil
	}
	var msg rpcMessage
	if err := json.Unmarshal(body, &msg); err != nil {
		return nil, false, fmt.Errorf("decode JSON-RPC message: %w", err)
	}
	return []rpcMessage{msg}, false, nil
}

func encodeMessages(msgs []rpcMessage, batch bool) []byte {
	var v any = msgs
	if !batch {
		v = msgs[0]
	}
	data, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("encode JSON-RPC messages: %v", err)) // only raw JSON that was decoded before
	}
	return data
}

func writeMessages(w http.ResponseWriter, status int, msgs []rpcMessage, batch bool) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(encodeMessages(msgs, batch))
}
