package plugin

import (
	"context"
	"errors"
	"sync"
)

// request is an operator's halt or resume, executed by the loop goroutine.
type request struct {
	halt   bool
	detail string
	done   chan error
}

// mailbox hands operators' requests (replicator_halt, replicator_resume) to the loop goroutine, and cuts the round in
// progress short for them: a request cancels the round's source requests, so that it is served within one engine
// call. Evidence interrupts a round through it too.
type mailbox struct {
	requests chan request

	// mu guards the cancel function of the round in progress, and how many operator requests wait for the loop.
	mu      sync.Mutex
	cancel  context.CancelFunc
	waiting int
}

func newMailbox() *mailbox { return &mailbox{requests: make(chan request)} }

// send hands req to the loop goroutine and waits for it to be served; stopped is closed once the loop has returned.
func (m *mailbox) send(ctx context.Context, req request, stopped <-chan struct{}) error {
	req.done = make(chan error, 1)
	m.interrupt(1) // the round in progress, maybe waiting on a slow source, gives way
	select {
	case m.requests <- req: // the loop counts it off (Replicator.serve)
	case <-ctx.Done():
		m.interrupt(-1)
		return ctx.Err()
	case <-stopped:
		m.interrupt(-1)
		return errors.New("replicator stopped")
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// startRound returns the context of a round, already cancelled if an operator request is waiting, and the
// function that ends the round.
func (m *mailbox) startRound(ctx context.Context) (context.Context, func()) {
	roundCtx, cancel := context.WithCancel(ctx)
	m.mu.Lock()
	m.cancel = cancel
	if m.waiting > 0 {
		cancel()
	}
	m.mu.Unlock()
	return roundCtx, func() {
		m.mu.Lock()
		m.cancel = nil
		m.mu.Unlock()
		cancel()
	}
}

// interrupt cancels the source requests of the round in progress; delta > 0 also counts an operator request
// waiting for the loop (delta < 0 when it no longer waits), so that rounds starting meanwhile are cancelled too.
func (m *mailbox) interrupt(delta int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.waiting += delta
	if delta >= 0 && m.cancel != nil {
		m.cancel()
	}
}
