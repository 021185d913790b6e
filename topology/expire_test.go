package topology

import (
	"math"
	"testing"
	"time"
)

func TestExpire(t *testing.T) {
	top := compileYAML(t, `app: shop
source: {topic: events}
features:
  - {name: views_1h, agg: count, window: 1h}
  - {name: views_day, agg: count, window: {kind: tumbling, size: 24h}}
`)
	st := top.NewEntityState()
	t0 := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC).UnixMilli()
	if err := top.Apply(st, &Event{Key: "u", TimeMs: t0, Fields: map[string]any{}}, math.MinInt64); err != nil {
		t.Fatal(err)
	}
	if top.Expire(st, t0+30*60_000) {
		t.Fatal("empty half an hour after its only event")
	}
	if v := top.Evaluate(0, st.Features[0], t0+30*60_000); v.Int != 1 {
		t.Fatalf("Expire changed a live value: %+v", v)
	}
	// A day later the 1h window is long gone, but the tumbling day bucket
	// is still the last closed one.
	if top.Expire(st, t0+25*3600_000) {
		t.Fatal("empty while the day bucket may still be read as the last closed one")
	}
	if !top.Expire(st, t0+72*3600_000) {
		t.Fatalf("not empty three days later: %+v", st.Features)
	}

	lifetime := compileYAML(t, `app: shop
source: {topic: events}
features:
  - {name: views_1h, agg: count, window: 1h}
  - {name: last_items, agg: last_k, field: item, k: 3}
`)
	st = lifetime.NewEntityState()
	if err := lifetime.Apply(st, &Event{Key: "u", TimeMs: t0, Fields: map[string]any{"item": "i1"}}, math.MinInt64); err != nil {
		t.Fatal(err)
	}
	if lifetime.Expire(st, t0+100*24*3600_000) {
		t.Fatal("an entity with a lifetime value expired")
	}
}
