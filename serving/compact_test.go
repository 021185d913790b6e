package serving

import (
	"context"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/featurestream/featurestream/proto/featurestream/v1"
	"github.com/featurestream/featurestream/sinks"
)

// TestCompact: a compact response is the verbose one with each value's
// name and shared window moved to its column, and nothing else changed.
func TestCompact(t *testing.T) {
	e := start(t, Config{})
	e.write(t, sinks.Record{Entity: "u1", Version: 1, State: state(t, e.top, u1Events...)})
	for _, features := range [][]string{nil, {"last_items", "spend_24h"}} {
		req := &pb.GetFeaturesRequest{EntityIds: []string{"u1", "ghost", "u1"}, Features: features, AsOf: ts(t0 + 33*minute)}
		verbose, err := e.client.GetFeatures(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		req.Compact = true
		compact, err := e.client.GetFeatures(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		cols := compact.GetColumns()
		if !proto.Equal(&pb.GetFeaturesResponse{Columns: cols}, &pb.GetFeaturesResponse{Columns: verbose.GetColumns()}) {
			t.Fatalf("columns differ between compact and verbose: %v, %v", cols, verbose.GetColumns())
		}
		if len(cols) != len(verbose.GetResults()[0].GetValues()) {
			t.Fatalf("%d columns for %d values", len(cols), len(verbose.GetResults()[0].GetValues()))
		}
		// Expand the compact response by its columns.
		expanded := proto.CloneOf(compact)
		for i, r := range expanded.GetResults() {
			for j, v := range r.GetValues() {
				if v.GetName() != "" {
					t.Errorf("results[%d].values[%d]: compact value has name %q", i, j, v.GetName())
				}
				v.Name = cols[j].GetName()
				if r.GetLastEventTime() != nil && v.GetWindowEnd() == nil {
					v.WindowStart, v.WindowEnd = cols[j].GetWindowStart(), cols[j].GetWindowEnd()
				}
			}
		}
		checkResponse(t, expanded, verbose)
		// The columns are the features asked for, in order, with the
		// windows the values cover.
		for j, v := range verbose.GetResults()[0].GetValues() {
			if cols[j].GetName() != v.GetName() || !proto.Equal(cols[j].GetWindowEnd(), v.GetWindowEnd()) || !proto.Equal(cols[j].GetWindowStart(), v.GetWindowStart()) {
				t.Errorf("columns[%d] = %v, value %v", j, cols[j], v)
			}
		}
		if compactSize, verboseSize := proto.Size(compact), proto.Size(verbose); compactSize >= verboseSize {
			t.Errorf("compact response %d bytes, verbose %d", compactSize, verboseSize)
		}
	}
}
