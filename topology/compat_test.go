package topology

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
)

// The fixtures under testdata/ were written by the version 1 encoder (the
// release before window kinds and sketches) and must decode, to the same
// values, in every later release. They are never regenerated: the write
// path below is kept only to document how they were made.
const (
	fixtureV1State  = "testdata/state_v1.bin"
	fixtureV1Values = "testdata/state_v1.values"
)

// fixtureSpec has every aggregation of version 1, windowed and lifetime,
// and the shop features. Never change it: the fixture was written under it.
const fixtureSpec = `app: fuzz
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
  - name: views_1h
    where: kind == "view"
    agg: count
    window: 1h
  - name: spend_24h
    where: kind == "purchase"
    agg: sum
    field: price
    window: 24h
  - name: last_items
    agg: last_k
    field: item_id
    k: 10
`

// fixtureValues renders every feature's value at a few instants, one line
// each, so a fixture's meaning is pinned as text.
func fixtureValues(top *Topology, st *EntityState) string {
	var b strings.Builder
	fmt.Fprintf(&b, "last_event_ms %d\n", st.LastEventMs)
	for fi := range top.Features {
		for _, asOf := range []int64{st.LastEventMs, st.LastEventMs - 30*msMinute, st.LastEventMs + 90*msMinute} {
			v := top.Evaluate(fi, st.Features[fi], asOf)
			fmt.Fprintf(&b, "%s@%d present=%v int=%d float=%v str=%q list=%q window=[%d,%d]\n",
				top.Features[fi].Name, asOf, v.Present, v.Int, v.Float, v.Str, v.List, v.WindowStartMs, v.WindowEndMs)
		}
	}
	return b.String()
}

func TestDecodeVersion1Fixture(t *testing.T) {
	top := mustTopology(t, fixtureSpec)
	if os.Getenv("FEATURESTREAM_WRITE_V1_FIXTURE") == "1" {
		st := filledState(t, top, 600, "kind")
		if err := os.WriteFile(fixtureV1State, top.AppendState(nil, st), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(fixtureV1Values, []byte(fixtureValues(top, st)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	enc, err := os.ReadFile(fixtureV1State)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(fixtureV1Values)
	if err != nil {
		t.Fatal(err)
	}
	st, err := top.DecodeState(enc)
	if err != nil {
		t.Fatalf("DecodeState(version 1 fixture): %v", err)
	}
	if got := fixtureValues(top, st); got != string(want) {
		t.Errorf("values of the version 1 fixture changed:\n got: %s\nwant: %s", got, want)
	}
	// These features are still written in version 1, byte for byte, so a
	// reader of the previous release can read what this one writes.
	if again := top.AppendState(nil, st); !bytes.Equal(again, enc) {
		t.Errorf("re-encoding the version 1 fixture differs (%d bytes, fixture %d)", len(again), len(enc))
	}
	for fi := range top.Features {
		tiles, err := top.DecodeFeature(fi, top.AppendFeature(nil, fi, st.Features[fi]))
		if err != nil {
			t.Fatalf("%s: DecodeFeature: %v", top.Features[fi].Name, err)
		}
		if v1, v2 := top.Evaluate(fi, tiles, st.LastEventMs), top.Evaluate(fi, st.Features[fi], st.LastEventMs); !valuesIdentical(v1, v2) {
			t.Errorf("%s: %+v after DecodeFeature, %+v before", top.Features[fi].Name, v1, v2)
		}
	}
}
