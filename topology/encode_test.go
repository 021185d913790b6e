package topology

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
)

// filledState applies n shop-like events, one a minute, to a new state.
func filledState(tb testing.TB, top *Topology, n int, typeField string) *EntityState {
	tb.Helper()
	rng := rand.New(rand.NewPCG(5, 6))
	st := top.NewEntityState()
	for i := range n {
		ts := t0 + int64(i)*msMinute
		mustApply(tb, top, st, shopEvent(rng, ts, typeField), ts-5*msMinute)
	}
	return st
}

func TestDecodeStateUnderChangedSpec(t *testing.T) {
	oldTop := mustTopology(t, `app: shop
source:
  topic: events
features:
  - name: views_1h
    where: kind == "view"
    agg: count
    window: 1h
  - name: spend_24h
    agg: sum
    field: price
    window: 24h
  - name: last_items
    agg: last_k
    field: item_id
    k: 10
  - name: first_item
    agg: first
    field: item_id
`)
	// spend_24h removed, max_price_1h added, the others reordered.
	newTop := mustTopology(t, `app: shop
source:
  topic: events
features:
  - name: last_items
    agg: last_k
    field: item_id
    k: 10
  - name: max_price_1h
    agg: max
    field: price
    window: 1h
  - name: views_1h
    where: kind == "view"
    agg: count
    window: 1h
  - name: first_item
    agg: first
    field: item_id
`)
	st := filledState(t, oldTop, 300, "kind")
	enc := oldTop.AppendState(nil, st)
	got, err := newTop.DecodeState(enc)
	if err != nil {
		t.Fatal(err)
	}
	if got.LastEventMs != st.LastEventMs {
		t.Errorf("LastEventMs = %d, want %d", got.LastEventMs, st.LastEventMs)
	}
	if len(got.Features) != len(newTop.Features) {
		t.Fatalf("%d features decoded, the new spec has %d", len(got.Features), len(newTop.Features))
	}
	asOf := st.LastEventMs
	for ni, f := range newTop.Features {
		oi, kept := oldTop.FeatureIndex(f.Name)
		gotV := newTop.Evaluate(ni, got.Features[ni], asOf)
		if !kept {
			if len(got.Features[ni]) != 0 || gotV.Present {
				t.Errorf("new feature %s: %d tiles, value %+v; want empty", f.Name, len(got.Features[ni]), gotV)
			}
			continue
		}
		if wantV := oldTop.Evaluate(oi, st.Features[oi], asOf); !valuesIdentical(gotV, wantV) {
			t.Errorf("%s = %+v after decoding under the new spec, %+v before", f.Name, gotV, wantV)
		}
	}
	// The new state applies and re-encodes under the new spec.
	mustApply(t, newTop, got, &Event{TimeMs: asOf, Fields: map[string]any{"price": 3.0}}, asOf)
	if v := newTop.Evaluate(1, got.Features[1], asOf); !v.Present || v.Float != 3 {
		t.Errorf("max_price_1h after one event = %+v, want 3", v)
	}
	if _, err := newTop.DecodeState(newTop.AppendState(nil, got)); err != nil {
		t.Errorf("re-decode under the new spec: %v", err)
	}
}

