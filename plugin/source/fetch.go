package source

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common/hexutil"

	"github.com/ethereum-optimism/optimism/op-service/eth"
)

func (s *rpcSource) Payload(ctx context.Context, num uint64) (*eth.ExecutionPayloadEnvelope, error) {
	if env, err, ok := s.takeEarly(ctx, num); ok {
		return env, err
	}
	return s.payload(ctx, num)
}

func (s *rpcSource) payload(ctx context.Context, num uint64) (*eth.ExecutionPayloadEnvelope, error) {
	return s.payloadAs(ctx, num, "payload")
}

// payloadAs is payload, its latency recorded as method's (the http poller's polls for the next block are "poll":
// most find nothing, and would make the latency of "payload" look short).
func (s *rpcSource) payloadAs(ctx context.Context, num uint64, method string) (*eth.ExecutionPayloadEnvelope, error) {
	ctx, done := s.call(ctx, method)
	defer done()
	env, err := s.fetchPayload(ctx, num)
	if err != nil {
		return nil, err
	}
	if got := uint64(env.ExecutionPayload.BlockNumber); got != num {
		return nil, fmt.Errorf("%w: asked for block %d, got %d", ErrBadInput, num, got)
	}
	// The block hash is the header's (op-service checked the hash a JSON answer claims), but the engine hashes the
	// payload, which does not carry every header field (an Isthmus payload implies the requests hash, say). A block
	// whose payload hashes otherwise is malformed: refused here as bad input, it never reaches the engine, which
	// would find it INVALID (a halt).
	if actual, ok := env.CheckBlockHash(); !ok {
		return nil, fmt.Errorf("%w: block %s: its payload hashes to %s", ErrBadInput, env.ExecutionPayload.ID(), actual)
	}
	return env, nil
}

// rawRetry is how long a source that answered that it does not serve debug_getRawBlock is read with
// eth_getBlockByNumber before one fetch asks for debug_getRawBlock again: a proxy's allow-list or the source's
// --ws.api can change while op-node runs, and each block read as JSON costs both sides more.
const rawRetry = 10 * time.Minute

// fetchPayload fetches a block as RLP, or with eth_getBlockByNumber from a source that does not serve
// debug_getRawBlock. Only that answer turns a source to eth_getBlockByNumber (for rawRetry, then one fetch tries
// again): any other error (a timeout, say) is this fetch's.
func (s *rpcSource) fetchPayload(ctx context.Context, num uint64) (*eth.ExecutionPayloadEnvelope, error) {
	if s.tryRaw() {
		env, err := s.rawPayload(ctx, num)
		if !errors.Is(err, errNoRawBlock) {
			if err == nil {
				s.rawWorks()
			}
			return env, err
		}
		if s.jsonSince.Swap(s.clock.Now().UnixNano()) == 0 {
			s.log.Info("Source does not serve "+rawBlockMethod+", fetching its blocks with eth_getBlockByNumber",
				"source", s.name, "retry_in", rawRetry, "err", err)
		}
	}
	return s.l2.PayloadByNumber(ctx, num)
}

// tryRaw says whether this fetch asks for debug_getRawBlock: while the source serves it, or, once rawRetry has
// passed since it answered that it does not, for one fetch (the one that claims the retry).
func (s *rpcSource) tryRaw() bool {
	since := s.jsonSince.Load()
	if since == 0 {
		return true
	}
	now := s.clock.Now().UnixNano()
	return now-since >= int64(rawRetry) && s.jsonSince.CompareAndSwap(since, now)
}

// rawWorks records a block served with debug_getRawBlock.
func (s *rpcSource) rawWorks() {
	if s.jsonSince.Swap(0) != 0 {
		s.log.Info("Source serves "+rawBlockMethod+" again, fetching its blocks as RLP", "source", s.name)
	} else if s.rawServed.CompareAndSwap(false, true) {
		s.log.Info("Fetching blocks from source as RLP ("+rawBlockMethod+")", "source", s.name)
	}
}

// rawPayload fetches a block with debug_getRawBlock (with rawFetch where the source has one). A block the source does not have is ethereum.NotFound, as
// with eth_getBlockByNumber: op-geth answers "0x" for a number beyond its head (where eth_getBlockByNumber answers
// null).
func (s *rpcSource) rawPayload(ctx context.Context, num uint64) (*eth.ExecutionPayloadEnvelope, error) {
	var raw hexutil.Bytes
	var err error
	if s.rawFetch != nil {
		raw, err = s.rawFetch.getRawBlock(ctx, num)
	} else {
		err = s.rpc.CallContext(ctx, &raw, rawBlockMethod, hexutil.EncodeUint64(num))
	}
	if err != nil {
		if rawBlockUnserved(err) {
			return nil, fmt.Errorf("%w: %w", errNoRawBlock, err)
		}
		return nil, eth.MaybeAsNotFoundErr(err)
	}
	if len(raw) == 0 {
		return nil, ethereum.NotFound
	}
	return rawBlockPayload(raw, s.forks)
}
