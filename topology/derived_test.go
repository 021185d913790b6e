package topology

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
)

const derivedSpec = `app: shop
source:
  topic: events
features:
  - name: views_1h
    where: kind == "view"
    agg: count
    window: 1h
  - name: ctr_1h
    expr: clicks_1h / views_1h
  - name: clicks_1h
    where: kind == "click"
    agg: count
    window: 1h
  - name: both_1h
    expr: clicks_1h + views_1h
  - name: ctr_pct
    expr: ctr_1h * 100
  - name: spend
    agg: sum
    field: price
  - name: label
    expr: 'views_1h > 2 ? "busy" : "quiet"'
  - name: count
    agg: count
  - name: per_event
    expr: spend / count
  - name: last_items
    agg: last_k
    field: item_id
    k: 3
  - name: n_items
    expr: len(last_items)
`

func TestDerivedFeatures(t *testing.T) {
	top := mustTopology(t, derivedSpec)
	idx := func(name string) int {
		fi, ok := top.FeatureIndex(name)
		if !ok {
			t.Fatalf("no feature %s", name)
		}
		return fi
	}
	for name, want := range map[string]ValueType{"ctr_1h": TypeDouble, "both_1h": TypeInt64, "ctr_pct": TypeDouble, "label": TypeString, "per_event": TypeDouble, "n_items": TypeInt64} {
		f := &top.Features[idx(name)]
		if !f.Derived() || f.Type != want {
			t.Errorf("%s: derived %v, type %v; want a derived %v", name, f.Derived(), f.Type, want)
		}
	}
	if got, want := top.Features[idx("ctr_pct")].Inputs(), []int{idx("ctr_1h")}; !slices.Equal(got, want) {
		t.Errorf("ctr_pct inputs %v, want %v", got, want)
	}
	all := make([]int, len(top.Features))
	for i := range all {
		all[i] = i
	}
	want := []int{idx("views_1h"), idx("clicks_1h")}
	if got := top.Needs([]int{idx("ctr_pct"), idx("views_1h")}); !slices.Equal(got, want) {
		t.Errorf("Needs(ctr_pct, views_1h) = %v, want %v", got, want)
	}

	st := top.NewEntityState()
	evaluate := func() map[string]Value {
		tiles := make([][]Tile, len(top.Features))
		for fi := range tiles {
			tiles[fi] = st.Features[fi]
			if tiles[fi] == nil {
				tiles[fi] = []Tile{} // known, no events
			}
		}
		dst := make([]Value, len(all))
		top.EvaluateAll(tiles, t0, all, dst)
		out := map[string]Value{}
		for j, fi := range all {
			out[top.Features[fi].Name] = dst[j]
			if !top.Features[fi].Derived() {
				if v := top.Evaluate(fi, tiles[fi], t0); !valuesIdentical(v, dst[j]) {
					t.Errorf("%s: EvaluateAll %+v, Evaluate %+v", top.Features[fi].Name, dst[j], v)
				}
			}
		}
		return out
	}
	// No views: the ratio divides by zero and is not present; the sum and
	// the label are.
	mustApply(t, top, st, &Event{TimeMs: t0, Fields: map[string]any{"kind": "click", "price": 2.0, "item_id": "a"}}, 0)
	got := evaluate()
	if v := got["ctr_1h"]; v.Present {
		t.Errorf("ctr_1h with no views = %+v, want not present", v)
	}
	if v := got["ctr_pct"]; v.Present {
		t.Errorf("ctr_pct of a missing ctr_1h = %+v, want not present", v)
	}
	if v := got["both_1h"]; !v.Present || v.Int != 1 {
		t.Errorf("both_1h = %+v, want 1", v)
	}
	if v := got["label"]; !v.Present || v.Str != "quiet" {
		t.Errorf("label = %+v, want quiet", v)
	}
	for range 3 {
		mustApply(t, top, st, &Event{TimeMs: t0, Fields: map[string]any{"kind": "view", "price": 1.0, "item_id": "b"}}, 0)
	}
	got = evaluate()
	if v := got["ctr_1h"]; !v.Present || math.Abs(v.Float-1.0/3) > 1e-15 || v.WindowStartMs != 0 {
		t.Errorf("ctr_1h = %+v, want 1/3 with no window", v)
	}
	if v := got["ctr_pct"]; !v.Present || math.Abs(v.Float-100.0/3) > 1e-12 {
		t.Errorf("ctr_pct = %+v, want 33.3", v)
	}
	if v := got["per_event"]; !v.Present || v.Float != 5.0/4 {
		t.Errorf("per_event = %+v, want 1.25", v)
	}
	if v := got["label"]; v.Str != "busy" {
		t.Errorf("label = %+v, want busy", v)
	}
	if v := got["n_items"]; !v.Present || v.Int != 3 {
		t.Errorf("n_items = %+v, want 3", v)
	}

	// An input whose state is unknown (nil) makes the derived value unknown.
	tiles := make([][]Tile, len(top.Features))
	tiles[idx("views_1h")] = st.Features[idx("views_1h")]
	dst := make([]Value, 2)
	top.EvaluateAll(tiles, t0, []int{idx("ctr_1h"), idx("views_1h")}, dst)
	if dst[0].Present || !dst[1].Present || dst[1].Int != 3 {
		t.Errorf("with clicks_1h unknown: ctr_1h %+v, views_1h %+v; want not present, 3", dst[0], dst[1])
	}

	// Derived features have no state: not applied, not encoded.
	for fi := range top.Features {
		if top.Features[fi].Derived() && st.Features[fi] != nil {
			t.Errorf("derived %s has tiles", top.Features[fi].Name)
		}
	}
	enc := top.AppendState(nil, st)
	if strings.Contains(string(enc), "ctr_1h") {
		t.Error("the state encoding names a derived feature")
	}
	if _, err := top.DecodeState(enc); err != nil {
		t.Fatal(err)
	}
}