func TestDecodeCorrupt(t *testing.T) {
	top := mustTopology(t, pruneSpec)
	st := filledState(t, top, 200, "kind")
	state := top.AppendState(nil, st)
	lastItems, _ := top.FeatureIndex("last_items")
	spend, _ := top.FeatureIndex("spend_24h")
	feature := top.AppendFeature(nil, spend, st.Features[spend])

	t.Run("every truncated state", func(t *testing.T) {
		for n := range len(state) {
			if _, err := top.DecodeState(state[:n]); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("DecodeState(first %d of %d bytes) = %v, want ErrCorrupt", n, len(state), err)
			}
		}
	})
	t.Run("every truncated feature", func(t *testing.T) {
		for n := range len(feature) {
			if _, err := top.DecodeFeature(spend, feature[:n]); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("DecodeFeature(first %d of %d bytes) = %v, want ErrCorrupt", n, len(feature), err)
			}
		}
	})

	outOfOrder := top.AppendFeature(nil, spend, []Tile{{Start: 2000, Count: 1}, {Start: 1000, Count: 1}})
	duplicate := top.AppendFeature(nil, spend, []Tile{{Start: 1000, Count: 1}, {Start: 1000, Count: 1}})
	tooMany := top.AppendFeature(nil, lastItems, []Tile{{Count: 11, Items: make([]Item, 11)}})
	hugeCount := []byte{featureVersion}
	hugeCount = binary.AppendUvarint(hugeCount, 1<<40)

	tests := []struct {
		name string
		fi   int // -1: a state
		data []byte
	}{
		{"empty state", -1, nil},
		{"state version 0", -1, append([]byte{0}, state[1:]...)},
		{"state version 2", -1, append([]byte{2}, state[1:]...)},
		{"state trailing byte", -1, append(bytes.Clone(state), 0)},
		{"empty feature", spend, nil},
		{"feature version 2", spend, append([]byte{2}, feature[1:]...)},
		{"feature trailing byte", spend, append(bytes.Clone(feature), 0)},
		{"tiles out of order", spend, outOfOrder},
		{"duplicate tile", spend, duplicate},
		{"more items than k", lastItems, tooMany},
		{"tile count beyond data", spend, hugeCount},
		{"bad varint", spend, []byte{featureVersion, 1, 0x80, 0x80, 0x80}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.fi < 0 {
				_, err = top.DecodeState(tt.data)
			} else {
				_, err = top.DecodeFeature(tt.fi, tt.data)
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("decode = %v, want ErrCorrupt", err)
			}
		})
	}

	t.Run("corrupt feature in a state", func(t *testing.T) {
		// A state whose spend_24h payload has its tiles out of order.
		bad := []byte{stateVersion}
		bad = binary.AppendVarint(bad, 0)
		bad = binary.AppendUvarint(bad, 1)
		bad = binary.AppendUvarint(bad, uint64(len("spend_24h")))
		bad = append(bad, "spend_24h"...)
		bad = binary.AppendUvarint(bad, uint64(len(outOfOrder)))
		bad = append(bad, outOfOrder...)
		if _, err := top.DecodeState(bad); !errors.Is(err, ErrCorrupt) {
			t.Errorf("DecodeState = %v, want ErrCorrupt", err)
		}
	})
}

func TestDecodeDoesNotAlias(t *testing.T) {
	top := mustTopology(t, pruneSpec)
	st := filledState(t, top, 50, "kind")
	enc := top.AppendState(nil, st)
	got, err := top.DecodeState(enc)
	if err != nil {
		t.Fatal(err)
	}
	for i := range enc {
		enc[i] = 0xff
	}
	if again := top.AppendState(nil, got); !bytes.Equal(again, top.AppendState(nil, st)) {
		t.Error("overwriting the encoding changed the decoded state")
	}
}

func TestAppendStateAppends(t *testing.T) {
	top := mustTopology(t, pruneSpec)
	st := filledState(t, top, 20, "kind")
	enc := top.AppendState(nil, st)
	prefixed := top.AppendState([]byte("prefix"), st)
	if !bytes.Equal(prefixed, append([]byte("prefix"), enc...)) {
		t.Error("AppendState does not append to dst")
	}
	empty := top.NewEntityState()
	got, err := top.DecodeState(top.AppendState(nil, empty))
	if err != nil {
		t.Fatal(err)
	}
	for fi := range top.Features {
		if len(got.Features[fi]) != 0 {
			t.Errorf("feature %d of an empty state has %d tiles", fi, len(got.Features[fi]))
		}
	}
}

