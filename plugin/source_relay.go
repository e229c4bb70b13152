package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/log"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/ethereum-optimism/optimism/op-node/rollup"
	"github.com/ethereum-optimism/optimism/op-service/eth"
	"github.com/ethereum-optimism/optimism/op-service/retry"
	opsigner "github.com/ethereum-optimism/optimism/op-service/signer"

	"github.com/op-replicator/op-replicator/driverhook"
)

// relaySource follows another node's relay: a subscription to its signed blocks (reconnected with backoff when it
// fails or stays silent beyond the read timeout), and get-by-number for gaps. Every block must carry the
// sequencer's signature (verifySigned); a block that does not is refused and counted, and never halts anything.
// Verified blocks go into the shared envelope store, where two validly signed blocks at one height above the safe
// head are kept as equivocation evidence; the store drops blocks at or below the safe head (replays of settled
// history). At a height holding several signed blocks, the latest arrived is the sequencer's current one and is
// what this source answers with.
type relaySource struct {
	log         log.Logger
	name        string
	url         string
	rollup      *rollup.Config
	signers     driverhook.Signers
	store       *envelopeStore
	onConflict  func(a, b *heldEnvelope)
	timeout     time.Duration
	readTimeout time.Duration
	metrics     Metrics
	now         func() time.Time

	heads  chan struct{}
	head   atomic.Uint64 // highest verified height received
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	client *rpc.Client // nil while disconnected
}

var _ Source = (*relaySource)(nil)

func newRelaySource(lgr log.Logger, rawURL string, cfg *rollup.Config, signers driverhook.Signers, store *envelopeStore,
	onConflict func(a, b *heldEnvelope), timeout, readTimeout time.Duration, m Metrics) *relaySource {
	ctx, cancel := context.WithCancel(context.Background())
	s := &relaySource{log: lgr, name: redactURL(rawURL), url: strings.TrimPrefix(rawURL, driverhook.RelayScheme), rollup: cfg, signers: signers,
		store: store, onConflict: onConflict, timeout: timeout, readTimeout: readTimeout, metrics: m, now: time.Now,
		heads: make(chan struct{}, 1), cancel: cancel}
	s.wg.Add(1)
	go s.follow(ctx)
	return s
}

func (s *relaySource) Name() string              { return s.name }
func (s *relaySource) NewHeads() <-chan struct{} { return s.heads }

// Head is the highest verified block received from this relay. At or below the safe head it is the safe head
// itself: L1 settled those heights, so no relay has a say there (after a halt the replicator's unsafe head is the
// safe head, and it compares it with this).
func (s *relaySource) Head(context.Context) (eth.BlockID, error) {
	n := s.head.Load()
	if n == 0 {
		return eth.BlockID{}, fmt.Errorf("relay %s: no block received yet", s.name)
	}
	if safe, ok := s.store.settled(n); ok {
		return safe, nil
	}
	if h := s.store.Latest(n); h != nil {
		return eth.BlockID{Hash: h.hash(), Number: n}, nil
	}
	return eth.BlockID{}, fmt.Errorf("relay %s: block %d no longer held", s.name, n)
}

func (s *relaySource) Payload(ctx context.Context, n uint64) (*eth.ExecutionPayloadEnvelope, error) {
	h, err := s.envelope(ctx, n)
	if err != nil {
		return nil, err
	}
	return h.Signed.Envelope, nil
}

