package topology

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/expr-lang/expr/vm"
)

func mustTopology(tb testing.TB, spec string) *Topology {
	tb.Helper()
	s, err := ParseSpec("test.yaml", []byte(spec))
	if err != nil {
		tb.Fatalf("ParseSpec: %v", err)
	}
	top, err := Compile(s)
	if err != nil {
		tb.Fatalf("Compile: %v", err)
	}
	return top
}

func mustShop(tb testing.TB) *Topology {
	tb.Helper()
	s, err := LoadSpec(shopSpecPath)
	if err != nil {
		tb.Fatal(err)
	}
	top, err := Compile(s)
	if err != nil {
		tb.Fatal(err)
	}
	return top
}

func mustApply(tb testing.TB, top *Topology, st *EntityState, ev *Event, watermarkMs int64) {
	tb.Helper()
	if err := top.Apply(st, ev, watermarkMs); err != nil {
		tb.Fatalf("Apply(%+v): %v", ev, err)
	}
}

// TestEvaluateWindowEdges pins the covered interval of a sliding window: the
// tile holding as_of counts whole, the tile straddling as_of - window does
// not.
func TestEvaluateWindowEdges(t *testing.T) {
	top := mustTopology(t, `app: shop
source:
  topic: events
features:
  - name: n_1h
    agg: count
    window: 1h
  - name: n_90m_7m
    agg: count
    window: 90m
    tile: 7m
`)
	const m = msMinute
	base := t0 // a whole hour, so a 5m tile boundary
	st := top.NewEntityState()
	times := []int64{
		base - 61*m,     // tile [-65m,-60m): outside for as_of base
		base - 60*m,     // tile [-60m,-55m): the first tile in
		base - 60*m + 1, // same tile
		base - 1,        // tile [-5m,0)
		base,            // tile [0,5m): holds as_of base
		base + 4*m,      // same tile, after as_of: counts (the tile counts whole)
		base + 5*m,      // next tile: out
	}
	for _, ts := range times {
		mustApply(t, top, st, &Event{TimeMs: ts}, 0)
	}
	tests := []struct {
		fi          int
		asOf        int64
		want        int64
		start, ends int64
	}{
		{0, base, 5, base - 60*m, base},
		{0, base - 1, 3, base - 60*m, base - 1},     // (base-1)-1h rounds up to base-60m
		{0, base + 1, 3, base - 55*m, base + 1},     // the tile at -60m now straddles the edge
		{0, base + 5*m, 4, base - 55*m, base + 5*m}, // picks up the +5m tile
		{0, base - 2*msHour, 0, base - 3*msHour, base - 2*msHour},
		{0, base + 3*msHour, 0, base + 2*msHour, base + 3*msHour},
		// 7m tiles are aligned to the epoch, not to the hour.
		{1, base, 7, ceilDivModel(base-90*m, 7*m) * 7 * m, base},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s@%+dms", top.Features[tt.fi].Name, tt.asOf-base), func(t *testing.T) {
			v := top.Evaluate(tt.fi, st.Features[tt.fi], tt.asOf)
			if v.Int != tt.want || !v.Present || v.Type != TypeInt64 {
				t.Errorf("count = %+v, want %d", v, tt.want)
			}
			if v.WindowStartMs != tt.start || v.WindowEndMs != tt.ends {
				t.Errorf("window = [%d, %d], want [%d, %d] (relative: [%+d, %+d], want [%+d, %+d])",
					v.WindowStartMs, v.WindowEndMs, tt.start, tt.ends,
					v.WindowStartMs-base, v.WindowEndMs-base, tt.start-base, tt.ends-base)
			}
			start, end := top.Features[tt.fi].CoveredWindow(tt.asOf)
			if start != v.WindowStartMs || end != v.WindowEndMs {
				t.Errorf("CoveredWindow = [%d, %d], Evaluate says [%d, %d]", start, end, v.WindowStartMs, v.WindowEndMs)
			}
		})
	}
}

