package processor

import (
	"bytes"
	"log/slog"
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/featurestream/featurestream/sinks"
	"github.com/featurestream/featurestream/state"
	"github.com/featurestream/featurestream/topology"
)

// TestStateCache: a state is cached only once committed and pushed, an
// update takes it out (so a push never reads a state being changed), a
// newer update or an expiry keeps the old one out, and the cache stays
// within its bound in bytes.
func TestStateCache(t *testing.T) {
	p := offlineProcessor(t, time.Now())
	top := p.top
	tk := p.newTask(0, state.Meta{MaxEventMs: math.MinInt64})
	full := func() *topology.EntityState {
		st := top.NewEntityState()
		st.Features[0] = []topology.Tile{{Start: 1, Count: 1}}
		return st
	}
	size := full().SizeBytes()
	p.cfg.StateCacheBytes = 2 * size // one task: all of it

	a := full()
	tk.keep("a", a)
	if got, dirty, err := tk.state("a"); err != nil || got != a || dirty {
		t.Fatalf("state(a) = %p, %v, %v; want the cached %p, not dirty", got, dirty, err, a)
	}
	if _, ok := tk.cache["a"]; ok || tk.cacheBytes != 0 {
		t.Fatalf("a state taken for an update is still cached (%d bytes counted)", tk.cacheBytes)
	}
	if hits := testutil.ToFloat64(p.m.cacheHits); hits != 1 {
		t.Errorf("cache hits = %v, want 1", hits)
	}

	// A newer update of b is under way: the pushed older state stays out.
	tk.dirty["b"] = full()
	tk.keep("b", full())
	if _, ok := tk.cache["b"]; ok {
		t.Fatal("an older state of b was cached while b is being updated")
	}
	tk.expired["c"] = full()
	tk.keep("c", full())
	if _, ok := tk.cache["c"]; ok {
		t.Fatal("an expiring entity was cached")
	}
	tk.keep("d", top.NewEntityState())
	if _, ok := tk.cache["d"]; ok {
		t.Fatal("an empty state was cached; Pebble holds none for it")
	}

	for _, e := range []string{"e", "f", "g"} {
		tk.keep(e, full())
	}
	if len(tk.cache) != 2 || tk.cacheBytes != 2*size {
		t.Fatalf("cache holds %d states of %d bytes, want its bound: 2 of %d", len(tk.cache), tk.cacheBytes, 2*size)
	}
	big := full()
	big.Features[0] = make([]topology.Tile, 100)
	tk.keep("big", big)
	if _, ok := tk.cache["big"]; ok {
		t.Fatal("a state larger than the whole cache was cached")
	}
}

// TestStateOfPendingPush: an entity whose committed state waits for its
// push is updated without reading Pebble: from a copy of that state where
// the push reads the state (a restore's records), in place where the push
// writes the commit's encoding instead; an empty one (maybe an expiry,
// which Pebble no longer holds) is read from Pebble.
func TestStateOfPendingPush(t *testing.T) {
	p := offlineProcessor(t, time.Now())
	store, err := state.Open(state.Options{Dir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)}, p.top)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	p.store = store
	tk := p.newTask(0, state.Meta{MaxEventMs: math.MinInt64})
	pushed := p.top.NewEntityState()
	pushed.LastEventMs = 7
	pushed.Features[3] = []topology.Tile{{Start: 1, Count: 2, Items: []topology.Item{{TimeMs: 5, Value: "i1"}}}}
	tk.pendingSink["a"] = sinks.Record{Entity: "a", State: pushed}
	got, dirty, err := tk.state("a")
	if err != nil || dirty {
		t.Fatalf("state(a): dirty %v, err %v", dirty, err)
	}
	if got == pushed || !bytes.Equal(p.top.AppendState(nil, got), p.top.AppendState(nil, pushed)) {
		t.Fatalf("state(a) = %p %+v, want a copy of %p %+v", got, got, pushed, pushed)
	}
	got.Features[3][0].Items[0].Value = "changed"
	if pushed.Features[3][0].Items[0].Value != "i1" {
		t.Fatal("changing the copy changed the state being pushed")
	}
	if misses := testutil.ToFloat64(p.m.cacheMisses); misses != 0 {
		t.Errorf("cache misses = %v, want 0: Pebble was read", misses)
	}

	// A commit's record, whose push writes its encoding: the state itself.
	tk.pendingSink["c"] = sinks.Record{Entity: "c", State: pushed, Encoded: p.top.AppendState(nil, pushed)}
	if got, _, err := tk.state("c"); err != nil || got != pushed {
		t.Fatalf("state(c) = %p, %v; want the pending %p itself", got, err, pushed)
	}

	tk.pendingSink["b"] = sinks.Record{Entity: "b", State: p.top.NewEntityState()}
	if _, _, err := tk.state("b"); err != nil {
		t.Fatal(err)
	}
	if misses := testutil.ToFloat64(p.m.cacheMisses); misses != 1 {
		t.Errorf("cache misses = %v, want 1: an empty pending state is read from Pebble", misses)
	}
}
