package processor

import (
	"context"
	"errors"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/featurestream/featurestream/sinks"
	"github.com/featurestream/featurestream/state"
)

// gateSink holds each write until the test answers it.
type gateSink struct{ writes chan gateWrite }

type gateWrite struct {
	recs   []sinks.Record
	result chan error
}

func (g *gateSink) Write(_ context.Context, recs []sinks.Record) error {
	w := gateWrite{recs: slices.Clone(recs), result: make(chan error)}
	g.writes <- w
	return <-w.result
}

// versions is what a write carried: entity -> version.
func versions(recs []sinks.Record) map[string]uint64 {
	m := make(map[string]uint64, len(recs))
	for _, r := range recs {
		m[r.Entity] = r.Version
	}
	return m
}

// TestOverlappingPushes: a commit's states go to the online store while the
// last commit's are still being written, each write with only the states no
// other has taken, at most maxPushes at once; sinkNext advances only past
// states that are in the store, in the order the writes started, and a
// failed write's states are written again once the writes under way end.
func TestOverlappingPushes(t *testing.T) {
	p := offlineProcessor(t, time.Now())
	gate := &gateSink{writes: make(chan gateWrite, 4)}
	p.sink = gate
	p.cfg.CatchUpPushInterval = -1
	// A failed write is retried a commit interval later; the test ends
	// that wait itself, so it must not end while the test waits.
	p.cfg.CommitInterval = time.Minute
	tk := p.newTask(0, state.Meta{})
	p.mu.tasks[0] = tk
	ctx := context.Background()
	// commit puts states of the given entities at the next changelog
	// offsets, as flushLocked does, and pushes.
	commit := func(entities ...string) {
		for _, e := range entities {
			tk.pendingSink[e] = sinks.Record{Entity: e, Version: uint64(tk.changelogNext), State: p.top.NewEntityState()}
			tk.changelogNext++
		}
		p.pushLocked(ctx, p.allTasksLocked())
	}
	started := func(what string, want map[string]uint64) gateWrite {
		t.Helper()
		select {
		case w := <-gate.writes:
			if got := versions(w.recs); !maps.Equal(got, want) {
				t.Fatalf("%s: wrote %v, want %v", what, got, want)
			}
			return w
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no write started", what)
			return gateWrite{}
		}
	}
	noneStarted := func(what string) {
		t.Helper()
		select {
		case w := <-gate.writes:
			t.Fatalf("%s: a write of %v started", what, versions(w.recs))
		case <-time.After(50 * time.Millisecond):
		}
	}
	// end answers w and waits for its write to wake the loop, as it would
	// the loop's poll; then the loop's pump collects.
	end := func(w gateWrite, err error) {
		t.Helper()
		w.result <- err
		select {
		case <-p.wake:
		case <-time.After(5 * time.Second):
			t.Fatal("a finished write did not wake the loop")
		}
		p.pumpPushLocked(ctx)
	}
	check := func(what string, sinkNext int64, pending ...string) {
		t.Helper()
		if tk.sinkNext != sinkNext {
			t.Errorf("%s: sinkNext %d, want %d", what, tk.sinkNext, sinkNext)
		}
		if got := slices.Sorted(maps.Keys(tk.pendingSink)); !slices.Equal(got, pending) {
			t.Errorf("%s: pending %v, want %v", what, got, pending)
		}
	}

	commit("a", "b") // a@0 b@1
	w1 := started("first commit", map[string]uint64{"a": 0, "b": 1})
	commit("a", "c") // a@2 c@3, while the first write runs
	w2 := started("second commit", map[string]uint64{"a": 2, "c": 3})
	commit("d") // d@4: two writes run already
	noneStarted("third commit")

	end(w1, errors.New("redis down"))
	check("first write failed, second running", 0, "a", "b", "c", "d")
	commit("e") // e@5
	noneStarted("after a failure, while a write started before it runs")

	end(w2, nil)
	// The second write's states are in; the first's b is not, so sinkNext
	// stays, and b waits for the retry with d and e.
	check("second write done", 0, "b", "d", "e")
	noneStarted("before the retry interval")
	p.pushLocked(ctx, p.allTasksLocked()) // as a commit does
	noneStarted("a commit before the retry interval")

	p.pushRetryAt = time.Time{}
	p.pumpPushLocked(ctx)
	w3 := started("retry", map[string]uint64{"b": 1, "d": 4, "e": 5})
	commit("f") // f@6, beside the retry
	w4 := started("commit during the retry", map[string]uint64{"f": 6})
	end(w4, nil)
	check("the newer write done first", 0, "b", "d", "e", "f")
	end(w3, nil)
	check("all written", 7)
}