// TestEvaluateEmpty pins what each aggregation reads with no events.
func TestEvaluateEmpty(t *testing.T) {
	var b strings.Builder
	b.WriteString("app: shop\nsource:\n  topic: events\nfeatures:\n")
	for _, agg := range allAggs {
		for _, window := range []string{"", "1h"} {
			fmt.Fprintf(&b, "  - name: %s_%s\n    agg: %s\n", agg, map[string]string{"": "life", "1h": "1h"}[window], agg)
			if agg != "count" {
				b.WriteString("    field: x\n")
			}
			b.WriteString(aggExtra(agg))
			if window != "" {
				b.WriteString("    window: " + window + "\n")
			}
		}
	}
	top := mustTopology(t, b.String())
	want := map[string]Value{
		"count":   {Type: TypeInt64, Present: true},
		"sum":     {Type: TypeDouble, Present: true},
		"min":     {Type: TypeDouble},
		"max":     {Type: TypeDouble},
		"avg":     {Type: TypeDouble},
		"first":   {Type: TypeString},
		"last":    {Type: TypeString},
		"first_k": {Type: TypeStringList, Present: true, List: []string{}},
		"last_k":  {Type: TypeStringList, Present: true, List: []string{}},
		// Nothing to spread, order or pick a quantile of.
		"variance":        {Type: TypeDouble},
		"stddev":          {Type: TypeDouble},
		"top_k":           {Type: TypeItemCounts, Present: true, Counts: []ItemCount{}},
		"count_distinct":  {Type: TypeInt64, Present: true},
		"approx_distinct": {Type: TypeInt64, Present: true},
		"approx_quantile": {Type: TypeDoubleList},
	}
	st := top.NewEntityState()
	// An event without x leaves every aggregation but count empty.
	mustApply(t, top, st, &Event{TimeMs: t0, Fields: map[string]any{"y": 1}}, 0)
	for fi, f := range top.Features {
		t.Run(f.Name, func(t *testing.T) {
			w := want[f.Agg]
			if !f.Lifetime() {
				w.WindowStartMs, w.WindowEndMs = t0-msHour, t0
			}
			if got := top.Evaluate(fi, nil, t0); !valuesIdentical(got, w) {
				t.Errorf("Evaluate(no tiles) = %+v, want %+v", got, w)
			}
			if f.Agg == "count" {
				w.Int = 1
			}
			if got := top.Evaluate(fi, st.Features[fi], t0); !valuesIdentical(got, w) {
				t.Errorf("Evaluate(after an event without x) = %+v, want %+v", got, w)
			}
		})
	}
}

// TestApplyItemOrder pins the tie rules of first/last: among equal event
// times, first keeps the earlier arrival first and last the later one.
func TestApplyItemOrder(t *testing.T) {
	top := mustTopology(t, `app: shop
source:
  topic: events
features:
  - name: first
    agg: first
    field: v
  - name: first_3
    agg: first_k
    field: v
    k: 3
  - name: last
    agg: last
    field: v
  - name: last_3
    agg: last_k
    field: v
    k: 3
  - name: last_3_1h
    agg: last_k
    field: v
    k: 3
    window: 1h
`)
	st := top.NewEntityState()
	for _, ev := range []struct {
		ts int64
		v  string
	}{{t0 + 2, "a"}, {t0 + 1, "b"}, {t0 + 2, "c"}, {t0 + 1, "d"}, {t0 + 3, "e"}, {t0 + 3, "f"}, {t0 - 10*msMinute, "g"}} {
		mustApply(t, top, st, &Event{TimeMs: ev.ts, Fields: map[string]any{"v": ev.v}}, 0)
	}
	for fi, want := range []Value{
		{Type: TypeString, Present: true, Str: "g"},
		{Type: TypeStringList, Present: true, List: []string{"g", "b", "d"}},
		{Type: TypeString, Present: true, Str: "f"},
		{Type: TypeStringList, Present: true, List: []string{"f", "e", "c"}},
		{Type: TypeStringList, Present: true, List: []string{"f", "e", "c"}, WindowStartMs: t0 + 3 - msHour + 5*msMinute - 3, WindowEndMs: t0 + 3},
	} {
		if got := top.Evaluate(fi, st.Features[fi], t0+3); !valuesIdentical(got, want) {
			t.Errorf("%s = %+v, want %+v", top.Features[fi].Name, got, want)
		}
	}
	// The lifetime features keep at most k items.
	for fi, f := range top.Features {
		for _, tl := range st.Features[fi] {
			if len(tl.Items) > f.k {
				t.Errorf("%s keeps %d items, k is %d", f.Name, len(tl.Items), f.k)
			}
		}
	}
}

