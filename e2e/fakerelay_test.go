package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/log"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/ethereum-optimism/optimism/op-node/rollup"
	"github.com/ethereum-optimism/optimism/op-service/client"
	"github.com/ethereum-optimism/optimism/op-service/eth"
	opsigner "github.com/ethereum-optimism/optimism/op-service/signer"
	"github.com/ethereum-optimism/optimism/op-service/sources"
)

// fakeRelay speaks op-replicator's relay protocol (relay_subscribe "envelopes", relay_envelopeByNumber,
// relay_head) but serves what a test makes it: the sequencer's blocks, read from its op-geth, signed with key
// after mutate (if set) changed them. With another key it is a forging relay; with the sequencer's key and a
// mutation, an equivocating sequencer.
type fakeRelay struct {
	URL   string
	l2    *sources.L2Client
	chain eth.ChainID

	// Set before a replicator subscribes:

	mutate func(*eth.ExecutionPayloadEnvelope)
	// behind, when set, makes the relay serve only the block that many below the source's head, once per head.
	behind uint64
	// delay holds a subscription's first block back.
	delay time.Duration
	// replay, when set, is sent to every subscriber first, whatever height it subscribed from, once replayGate
	// is closed.
	replay     []*opsigner.SignedExecutionPayloadEnvelope
	replayGate chan struct{}

	// mu guards what may change while the relay serves (with set; the soak switches a relay from one misbehaviour
	// to the next), and the subscriptions.
	mu  sync.Mutex
	key *ecdsa.PrivateKey
	// alter, when set, changes a block after it was signed (its hash recomputed): the signature no longer fits.
	alter func(*eth.ExecutionPayloadEnvelope)
	// silent makes the relay serve nothing: no block by number, none to subscribers.
	silent bool
	// subs holds each subscription's queue of pushed messages.
	subs map[chan []any]struct{}
	// sent counts the blocks streamed to subscribers.
	sent uint64
}

// set changes the relay's behaviour while it serves.
func (f *fakeRelay) set(change func(f *fakeRelay)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change(f)
}

// push sends msgs to every subscriber now, ahead of the blocks it streams, and returns how many subscribers it went
// to. A subscriber with pushes still pending gets none.
func (f *fakeRelay) push(msgs ...any) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for ch := range f.subs {
		select {
		case ch <- msgs:
			n++
		default:
		}
	}
	return n
}

// subscribers is the number of subscriptions being served.
func (f *fakeRelay) subscribers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs)
}

// blocksSent is the number of blocks streamed to subscribers so far.
func (f *fakeRelay) blocksSent() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sent
}

func (f *fakeRelay) isSilent() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.silent
}

