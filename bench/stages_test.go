package bench

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestBucketQuantile(t *testing.T) {
	bounds := []float64{0.1, 0.2, 0.4}
	// 10 at or below 0.1, 10 in (0.1, 0.2], none in (0.2, 0.4], 1 above.
	cum := []uint64{10, 20, 20}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{
		{0.25, 52500 * time.Microsecond},  // rank 5.25 of 10 in [0, 0.1]
		{0.5, 105 * time.Millisecond},     // rank 10.5: half a sample into (0.1, 0.2]
		{0.95, 199500 * time.Microsecond}, // rank 19.95
		{0.99, 400 * time.Millisecond},    // rank 20.79: past the last bound
	} {
		if got := bucketQuantile(tc.q, bounds, cum, 21); got != tc.want {
			t.Errorf("q %v: got %v, want %v", tc.q, got, tc.want)
		}
	}
}

// TestStagesBetween: a stage covers only what was observed between the two
// snapshots.
func TestStagesBetween(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "featurestream_commit_duration_seconds", Buckets: []float64{0.01, 0.02, 0.04}})
	reg.MustRegister(h)
	for range 100 {
		h.Observe(0.035) // before: would move p50 into the last bucket
	}
	before, err := snapshotHists(reg)
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		h.Observe(0.005)
	}
	after, err := snapshotHists(reg)
	if err != nil {
		t.Fatal(err)
	}
	st := stagesBetween(before, after)
	if len(st) != 1 || st[0].N != 10 || st[0].P50 != 5*time.Millisecond || st[0].P99 != 9900*time.Microsecond {
		t.Fatalf("stages %+v; want one commit stage of 10 observations, p50 5ms, p99 9.9ms", st)
	}
}
