package serving

import (
	"context"
	"testing"
	"time"

	"github.com/featurestream/featurestream/internal/testshop"
	pb "github.com/featurestream/featurestream/proto/featurestream/v1"
	"github.com/featurestream/featurestream/sinks"
	"github.com/featurestream/featurestream/topology"
)

// staleTopology is the shop spec with max_staleness set on views_1h only.
func staleTopology(t testing.TB, maxStaleness time.Duration) *topology.Topology {
	t.Helper()
	spec := testshop.Spec(t)
	spec.Features[0].MaxStaleness = topology.Duration(maxStaleness)
	top, err := topology.Compile(spec)
	if err != nil {
		t.Fatal(err)
	}
	return top
}

func statuses(t *testing.T, e *env, ids ...string) [][]pb.FeatureValue_Status {
	t.Helper()
	resp, err := e.client.GetFeatures(context.Background(), &pb.GetFeaturesRequest{EntityIds: ids})
	if err != nil {
		t.Fatal(err)
	}
	var out [][]pb.FeatureValue_Status
	for _, r := range resp.GetResults() {
		var row []pb.FeatureValue_Status
		for _, v := range r.GetValues() {
			row = append(row, v.GetStatus())
			// STALE still says what is known.
			if v.GetStatus() == pb.FeatureValue_STALE && v.GetValue() == nil {
				t.Errorf("%s %s: STALE without a value", r.GetEntityId(), v.GetName())
			}
		}
		out = append(out, row)
	}
	return out
}

const (
	stPresent = pb.FeatureValue_PRESENT
	stStale   = pb.FeatureValue_STALE
	stMissing = pb.FeatureValue_NOT_FOUND
)

func TestStaleByAge(t *testing.T) {
	e := startTop(t, Config{}, staleTopology(t, time.Minute))
	e.write(t, sinks.Record{Entity: "u1", Partition: 1, Version: 1, State: state(t, e.top, u1Events...)})
	read, err := e.store.Read(context.Background(), []string{"u1"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	w := read[0].WrittenMs
	// An entity whose writer gave no write time cannot be shown fresh.
	if err := setRaw(e, "old", t0, 0, "views_1h", string(e.top.AppendFeature(nil, 0, nil))); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		now  int64
		u1   []pb.FeatureValue_Status
	}{
		{"just written", w, []pb.FeatureValue_Status{stPresent, stPresent, stPresent, stPresent}},
		{"at max_staleness", w + minute, []pb.FeatureValue_Status{stPresent, stPresent, stPresent, stPresent}},
		// Only views_1h has a max_staleness.
		{"older than max_staleness", w + minute + 1, []pb.FeatureValue_Status{stStale, stPresent, stPresent, stPresent}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.srv.now = func() time.Time { return time.UnixMilli(tt.now) }
			got := statuses(t, e, "u1", "old", "nobody")
			want := [][]pb.FeatureValue_Status{
				tt.u1,
				{stStale, stMissing, stMissing, stMissing},
				{stMissing, stMissing, stMissing, stMissing},
			}
			if !equalStatuses(got, want) {
				t.Errorf("statuses %v, want %v", got, want)
			}
		})
	}
}

func TestStaleWhileRestoring(t *testing.T) {
	e := start(t, Config{})
	e.write(t,
		sinks.Record{Entity: "u1", Partition: 3, Version: 1, State: state(t, e.top, u1Events...)},
		sinks.Record{Entity: "u2", Partition: 1, Version: 1, State: state(t, e.top, u1Events...)},
	)
	ctx := context.Background()
	all := func(st pb.FeatureValue_Status) []pb.FeatureValue_Status {
		return []pb.FeatureValue_Status{st, st, st, st}
	}
	// The cache refreshes in the background: wait for it to catch up.
	waitStatuses := func(want [][]pb.FeatureValue_Status) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			got := statuses(t, e, "u1", "u2", "nobody")
			if equalStatuses(got, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("statuses %v, want %v", got, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitStatuses([][]pb.FeatureValue_Status{all(stPresent), all(stPresent), all(stMissing)})
	if err := e.store.SetPartitionRestoring(ctx, 3, true); err != nil {
		t.Fatal(err)
	}
	waitStatuses([][]pb.FeatureValue_Status{all(stStale), all(stPresent), all(stMissing)})
	if err := e.store.SetPartitionRestoring(ctx, 3, false); err != nil {
		t.Fatal(err)
	}
	waitStatuses([][]pb.FeatureValue_Status{all(stPresent), all(stPresent), all(stMissing)})
}

func equalStatuses(a, b [][]pb.FeatureValue_Status) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if len(a[i]) != len(b[i]) {
			return false
		}
		for j := range a[i] {
			if a[i][j] != b[i][j] {
				return false
			}
		}
	}
	return true
}