func startFakeRelay(t *testing.T, cfg *rollup.Config, sourceEL string, key *ecdsa.PrivateKey) *fakeRelay {
	t.Helper()
	rpcClient, err := client.NewRPC(t.Context(), log.Root(), sourceEL)
	require.NoError(t, err)
	t.Cleanup(rpcClient.Close)
	l2, err := sources.NewL2Client(rpcClient, log.Root(), nil, sources.L2ClientSimpleConfig(cfg, true, 16, 16))
	require.NoError(t, err)
	f := &fakeRelay{l2: l2, chain: eth.ChainIDFromBig(cfg.L2ChainID), key: key, subs: make(map[chan []any]struct{})}
	srv := rpc.NewServer()
	require.NoError(t, srv.RegisterName("relay", &fakeRelayAPI{f: f}))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	httpSrv := &http.Server{Handler: srv.WebsocketHandler([]string{"*"}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = httpSrv.Serve(l) }()
	t.Cleanup(func() {
		_ = httpSrv.Close()
		srv.Stop()
	})
	f.URL = "relay+ws://" + l.Addr().String()
	return f
}

// signed returns block n as this relay serves it.
func (f *fakeRelay) signed(ctx context.Context, n uint64) (*opsigner.SignedExecutionPayloadEnvelope, error) {
	env, err := f.l2.PayloadByNumber(ctx, n)
	if err != nil {
		return nil, err
	}
	if f.mutate != nil {
		f.mutate(env)
		env.ExecutionPayload.BlockHash, _ = env.CheckBlockHash()
	}
	signed, err := f.sign(ctx, env)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	alter := f.alter
	f.mu.Unlock()
	if alter != nil {
		alter(env)
		env.ExecutionPayload.BlockHash, _ = env.CheckBlockHash()
	}
	return signed, nil
}

// sign signs env with the relay's key, as the sequencer signs a block it gossips.
func (f *fakeRelay) sign(ctx context.Context, env *eth.ExecutionPayloadEnvelope) (*opsigner.SignedExecutionPayloadEnvelope, error) {
	var buf bytes.Buffer
	if _, err := env.MarshalSSZ(&buf); err != nil {
		return nil, err
	}
	f.mu.Lock()
	key := f.key
	f.mu.Unlock()
	sig, err := opsigner.NewLocalSigner(key).SignBlockV1(ctx, f.chain, opsigner.PayloadHash(buf.Bytes()))
	if err != nil {
		return nil, err
	}
	return &opsigner.SignedExecutionPayloadEnvelope{Envelope: env, Signature: sig}, nil
}

type fakeRelayAPI struct{ f *fakeRelay }

func (a *fakeRelayAPI) Head(ctx context.Context) (hexutil.Uint64, error) {
	info, err := a.f.l2.InfoByLabel(ctx, eth.Unsafe)
	if err != nil {
		return 0, err
	}
	return hexutil.Uint64(info.NumberU64()), nil
}

func (a *fakeRelayAPI) EnvelopeByNumber(ctx context.Context, n hexutil.Uint64) (*opsigner.SignedExecutionPayloadEnvelope, error) {
	head, err := a.Head(ctx)
	if err != nil || a.f.isSilent() || (a.f.behind > 0 && uint64(n)+a.f.behind != uint64(head)) {
		return nil, err
	}
	return a.f.signed(ctx, uint64(n))
}

// Envelopes streams the served heights from `from` on (from the source's head if 0), polling the source.
func (a *fakeRelayAPI) Envelopes(ctx context.Context, from hexutil.Uint64) (*rpc.Subscription, error) {
	notifier, ok := rpc.NotifierFromContext(ctx)
	if !ok {
		return nil, rpc.ErrNotificationsUnsupported
	}
	sub := notifier.CreateSubscription()
	pushed := make(chan []any, 1)
	a.f.set(func(f *fakeRelay) { f.subs[pushed] = struct{}{} })
	go func() {
		defer a.f.set(func(f *fakeRelay) { delete(f.subs, pushed) })
		select {
		case <-time.After(a.f.delay):
		case <-sub.Err():
			return
		}
		if len(a.f.replay) > 0 {
			select {
			case <-a.f.replayGate:
			case <-sub.Err():
				return
			}
		}
		for _, env := range a.f.replay {
			if notifier.Notify(sub.ID, env) != nil {
				return
			}
		}
		next := uint64(from)
		ticker := time.NewTicker(200 * time.Millisecond)
		defer ticker.Stop()
		for {
			select {
			case <-sub.Err():
				return
			case msgs := <-pushed:
				for _, msg := range msgs {
					if notifier.Notify(sub.ID, msg) != nil {
						return
					}
				}
				continue
			case <-ticker.C:
			}
			head, err := a.Head(context.Background())
			if err != nil || a.f.isSilent() {
				continue
			}
			if a.f.behind > 0 {
				next = max(next, uint64(head)-min(uint64(head), a.f.behind))
				head = hexutil.Uint64(next)
			} else if next == 0 || next+64 < uint64(head) {
				next = uint64(head)
			}
			for ; next <= uint64(head) && !a.f.isSilent(); next++ {
				env, err := a.f.signed(context.Background(), next)
				if err != nil {
					break
				}
				if notifier.Notify(sub.ID, env) != nil {
					return
				}
				a.f.set(func(f *fakeRelay) { f.sent++ })
			}
		}
	}()
	return sub, nil
}
