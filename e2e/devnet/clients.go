package devnet

import (
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"time"

	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/ethereum-optimism/optimism/op-service/client"
	"github.com/ethereum-optimism/optimism/op-service/eth"
	"github.com/ethereum-optimism/optimism/op-service/sources"
)

// EL is a client of an execution engine's user RPC (eth_ namespace), over HTTP.
type EL struct {
	*ethclient.Client
	// RPC is the underlying client, for raw calls.
	RPC *rpc.Client
	// HTTP and WS are the engine's user RPC endpoints.
	HTTP, WS string
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

// CL is a client of an op-node's RPC: the optimism_ namespace and the replicator's replicator_ namespace.
type CL struct {
	*sources.RollupClient
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
	return &CL{RollupClient: sources.NewRollupClient(client.NewBaseRPCClient(c)), RPC: c, URL: url}, nil
}

// ReplicatorStatus is the result of replicator_status, decoded as a client sees it.
type ReplicatorStatus struct {
	State      string     `json:"state"` // "running" or "halted"
	HaltReason string     `json:"haltReason"`
	HaltDetail string     `json:"haltDetail"`
	Since      time.Time  `json:"since"`
	ResumeAt   *time.Time `json:"resumeAt"` // end of a timed halt
	HaltPolicy string     `json:"haltPolicy"`

	Source           string      `json:"source"`
	SourceHead       eth.BlockID `json:"sourceHead"`
	LastReplicated   eth.BlockID `json:"lastReplicated"`
	LastReplicatedAt *time.Time  `json:"lastReplicatedAt"`

	Unsafe    eth.L2BlockRef `json:"unsafe"`
	Safe      eth.L2BlockRef `json:"safe"`
	Finalized eth.L2BlockRef `json:"finalized"`
	Lag       uint64         `json:"lag"` // blocks between the source's head and the local unsafe head

	// Raw is the result as received.
	Raw json.RawMessage `json:"-"`
}

// ReplicatorStatusRaw calls replicator_status and returns the result undecoded.
func (c *CL) ReplicatorStatusRaw(ctx context.Context) (json.RawMessage, error) {
	var raw json.RawMessage
	if err := c.RPC.CallContext(ctx, &raw, "replicator_status"); err != nil {
		return nil, fmt.Errorf("replicator_status at %s: %w", c.URL, err)
	}
	return raw, nil
}

// ReplicatorStatus calls replicator_status.
func (c *CL) ReplicatorStatus(ctx context.Context) (*ReplicatorStatus, error) {
	raw, err := c.ReplicatorStatusRaw(ctx)
	if err != nil {
		return nil, err
	}
	status := &ReplicatorStatus{Raw: raw}
	if err := json.Unmarshal(raw, status); err != nil {
		return nil, fmt.Errorf("decode replicator_status %s: %w", raw, err)
	}
	return status, nil
}

// ReplicatorHalt calls replicator_halt (an admin method).
func (c *CL) ReplicatorHalt(ctx context.Context, reason string) error {
	if err := c.RPC.CallContext(ctx, nil, "replicator_halt", reason); err != nil {
		return fmt.Errorf("replicator_halt at %s: %w", c.URL, err)
	}
	return nil
}

// ReplicatorResume calls replicator_resume (an admin method).
func (c *CL) ReplicatorResume(ctx context.Context) error {
	if err := c.RPC.CallContext(ctx, nil, "replicator_resume"); err != nil {
		return fmt.Errorf("replicator_resume at %s: %w", c.URL, err)
	}
	return nil
}
