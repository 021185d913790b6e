package client

import (
	"math"
	"math/rand/v2"
	"reflect"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/featurestream/featurestream/proto/featurestream/v1"
)

// randomResponse makes a response with every kind of value, compact or
// not, with random presence of each optional field.
func randomResponse(rng *rand.Rand) *pb.GetFeaturesResponse {
	ts := func() *timestamppb.Timestamp {
		if rng.IntN(4) == 0 {
			return nil
		}
		return &timestamppb.Timestamp{Seconds: rng.Int64N(4e9) - 1e9, Nanos: rng.Int32N(1e9)}
	}
	str := func() string { return strconv.Itoa(rng.IntN(1000)) }
	nf := rng.IntN(6)
	resp := &pb.GetFeaturesResponse{AsOf: ts()}
	compact := rng.IntN(2) == 0
	if compact || rng.IntN(2) == 0 {
		for j := range nf {
			resp.Columns = append(resp.Columns, &pb.FeatureColumn{Name: "f" + strconv.Itoa(j), WindowStart: ts(), WindowEnd: ts()})
		}
	}
	for range rng.IntN(5) {
		ent := &pb.EntityFeatures{EntityId: str(), LastEventTime: ts()}
		for j := range nf {
			v := &pb.FeatureValue{Status: pb.FeatureValue_Status(rng.IntN(5)), Approximate: rng.IntN(3) == 0}
			if !compact {
				v.Name, v.WindowStart, v.WindowEnd = "f"+strconv.Itoa(j), ts(), ts()
			}
			switch rng.IntN(7) {
			case 1:
				v.Value = &pb.FeatureValue_Int64Value{Int64Value: rng.Int64() - math.MaxInt64/2}
			case 2:
				v.Value = &pb.FeatureValue_DoubleValue{DoubleValue: rng.NormFloat64() * 1e6}
			case 3:
				v.Value = &pb.FeatureValue_StringValue{StringValue: str()}
			case 4:
				l := &pb.StringList{}
				for range rng.IntN(4) {
					l.Values = append(l.Values, str())
				}
				v.Value = &pb.FeatureValue_StringListValue{StringListValue: l}
			case 5:
				l := &pb.DoubleList{}
				for range rng.IntN(4) {
					l.Values = append(l.Values, rng.Float64())
				}
				v.Value = &pb.FeatureValue_DoubleListValue{DoubleListValue: l}
			case 6:
				l := &pb.ItemCounts{}
				for range rng.IntN(4) {
					l.Items = append(l.Items, &pb.ItemCount{Value: str(), Count: rng.Int64N(100)})
				}
				v.Value = &pb.FeatureValue_ItemCountsValue{ItemCountsValue: l}
			}
			ent.Values = append(ent.Values, v)
		}
		resp.Results = append(resp.Results, ent)
	}
	return resp
}

// view is what a caller sees of one response through this package.
type entityView struct {
	ID     string
	Last   time.Time
	Found  bool
	Values []valueView
}

type valueView struct {
	Name        string
	Status      Status
	Any         any
	Approximate bool
	Start, End  time.Time
	HasWindow   bool
}

func viewOf(f *Features) (time.Time, []string, []entityView) {
	var out []entityView
	for i := range f.Len() {
		e := f.Entity(i)
		ev := entityView{ID: e.ID(), Found: e.Found()}
		ev.Last, _ = e.LastEventTime()
		for j := range e.Len() {
			v := e.Value(j)
			vv := valueView{Name: v.Name(), Status: v.Status(), Any: v.Any(), Approximate: v.Approximate()}
			vv.Start, vv.End, vv.HasWindow = v.Window()
			ev.Values = append(ev.Values, vv)
		}
		out = append(out, ev)
	}
	return f.AsOf(), f.Names(), out
}

