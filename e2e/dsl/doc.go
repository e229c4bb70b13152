// Package dsl is the language the end-to-end tests are written in, after op-devstack's dsl package: typed wrappers
// of a devnet's parts whose methods are the checks. Each wrapper holds the test (t) and fails it when a check
// fails, so a test reads as what it asserts:
//
//	sys := dsl.Start(t, devnet.Config{})
//	rep := sys.AddReplicator("replicator", devnet.WithHaltPolicy("manual"))
//	sys.StartTxLoad(sys.Sequencer.EL)
//	rep.WaitReplicating(sys.Sequencer.EL, 10)
//	rep.Halt("maintenance")
//	rep.WaitHalted(api.ReasonOperator)
//
// The parts:
//
//	system.go      System: a devnet (dsl.Start) — add nodes, proxies and load, wait for conditions, sample a window,
//	               hold a fault for a while; For rebinds it to a subtest
//	el.go          EL: what users of a node's op-geth see — blocks by number or label, the same blocks as another
//	               node's, a block absent, a label catching up, a label reaching a height
//	node.go        Node: any L2 node (op-node + op-geth) — sync status, nothing unsafe beyond what derivation
//	               produced, log lines, op-geth's latest sampled across a halt
//	replicator.go  Replicator: a Node running the replicator — its API (plugin/api's typed Client: Status,
//	               BlockStatus, EquivocationEvidence, Halt, Resume), WaitReplicating, WaitReachesHead,
//	               WaitRunning, WaitHalted, halt logs, and its metrics
//	metrics.go     the replicator's metric names; Node.Metrics parses op-node's metrics with the Prometheus text
//	               parser (devnet.Metrics)
//	relay.go       relay flags and sources, and a client of a relay (plugin/api's RelayClient)
//	engine.go      Engine: a bare op-geth of the chain with no op-node (the benchmarks' engine ceiling)
//
// Every wrapper gives access to what it wraps (System.Net, Node embeds *devnet.Node, EL embeds *devnet.EL), for
// the calls that take a context inside a wait condition, and for what the DSL does not say yet. Conditions that
// poll take the context they are given and return an error rather than fail, as devnet.Devnet.WaitFor expects.
//
// Timeouts are the ones the scenarios were written with: ReplicationTimeout to start replicating or to catch up
// again, HaltTimeout to notice a disagreement, SafeGrace for another node's safe head to catch up.
package dsl