func TestApplyBadEventLeavesStateUnchanged(t *testing.T) {
	top := mustTopology(t, `app: shop
source:
  topic: events
features:
  - name: n
    agg: count
    window: 1h
  - name: items
    agg: last_k
    field: item.id
    k: 5
  - name: spend
    agg: sum
    field: price
    window: 1h
  - name: cheapest
    agg: min
    field: price
`)
	tests := []struct {
		name    string
		fields  map[string]any
		feature string // named in the error
	}{
		{"price is a string", map[string]any{"price": "12.50", "item": map[string]any{"id": "i1"}}, "spend"},
		{"price is a bool", map[string]any{"price": true}, "spend"},
		{"price is NaN", map[string]any{"price": math.NaN()}, "spend"},
		{"price is infinite", map[string]any{"price": math.Inf(-1)}, "spend"},
		{"price is a bad json.Number", map[string]any{"price": json.Number("1e400")}, "spend"},
		{"price is a record", map[string]any{"price": map[string]any{"amount": 1}}, "spend"},
		{"item id is a list", map[string]any{"price": 3.0, "item": map[string]any{"id": []any{"i1"}}}, "items"},
		{"item id too long to keep", map[string]any{"price": 3.0, "item": map[string]any{"id": strings.Repeat("x", MaxItemBytes+1)}}, "items"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := top.NewEntityState()
			mustApply(t, top, st, &Event{TimeMs: t0, Fields: map[string]any{"price": 5.0, "item": map[string]any{"id": "i0"}}}, 0)
			before := top.AppendState(nil, st)
			err := top.Apply(st, &Event{TimeMs: t0 + 2*msHour, Fields: tt.fields}, t0+2*msHour)
			if !errors.Is(err, ErrBadEvent) {
				t.Fatalf("Apply = %v, want ErrBadEvent", err)
			}
			if !strings.Contains(err.Error(), "feature "+tt.feature+":") {
				t.Errorf("error %q does not name feature %s", err, tt.feature)
			}
			// Not applied, not even pruned by the newer watermark.
			if after := top.AppendState(nil, st); string(after) != string(before) {
				t.Errorf("state changed:\nbefore %x\nafter  %x", before, after)
			}
		})
	}
}

func TestApplyFieldConversions(t *testing.T) {
	top := mustTopology(t, `app: shop
source:
  topic: events
features:
  - name: total
    agg: sum
    field: x
  - name: last
    agg: last
    field: x
`)
	tests := []struct {
		x   any
		num float64
		str string
	}{
		{1.25, 1.25, "1.25"},
		{float32(0.5), 0.5, "0.5"},
		{7, 7, "7"},
		{int32(-3), -3, "-3"},
		{int64(1) << 40, 1 << 40, "1099511627776"},
		{json.Number("12.50"), 12.5, "12.50"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%T(%v)", tt.x, tt.x), func(t *testing.T) {
			st := top.NewEntityState()
			mustApply(t, top, st, &Event{TimeMs: t0, Fields: map[string]any{"x": tt.x}}, 0)
			if v := top.Evaluate(0, st.Features[0], t0); v.Float != tt.num {
				t.Errorf("sum = %v, want %v", v.Float, tt.num)
			}
			if v := top.Evaluate(1, st.Features[1], t0); v.Str != tt.str {
				t.Errorf("last = %q, want %q", v.Str, tt.str)
			}
		})
	}
	// A missing or null field contributes nothing, and is no error.
	st := top.NewEntityState()
	mustApply(t, top, st, &Event{TimeMs: t0, Fields: map[string]any{"x": nil}}, 0)
	mustApply(t, top, st, &Event{TimeMs: t0}, 0)
	if v := top.Evaluate(1, st.Features[1], t0); v.Present {
		t.Errorf("last of null and missing = %+v, want not present", v)
	}
	if st.LastEventMs != t0 {
		t.Errorf("LastEventMs = %d, want %d: events without the field still happened", st.LastEventMs, t0)
	}
}

