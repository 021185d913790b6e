package topology

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"pgregory.net/rapid"
)

// allAggsTopology has a 1h feature of every aggregation, over price or
// item_id, every third filtered by type == "view" and every third by
// "view" != type.
func allAggsTopology(t *testing.T) *Topology {
	t.Helper()
	var spec strings.Builder
	spec.WriteString("app: shop\nsource:\n  topic: events\n  format: json\n  key: user_id\n  time: ts\nfeatures:\n")
	for i, agg := range allAggs {
		field := "item_id"
		if numericAggs[agg] {
			field = "price"
		}
		where := []string{"", `type == "view"`, `"view" != type`}[i%3]
		fmt.Fprintf(&spec, "  - name: f%d\n    agg: %s\n    window: 1h\n", i, agg)
		if agg != "count" {
			fmt.Fprintf(&spec, "    field: %s\n", field)
		}
		if where != "" {
			fmt.Fprintf(&spec, "    where: '%s'\n", where)
		}
		spec.WriteString(aggExtra(agg))
	}
	return compileYAML(t, spec.String())
}

// TestCloneState: a clone encodes as its original does, and applying
// events to it leaves the original as it was, for every aggregation.
func TestCloneState(t *testing.T) {
	top := allAggsTopology(t)
	t0 := int64(1_764_133_200_000)
	apply := func(st *EntityState, seed int) {
		for i := range 50 {
			n := seed*50 + i
			fields := map[string]any{"type": []string{"view", "click"}[n%2], "item_id": fmt.Sprint("i", n%7), "price": float64(n % 13)}
			if err := top.Apply(st, &Event{Key: "u", TimeMs: t0 + int64(n)*1000, Fields: fields}, t0); err != nil {
				t.Fatal(err)
			}
		}
	}
	orig := top.NewEntityState()
	apply(orig, 0)
	before := top.AppendState(nil, orig)
	clone := top.CloneState(orig)
	if !bytes.Equal(top.AppendState(nil, clone), before) {
		t.Fatal("the clone encodes differently from its original")
	}
	apply(clone, 1)
	if !bytes.Equal(top.AppendState(nil, orig), before) {
		t.Fatal("applying events to the clone changed the original")
	}
	if bytes.Equal(top.AppendState(nil, clone), before) {
		t.Fatal("the events did not change the clone: the test shows nothing")
	}
}

// slotsOf puts fields into slots the way a decoder does: JSON numbers are
// float64, strings SlotString, null or missing SlotAbsent, anything else
// SlotOther.
func slotsOf(names []string, fields map[string]any) []Slot {
	slots := make([]Slot, len(names))
	for i, name := range names {
		switch v := fields[name].(type) {
		case nil:
		case float64:
			slots[i] = Slot{Kind: SlotNumber, Num: v}
		case string:
			slots[i] = Slot{Kind: SlotString, Str: v}
		default:
			slots[i] = Slot{Kind: SlotOther, Any: v}
		}
	}
	return slots
}

// TestSlotsApplyAsFields: for a topology whose fields are all top level
// and whose filters all compare a field with a literal, applying events
// from slots gives exactly the states and errors that applying them from
// Fields does, for every aggregation and for values of every kind.
func TestSlotsApplyAsFields(t *testing.T) {
	top := allAggsTopology(t)
	names, ok := top.SlotFields()
	if !ok || !slices.Equal(names, []string{"item_id", "price", "type"}) {
		t.Fatalf("SlotFields() = %v, %v; want [item_id price type], true", names, ok)
	}
	values := []any{nil, "view", "purchase", "i1", "i2", "", 1.5, -3.0, 0.0, math.NaN(), math.Inf(-1), 1e300,
		true, false, []any{"x"}, map[string]any{"a": 1.0}, strings.Repeat("x", MaxItemBytes+1)}
	rapid.Check(t, func(rt *rapid.T) {
		viaFields, viaSlots := top.NewEntityState(), top.NewEntityState()
		t0 := int64(1_764_133_200_000)
		for i := range rapid.IntRange(1, 40).Draw(rt, "events") {
			fields := map[string]any{}
			for _, name := range names {
				if v := rapid.IntRange(-1, len(values)-1).Draw(rt, name); v >= 0 {
					fields[name] = values[v]
				}
			}
			ts := t0 + rapid.Int64Range(0, 3_600_000).Draw(rt, "dt")
			errFields := top.Apply(viaFields, &Event{Key: "u", TimeMs: ts, Fields: fields}, t0)
			errSlots := top.Apply(viaSlots, &Event{Key: "u", TimeMs: ts, Slots: slotsOf(names, fields)}, t0)
			if fmt.Sprint(errFields) != fmt.Sprint(errSlots) {
				rt.Fatalf("event %d %v: error from fields %v, from slots %v", i, fields, errFields, errSlots)
			}
			if a, b := top.AppendState(nil, viaFields), top.AppendState(nil, viaSlots); !bytes.Equal(a, b) {
				rt.Fatalf("event %d %v: states differ", i, fields)
			}
		}
	})
}

// TestSlotFieldsNeedFields: a dotted field path or a where expression the
// VM runs makes Apply read Fields.
func TestSlotFieldsNeedFields(t *testing.T) {
	const head = "app: shop\nsource:\n  topic: events\n  format: json\n  key: user_id\n  time: ts\nfeatures:\n"
	for _, features := range []string{
		"  - {name: s, agg: sum, field: item.price, window: 1h}\n",
		"  - {name: n, where: 'price > 10', agg: count, window: 1h}\n",
		"  - {name: n, where: 'len($env) > 3', agg: count, window: 1h}\n",
	} {
		if names, ok := compileYAML(t, head+features).SlotFields(); ok {
			t.Errorf("%s: SlotFields() = %v, true; want false", strings.TrimSpace(features), names)
		}
	}
}

// TestSlotsKeepNoBorrowedString: strings Apply reads from slots may be
// views of a record's bytes, which a state must not keep: after the
// records' buffers are overwritten, a state built from slots still equals
// one built from fields, for every aggregation, with values seen once and
// again (a map assignment stores its key even over an equal one).
func TestSlotsKeepNoBorrowedString(t *testing.T) {
	top := allAggsTopology(t)
	names, _ := top.SlotFields()
	t0 := int64(1_764_133_200_000)
	viaFields, viaSlots := top.NewEntityState(), top.NewEntityState()
	var bufs [][]byte
	for i, item := range []string{"i1", "i2", "i1", "i1", "i3", "i2"} {
		// Every filter sees a value more than once.
		fields := map[string]any{"type": []string{"view", "click"}[i%2], "item_id": item, "price": float64(i)}
		ts := t0 + int64(i)*1000
		if err := top.Apply(viaFields, &Event{Key: "u", TimeMs: ts, Fields: fields}, t0); err != nil {
			t.Fatal(err)
		}
		slots := slotsOf(names, fields)
		for j := range slots {
			if slots[j].Kind == SlotString {
				b := []byte(slots[j].Str)
				bufs = append(bufs, b)
				slots[j].Str = unsafe.String(&b[0], len(b))
			}
		}
		if err := top.Apply(viaSlots, &Event{Key: "u", TimeMs: ts, Slots: slots}, t0); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range bufs {
		for i := range b {
			b[i] = 'X'
		}
	}
	if a, b := top.AppendState(nil, viaFields), top.AppendState(nil, viaSlots); !bytes.Equal(a, b) {
		t.Fatal("a state applied from slots changed when the records' bytes did: it keeps a borrowed string")
	}
}
