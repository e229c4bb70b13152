package devnet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/rlp"
	"github.com/ethereum/go-ethereum/trie"

	optypes "github.com/ethereum-optimism/optimism/op-core/types"
	"github.com/ethereum-optimism/optimism/op-service/sources"
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
	// FailEndless answers 200 and streams a JSON string that never ends, as fast as the client reads.
	FailEndless
	// FailDrip answers 200 and sends a valid-looking response one byte a second.
	FailDrip
	// FailGarbage answers 200 with bytes that are not JSON.
	FailGarbage
)

// Tamper is how TamperFrom changes a block.
type Tamper int

const (
	// TamperStateRoot: a different state root; only executing the block shows it.
	TamperStateRoot Tamper = iota
	// TamperPrevRandao: a prev-randao that is not the L1 origin's mix digest.
	TamperPrevRandao
	// TamperTimestamp: a timestamp one second later than derivation gives the block.
	TamperTimestamp
	// TamperForgedDeposit: a deposit minting ETH, inserted after the L1-info deposit, that no L1 block holds.
	TamperForgedDeposit
	// TamperL1InfoField: the L1 base fee in the L1-info deposit changed (its L1 hash, number and sequence number
	// are kept, so the block still names its real L1 origin).
	TamperL1InfoField
	// TamperRedirectTransfer: the last plain transfer of the block from a key the proxy's Forger holds sent to
	// ForgedRecipient instead, and the state root the Forger's scratch engine computes for it: a block that executes
	// VALID, uses the same gas and obeys every derivation rule, with another recipient than the sequencer's. Blocks
	// above it are relinked and get their state roots the same way. Needs SetForger.
	TamperRedirectTransfer
)

// ForgedDepositRecipient receives the ETH that TamperForgedDeposit's deposit mints.
var ForgedDepositRecipient = common.Address{0xf0, 0x4e, 0xd0}

// maxBodySize bounds requests and responses passing through a Proxy.
const maxBodySize = 32 << 20

// Proxy is an HTTP JSON-RPC reverse proxy in front of an execution engine, e.g. as the replicator's
// source. Tests switch it at runtime to misbehave like a faulty or lying sequencer:
//   - TamperFrom: eth_getBlockByNumber, eth_getBlockByHash and debug_getRawBlock return, for blocks from a number
//     onwards, blocks changed in one way (a Tamper: by default a different state root) with the transactions root
//     and block hash recomputed (and the parent hashes of later blocks relinked), so every block is self-consistent
//     and only executing it, or deriving it from L1, shows it is wrong; a block is changed alike whichever method
//     serves it;
//   - SetUpstream: forward to another node, e.g. another sequencer's chain;
//   - SetFailure: return errors or be down;
//   - SetLyingTags: answer the "safe" and "finalized" labels with the "latest" block (eth_getBlockByNumber,
//     debug_getRawBlock);
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
	forger   *Forger
	forged   map[common.Hash]struct{} // hashes of served blocks whose transactions the tampering changed
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
func (p *Proxy) TamperFrom(n uint64) { p.TamperFromWith(n, TamperStateRoot) }

// TamperFromWith makes blocks with number n or higher changed as how says.
func (p *Proxy) TamperFromWith(n uint64, how Tamper) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tamper = &tampering{
		from:     n,
		how:      how,
		tampered: make(map[common.Hash]common.Hash),
		original: make(map[common.Hash]common.Hash),
	}
}

// SetForger sets the Forger TamperRedirectTransfer forges with.
func (p *Proxy) SetForger(f *Forger) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.forger = f
}

// Forged returns the hashes of the served blocks whose transactions TamperRedirectTransfer changed so far.
func (p *Proxy) Forged() []common.Hash {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]common.Hash, 0, len(p.forged))
	for h := range p.forged {
		out = append(out, h)
	}
	return out
}

// recordForged adds a block to Forged.
func (p *Proxy) recordForged(h common.Hash) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.forged == nil {
		p.forged = make(map[common.Hash]struct{})
	}
	p.forged[h] = struct{}{}
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
	switch failure {
	case FailDown:
		http.Error(w, "proxy: down", http.StatusServiceUnavailable)
		return
	case FailEndless, FailDrip, FailGarbage:
		serveHostile(w, r, failure)
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
		case rawBlockMethod:
			if err := p.tamperRawBlock(r.Context(), upstream, tamper, &resps[i].Result); err != nil {
				resps[i].Result = nil
				resps[i].Error = &rpcError{Code: -32000, Message: "proxy: tamper: " + err.Error()}
			}
		}
	}
	writeMessages(w, status, resps, batch)
}