// expected is the same view computed from the generated message.
func expected(resp *pb.GetFeaturesResponse) (time.Time, []string, []entityView) {
	var names []string
	for _, c := range resp.GetColumns() {
		names = append(names, c.GetName())
	}
	if len(resp.GetColumns()) == 0 && len(resp.GetResults()) > 0 {
		for _, v := range resp.GetResults()[0].GetValues() {
			names = append(names, v.GetName())
		}
	}
	var out []entityView
	for _, r := range resp.GetResults() {
		ev := entityView{ID: r.GetEntityId(), Found: r.GetLastEventTime() != nil}
		if ev.Found {
			ev.Last = r.GetLastEventTime().AsTime()
		}
		for j, v := range r.GetValues() {
			vv := valueView{Name: v.GetName(), Approximate: v.GetApproximate()}
			var col *pb.FeatureColumn
			if j < len(resp.GetColumns()) {
				col = resp.GetColumns()[j]
			}
			if vv.Name == "" {
				vv.Name = col.GetName()
			}
			switch v.GetStatus() {
			case pb.FeatureValue_PRESENT:
				vv.Status = Present
			case pb.FeatureValue_NOT_FOUND:
				vv.Status = NotFound
			case pb.FeatureValue_STALE:
				vv.Status = Stale
			default:
				vv.Status = Unknown
			}
			switch x := v.GetValue().(type) {
			case *pb.FeatureValue_Int64Value:
				vv.Any = x.Int64Value
			case *pb.FeatureValue_DoubleValue:
				vv.Any = x.DoubleValue
			case *pb.FeatureValue_StringValue:
				vv.Any = x.StringValue
			case *pb.FeatureValue_StringListValue:
				vv.Any = x.StringListValue.GetValues()
				if x.StringListValue.GetValues() == nil {
					vv.Any = []string{}
				}
			case *pb.FeatureValue_DoubleListValue:
				vv.Any = x.DoubleListValue.GetValues()
				if x.DoubleListValue.GetValues() == nil {
					vv.Any = []float64{}
				}
			case *pb.FeatureValue_ItemCountsValue:
				items := []ItemCount{}
				for _, it := range x.ItemCountsValue.GetItems() {
					items = append(items, ItemCount{Value: it.GetValue(), Count: it.GetCount()})
				}
				vv.Any = items
			}
			switch {
			case v.GetWindowEnd() != nil:
				vv.Start, vv.End, vv.HasWindow = v.GetWindowStart().AsTime(), v.GetWindowEnd().AsTime(), true
			case ev.Found && col.GetWindowEnd() != nil:
				vv.Start, vv.End, vv.HasWindow = col.GetWindowStart().AsTime(), col.GetWindowEnd().AsTime(), true
			}
			ev.Values = append(ev.Values, vv)
		}
		out = append(out, ev)
	}
	return resp.GetAsOf().AsTime(), names, out
}

// normalize makes empty lists comparable: a decoded empty list is an empty
// slice, which DeepEqual tells from nil.
func normalize(evs []entityView) {
	for i := range evs {
		for j := range evs[i].Values {
			switch x := evs[i].Values[j].Any.(type) {
			case []string:
				if len(x) == 0 {
					evs[i].Values[j].Any = []string{}
				}
			case []float64:
				if len(x) == 0 {
					evs[i].Values[j].Any = []float64{}
				}
			case []ItemCount:
				if len(x) == 0 {
					evs[i].Values[j].Any = []ItemCount{}
				}
			}
		}
	}
}

// TestDecodeMatchesGenerated: on random responses, what a caller reads
// through the flat decoder is what the generated code decodes.
func TestDecodeMatchesGenerated(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		resp := randomResponse(rng)
		buf, err := proto.Marshal(resp)
		if err != nil {
			t.Fatal(err)
		}
		d, err := decodeResponse(buf)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		gotAsOf, gotNames, got := viewOf(newFeatures(d))
		wantAsOf, wantNames, want := expected(resp)
		normalize(got)
		normalize(want)
		if !gotAsOf.Equal(wantAsOf) || !sameNames(gotNames, wantNames) || !reflect.DeepEqual(got, want) {
			t.Fatalf("response %d:\n%v\ndecoded as of %v names %q\n%+v\nwant as of %v names %q\n%+v", i, resp, gotAsOf, gotNames, got, wantAsOf, wantNames, want)
		}
	}
}

