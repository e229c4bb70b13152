// Command demo runs a devnet with a replicator and a stock gossip follower side by side, under
// transaction load, and prints one status line a second until interrupted (Ctrl-C stops every process):
//
//	go run ./e2e/cmd/demo    # from the repository root, in the build workspace (make demo)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/ethereum/go-ethereum/rpc"

	"github.com/op-replicator/op-replicator/e2e/devnet"
)

func main() {
	var (
		dir       = flag.String("dir", "", "devnet directory (data and logs); default: a new temporary directory, removed at exit")
		blockTime = flag.Uint64("block-time", 1, "L2 block time in seconds")
		txRate    = flag.Float64("tx-rate", 20, "transactions per second sent to the sequencer")
		logLevel  = flag.String("log-level", "info", "op-node and op-batcher log level")
		wsSource  = flag.Bool("ws", true, "give the replicator the sequencer's websocket RPC as source (new-heads subscription); -ws=false for HTTP (polling)")
	)
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *dir, *blockTime, *txRate, *logLevel, *wsSource); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, dir string, blockTime uint64, txRate float64, logLevel string, wsSource bool) (err error) {
	if dir == "" {
		if dir, err = os.MkdirTemp("", "op-replicator-demo-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	fmt.Printf("starting devnet in %s (logs in %s)\n", dir, dir+"/logs")
	d, err := devnet.New(ctx, devnet.Config{Dir: dir, L2BlockTime: blockTime, LogLevel: logLevel})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Println("stopping devnet")
		err = errors.Join(err, d.Close())
	}()

	source := d.Sequencer.EL.HTTP
	if wsSource {
		source = d.Sequencer.EL.WS
	}
	replicator, err := d.AddFollower(ctx, "replicator", devnet.RoleReplicator, devnet.WithSource(source))
	if err != nil {
		return err
	}
	gossip, err := d.AddFollower(ctx, "gossip", devnet.RoleGossipFollower)
	if err != nil {
		return err
	}
	txs, err := devnet.StartTxGen(ctx, d.Sequencer.EL, d.Keys.L2Accounts, txRate)
	if err != nil {
		return err
	}
	defer txs.Stop()
	replicatorLag := devnet.StartLagMeter(d.Sequencer.EL.WS, replicator.EL.WS)
	defer replicatorLag.Stop()
	gossipLag := devnet.StartLagMeter(d.Sequencer.EL.WS, gossip.EL.WS)
	defer gossipLag.Stop()

	fmt.Printf("devnet up: sequencer, op-batcher, replicator (source %s), gossip follower; Ctrl-C to stop\n", source)
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
		if err := d.Err(); err != nil {
			return err
		}
		fmt.Println(statusLine(ctx, d, replicator, replicatorLag, gossipLag, txs))
	}
}

// statusLine reports the sequencer's head, the replicator's heads and state, and both followers' lag.
func statusLine(ctx context.Context, d *devnet.Devnet, replicator *devnet.Node, replicatorLag, gossipLag *devnet.LagMeter, txs *devnet.TxGen) string {
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	seqHead := "?"
	if h, err := d.Sequencer.EL.Header(ctx, rpc.LatestBlockNumber); err == nil {
		seqHead = h.Number.String()
	}
	heads := "unsafe ? safe ? finalized ?"
	if s, err := replicator.CL.SyncStatus(ctx); err == nil {
		heads = fmt.Sprintf("unsafe %d safe %d finalized %d", s.UnsafeL2.Number, s.SafeL2.Number, s.FinalizedL2.Number)
	}
	state := "n/a"
	if s, err := replicator.CL.Replicator.Status(ctx); err == nil {
		state = string(s.State)
		if s.HaltReason != "" {
			state += " (" + string(s.HaltReason) + ")"
		}
	}
	return fmt.Sprintf("%s  sequencer #%s | replicator %s state %s lag %s | gossip lag %s | txs %d sent %d failed",
		time.Now().Format("15:04:05"), seqHead, heads, state, lag(replicatorLag), lag(gossipLag), txs.Sent(), txs.Failed())
}

// lag formats the latest and median lag of a meter in milliseconds.
func lag(m *devnet.LagMeter) string {
	last, ok := m.Last()
	if !ok {
		return "-"
	}
	p50, _ := m.Percentile(50)
	return fmt.Sprintf("%.1fms (p50 %.1fms)", ms(last), ms(p50))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