func TestApplyItemBytes(t *testing.T) {
	top := mustTopology(t, specWith("name: last", "agg: last", "field: v"))
	st := top.NewEntityState()
	long := strings.Repeat("x", MaxItemBytes)
	mustApply(t, top, st, &Event{TimeMs: t0, Fields: map[string]any{"v": long}}, 0)
	if v := top.Evaluate(0, st.Features[0], t0); v.Str != long {
		t.Errorf("last = %d bytes, want the %d-byte value", len(v.Str), MaxItemBytes)
	}
	err := top.Apply(st, &Event{TimeMs: t0 + 1, Fields: map[string]any{"v": long + "x"}}, 0)
	if !errors.Is(err, ErrBadEvent) {
		t.Errorf("Apply of a %d-byte value = %v, want ErrBadEvent", MaxItemBytes+1, err)
	}
}

// TestWhereFilter pins how a where expression reads event fields: as fields
// even when named like an expr builtin (the shop spec filters on "type"), and
// a missing field makes a comparison false as NULL does in SQL rather than
// rejecting the event for every feature. A value of the wrong type is still
// a bad event.
func TestWhereFilter(t *testing.T) {
	tests := []struct {
		where  string
		fields map[string]any
		want   string // "match", "skip" or "bad"
	}{
		{`type == "view"`, map[string]any{"type": "view"}, "match"},
		{`type == "view"`, map[string]any{"type": "purchase"}, "skip"},
		{`type == "view"`, map[string]any{}, "skip"},
		{`type in ["view", "purchase"]`, map[string]any{"type": "purchase"}, "match"},
		{`count >= 2`, map[string]any{"count": 3}, "match"},
		{`date != nil`, map[string]any{"date": "2025-11-26"}, "match"},
		{`len(tags) > 1`, map[string]any{"tags": []any{"a", "b"}}, "match"},
		{`upper(type) == "VIEW"`, map[string]any{"type": "view"}, "match"},
		{`kind == "view"`, map[string]any{"kind": "view"}, "match"},
		{`price > 10`, map[string]any{"price": 12.5}, "match"},
		{`price > 10`, map[string]any{"price": 10}, "skip"},
		{`price > 10`, map[string]any{"price": nil}, "skip"},
		{`price > 10`, map[string]any{}, "skip"},
		{`price > 10`, map[string]any{"price": "12.5"}, "bad"},
		{`item.price >= 10`, map[string]any{"item": map[string]any{"price": 10}}, "match"},
		{`item.price >= 10`, map[string]any{"item": map[string]any{}}, "skip"},
		{`kind == "purchase" && price > 10`, map[string]any{"kind": "view"}, "skip"},
		{`kind == "purchase" && price > 10`, map[string]any{"kind": "purchase"}, "skip"},
		{`(price ?? 0) > 10`, map[string]any{}, "skip"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%v", tt.where, tt.fields), func(t *testing.T) {
			spec := "app: shop\nsource:\n  topic: events\nfeatures:\n" +
				"  - name: all\n    agg: count\n" +
				"  - name: matching\n    agg: count\n    where: '" + tt.where + "'\n"
			s, err := ParseSpec("spec.yaml", []byte(spec))
			if err != nil {
				t.Fatal(err)
			}
			top, err := Compile(s)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			st := top.NewEntityState()
			err = top.Apply(st, &Event{TimeMs: t0, Fields: tt.fields}, 0)
			got := "bad"
			if err == nil {
				got = map[int64]string{0: "skip", 1: "match"}[top.Evaluate(1, st.Features[1], t0).Int]
			} else if !errors.Is(err, ErrBadEvent) {
				t.Fatalf("Apply error %v does not wrap ErrBadEvent", err)
			}
			if got != tt.want {
				t.Errorf("event is %s (Apply: %v), want %s", got, err, tt.want)
			}
		})
	}
}

// TestApplyMinWatermark: math.MinInt64 is the natural watermark of a
// partition that has seen nothing yet (max event time of none); it must
// keep every tile, not wrap around and drop them all.
func TestApplyMinWatermark(t *testing.T) {
	top := mustTopology(t, pruneSpec)
	st := top.NewEntityState()
	for _, wm := range []int64{math.MinInt64, math.MinInt64 + 1, -1 << 62} {
		mustApply(t, top, st, &Event{TimeMs: t0, Fields: map[string]any{"kind": "view", "item_id": "i1"}}, wm)
	}
	fi, _ := top.FeatureIndex("views_1h")
	if v := top.Evaluate(fi, st.Features[fi], t0); v.Int != 3 {
		t.Errorf("views_1h = %d after 3 views, want 3 (tiles %+v)", v.Int, st.Features[fi])
	}
}

