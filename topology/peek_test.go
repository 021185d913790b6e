package topology

import (
	"errors"
	"testing"
)

func TestPeekLastEventMs(t *testing.T) {
	spec, err := LoadSpec("../examples/shop/spec.yaml")
	if err != nil {
		t.Fatal(err)
	}
	top, err := Compile(spec)
	if err != nil {
		t.Fatal(err)
	}
	st := top.NewEntityState()
	for _, ms := range []int64{5_000, 9_000, 7_000} {
		if err := top.Apply(st, &Event{Key: "u", TimeMs: ms, Fields: map[string]any{"type": "view", "item_id": "i"}}, 0); err != nil {
			t.Fatal(err)
		}
	}
	got, err := PeekLastEventMs(top.AppendState(nil, st))
	if err != nil || got != 9_000 {
		t.Fatalf("PeekLastEventMs = %d, %v; want 9000", got, err)
	}
	for _, bad := range [][]byte{nil, {9}, {stateVersion}, {stateVersion, 0x80}} {
		if _, err := PeekLastEventMs(bad); !errors.Is(err, ErrCorrupt) {
			t.Errorf("PeekLastEventMs(%v) err = %v, want ErrCorrupt", bad, err)
		}
	}
}