// serveHostile answers a request as a hostile or broken server would, until the client gives up.
func serveHostile(w http.ResponseWriter, r *http.Request, f Failure) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	switch f {
	case FailEndless:
		_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":"0x`)
		chunk := bytes.Repeat([]byte("ab"), 32<<10)
		for r.Context().Err() == nil {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	case FailDrip:
		msg := []byte(`{"jsonrpc":"2.0","id":1,"result":{"number":"0x1"}}`)
		ticker := time.NewTicker(time.Second)
		defer ticker.Stop()
		for _, b := range msg {
			if _, err := w.Write([]byte{b}); err != nil {
				return
			}
			if flusher != nil {
				flusher.Flush()
			}
			select {
			case <-r.Context().Done():
				return
			case <-ticker.C:
			}
		}
	case FailGarbage:
		garbage := make([]byte, 4096)
		for i := range garbage {
			garbage[i] = byte(i*7 + 3)
		}
		_, _ = w.Write(garbage)
	}
}

// rawBlockMethod is op-geth's debug_getRawBlock: a block (by number, label or hash) as RLP.
const rawBlockMethod = "debug_getRawBlock"

// rewriteRequest applies the request-side lies: "safe" and "finalized" become "latest", and a tampered
// block hash is looked up as the original block.
func rewriteRequest(req *rpcMessage, lieTags bool, tamper *tampering) (bool, error) {
	if req.Method != "eth_getBlockByNumber" && req.Method != "eth_getBlockByHash" && req.Method != rawBlockMethod {
		return false, nil
	}
	var params []json.RawMessage
	if err := json.Unmarshal(req.Params, &params); err != nil || len(params) == 0 {
		return false, fmt.Errorf("%s: bad params %s", req.Method, req.Params)
	}
	var arg string
	if err := json.Unmarshal(params[0], &arg); err != nil {
		if req.Method == rawBlockMethod {
			return false, nil // a block number or hash as an object: not rewritten
		}
		return false, fmt.Errorf("%s: first param %s is not a string", req.Method, params[0])
	}
	byHash := req.Method == "eth_getBlockByHash" || req.Method == rawBlockMethod && len(arg) == 2+2*common.HashLength
	switch {
	case req.Method != "eth_getBlockByHash" && lieTags && (arg == "safe" || arg == "finalized"):
		arg = "latest"
	case byHash && tamper != nil:
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
	how  Tamper

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
	if orig := header.Hash(); orig != reported {
		return fmt.Errorf("header of block %d hashes to %s, not the reported %s", header.Number, orig, reported)
	}
	txs, tampered, err := p.tamperHeader(ctx, upstream, t, &header, func() (sources.RawTransactions, error) {
		return p.fullTransactions(ctx, upstream, block["transactions"], reported)
	})
	if err != nil || !tampered {
		return err
	}
	hash := header.Hash()
	block["stateRoot"], _ = json.Marshal(header.Root)
	block["mixHash"], _ = json.Marshal(header.MixDigest)
	block["timestamp"], _ = json.Marshal(hexutil.Uint64(header.Time))
	block["transactionsRoot"], _ = json.Marshal(header.TxHash)
	block["parentHash"], _ = json.Marshal(header.ParentHash)
	block["hash"], _ = json.Marshal(hash)
	var full []map[string]json.RawMessage
	isFull := json.Unmarshal(block["transactions"], &full) == nil // full transactions, not hashes
	switch {
	case txs != nil && isFull:
		block["transactions"], _ = json.Marshal(txs)
	case txs != nil:
		block["transactions"], _ = json.Marshal(txs.Hashes())
	case isFull:
		for _, tx := range full {
			tx["blockHash"] = block["hash"]
		}
		block["transactions"], _ = json.Marshal(full)
	}
	rewritten, err := json.Marshal(block)
	if err != nil {
		return fmt.Errorf("encode block: %w", err)
	}
	*result = rewritten
	return nil
}

// tamperRawBlock is tamperBlock for a debug_getRawBlock result, the block's RLP; the block is changed exactly as
// tamperBlock changes it. An empty result (unknown block) is left alone.
func (p *Proxy) tamperRawBlock(ctx context.Context, upstream string, t *tampering, result *json.RawMessage) error {
	var raw hexutil.Bytes
	if len(*result) == 0 || string(*result) == "null" {
		return nil
	}
	if err := json.Unmarshal(*result, &raw); err != nil {
		return fmt.Errorf("decode raw block: %w", err)
	}
	if len(raw) == 0 {
		return nil
	}
	var block types.Block
	if err := rlp.DecodeBytes(raw, &block); err != nil {
		return fmt.Errorf("decode raw block: %w", err)
	}
	header := block.Header()
	txs, tampered, err := p.tamperHeader(ctx, upstream, t, header, func() (sources.RawTransactions, error) {
		txs := make(sources.RawTransactions, len(block.Transactions()))
		for i, tx := range block.Transactions() {
			enc, err := tx.MarshalBinary()
			if err != nil {
				return nil, fmt.Errorf("encode tx %d: %w", i, err)
			}
			txs[i] = enc
		}
		return txs, nil
	})
	if err != nil || !tampered {
		return err
	}
	body := *block.Body()
	if txs != nil {
		if body.Transactions, err = txs.Geth(); err != nil {
			return fmt.Errorf("block %d: %w", header.Number, err)
		}
	}
	enc, err := rlp.EncodeToBytes(types.NewBlockWithHeader(header).WithBody(body))
	if err != nil {
		return fmt.Errorf("encode block: %w", err)
	}
	*result, _ = json.Marshal(hexutil.Bytes(enc))
	return nil
}

// tamperHeader changes a block's header in place as t says, if its number is in the tampered range, and records
// its tampered hash: the parent hash of the tampered parent, and the tampering itself. A tampering that changes the
// transactions gets them from txs and returns them changed, with the header's transactions root recomputed.
func (p *Proxy) tamperHeader(ctx context.Context, upstream string, t *tampering, header *types.Header,
	txs func() (sources.RawTransactions, error)) (sources.RawTransactions, bool, error) {
	orig := header.Hash()
	number := header.Number.Uint64()
	if number < t.from {
		return nil, false, nil
	}
	if number > t.from {
		parent, err := p.tamperedParent(ctx, upstream, t, header.ParentHash, number-1)
		if err != nil {
			return nil, false, err
		}
		header.ParentHash = parent
	}
	var changed sources.RawTransactions // set when the tampering changes the transactions
	switch t.how {
	case TamperStateRoot:
		header.Root = crypto.Keccak256Hash([]byte("tampered"), header.Root.Bytes())
	case TamperPrevRandao:
		header.MixDigest = crypto.Keccak256Hash([]byte("tampered"), header.MixDigest.Bytes())
	case TamperTimestamp:
		header.Time++
	case TamperForgedDeposit, TamperL1InfoField:
		all, err := txs()
		if err != nil {
			return nil, false, err
		}
		if changed, err = tamperTransactions(t.how, all); err != nil {
			return nil, false, fmt.Errorf("block %d: %w", number, err)
		}
		header.TxHash = types.DeriveSha(changed, trie.NewStackTrie(nil))
	case TamperRedirectTransfer:
		p.mu.Lock()
		forger := p.forger
		p.mu.Unlock()
		if forger == nil {
			return nil, false, errors.New("TamperRedirectTransfer without a Forger (SetForger)")
		}
		all, err := txs()
		if err != nil {
			return nil, false, err
		}
		var redirected bool
		if changed, redirected, err = forger.Forge(ctx, header, all); err != nil {
			return nil, false, err
		}
		if redirected {
			defer func() { p.recordForged(header.Hash()) }()
		}
	}
	t.record(orig, header.Hash())
	return changed, true, nil
}

// fullTransactions returns a block's transactions: from its result if it holds them in full, else from upstream.
func (p *Proxy) fullTransactions(ctx context.Context, upstream string, inResult json.RawMessage, hash common.Hash) (sources.RawTransactions, error) {
	var txs sources.RawTransactions
	if err := json.Unmarshal(inResult, &txs); err == nil {
		return txs, nil
	}
	req, _ := json.Marshal(rpcMessage{
		Version: "2.0", ID: json.RawMessage("1"), Method: "eth_getBlockByHash",
		Params: json.RawMessage(fmt.Sprintf(`["%s",true]`, hash.Hex())),
	})
	status, body, err := p.forward(ctx, upstream, req)
	if err != nil {
		return nil, fmt.Errorf("fetch block %s: %w", hash, err)
	}
	var resp struct {
		Result *struct {
			Transactions sources.RawTransactions `json:"transactions"`
		} `json:"result"`
	}
	if err := json.Unmarshal(body, &resp); err != nil || status != http.StatusOK || resp.Result == nil {
		return nil, fmt.Errorf("fetch block %s: status %d: %s", hash, status, body)
	}
	return resp.Result.Transactions, nil
}

// tamperTransactions changes a block's transactions as how says.
func tamperTransactions(how Tamper, txs sources.RawTransactions) (sources.RawTransactions, error) {
	if len(txs) == 0 || txs[0].Type() != optypes.DepositTxType {
		return nil, errors.New("no L1-info deposit")
	}
	out := append(sources.RawTransactions(nil), txs...)
	switch how {
	case TamperForgedDeposit:
		ether := new(big.Int).Exp(big.NewInt(10), big.NewInt(21), nil) // 1,000 ETH
		forged, err := (&optypes.DepositTx{SourceHash: crypto.Keccak256Hash([]byte("forged"), txs[0]), From: ForgedDepositRecipient,
			To: &ForgedDepositRecipient, Mint: ether, Value: ether, Gas: 100_000}).MarshalBinary()
		if err != nil {
			return nil, err
		}
		out = append(out[:1], append(sources.RawTransactions{forged}, txs[1:]...)...)
	case TamperL1InfoField:
		info, err := optypes.UnmarshalDepositTx(txs[0])
		if err != nil {
			return nil, fmt.Errorf("L1-info deposit: %w", err)
		}
		// Every L1-info layout since Ecotone: selector (4), fee scalars (4+4), sequence number, time and number (8
		// each), then the L1 base fee (32): change its lowest byte.
		const baseFeeEnd = 4 + 4 + 4 + 8 + 8 + 8 + 32
		if len(info.Data) < baseFeeEnd {
			return nil, fmt.Errorf("L1-info deposit data of %d bytes", len(info.Data))
		}
		info.Data = append([]byte(nil), info.Data...)
		info.Data[baseFeeEnd-1] ^= 0x01
		raw, err := info.MarshalBinary()
		if err != nil {
			return nil, err
		}
		out[0] = raw
	}
	return out, nil
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