// envelope returns the verified block at a height: held already (from any source; the latest arrived wins), or
// asked of the relay. Heights at or below the safe head are not asked for: whatever a relay has there is a
// replay the store drops.
func (s *relaySource) envelope(ctx context.Context, n uint64) (*heldEnvelope, error) {
	if safe, ok := s.store.settled(n); ok {
		return nil, fmt.Errorf("relay %s: block %d is at or below the safe head %d: %w", s.name, n, safe.Number, ethereum.NotFound)
	}
	if held := s.store.Latest(n); held != nil {
		return held, nil
	}
	s.mu.Lock()
	client := s.client
	s.mu.Unlock()
	if client == nil {
		return nil, fmt.Errorf("relay %s: not connected", s.name)
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	start := time.Now()
	var msg json.RawMessage
	err := client.CallContext(ctx, &msg, "relay_envelopeByNumber", hexutil.Uint64(n))
	s.metrics.RecordSourceRequest("relay_envelope", time.Since(start))
	if err != nil {
		return nil, fmt.Errorf("relay %s: %w", s.name, err)
	}
	if string(msg) == "null" { // a gap in the relay's window
		return nil, ethereum.NotFound
	}
	signed, err := decodeEnvelope(msg)
	if err != nil {
		return nil, s.refuse(err)
	}
	if got := uint64(signed.Envelope.ExecutionPayload.BlockNumber); got != n {
		return nil, fmt.Errorf("%w: relay %s answered block %d for %d", errBadInput, s.name, got, n)
	}
	held, err := s.accept(signed)
	if errors.Is(err, errBelowWindow) {
		// Older than every height held (we are far behind): verified, handed on without holding it.
		return &heldEnvelope{Signed: signed, Source: s.name, Arrived: s.now()}, nil
	}
	return held, err
}

// accept verifies a block from the relay and holds it. A block the store refuses (errReplay, errHeightFull,
// errBelowWindow; counted and logged there) is not held and never evidence.
func (s *relaySource) accept(signed *opsigner.SignedExecutionPayloadEnvelope) (*heldEnvelope, error) {
	if err := verifySigned(s.rollup, s.signers, signed); err != nil {
		return nil, s.refuse(err)
	}
	held, _, conflicts, err := s.store.Add(signed, s.name, s.now())
	if err != nil {
		return nil, err
	}
	for _, c := range conflicts {
		s.onConflict(c, held)
	}
	for {
		cur := s.head.Load()
		if held.number() <= cur || s.head.CompareAndSwap(cur, held.number()) {
			break
		}
	}
	return held, nil
}

// refuse counts and logs a block from the relay that is malformed (errBadInput) or not signed by the sequencer
// (errBadSignature), and returns err.
func (s *relaySource) refuse(err error) error {
	kind := ErrKindBadInput
	if errors.Is(err, errBadSignature) {
		kind = ErrKindBadSignature
	}
	s.metrics.RecordError(kind)
	s.log.Warn("Refusing block from relay", "relay", s.name, "err", err)
	return err
}

// decodeEnvelope decodes a signed block as a relay sends it (relay.go's API encodes it as JSON). A message without
// a payload is bad input: callers read the block's number before its signature is checked.
func decodeEnvelope(msg json.RawMessage) (*opsigner.SignedExecutionPayloadEnvelope, error) {
	var signed *opsigner.SignedExecutionPayloadEnvelope
	if err := json.Unmarshal(msg, &signed); err != nil {
		return nil, fmt.Errorf("%w: relay message: %v", errBadInput, err)
	}
	if signed == nil || signed.Envelope == nil || signed.Envelope.ExecutionPayload == nil {
		return nil, fmt.Errorf("%w: relay message without a block", errBadInput)
	}
	return signed, nil
}

// follow keeps a subscription to the relay, from the block after the highest one received.
func (s *relaySource) follow(ctx context.Context) {
	defer s.wg.Done()
	backoff := retry.Exponential()
	for attempt := 0; ctx.Err() == nil; attempt++ {
		err := s.subscribe(ctx, func() { attempt = 0 })
		if ctx.Err() != nil {
			return
		}
		s.metrics.RecordError(ErrKindSource)
		s.log.Warn("Relay subscription ended, reconnecting", "relay", s.name, "err", err, "attempt", attempt+1)
		select {
		case <-time.After(backoff.Duration(attempt)):
		case <-ctx.Done():
			return
		}
	}
}

func (s *relaySource) subscribe(ctx context.Context, onMessage func()) error {
	dialCtx, cancel := context.WithTimeout(ctx, s.timeout)
	client, err := rpc.DialContext(dialCtx, s.url)
	cancel()
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.client = client
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.client = nil
		s.mu.Unlock()
		client.Close()
	}()
	// Raw messages, decoded by decodeEnvelope: a malformed one is refused and counted like a badly signed one (geth
	// would end the subscription on it).
	ch := make(chan json.RawMessage, 64)
	// From the block after the highest received, and above the safe head: the store would drop anything lower.
	from := s.head.Load() + 1
	if safe := s.store.safeHead(); safe != (eth.BlockID{}) && safe.Number >= from {
		from = safe.Number + 1
	}
	sub, err := client.Subscribe(ctx, "relay", ch, "envelopes", hexutil.Uint64(from))
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	s.log.Info("Following relay", "relay", s.name, "from", from)
	silence := time.NewTimer(s.readTimeout)
	defer silence.Stop()
	for {
		select {
		case msg := <-ch:
			onMessage()
			silence.Reset(s.readTimeout)
			signed, err := decodeEnvelope(msg)
			if err != nil {
				s.refuse(err)
				continue
			}
			if _, err := s.accept(signed); err == nil {
				select {
				case s.heads <- struct{}{}:
				default:
				}
			}
		case err := <-sub.Err():
			return err
		case <-silence.C:
			return fmt.Errorf("no block for %s", s.readTimeout)
		case <-ctx.Done():
			return nil
		}
	}
}

func (s *relaySource) Close() {
	s.cancel()
	s.wg.Wait()
}