// pruneSpec is the shop spec with the event type in field "kind" (see
// TestWhereFilter for "type"), and a window whose tiles do not divide it.
const pruneSpec = `app: shop
source:
  topic: events
features:
  - name: views_1h
    where: kind == "view"
    agg: count
    window: 1h
  - name: purchases_24h
    where: kind == "purchase"
    agg: count
    window: 24h
  - name: spend_24h
    where: kind == "purchase"
    agg: sum
    field: price
    window: 24h
  - name: cheapest_90m
    agg: min
    field: price
    window: 90m
    tile: 7m
  - name: first_items_1h
    agg: first_k
    field: item_id
    k: 3
    window: 1h
  - name: last_items
    agg: last_k
    field: item_id
    k: 10
`

// TestPruneKeepsWhatReadsNeed: after pruning at a watermark, reads at or
// after it see what they saw before.
func TestPruneKeepsWhatReadsNeed(t *testing.T) {
	top := mustTopology(t, pruneSpec)
	unpruned, pruned := top.NewEntityState(), top.NewEntityState()
	rng := rand.New(rand.NewPCG(1, 2))
	var maxSeen int64
	for i := range 2000 {
		// Mostly in order, some up to 20 minutes late.
		ts := t0 + int64(i)*90_000 - rng.Int64N(20*msMinute)
		maxSeen = max(maxSeen, ts)
		ev := shopEvent(rng, ts, "kind")
		mustApply(t, top, unpruned, ev, 0)
		mustApply(t, top, pruned, ev, maxSeen-5*msMinute)
	}
	wm := maxSeen - 5*msMinute
	for fi, f := range top.Features {
		if !f.Lifetime() && len(pruned.Features[fi]) >= len(unpruned.Features[fi]) {
			t.Errorf("%s: %d tiles pruned, %d unpruned: nothing was pruned", f.Name, len(pruned.Features[fi]), len(unpruned.Features[fi]))
		}
		for _, asOf := range []int64{wm, wm + 1, maxSeen, wm + 3*msHour, wm + 25*msHour} {
			got, want := top.Evaluate(fi, pruned.Features[fi], asOf), top.Evaluate(fi, unpruned.Features[fi], asOf)
			if !valuesIdentical(got, want) {
				t.Errorf("%s at watermark%+dms: pruned %+v, unpruned %+v", f.Name, asOf-wm, got, want)
			}
		}
	}
}

var shopTypes = []string{"view", "view", "view", "view", "purchase", "click"}

// shopEvent returns an event of the shop example with the event type in
// field typeField.
func shopEvent(rng *rand.Rand, ts int64, typeField string) *Event {
	typ := shopTypes[rng.IntN(len(shopTypes))]
	fields := map[string]any{
		"user_id":  "u1",
		"ts":       float64(ts),
		typeField:  typ,
		"item_id":  fmt.Sprintf("i%d", rng.IntN(100)),
		"category": "shoes",
	}
	if typ != "click" {
		fields["price"] = float64(rng.IntN(10000)) / 100
	}
	return &Event{Key: "u1", TimeMs: ts, Fields: fields}
}

