package processor

import (
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

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
