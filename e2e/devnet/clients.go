package devnet

import (
	"context"
	"fmt"
	"math/big"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/ethereum-optimism/optimism/op-service/client"
	"github.com/ethereum-optimism/optimism/op-service/eth"
	"github.com/ethereum-optimism/optimism/op-service/sources"

	"github.com/op-replicator/op-replicator/plugin/api"
)

// EL is a client of an execution engine's user RPC (eth_ namespace), over HTTP.
type EL struct {
	*ethclient.Client
	// RPC is the underlying client, for raw calls.
	RPC *rpc.Client
	// HTTP and WS are the engine's user RPC endpoints.
	HTTP, WS string
	// MetricsURL is op-geth's Prometheus endpoint (Config.EngineMetrics); empty without one.
	MetricsURL string
}

// DialEL returns a client of the user RPC at url (HTTP only), e.g. of a Proxy, to see what it serves.
func DialEL(url string) (*EL, error) {
	return newEL(url, "")
}

func newEL(httpURL, wsURL string) (*EL, error) {
	c, err := rpc.DialOptions(context.Background(), httpURL)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", httpURL, err)
	}
	return &EL{Client: ethclient.NewClient(c), RPC: c, HTTP: httpURL, WS: wsURL}, nil
}

// Header returns the header at a block number, or at a label such as rpc.LatestBlockNumber,
// rpc.SafeBlockNumber or rpc.FinalizedBlockNumber.
func (e *EL) Header(ctx context.Context, n rpc.BlockNumber) (*types.Header, error) {
	h, err := e.HeaderByNumber(ctx, big.NewInt(n.Int64()))
	if err != nil {
		return nil, fmt.Errorf("eth_getBlockByNumber(%s) at %s: %w", n, e.HTTP, err)
	}
	return h, nil
}

// BlockID returns the hash and number of the block at a number or label, as Header does.
func (e *EL) BlockID(ctx context.Context, n rpc.BlockNumber) (eth.BlockID, error) {
	h, err := e.Header(ctx, n)
	if err != nil {
		return eth.BlockID{}, err
	}
	return eth.HeaderBlockID(h), nil
}

// HashesAt returns the hashes of the blocks with the given numbers, in one batch request. A block the engine does
// not have is an error.
func (e *EL) HashesAt(ctx context.Context, nums []uint64) ([]common.Hash, error) {
	type block struct {
		Hash common.Hash `json:"hash"`
	}
	results := make([]*block, len(nums))
	batch := make([]rpc.BatchElem, len(nums))
	for i, n := range nums {
		batch[i] = rpc.BatchElem{Method: "eth_getBlockByNumber", Args: []any{hexutil.EncodeUint64(n), false}, Result: &results[i]}
	}
	if err := e.RPC.BatchCallContext(ctx, batch); err != nil {
		return nil, fmt.Errorf("batch eth_getBlockByNumber at %s: %w", e.HTTP, err)
	}
	hashes := make([]common.Hash, len(nums))
	for i, elem := range batch {
		if elem.Error != nil {
			return nil, fmt.Errorf("eth_getBlockByNumber(%d) at %s: %w", nums[i], e.HTTP, elem.Error)
		}
		if results[i] == nil {
			return nil, fmt.Errorf("eth_getBlockByNumber(%d) at %s: %w", nums[i], e.HTTP, ethereum.NotFound)
		}
		hashes[i] = results[i].Hash
	}
	return hashes, nil
}

// OptionalHashesAt is HashesAt with nil for a block the engine does not have.
func (e *EL) OptionalHashesAt(ctx context.Context, nums []uint64) ([]*common.Hash, error) {
	type block struct {
		Hash common.Hash `json:"hash"`
	}
	results := make([]*block, len(nums))
	batch := make([]rpc.BatchElem, len(nums))
	for i, n := range nums {
		batch[i] = rpc.BatchElem{Method: "eth_getBlockByNumber", Args: []any{hexutil.EncodeUint64(n), false}, Result: &results[i]}
	}
	if err := e.RPC.BatchCallContext(ctx, batch); err != nil {
		return nil, err
	}
	hashes := make([]*common.Hash, len(nums))
	for i, elem := range batch {
		if elem.Error != nil {
			return nil, elem.Error
		}
		if results[i] != nil {
			hashes[i] = &results[i].Hash
		}
	}
	return hashes, nil
}

// BlockLink is a block's hash and its parent's.
type BlockLink struct {
	Hash       common.Hash `json:"hash"`
	ParentHash common.Hash `json:"parentHash"`
}

// BlockLinks returns the hash and parent hash of the engine's blocks at nums, in one batch request; a block the
// engine does not have is an error.
func (e *EL) BlockLinks(ctx context.Context, nums []uint64) ([]BlockLink, error) {
	results := make([]*BlockLink, len(nums))
	batch := make([]rpc.BatchElem, len(nums))
	for i, n := range nums {
		batch[i] = rpc.BatchElem{Method: "eth_getBlockByNumber", Args: []any{hexutil.EncodeUint64(n), false}, Result: &results[i]}
	}
	if err := e.RPC.BatchCallContext(ctx, batch); err != nil {
		return nil, fmt.Errorf("batch eth_getBlockByNumber at %s: %w", e.HTTP, err)
	}
	links := make([]BlockLink, len(nums))
	for i, elem := range batch {
		if elem.Error != nil {
			return nil, fmt.Errorf("block %d at %s: %w", nums[i], e.HTTP, elem.Error)
		}
		if results[i] == nil {
			return nil, fmt.Errorf("no block %d at %s: a gap", nums[i], e.HTTP)
		}
		links[i] = *results[i]
	}
	return links, nil
}

// NumberRange returns from, from+1, ..., to.
func NumberRange(from, to uint64) []uint64 {
	var nums []uint64
	for n := from; n <= to; n++ {
		nums = append(nums, n)
	}
	return nums
}

// Relay is a client of a relay's own JSON-RPC listener (relay_ namespace, plugin/api's typed client).
type Relay struct {
	*api.RelayClient
	rpc *rpc.Client
}

// DialRelay connects to a relay's listener at url: ws://host:port for subscriptions (a replicator's source
// relay+ws://host:port is the same listener), or http://host:port.
func DialRelay(ctx context.Context, url string) (*Relay, error) {
	c, err := rpc.DialContext(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("dial relay %s: %w", url, err)
	}
	return &Relay{RelayClient: api.NewRelayClient(c), rpc: c}, nil
}

// Close closes the connection.
func (r *Relay) Close() { r.rpc.Close() }

// CL is a client of an op-node's RPC: the optimism_ namespace, and the replicator_ namespace through Replicator.
type CL struct {
	*sources.RollupClient
	// Replicator calls the replicator_ namespace (plugin/api's typed client).
	Replicator *api.Client
	// RPC is the underlying client, for raw calls.
	RPC *rpc.Client
	// URL is the op-node's RPC endpoint.
	URL string
}

func newCL(url string) (*CL, error) {
	c, err := rpc.DialOptions(context.Background(), url)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", url, err)
	}
	return &CL{RollupClient: sources.NewRollupClient(client.NewBaseRPCClient(c)), Replicator: api.NewClient(c), RPC: c, URL: url}, nil
}
