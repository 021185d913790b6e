package topology

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The fuzz tests run their seed corpus in every go test; fuzz them with
// e.g. go test -run '^$' -fuzz FuzzDecodeState ./topology/

// fuzzSpec covers every aggregation, so one topology decodes every kind of
// feature encoding.
const fuzzSpec = `app: fuzz
source:
  topic: events
features:
  - name: n_1h
    where: kind == "view"
    agg: count
    window: 1h
  - name: n
    agg: count
  - name: sum_24h
    agg: sum
    field: price
    window: 24h
  - name: min_90m
    agg: min
    field: price
    window: 90m
    tile: 7m
  - name: max
    agg: max
    field: price
  - name: avg_1h
    agg: avg
    field: item.qty
    window: 1h
  - name: first
    agg: first
    field: item_id
  - name: last_1h
    agg: last
    field: item_id
    window: 1h
  - name: first_3
    agg: first_k
    field: item_id
    k: 3
  - name: last_3_1h
    agg: last_k
    field: item_id
    k: 3
    window: 1h
  - name: var_1h
    agg: variance
    field: price
    window: 1h
  - name: std
    agg: stddev
    field: price
  - name: top_2_1h
    agg: top_k
    field: item_id
    k: 2
    window: 1h
  - name: distinct_2
    agg: count_distinct
    field: item_id
    max_distinct: 2
  - name: distinct_1h
    agg: count_distinct
    field: item_id
    window: 1h
  - name: approx_items
    agg: approx_distinct
    field: item_id
    precision: 10
  - name: p99_1h
    agg: approx_quantile
    field: price
    q: 0.99
    window: 1h
  - name: pcts
    agg: approx_quantile
    field: price
    quantiles: [0, 0.5, 1]
    relative_accuracy: 0.05
  - name: views_hour
    where: kind == "view"
    agg: count
    window: {kind: tumbling, size: 1h}
    emit: last_closed
  - name: spend_hopping
    agg: sum
    field: price
    window: {kind: hopping, size: 1h, hop: 15m}
  - name: session_items
    agg: last_k
    field: item_id
    k: 3
    window: {kind: session, gap: 10m}
  - name: session_top
    agg: top_k
    field: item_id
    k: 2
    window: {kind: session, gap: 30m}
    emit: last_closed
  - name: ratio
    expr: n_1h / n
`

func fuzzTopology(tb testing.TB) *Topology {
	return mustTopology(tb, fuzzSpec)
}

// fuzzEvents are events that the fuzz tests apply to whatever they decoded
// or compiled: matching, missing and wrongly typed fields.
var fuzzEvents = []map[string]any{
	{"kind": "view", "price": 12.5, "item_id": "i1", "item": map[string]any{"qty": 2}},
	{"kind": "purchase", "price": json.Number("3"), "item_id": 7},
	{},
	{"kind": nil, "price": "12.5", "item_id": []any{"x"}, "item": "x"},
	{"type": "view", "count": 3, "tags": []any{"a", "b"}, "price": -1},
}

func FuzzParseSpec(f *testing.F) {
	for _, path := range []string{shopSpecPath, "../examples/shop/spec-avro.yaml", "../examples/shop/spec-features.yaml"} {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(fuzzSpec))
	f.Add([]byte(""))
	f.Add([]byte("app: shop\nsource:\n\ttopic: events\n"))
	f.Add([]byte("app: &a shop\nsource: *a\n"))
	f.Add([]byte(specWith("name: a", "agg: last_k", "field: x", "k: 1001")))
	f.Add([]byte(specWith("name: a", "agg: count", "window: 7.5d")))
	f.Add([]byte(specWith("name: a", "agg: count", "window: 36500d", "tile: 1s")))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseSpec("fuzz.yaml", data)
		if err != nil {
			var se *SpecError
			if !errors.As(err, &se) || !errors.Is(err, ErrSpec) {
				t.Fatalf("error %T %v is not a *SpecError wrapping ErrSpec", err, err)
			}
			if !strings.HasPrefix(err.Error(), "fuzz.yaml:") {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		top, err := Compile(s)
		if err != nil {
			if !errors.Is(err, ErrSpec) {
				t.Fatalf("Compile error %v does not wrap ErrSpec", err)
			}
			return
		}
		exercise(t, top, top.NewEntityState())
	})
}

// exercise applies the fuzz events to st and reads and round-trips every
// feature; it must not panic, and a rejected event must change nothing.
func exercise(t *testing.T, top *Topology, st *EntityState) {
	t.Helper()
	for i, fields := range fuzzEvents {
		ts := t0 + int64(i)*msMinute
		before := top.AppendState(nil, st)
		if err := top.Apply(st, &Event{TimeMs: ts, Fields: fields}, ts-5*msMinute); err != nil {
			if !errors.Is(err, ErrBadEvent) {
				t.Fatalf("Apply error %v does not wrap ErrBadEvent", err)
			}
			if after := top.AppendState(nil, st); !bytes.Equal(before, after) {
				t.Fatalf("event %d rejected (%v) but the state changed", i, err)
			}
		}
	}
	enc := top.AppendState(nil, st)
	st2, err := top.DecodeState(enc)
	if err != nil {
		t.Fatalf("DecodeState of AppendState: %v", err)
	}
	if enc2 := top.AppendState(nil, st2); !bytes.Equal(enc, enc2) {
		t.Fatalf("state does not round-trip")
	}
	for fi := range top.Features {
		for _, asOf := range []int64{0, t0, t0 + msHour, st.LastEventMs} {
			v1 := top.Evaluate(fi, st.Features[fi], asOf)
			v2 := top.Evaluate(fi, st2.Features[fi], asOf)
			if !valuesIdentical(v1, v2) {
				t.Fatalf("%s: %+v before round trip, %+v after", top.Features[fi].Name, v1, v2)
			}
		}
	}
}

