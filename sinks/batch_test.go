package sinks_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/featurestream/featurestream/internal/testshop"
	"github.com/featurestream/featurestream/sinks"
)

// gateHook holds the first pipeline until released.
type gateHook struct {
	callHook
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (h *gateHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	rec := h.callHook.ProcessPipelineHook(next)
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.once.Do(func() {
			close(h.entered)
			<-h.release
		})
		return rec(ctx, cmds)
	}
}

// TestReadsShareAPipeline: reads that arrive while the pipelines are all in
// flight wait and then go together in one pipeline, each getting its own
// entities; a waiting read whose context ends returns at once.
func TestReadsShareAPipeline(t *testing.T) {
	top := testshop.Topology(t)
	s, client, _, _ := startStore(t, top)
	ctx := context.Background()
	var recs []sinks.Record
	for i := range 4 {
		id := fmt.Sprintf("u%d", i)
		recs = append(recs, sinks.Record{Entity: id, Version: uint64(10 + i), State: shopState(t, top, id, t0, 1+i)})
	}
	if err := s.Write(ctx, recs); err != nil {
		t.Fatal(err)
	}
	sinks.SetReadPipelines(s, 1)
	hook := &gateHook{entered: make(chan struct{}), release: make(chan struct{})}
	client.AddHook(hook)

	type result struct {
		e   []sinks.Entry
		err error
	}
	read := func(ctx context.Context, ids ...string) chan result {
		ch := make(chan result, 1)
		go func() {
			e, err := s.Read(ctx, ids, []int{0}, nil)
			ch <- result{e, err}
		}()
		return ch
	}
	first := read(ctx, "u0")
	<-hook.entered // the only pipeline slot is taken
	b, c := read(ctx, "u1", "u2"), read(ctx, "u3")
	cctx, cancel := context.WithCancel(ctx)
	d := read(cctx, "u0")
	waitFor(t, func() bool { return sinks.QueuedReads(s) == 3 })
	cancel()
	select {
	case r := <-d:
		if !errors.Is(r.err, context.Canceled) {
			t.Fatalf("cancelled waiting read: %v", r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("cancelled waiting read did not return")
	}
	close(hook.release)

	check := func(ch chan result, ids ...string) {
		t.Helper()
		r := <-ch
		if r.err != nil {
			t.Fatal(r.err)
		}
		for i, id := range ids {
			var want uint64
			fmt.Sscanf(id, "u%d", &want)
			if !r.e[i].Found || r.e[i].Version != 10+want {
				t.Errorf("%s: %+v", id, r.e[i])
			}
		}
	}
	check(first, "u0")
	check(b, "u1", "u2")
	check(c, "u3")
	per, alone := hook.pipelinesWith("get")
	// The cancelled read's command may still be sent: it was queued.
	if len(per) != 2 || per[0] != 1 || per[1] < 3 || alone != 0 {
		t.Errorf("get per pipeline %v, alone %d; want [1 3] or [1 4]", per, alone)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(time.Millisecond)
	}
}
