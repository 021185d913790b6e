package serving

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/featurestream/featurestream/proto/featurestream/v1"
	"github.com/featurestream/featurestream/sinks"
	"github.com/featurestream/featurestream/topology"
)

// TestEveryValueType: each topology value type reaches the caller in its
// oneof case, with the value topology computes, and ListFeatures describes
// each feature. The values themselves are topology's to get right.
func TestEveryValueType(t *testing.T) {
	spec, err := topology.LoadSpec("testdata/every-type.yaml")
	if err != nil {
		t.Fatal(err)
	}
	top, err := topology.Compile(spec)
	if err != nil {
		t.Fatal(err)
	}
	e := startTop(t, Config{}, top)
	st := top.NewEntityState()
	for i, item := range []string{"a", "b", "a", "c", "a"} {
		ev := topology.Event{TimeMs: t0 + int64(i)*minute, Fields: map[string]any{"item_id": item, "price": float64(10 * (i + 1))}}
		if err := top.Apply(st, &ev, ev.TimeMs); err != nil {
			t.Fatal(err)
		}
	}
	e.write(t, sinks.Record{Entity: "u", Version: 1, State: st})
	asOf := t0 + 10*minute
	resp, err := e.client.GetFeatures(context.Background(), &pb.GetFeaturesRequest{EntityIds: []string{"u"}, AsOf: ts(asOf)})
	if err != nil {
		t.Fatal(err)
	}
	vals := resp.GetResults()[0].GetValues()
	if len(vals) != len(top.Features) {
		t.Fatalf("%d values for %d features", len(vals), len(top.Features))
	}
	for fi, got := range vals {
		f := &top.Features[fi]
		v := top.Evaluate(fi, st.Features[fi], asOf)
		want := &pb.FeatureValue{Name: f.Name, Status: pb.FeatureValue_PRESENT, Approximate: v.Approximate}
		switch f.Type {
		case topology.TypeInt64:
			want.Value = &pb.FeatureValue_Int64Value{Int64Value: v.Int}
		case topology.TypeDouble:
			want.Value = &pb.FeatureValue_DoubleValue{DoubleValue: v.Float}
		case topology.TypeString:
			want.Value = &pb.FeatureValue_StringValue{StringValue: v.Str}
		case topology.TypeStringList:
			want.Value = &pb.FeatureValue_StringListValue{StringListValue: &pb.StringList{Values: v.List}}
		case topology.TypeDoubleList:
			want.Value = &pb.FeatureValue_DoubleListValue{DoubleListValue: &pb.DoubleList{Values: v.Floats}}
		case topology.TypeItemCounts:
			ic := &pb.ItemCounts{}
			for _, c := range v.Counts {
				ic.Items = append(ic.Items, &pb.ItemCount{Value: c.Value, Count: c.Count})
			}
			want.Value = &pb.FeatureValue_ItemCountsValue{ItemCountsValue: ic}
		default:
			t.Fatalf("%s: value type %v unknown to this test", f.Name, f.Type)
		}
		if !f.Lifetime() {
			want.WindowStart, want.WindowEnd = ts(v.WindowStartMs), ts(v.WindowEndMs)
		}
		checkResponse(t, got, want)
	}
	// count_distinct over 3 items with max_distinct 2 is an estimate.
	if j, _ := top.FeatureIndex("items_seen"); !vals[j].GetApproximate() {
		t.Errorf("items_seen: approximate not set past max_distinct")
	}

	list, err := e.client.ListFeatures(context.Background(), &pb.ListFeaturesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*pb.FeatureInfo{}
	for _, fi := range list.GetFeatures() {
		byName[fi.GetName()] = fi
	}
	for name, want := range map[string]*pb.FeatureInfo{
		"price_p50":       {Name: "price_p50", Aggregation: "approx_quantile", Field: "price", Window: "1h0m0s", Tile: "5m0s", ValueType: "double", Quantiles: []float64{0.5}},
		"price_quantiles": {Name: "price_quantiles", Aggregation: "approx_quantile", Field: "price", Window: "1h0m0s", Tile: "5m0s", ValueType: "double_list", Quantiles: []float64{0.5, 0.9}},
		"top_items":       {Name: "top_items", Aggregation: "top_k", Field: "item_id", Window: "1h0m0s", Tile: "5m0s", ValueType: "item_counts", K: 2},
		"last_items":      {Name: "last_items", Aggregation: "last_k", Field: "item_id", ValueType: "string_list", K: 3},
	} {
		if !proto.Equal(byName[name], want) {
			t.Errorf("ListFeatures %s = %v, want %v", name, byName[name], want)
		}
	}
}

func TestListFeaturesMaxStaleness(t *testing.T) {
	e := startTop(t, Config{}, staleTopology(t, 90*time.Second))
	list, err := e.client.ListFeatures(context.Background(), &pb.ListFeaturesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got := list.GetFeatures()[0].GetMaxStaleness(); got != "1m30s" {
		t.Errorf("views_1h max_staleness %q, want 1m30s", got)
	}
	if got := list.GetFeatures()[1].GetMaxStaleness(); got != "" {
		t.Errorf("purchases_24h max_staleness %q, want empty", got)
	}
}