func TestAppendDecodedFeature(t *testing.T) {
	top := mustTopology(t, pruneSpec)
	st := filledState(t, top, 200, "kind")
	for fi := range top.Features {
		enc := top.AppendFeature(nil, fi, st.Features[fi])
		want, err := top.DecodeFeature(fi, enc)
		if err != nil {
			t.Fatal(err)
		}
		prefix := []Tile{{Start: -1, Count: 7}}
		got, err := top.AppendDecodedFeature(slices.Clip(prefix), fi, enc)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1+len(want) || got[0].Count != 7 {
			t.Fatalf("%s: AppendDecodedFeature kept %d tiles and prefix %+v", top.Features[fi].Name, len(got), got[0])
		}
		if a, b := top.AppendFeature(nil, fi, got[1:]), top.AppendFeature(nil, fi, want); !bytes.Equal(a, b) {
			t.Errorf("%s: appended tiles differ from DecodeFeature's", top.Features[fi].Name)
		}
		// Reusing the capacity of an earlier decode.
		again, err := top.AppendDecodedFeature(got[:0], fi, enc)
		if err != nil || !bytes.Equal(top.AppendFeature(nil, fi, again), enc) {
			t.Errorf("%s: decode into reused tiles: %v", top.Features[fi].Name, err)
		}
		if bad, err := top.AppendDecodedFeature(prefix, fi, enc[:len(enc)-1]); err == nil && len(enc) > 2 || len(bad) != 1 {
			t.Errorf("%s: truncated decode = %d tiles, %v; want the prefix back and an error", top.Features[fi].Name, len(bad), err)
		}
	}
}

// TestAppendSized: the length prefix is right for outputs whose length
// takes one, two or three bytes, and what came before stays.
func TestAppendSized(t *testing.T) {
	for _, n := range []int{0, 1, 127, 128, 300, 16383, 16384, 20000} {
		body := make([]byte, n)
		for i := range body {
			body[i] = byte(i*7 + n)
		}
		got := appendSized([]byte("head"), func(dst []byte) []byte { return append(dst, body...) })
		if string(got[:4]) != "head" {
			t.Fatalf("n=%d: prefix before the mark changed: %q", n, got[:4])
		}
		size, k := binary.Uvarint(got[4:])
		if k <= 0 || size != uint64(n) || !bytes.Equal(got[4+k:], body) {
			t.Fatalf("n=%d: decoded length %d (%d bytes), body equal %v", n, size, k, bytes.Equal(got[4+k:], body))
		}
	}
}

// TestEncodedFeatures: a state's encoding holds each stateful feature's
// AppendFeature bytes, found by EncodedFeatures; derived features have
// none. An encoding under another spec, or cut short, is refused.
func TestEncodedFeatures(t *testing.T) {
	for name, c := range map[string]struct {
		top       *Topology
		typeField string
	}{"shop": {mustShop(t), "type"}, "derived": {mustTopology(t, derivedSpec), "kind"}} {
		top := c.top
		st := filledState(t, top, 300, c.typeField)
		enc := top.AppendState(nil, st)
		got, last, ok := top.EncodedFeatures(enc, nil)
		if !ok || last != st.LastEventMs {
			t.Fatalf("%s: its own encoding: ok %v, last event %d, want %d", name, ok, last, st.LastEventMs)
		}
		for fi, f := range top.Features {
			switch {
			case f.Derived() && got[fi] != nil:
				t.Errorf("%s: derived %s has %d bytes", name, f.Name, len(got[fi]))
			case !f.Derived() && !bytes.Equal(got[fi], top.AppendFeature(nil, fi, st.Features[fi])):
				t.Errorf("%s: %s: %x, want AppendFeature's %x", name, f.Name, got[fi], top.AppendFeature(nil, fi, st.Features[fi]))
			}
		}
		for cut := range len(enc) {
			if _, _, ok := top.EncodedFeatures(enc[:cut], nil); ok {
				t.Fatalf("%s: encoding cut to %d of %d bytes accepted", name, cut, len(enc))
			}
		}
	}
	// The shop spec's state under a spec with one feature fewer, and under
	// one with the same features in another order.
	shop := mustShop(t)
	enc := shop.AppendState(nil, filledState(t, shop, 100, "type"))
	fewer := mustTopology(t, `app: shop
source:
  topic: events
features:
  - name: views_1h
    where: type == "view"
    agg: count
    window: 1h
`)
	if _, _, ok := fewer.EncodedFeatures(enc, nil); ok {
		t.Error("an encoding with features the spec lacks accepted")
	}
	reordered := reversedShop(t)
	if _, _, ok := reordered.EncodedFeatures(enc, nil); ok {
		t.Error("an encoding accepted by a spec with its features reversed")
	}
}

