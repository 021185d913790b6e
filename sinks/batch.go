package sinks

import (
	"context"
	"sync"

	"github.com/redis/go-redis/v9"
)

// DefaultReadPipelines is how many read pipelines a Store keeps in flight
// before concurrent reads wait to share the next one.
const DefaultReadPipelines = 2

// readBatcher sends concurrent reads to Redis together. While fewer than
// max pipelines are in flight a read goes out at once, alone, on its
// caller's goroutine and context: an idle server adds no latency. Beyond
// that, reads queue, and each pipeline that finishes takes the whole queue
// along in the next one. Every read is still one round trip (per cluster
// node), but a busy server sends a few large pipelines instead of many
// small ones, which costs Redis and this process far fewer system calls:
// that is how serving reads more entities per second than callers looping
// on go-redis themselves.
type readBatcher struct {
	client redis.UniversalClient
	max    int

	mu struct {
		sync.Mutex
		queue    []*readOp
		inflight int
	}
}

type readOp struct {
	cmds []*redis.StringCmd
	done chan struct{}
}

// do sends cmds in one pipeline, possibly shared with other reads, and
// waits for their replies or for ctx. On a nil return every command holds
// its reply or its own error; on a ctx error the commands may still be sent
// later and must not be read.
func (b *readBatcher) do(ctx context.Context, cmds []*redis.StringCmd) error {
	b.mu.Lock()
	if b.mu.inflight < b.max {
		b.mu.inflight++
		b.mu.Unlock()
		b.exec(ctx, cmds, nil)
		b.next()
		return nil
	}
	op := &readOp{cmds: cmds, done: make(chan struct{})}
	b.mu.queue = append(b.mu.queue, op)
	b.mu.Unlock()
	select {
	case <-op.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// next hands the slot of a finished pipeline to the queued reads, if any.
func (b *readBatcher) next() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.mu.queue) == 0 {
		b.mu.inflight--
		return
	}
	batch := b.mu.queue
	b.mu.queue = nil
	go b.runQueued(batch)
}

// runQueued sends queued reads, then keeps the slot while more queue up.
// No single caller's context governs a shared pipeline: each caller waits
// on its own, and Redis's socket timeouts bound the pipeline.
func (b *readBatcher) runQueued(batch []*readOp) {
	b.exec(context.Background(), nil, batch)
	for _, op := range batch {
		close(op.done)
	}
	b.next()
}

// exec sends one pipeline of cmds and of every op's commands.
func (b *readBatcher) exec(ctx context.Context, cmds []*redis.StringCmd, batch []*readOp) {
	// Pipelined's error is the first failed command's; each is checked
	// by its reader.
	_, _ = b.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, c := range cmds {
			_ = p.Process(ctx, c)
		}
		for _, op := range batch {
			for _, c := range op.cmds {
				_ = p.Process(ctx, c)
			}
		}
		return nil
	})
}
