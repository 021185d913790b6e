package processor

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/featurestream/featurestream/sinks"
)

// gatedSink is the Redis store with a gate in front of its writes, so a
// test can hold a push under way.
type gatedSink struct {
	*sinks.Store
	mu   sync.Mutex
	gate chan struct{} // when set, writes wait for it to close
}

func (g *gatedSink) Write(ctx context.Context, recs []sinks.Record) error {
	g.mu.Lock()
	gate := g.gate
	g.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return g.Store.Write(ctx, recs)
}

func (g *gatedSink) hold() {
	g.mu.Lock()
	g.gate = make(chan struct{})
	g.mu.Unlock()
}

func (g *gatedSink) release() {
	g.mu.Lock()
	close(g.gate)
	g.gate = nil
	g.mu.Unlock()
}

// TestRevokedPartitionsPushed: a partition revoked while a push is under
// way leaves with every committed state in Redis, including those of the
// commit after that push began, before the next owner has restored it.
func TestRevokedPartitionsPushed(t *testing.T) {
	e := newRestoreEnv(t)
	sink := &gatedSink{Store: e.sink}
	a := e.startWith(sink, nil)
	e.produce(0, 3)
	e.produce(1, 3)
	e.waitItems(0, 3)
	e.waitItems(1, 3)

	// Commit 2 items; their push waits at the gate. Then commit a third,
	// whose push (the second under way) waits at the gate too.
	sink.hold()
	end0, end1 := e.produce(0, 2), e.produce(1, 2)
	waitFor(t, "the held push's commit", func() bool { c := e.committed(); return c[0] == end0 && c[1] == end1 })
	end0, end1 = e.produce(0, 1), e.produce(1, 1)
	waitFor(t, "the commit behind the held push", func() bool { c := e.committed(); return c[0] == end0 && c[1] == end1 })

	// A second processor joins; its restores wait, so it re-pushes
	// nothing. The gate opens once a's revocation has begun.
	held := make(chan int32, 2)
	release := make(chan struct{})
	e.start(func(ctx context.Context, part int32) error {
		held <- part
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	defer close(release)
	waitFor(t, "a's revocation", func() bool { return testutil.ToFloat64(a.m.rebalances.WithLabelValues("revoked")) > 0 })
	sink.release()
	moved := <-held
	for _, u := range e.users[moved] {
		if got, want := e.lastItems(u), e.want(u, 6); !slices.Equal(got, want) {
			t.Errorf("%s of revoked partition %d before its new owner restored: last_items %v, want %v", u, moved, got, want)
		}
	}
}