func FuzzDecodeState(f *testing.F) {
	top := fuzzTopology(f)
	f.Add(top.AppendState(nil, top.NewEntityState()))
	st := top.NewEntityState()
	for i := range 40 {
		for _, fields := range fuzzEvents[:3] {
			_ = top.Apply(st, &Event{TimeMs: t0 + int64(i)*7*msMinute, Fields: fields}, 0)
		}
	}
	full := top.AppendState(nil, st)
	f.Add(full)
	f.Add(full[:len(full)/2])
	shop := mustTopology(f, pruneSpec)
	f.Add(shop.AppendState(nil, filledState(f, shop, 100, "kind")))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := top.DecodeState(data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("DecodeState error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		// A decoded state re-encodes to bytes that decode to the same state.
		enc := top.AppendState(nil, st)
		st2, err := top.DecodeState(enc)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if enc2 := top.AppendState(nil, st2); !bytes.Equal(enc, enc2) {
			t.Fatalf("re-encoding differs")
		}
		exercise(t, top, st)
	})
}

func FuzzDecodeFeature(f *testing.F) {
	top := fuzzTopology(f)
	st := top.NewEntityState()
	for i := range 40 {
		for _, fields := range fuzzEvents[:3] {
			_ = top.Apply(st, &Event{TimeMs: t0 + int64(i)*7*msMinute, Fields: fields}, 0)
		}
	}
	for fi := range top.Features {
		f.Add(uint8(fi), top.AppendFeature(nil, fi, st.Features[fi]))
		f.Add(uint8(fi), top.AppendFeature(nil, fi, nil))
	}
	f.Fuzz(func(t *testing.T, fi uint8, data []byte) {
		i := int(fi) % len(top.Features)
		tiles, err := top.DecodeFeature(i, data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("DecodeFeature error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		enc := top.AppendFeature(nil, i, tiles)
		tiles2, err := top.DecodeFeature(i, enc)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if enc2 := top.AppendFeature(nil, i, tiles2); !bytes.Equal(enc, enc2) {
			t.Fatalf("re-encoding differs")
		}
		for _, asOf := range []int64{-1 << 62, 0, t0, 1 << 62} {
			_ = top.Evaluate(i, tiles, asOf)
		}
		st := top.NewEntityState()
		st.Features[i] = tiles
		exercise(t, top, st)
	})
}

func FuzzWhereExpression(f *testing.F) {
	for _, w := range []string{
		`type == "view"`,
		`type == "purchase"`,
		`kind == "view" && price > 10`,
		`(price ?? 0) > 10`,
		`item.qty >= 2 || item_id in ["i1", "i2"]`,
		`len(tags) > 1 and count < 5`,
		`upper(type) == "VIEW"`,
		`price * 2 > 10`,
		`item_id matches "^i[0-9]+$"`,
		`nosuch(1)`,
		`type ==`,
		`1 + 2`,
		`let x = price; x > 1`,
		`all(tags, # != "")`,
		`$env.type == "view"`,
	} {
		f.Add(w, `{"type":"view","kind":"view","price":12.5,"item_id":"i1","item":{"qty":2},"tags":["a","b"],"count":3}`)
	}
	f.Add(`price > 10`, `{}`)
	f.Add(`price > 10`, `{"price":"abc"}`)
	f.Fuzz(func(t *testing.T, where, event string) {
		doc, err := yaml.Marshal(map[string]any{
			"app":    "fuzz",
			"source": map[string]any{"topic": "events"},
			"features": []map[string]any{
				{"name": "all", "agg": "count"},
				{"name": "matching", "agg": "count", "where": where},
				{"name": "matching_items", "agg": "last_k", "field": "item_id", "k": 2, "where": where, "window": "1h"},
			},
		})
		if err != nil {
			t.Skip()
		}
		s, err := ParseSpec("fuzz.yaml", doc)
		if err != nil {
			if !errors.Is(err, ErrSpec) {
				t.Fatalf("ParseSpec error %v does not wrap ErrSpec", err)
			}
			return
		}
		top, err := Compile(s)
		if err != nil {
			var se *SpecError
			if !errors.As(err, &se) || se.Line != s.Features[1].Line {
				t.Fatalf("Compile error %v: want a *SpecError at line %d", err, s.Features[1].Line)
			}
			return
		}
		var fields map[string]any
		dec := json.NewDecoder(strings.NewReader(event))
		dec.UseNumber()
		if dec.Decode(&fields) != nil {
			fields = map[string]any{"item_id": event}
		}
		st := top.NewEntityState()
		before := top.AppendState(nil, st)
		err = top.Apply(st, &Event{Key: "u1", TimeMs: t0, Fields: fields}, t0)
		if err != nil {
			if !errors.Is(err, ErrBadEvent) {
				t.Fatalf("Apply error %v does not wrap ErrBadEvent", err)
			}
			if !bytes.Equal(before, top.AppendState(nil, st)) {
				t.Fatalf("rejected event changed the state")
			}
			return
		}
		if n := top.Evaluate(1, st.Features[1], t0).Int; n > 1 {
			t.Fatalf("one event counted %d times", n)
		}
		if all := top.Evaluate(0, st.Features[0], t0).Int; all != 1 {
			t.Fatalf("unfiltered count %d after one event", all)
		}
	})
}