func TestDerivedErrors(t *testing.T) {
	base := "app: shop\nsource:\n  topic: events\nfeatures:\n" +
		"  - name: views\n    agg: count\n" +
		"  - name: item\n    agg: last\n    field: item_id\n"
	tests := []struct {
		name, feature, msg string
	}{
		{"unknown feature", "expr: views / clicks", "unknown feature clicks"},
		{"type error", `expr: views + item`, `expr "views + item"`},
		{"bool", "expr: views > 3", "is a bool"},
		{"self", "expr: d + views", "cannot use itself"},
		{"syntax", "expr: views /", `expr "views /"`},
		{"with agg", "expr: views * 2\n    agg: count", "takes no agg"},
		{"with window", "expr: views * 2\n    window: 1h", "takes no window"},
		{"unknown function", "expr: nosuch(views)", "unknown function nosuch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := base + "  - name: d\n    " + tt.feature + "\n"
			s, err := ParseSpec("spec.yaml", []byte(spec))
			if err == nil {
				_, err = Compile(s)
			}
			var se *SpecError
			if !errors.As(err, &se) || !errors.Is(err, ErrSpec) {
				t.Fatalf("error %v: want a *SpecError", err)
			}
			if se.Line != 10 || !strings.Contains(se.Msg, tt.msg) {
				t.Errorf("error %q at line %d, want %q at line 10", se.Msg, se.Line, tt.msg)
			}
		})
	}
	// A derived feature must come after the derived features it reads.
	spec := base + "  - name: a\n    expr: b * 2\n  - name: b\n    expr: views * 2\n"
	s, err := ParseSpec("spec.yaml", []byte(spec))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Compile(s); err == nil || !strings.Contains(err.Error(), "derived feature b is defined after a") {
		t.Errorf("Compile = %v, want an error about the order", err)
	}
}

// BenchmarkEvaluateAllDerived reads a ratio of two counts, as serving does
// for a derived feature.
func BenchmarkEvaluateAllDerived(b *testing.B) {
	top := mustTopology(b, derivedSpec)
	st := top.NewEntityState()
	for i := range 100 {
		kind := "view"
		if i%3 == 0 {
			kind = "click"
		}
		mustApply(b, top, st, &Event{TimeMs: t0 + int64(i)*1000, Fields: map[string]any{"kind": kind, "price": 1.0, "item_id": "a"}}, 0)
	}
	ctr, _ := top.FeatureIndex("ctr_1h")
	want, dst := []int{ctr}, make([]Value, 1)
	b.ReportAllocs()
	for b.Loop() {
		top.EvaluateAll(st.Features, t0+100_000, want, dst)
		if !dst[0].Present {
			b.Fatal("ctr_1h not present")
		}
	}
}

// FuzzDerivedExpression compiles any expression as a derived feature over
// the shop's features and evaluates it: errors are spec errors at the
// feature's line, and nothing panics.
func FuzzDerivedExpression(f *testing.F) {
	for _, e := range []string{
		"clicks_1h / views_1h", "ctr_1h * 100", "views_1h > 2 ? \"busy\" : \"quiet\"", "spend / count",
		"len(last_items)", "views_1h % 0", "views_1h / 0", "-views_1h", "views_1h ** 2", "views_1h > 1",
		"nosuch + 1", "views_1h +", "last_items[0]", "max(views_1h, clicks_1h)", "d", "1",
	} {
		f.Add(e)
	}
	f.Fuzz(func(t *testing.T, e string) {
		if strings.ContainsAny(e, "\n\r") {
			t.Skip()
		}
		doc := derivedSpec + "  - name: d\n    expr: '" + strings.ReplaceAll(e, "'", "''") + "'\n"
		s, err := ParseSpec("fuzz.yaml", []byte(doc))
		if err != nil {
			return
		}
		top, err := Compile(s)
		if err != nil {
			var se *SpecError
			if !errors.As(err, &se) || se.Line != s.Features[len(s.Features)-1].Line {
				t.Fatalf("Compile error %v: want a *SpecError at the derived feature's line", err)
			}
			return
		}
		st := top.NewEntityState()
		mustApply(t, top, st, &Event{TimeMs: t0, Fields: map[string]any{"kind": "view", "price": 2.0, "item_id": "a"}}, 0)
		all := make([]int, len(top.Features))
		for i := range all {
			all[i] = i
		}
		dst := make([]Value, len(all))
		top.EvaluateAll(st.Features, t0, all, dst)
		if d := dst[len(dst)-1]; d.Present && d.Type == TypeDouble && (math.IsNaN(d.Float) || math.IsInf(d.Float, 0)) {
			t.Fatalf("derived %q = %v, present", e, d.Float)
		}
	})
}