// TestEncodedFeaturesKindChanged: a feature whose aggregation changed under
// the same name is refused, not copied in the old aggregation's format,
// where the encoding says its aggregation (version 2 features; version 1
// encodings do not, and decoding them has the same limit: a processor
// refuses such a spec change at start).
func TestEncodedFeaturesKindChanged(t *testing.T) {
	spec := func(agg string) *Topology {
		return mustTopology(t, `app: shop
source:
  topic: events
features:
  - name: views_1h
    where: kind == "view"
    agg: count
    window: 1h
  - name: items_1h
    agg: `+agg+`
    field: item_id
    window: 1h
`)
	}
	exact, approx := spec("count_distinct"), spec("approx_distinct")
	enc := exact.AppendState(nil, filledState(t, exact, 100, "kind"))
	if _, _, ok := exact.EncodedFeatures(enc, nil); !ok {
		t.Fatal("its own encoding refused")
	}
	if _, _, ok := approx.EncodedFeatures(enc, nil); ok {
		t.Error("count_distinct tiles accepted as approx_distinct ones")
	}
}

// TestStateFeatures: a state's encoding read under any spec gives each of
// that spec's stateful features it holds, found by name, and nil for the
// ones it lacks; a cut or padded encoding is corrupt.
func TestStateFeatures(t *testing.T) {
	shop := mustShop(t)
	st := filledState(t, shop, 300, "type")
	enc := shop.AppendState(nil, st)
	check := func(name string, top *Topology) {
		t.Helper()
		got, last, err := top.StateFeatures(enc, nil)
		if err != nil || last != st.LastEventMs {
			t.Fatalf("%s: err %v, last event %d, want %d", name, err, last, st.LastEventMs)
		}
		for fi, f := range top.Features {
			si, inShop := shop.byName[f.Name]
			var want []byte
			if inShop && !f.Derived() {
				want = shop.AppendFeature(nil, si, st.Features[si])
			}
			if !bytes.Equal(got[fi], want) || (want == nil) != (got[fi] == nil) {
				t.Errorf("%s: %s: %x, want %x", name, f.Name, got[fi], want)
			}
		}
	}
	check("shop", shop)
	check("derived", mustTopology(t, derivedSpec))
	check("fewer", mustTopology(t, `app: shop
source:
  topic: events
features:
  - name: views_1h
    where: type == "view"
    agg: count
    window: 1h
  - name: not_in_shop
    agg: count
    window: 1h
`))
	reordered := reversedShop(t)
	check("reordered", reordered)
	for cut := range len(enc) {
		if _, _, err := shop.StateFeatures(enc[:cut], nil); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("encoding cut to %d of %d bytes: err %v, want ErrCorrupt", cut, len(enc), err)
		}
	}
	if _, _, err := shop.StateFeatures(append(enc[:len(enc):len(enc)], 0), nil); !errors.Is(err, ErrCorrupt) {
		t.Errorf("a trailing byte: err %v, want ErrCorrupt", err)
	}
}

// reversedShop is the shop spec with its features in reverse order.
func reversedShop(t *testing.T) *Topology {
	t.Helper()
	spec, err := LoadSpec(shopSpecPath)
	if err != nil {
		t.Fatal(err)
	}
	slices.Reverse(spec.Features)
	top, err := Compile(spec)
	if err != nil {
		t.Fatal(err)
	}
	return top
}
