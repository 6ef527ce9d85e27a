// Package group runs the calls that concurrent callers make while a batch is in flight as
// the next batch (group commit): jobs group their starts and ends into statements, the
// token quota its reservations and settles into Redis pipelines.
package group

import (
	"context"
	"fmt"
	"sync"
)

// Group gathers the calls that concurrent callers make while a batch is in flight into
// the next batch, run by one of the callers (group commit): an idle group runs a lone call
// at once, without waiting for company, and under load one round trip serves many calls
// instead of each paying its own. One batch at a time: more in flight cut no latency on
// the 2-core machine and cost more CPU per job (docs/performance.md, Jobs). It needs no
// goroutine of its own.
type Group[In, Out any] struct {
	// run answers a batch: out[i] for in[i]. An error fails every call of the batch.
	run func(ctx context.Context, in []In) ([]Out, error)
	// max bounds a batch (the statements' array parameters).
	max int

	mu      sync.Mutex
	leading bool                  // a batch is in flight
	queue   []*groupCall[In, Out] // calls waiting for a batch, oldest first
}

// New returns a Group whose batches run answers, at most max calls each.
func New[In, Out any](max int, run func(ctx context.Context, in []In) ([]Out, error)) *Group[In, Out] {
	return &Group[In, Out]{run: run, max: max}
}

type groupCall[In, Out any] struct {
	in   In
	out  Out
	err  error
	wake chan bool // true: answered; false: lead a batch
}

// Do adds in to a batch and returns its answer. The batch runs on ctx without its
// cancellation: it answers other callers too.
func (g *Group[In, Out]) Do(ctx context.Context, in In) (Out, error) {
	c := &groupCall[In, Out]{in: in, wake: make(chan bool, 1)}
	g.mu.Lock()
	if !g.leading {
		g.leading = true
		g.mu.Unlock()
	} else {
		g.queue = append(g.queue, c)
		g.mu.Unlock()
		if answered := <-c.wake; answered {
			return c.out, c.err
		}
	}
	// c leads a batch: itself and the calls that have waited longest.
	g.mu.Lock()
	n := min(len(g.queue), g.max-1)
	batch := append([]*groupCall[In, Out]{c}, g.queue[:n]...)
	g.queue = append(g.queue[:0:0], g.queue[n:]...)
	g.mu.Unlock()

	g.runBatch(context.WithoutCancel(ctx), batch)

	// The next batch starts before this one's callers are woken.
	g.mu.Lock()
	if len(g.queue) > 0 {
		next := g.queue[0]
		g.queue = g.queue[1:]
		next.wake <- false
	} else {
		g.leading = false
	}
	g.mu.Unlock()
	for _, o := range batch[1:] {
		o.wake <- true
	}
	return c.out, c.err
}

// runBatch answers every call of batch, a panic of run included (the callers waiting on
// the leader must never be left behind).
func (g *Group[In, Out]) runBatch(ctx context.Context, batch []*groupCall[In, Out]) {
	var outs []Out
	var err error
	func() {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("batch panicked: %v", r)
			}
		}()
		in := make([]In, len(batch))
		for i, c := range batch {
			in[i] = c.in
		}
		outs, err = g.run(ctx, in)
		if err == nil && len(outs) != len(in) {
			err = fmt.Errorf("batch of %d answered %d", len(in), len(outs))
		}
	}()
	for i, c := range batch {
		if err != nil {
			c.err = err
		} else {
			c.out = outs[i]
		}
	}
}