// TestStateSizeBounded: at a constant event rate the encoded state of an
// entity stops growing once its longest window is full.
func TestStateSizeBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString("app: shop\nsource:\n  topic: events\nfeatures:\n")
	windows := map[string]string{
		"life": "", "1h": "1h", "24h": "24h", "7d": "7d",
		"tumbling": "{kind: tumbling, size: 1h}\n    emit: last_closed",
		"hopping":  "{kind: hopping, size: 24h, hop: 6h}",
		"session":  "{kind: session, gap: 30m}\n    emit: last_closed",
		"session5": "{kind: session, gap: 1m}",
	}
	for _, agg := range allAggs {
		for name, window := range windows {
			fmt.Fprintf(&b, "  - name: %s_%s\n    agg: %s\n", agg, name, agg)
			if agg != "count" {
				b.WriteString("    field: price\n")
			}
			b.WriteString(aggExtra(agg))
			if window != "" {
				b.WriteString("    window: " + window + "\n")
			}
		}
	}
	top := mustTopology(t, b.String())
	const (
		day     = 24 * msHour
		every   = 2 * msMinute
		graceMs = 5 * msMinute
	)
	rng := rand.New(rand.NewPCG(3, 4))
	st := top.NewEntityState()
	var early, late int // max encoded size over days 2-10 and 11-30
	var buf []byte
	for ts := t0; ts < t0+30*day; ts += every {
		// Up to a minute out of order.
		evTs := ts - rng.Int64N(msMinute)
		// A thousand distinct prices: the lifetime sketches (count_distinct,
		// approx_distinct, top_k) fill within the first days and then stop
		// growing, as they must.
		ev := &Event{TimeMs: evTs, Fields: map[string]any{"price": float64(rng.IntN(1000)) / 10}}
		mustApply(t, top, st, ev, ts-graceMs)
		for fi, f := range top.Features {
			limit := 1
			switch f.WindowKind {
			case WindowSession:
				// The open session, the last closed one, and sessions
				// within grace of the watermark.
				limit = int(graceMs/f.Window.Milliseconds()) + 3
			case WindowSliding, WindowTumbling, WindowHopping:
				// Tiles from watermark-window-tile to the newest event.
				limit = int((f.Window.Milliseconds()+f.Tile.Milliseconds()+graceMs)/f.Tile.Milliseconds()) + 2
			}
			if n := len(st.Features[fi]); n > limit {
				t.Fatalf("day %d: %s has %d tiles, want at most %d", (ts-t0)/day, f.Name, n, limit)
			}
		}
		if (ts-t0)/every%61 != 0 {
			continue // encoding sketches every event would make the test slow
		}
		buf = top.AppendState(buf[:0], st)
		switch d := (ts - t0) / day; {
		case d >= 1 && d < 10:
			early = max(early, len(buf))
		case d >= 10:
			late = max(late, len(buf))
		}
	}
	t.Logf("encoded state: max %d bytes over days 2-10, %d over days 11-30", early, late)
	// Varints of counts and tile starts may grow by a byte or so.
	if margin := early/50 + 16; late > early+margin {
		t.Errorf("state grows with time: max %d bytes over days 11-30, %d over days 2-10 (margin %d)", late, early, margin)
	}
}

// TestSessionWindow pins session semantics: events within gap of each other
// form one session; a late event that bridges two sessions merges them; a
// session is closed once as_of is more than gap after its last event.
func TestSessionWindow(t *testing.T) {
	top := mustTopology(t, `app: shop
source:
  topic: events
features:
  - name: current
    agg: count
    window: {kind: session, gap: 30m}
  - name: closed
    agg: last_k
    field: v
    k: 5
    window: {kind: session, gap: 30m}
    emit: last_closed
`)
	const m = msMinute
	st := top.NewEntityState()
	for _, ev := range []struct {
		ts int64
		v  string
	}{{t0, "a"}, {t0 + 10*m, "b"}, {t0 + 50*m, "c"}} {
		mustApply(t, top, st, &Event{TimeMs: ev.ts, Fields: map[string]any{"v": ev.v}}, 0)
	}
	if n := len(st.Features[0]); n != 2 {
		t.Fatalf("%d sessions, want 2 (a gap of 40m > 30m)", n)
	}
	check := func(what string, fi int, asOf int64, want Value) {
		t.Helper()
		if got := top.Evaluate(fi, st.Features[fi], asOf); !valuesIdentical(got, want) {
			t.Errorf("%s: %+v, want %+v", what, got, want)
		}
	}
	check("current at +55m", 0, t0+55*m, Value{Type: TypeInt64, Present: true, Int: 1, WindowStartMs: t0 + 50*m, WindowEndMs: t0 + 50*m})
	check("current at +80m (exactly gap after)", 0, t0+80*m, Value{Type: TypeInt64, Present: true, Int: 1, WindowStartMs: t0 + 50*m, WindowEndMs: t0 + 50*m})
	check("current at +81m: closed", 0, t0+81*m, Value{Type: TypeInt64})
	check("last closed at +55m", 1, t0+55*m, Value{Type: TypeStringList, Present: true, List: []string{"b", "a"}, WindowStartMs: t0, WindowEndMs: t0 + 10*m})
	check("last closed before any closed", 1, t0+20*m, Value{Type: TypeStringList})

	// An event at +30m is within 30m of both sessions: they become one.
	mustApply(t, top, st, &Event{TimeMs: t0 + 30*m, Fields: map[string]any{"v": "d"}}, 0)
	if n := len(st.Features[0]); n != 1 {
		t.Fatalf("%d sessions after the bridging event, want 1", n)
	}
	check("current after the bridge", 0, t0+55*m, Value{Type: TypeInt64, Present: true, Int: 4, WindowStartMs: t0, WindowEndMs: t0 + 50*m})
	check("closed after the bridge", 1, t0+81*m, Value{Type: TypeStringList, Present: true, List: []string{"c", "d", "b", "a"}, WindowStartMs: t0, WindowEndMs: t0 + 50*m})
}

