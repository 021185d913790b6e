package topology

import "slices"

// SlotKind is what a Slot holds.
type SlotKind uint8

const (
	// SlotAbsent is a field missing from the event, or null.
	SlotAbsent SlotKind = iota
	// SlotNumber is a number, in Slot.Num.
	SlotNumber
	// SlotString is a string, in Slot.Str.
	SlotString
	// SlotOther is any other value (a bool, an object as map[string]any,
	// an array as []any), in Slot.Any.
	SlotOther
)

// Slot is one top-level event field, decoded without boxing it in an
// interface or copying its string.
type Slot struct {
	Kind SlotKind
	Num  float64
	// Str may share memory with the decoded input; Apply copies what it
	// keeps of it.
	Str string
	Any any
}

// Value returns the slot's value as Event.Fields would hold it, and false
// when it is absent.
func (s *Slot) Value() (any, bool) {
	switch s.Kind {
	case SlotNumber:
		return s.Num, true
	case SlotString:
		return s.Str, true
	case SlotOther:
		return s.Any, s.Any != nil
	}
	return nil, false
}

// SlotFields returns the top-level event fields Apply reads from
// Event.Slots, slot i holding names[i], or ok false when Apply needs
// Event.Fields instead: a where expression other than a field compared with
// a string literal, or a dotted field path.
func (t *Topology) SlotFields() (names []string, ok bool) {
	return slices.Clone(t.slotNames), t.slotted
}

// compileSlots gives every field Apply reads a slot, if Apply can read all
// of them from slots.
func (t *Topology) compileSlots() {
	if t.needVM {
		return
	}
	var names []string
	for i := range t.Features {
		if p := t.Features[i].fieldPath; len(p) > 1 {
			return
		} else if len(p) == 1 {
			names = append(names, p[0])
		}
	}
	for _, flt := range t.filters {
		names = append(names, flt.eq.field)
	}
	slices.Sort(names)
	t.slotNames, t.slotted = slices.Compact(names), true
	slot := func(name string) int {
		i, _ := slices.BinarySearch(t.slotNames, name)
		return i
	}
	for i := range t.Features {
		if f := &t.Features[i]; len(f.fieldPath) == 1 {
			f.slot = slot(f.fieldPath[0])
		}
	}
	for i := range t.filters {
		t.filters[i].eq.slot = slot(t.filters[i].eq.field)
	}
}
