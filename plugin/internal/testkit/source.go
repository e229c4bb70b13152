package testkit

import (
	"context"
	"sync"

	"github.com/ethereum/go-ethereum"

	"github.com/ethereum-optimism/optimism/op-service/eth"
)

// Source is a fake source (a source.Source) serving a chain of blocks up to HeadNum; Err makes every call fail.
type Source struct {
	Mu      sync.Mutex
	Blocks  []Block // Blocks[i] is block i+1
	HeadNum uint64
	Err     error
	Calls   int
	Heads   chan struct{}
	// Slow makes every request wait until its context ends, as a source answering just under the timeout would.
	Slow bool
	// OnPayload, if set, is called as block n is served.
	OnPayload func(n uint64)
}

// wait is what a slow source does before answering.
func (s *Source) wait(ctx context.Context) error {
	s.Mu.Lock()
	slow := s.Slow
	s.Calls++
	s.Mu.Unlock()
	if !slow {
		return nil
	}
	<-ctx.Done()
	return ctx.Err()
}

// NewSource serves blocks, its head the last.
func NewSource(blocks []Block) *Source {
	return &Source{Blocks: blocks, HeadNum: uint64(len(blocks)), Heads: make(chan struct{})}
}

// Set has s serve blocks up to head, every call failing with err if it is not nil.
func (s *Source) Set(blocks []Block, head uint64, err error) {
	s.Mu.Lock()
	defer s.Mu.Unlock()
	s.Blocks, s.HeadNum, s.Err = blocks, head, err
}

func (s *Source) Name() string { return "fake" }

func (s *Source) Head(ctx context.Context) (eth.BlockID, error) {
	if err := s.wait(ctx); err != nil {
		return eth.BlockID{}, err
	}
	s.Mu.Lock()
	defer s.Mu.Unlock()
	if s.Err != nil {
		return eth.BlockID{}, s.Err
	}
	if s.HeadNum == 0 {
		return Genesis, nil
	}
	return s.Blocks[s.HeadNum-1].Ref.ID(), nil
}

func (s *Source) Payload(ctx context.Context, n uint64) (*eth.ExecutionPayloadEnvelope, error) {
	if err := s.wait(ctx); err != nil {
		return nil, err
	}
	s.Mu.Lock()
	defer s.Mu.Unlock()
	if s.Err != nil {
		return nil, s.Err
	}
	if n == 0 || n > s.HeadNum {
		return nil, ethereum.NotFound
	}
	if s.OnPayload != nil {
		s.OnPayload(n)
	}
	return s.Blocks[n-1].Env, nil
}

func (s *Source) NewHeads() <-chan struct{}   { return s.Heads }
func (s *Source) Start(context.Context) error { return nil }
func (s *Source) Stop(context.Context) error  { return nil }