// TestTumblingHoppingWindows pins which bucket a read returns and the
// interval it reports.
func TestTumblingHoppingWindows(t *testing.T) {
	top := mustTopology(t, `app: shop
source:
  topic: events
features:
  - name: hour
    agg: count
    window: {kind: tumbling, size: 1h}
  - name: last_hour
    agg: count
    window: {kind: tumbling, size: 1h}
    emit: last_closed
  - name: hop
    agg: count
    window: {kind: hopping, size: 1h, hop: 15m}
  - name: last_hop
    agg: count
    window: {kind: hopping, size: 1h, hop: 15m}
    emit: last_closed
`)
	const m = msMinute
	st := top.NewEntityState()
	for _, ts := range []int64{t0 - 50*m, t0 - 20*m, t0 - 5*m, t0 + 10*m, t0 + 20*m} {
		mustApply(t, top, st, &Event{TimeMs: ts}, 0)
	}
	asOf := t0 + 12*m // t0 is a whole hour
	for _, tt := range []struct {
		fi         int
		n          int64
		start, end int64
	}{
		{0, 2, t0, asOf},                 // [t0, t0+1h) so far, t0+20m included: its bucket is whole
		{1, 3, t0 - msHour, t0},          // [t0-1h, t0)
		{2, 3, t0 + 15*m - msHour, asOf}, // the window closing at t0+15m, [t0-45m, t0+15m)
		{3, 3, t0 - msHour, t0},          // the window that closed at t0: [t0-1h, t0)
	} {
		got := top.Evaluate(tt.fi, st.Features[tt.fi], asOf)
		if got.Int != tt.n || !got.Present || got.WindowStartMs != tt.start || got.WindowEndMs != tt.end {
			t.Errorf("%s = %d over [%+dm, %+dm], want %d over [%+dm, %+dm]", top.Features[tt.fi].Name,
				got.Int, (got.WindowStartMs-t0)/m, (got.WindowEndMs-t0)/m, tt.n, (tt.start-t0)/m, (tt.end-t0)/m)
		}
	}
}

// TestTopKBound: past its capacity a tile's Space-Saving summary is
// approximate, each count within events/capacity of the truth, and a value
// more frequent than that is never lost.
func TestTopKBound(t *testing.T) {
	top := mustTopology(t, specWith("name: top", "agg: top_k", "field: v", "k: 3"))
	f := &top.Features[0]
	st := top.NewEntityState()
	rng := rand.New(rand.NewPCG(11, 12))
	truth := map[string]int64{}
	const n = 20000
	for i := range n {
		// Three heavy values, then a long tail of 2000.
		var v string
		switch r := rng.IntN(100); {
		case r < 10:
			v = "heavy1"
		case r < 17:
			v = "heavy2"
		case r < 22:
			v = "heavy3"
		default:
			v = fmt.Sprintf("tail%d", rng.IntN(2000))
		}
		truth[v]++
		mustApply(t, top, st, &Event{TimeMs: t0 + int64(i), Fields: map[string]any{"v": v}}, 0)
	}
	got := top.Evaluate(0, st.Features[0], t0+n)
	if !got.Approximate || len(got.Counts) != 3 {
		t.Fatalf("top_k = %+v, want 3 approximate counts", got)
	}
	bound := int64(n / f.capacity)
	for i, ic := range got.Counts {
		if d := ic.Count - truth[ic.Value]; d < -bound || d > bound {
			t.Errorf("%s counted %d, truly %d: off by more than %d", ic.Value, ic.Count, truth[ic.Value], bound)
		}
		if want := fmt.Sprintf("heavy%d", i+1); ic.Value != want {
			t.Errorf("top %d is %s, want %s (counts %v)", i+1, ic.Value, want, got.Counts)
		}
	}
	if len(st.Features[0][0].sk().counts) > f.capacity {
		t.Errorf("summary holds %d counters, capacity %d", len(st.Features[0][0].sk().counts), f.capacity)
	}
	// Under capacity the counts are exact and not marked approximate.
	small := top.NewEntityState()
	for i, v := range []string{"a", "b", "a", "c", "a", "b"} {
		mustApply(t, top, small, &Event{TimeMs: t0 + int64(i), Fields: map[string]any{"v": v}}, 0)
	}
	want := []ItemCount{{"a", 3}, {"b", 2}, {"c", 1}}
	if got := top.Evaluate(0, small.Features[0], t0); got.Approximate || !slices.Equal(got.Counts, want) {
		t.Errorf("top_k of a small set = %+v, want exactly %v", got, want)
	}
}

