package processor

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/featurestream/featurestream/state"
)

// TestLateEventsByFeature: a late event is dead-lettered once and counted
// in featurestream_late_events_total only for the features it would have
// updated.
func TestLateEventsByFeature(t *testing.T) {
	now := time.UnixMilli(1_764_133_200_000)
	p := offlineProcessor(t, now)
	tk := p.newTask(0, state.Meta{MaxEventMs: math.MinInt64})
	tk.maxEventMs, tk.lastArrivalMs = now.UnixMilli(), now.UnixMilli()
	late := now.UnixMilli() - 24*3600_000
	var recs []*kgo.Record
	for i, v := range []string{
		`{"user_id":"u1","ts":%d,"type":"view","item_id":"i1"}`,               // views_1h, last_items
		`{"user_id":"u1","ts":%d,"type":"purchase","item_id":"i2","price":5}`, // purchases_24h, spend_24h, last_items
		`{"user_id":"u1","ts":%d,"type":"purchase"}`,                          // purchases_24h
		`{"user_id":"u1","ts":%d,"type":"click"}`,                             // none
	} {
		recs = append(recs, &kgo.Record{Topic: "events", Offset: int64(i), Value: fmt.Appendf(nil, v, late)})
	}
	tk.process(recs)
	if len(tk.dlq) != len(recs) {
		t.Fatalf("%d dead letters, want %d", len(tk.dlq), len(recs))
	}
	want := map[string]float64{"views_1h": 1, "purchases_24h": 2, "spend_24h": 1, "last_items": 2}
	for name, n := range want {
		if got := testutil.ToFloat64(p.m.late.WithLabelValues(name)); got != n {
			t.Errorf("late events of %s = %v, want %v", name, got, n)
		}
	}
	if got := testutil.ToFloat64(p.m.rejected.WithLabelValues(ReasonLate)); got != float64(len(recs)) {
		t.Errorf("rejected{late} = %v, want %d", got, len(recs))
	}
}
