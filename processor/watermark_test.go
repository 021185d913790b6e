package processor

import (
	"math"
	"testing"

	"github.com/featurestream/featurestream/state"
)

// TestWatermarkIdleAdvance: the watermark is max event time − grace, and
// while a partition is idle beyond idle_timeout it advances with the wall
// clock; it never goes back, not when an event ends the idleness, and a
// rolled-back transaction restores the committed one.
func TestWatermarkIdleAdvance(t *testing.T) {
	p := &Processor{grace: 300_000, idle: 30_000}
	tk := p.newTask(0, state.Meta{MaxEventMs: math.MinInt64})
	if wm := tk.watermark(1); wm != math.MinInt64 {
		t.Fatalf("no events yet: watermark %d, want none", wm)
	}
	tk.maxEventMs, tk.lastArrivalMs = 1_000_000, 10_000
	steps := []struct {
		now, want int64
	}{
		{now: 20_000, want: 700_000}, // not idle long enough
		{now: 40_000, want: 700_000}, // exactly idle_timeout
		{now: 45_000, want: 705_000}, // 5s past idle_timeout
		{now: 10_000 + 30_000 + 60_000, want: 760_000},
	}
	for _, s := range steps {
		if got := tk.watermark(s.now); got != s.want {
			t.Fatalf("at %d: watermark %d, want %d", s.now, got, s.want)
		}
	}
	tk.committedWmFloor = tk.wmFloor
	// An event arrives: idleness ends, but the watermark keeps its value.
	tk.lastArrivalMs = 100_000
	if got := tk.watermark(100_000); got != 760_000 {
		t.Fatalf("after an event: watermark %d, want 760000", got)
	}
	// Newer events move it on as usual.
	tk.maxEventMs = 1_100_000
	if got := tk.watermark(100_001); got != 800_000 {
		t.Fatalf("after a newer event: watermark %d, want 800000", got)
	}
	tk.rollback()
	if tk.wmFloor != 760_000 {
		t.Fatalf("after rollback: floor %d, want the committed 760000", tk.wmFloor)
	}
}