// TestWhereFieldEquals: a where that compares a field with a string literal
// runs without the VM, and means exactly what the VM computes, for every
// kind of field value.
func TestWhereFieldEquals(t *testing.T) {
	values := []any{nil, "view", "View", "", "view ", 1.0, true, map[string]any{"a": "view"}, []any{"view"}}
	for _, src := range []string{`type == "view"`, `"view" == type`, `type != "view"`, `("view" != type)`, `type == ""`} {
		flt, err := compileWhere(src)
		if err != nil {
			t.Fatal(err)
		}
		if flt.eq == nil {
			t.Fatalf("%s: not compiled to a field comparison", src)
		}
		machine := new(vm.VM)
		for _, v := range append(values, "absent") {
			ev := &Event{Fields: map[string]any{"type": v}}
			if v == "absent" {
				ev.Fields = map[string]any{"other": "view"}
			}
			got, err := flt.pass(machine, ev)
			if err != nil {
				t.Fatal(err)
			}
			out, err := machine.Run(flt.prog, ev.Fields)
			if err != nil {
				t.Fatal(err)
			}
			if want := out.(bool); got != want {
				t.Errorf("%s with type=%#v: fast path %v, VM %v", src, v, got, want)
			}
		}
	}
	for _, src := range []string{`type == "view" && price > 1`, `type in ["view"]`, `type == other`, `user.type == "view"`, `price == 1`, `$env == "view"`} {
		flt, err := compileWhere(src)
		if err != nil {
			t.Fatal(err)
		}
		if flt.eq != nil {
			t.Errorf("%s: compiled to a field comparison %+v", src, *flt.eq)
		}
	}
}

// TestSizeBytes: the estimate caches bound themselves with is within a
// factor of two of the heap that decoded states really hold.
func TestSizeBytes(t *testing.T) {
	top := mustTopology(t, `app: shop
source: {topic: events, format: json, key: user_id, time: ts}
features:
  - {name: views_1h, where: 'type == "view"', agg: count, window: 1h}
  - {name: spend_24h, where: 'type == "purchase"', agg: sum, field: price, window: 24h}
  - {name: last_items, agg: last_k, field: item_id, k: 10}
  - {name: cats, agg: count_distinct, field: category, window: 24h}
`)
	now := int64(1_764_133_200_000)
	for _, events := range []int{20, 200} {
		st := top.NewEntityState()
		for i := range events {
			typ := "view"
			if i%10 == 0 {
				typ = "purchase"
			}
			ev := Event{Key: "u1", TimeMs: now - int64(events-i)*86_400_000/int64(events),
				Fields: map[string]any{"type": typ, "item_id": fmt.Sprintf("item-%d", i), "category": fmt.Sprintf("c%d", i%7), "price": 9.99}}
			if err := top.Apply(st, &ev, now-86_400_000); err != nil {
				t.Fatal(err)
			}
		}
		enc := top.AppendState(nil, st)
		const n = 2000
		keep := make([]*EntityState, n)
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		estimate := 0
		for i := range keep {
			var err error
			if keep[i], err = top.DecodeState(enc); err != nil {
				t.Fatal(err)
			}
			estimate += keep[i].SizeBytes()
		}
		runtime.GC()
		runtime.ReadMemStats(&m1)
		runtime.KeepAlive(keep)
		heap := int(m1.HeapAlloc) - int(m0.HeapAlloc)
		if ratio := float64(estimate) / float64(heap); ratio < 0.5 || ratio > 2 {
			t.Errorf("%d events: SizeBytes sums to %d for %d states, the heap grew by %d (×%.2f)", events, estimate, n, heap, ratio)
		}
	}
}