// TestDecodeSkipsUnknownFields: fields a newer server adds, of any wire
// type and at any level, are skipped.
func TestDecodeSkipsUnknownFields(t *testing.T) {
	resp := &pb.GetFeaturesResponse{
		AsOf:    timestamppb.New(time.Unix(100, 0)),
		Results: []*pb.EntityFeatures{{EntityId: "u1", Values: []*pb.FeatureValue{{Name: "a", Value: &pb.FeatureValue_Int64Value{Int64Value: 7}, Status: pb.FeatureValue_PRESENT}}}},
	}
	var unknown []byte
	unknown = protowire.AppendTag(unknown, 99, protowire.VarintType)
	unknown = protowire.AppendVarint(unknown, 5)
	unknown = protowire.AppendTag(unknown, 98, protowire.Fixed32Type)
	unknown = protowire.AppendFixed32(unknown, 5)
	unknown = protowire.AppendTag(unknown, 97, protowire.BytesType)
	unknown = protowire.AppendBytes(unknown, []byte("new"))
	resp.ProtoReflect().SetUnknown(unknown)
	resp.Results[0].ProtoReflect().SetUnknown(unknown)
	resp.Results[0].Values[0].ProtoReflect().SetUnknown(unknown)
	buf, err := proto.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	d, err := decodeResponse(buf)
	if err != nil {
		t.Fatal(err)
	}
	f := newFeatures(d)
	if f.Len() != 1 || f.Entity(0).ID() != "u1" || f.Entity(0).Int64("a") != 7 || f.Entity(0).Status("a") != Present || f.AsOf().Unix() != 100 {
		t.Fatalf("decoded %+v", d)
	}
}

func FuzzDecode(f *testing.F) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 20 {
		buf, err := proto.Marshal(randomResponse(rng))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(buf)
	}
	f.Fuzz(func(t *testing.T, buf []byte) {
		d, err := decodeResponse(buf)
		var resp pb.GetFeaturesResponse
		perr := proto.Unmarshal(buf, &resp)
		if err != nil {
			return // malformed; the generated code may be laxer with groups
		}
		// Whatever decodes must be readable without panics.
		_, _, _ = viewOf(newFeatures(d))
		if perr == nil && proto.Size(&resp) > 0 {
			_, names, want := expected(&resp)
			_, gotNames, got := viewOf(newFeatures(d))
			normalize(got)
			normalize(want)
			// Repeated fields sent more than once, or scalars sent
			// twice (last wins), decode alike in both.
			if !sameNames(gotNames, names) || !reflect.DeepEqual(got, want) {
				t.Fatalf("decoded\n%+v\nwant\n%+v", got, want)
			}
		}
	})
}

func sameNames(a, b []string) bool {
	return len(a) == len(b) && (len(a) == 0 || reflect.DeepEqual(a, b))
}

// BenchmarkDecode decodes a compact 100-entity, 4-feature response as the
// shop spec's: with the generated code, and with this package's decoder.
func BenchmarkDecode(b *testing.B) {
	resp := &pb.GetFeaturesResponse{AsOf: timestamppb.Now()}
	for j, n := range []string{"views_1h", "purchases_24h", "spend_24h", "last_items"} {
		c := &pb.FeatureColumn{Name: n}
		if j < 3 {
			c.WindowStart, c.WindowEnd = timestamppb.Now(), timestamppb.Now()
		}
		resp.Columns = append(resp.Columns, c)
	}
	for i := range 100 {
		resp.Results = append(resp.Results, &pb.EntityFeatures{
			EntityId:      "u" + strconv.Itoa(i*997),
			LastEventTime: timestamppb.Now(),
			Values: []*pb.FeatureValue{
				{Status: pb.FeatureValue_PRESENT, Value: &pb.FeatureValue_Int64Value{Int64Value: 42}},
				{Status: pb.FeatureValue_PRESENT, Value: &pb.FeatureValue_Int64Value{Int64Value: 3}},
				{Status: pb.FeatureValue_PRESENT, Value: &pb.FeatureValue_DoubleValue{DoubleValue: 59.97}},
				{Status: pb.FeatureValue_PRESENT, Value: &pb.FeatureValue_StringListValue{StringListValue: &pb.StringList{
					Values: []string{"i1", "i22", "i333", "i4444", "i5", "i66", "i777", "i8", "i99", "i10"}}}},
			},
		})
	}
	buf, err := proto.Marshal(resp)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("generated", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var m pb.GetFeaturesResponse
			if err := proto.Unmarshal(buf, &m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("flat", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			d, err := decodeResponse(buf)
			if err != nil {
				b.Fatal(err)
			}
			_ = newFeatures(d)
		}
	})
}
