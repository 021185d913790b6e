package featurestreamv1_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	featurestreamv1 "github.com/featurestream/featurestream/proto/featurestream/v1"
)

func sampleResponse() *featurestreamv1.GetFeaturesResponse {
	asOf := timestamppb.New(time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC))
	start := timestamppb.New(time.Date(2024, 1, 2, 2, 4, 5, 0, time.UTC))
	present := featurestreamv1.FeatureValue_PRESENT
	return &featurestreamv1.GetFeaturesResponse{
		AsOf: asOf,
		Results: []*featurestreamv1.EntityFeatures{
			{
				EntityId:      "u1",
				LastEventTime: asOf,
				Values: []*featurestreamv1.FeatureValue{
					{
						Name:        "views_1h",
						Value:       &featurestreamv1.FeatureValue_Int64Value{Int64Value: 42},
						Status:      present,
						WindowStart: start,
						WindowEnd:   asOf,
					},
					{
						// A zero in a oneof is still set: "zero views", not "no data".
						Name:   "carts_1h",
						Value:  &featurestreamv1.FeatureValue_Int64Value{Int64Value: 0},
						Status: present,
					},
					{
						Name:   "avg_price",
						Value:  &featurestreamv1.FeatureValue_DoubleValue{DoubleValue: 1.5},
						Status: featurestreamv1.FeatureValue_STALE,
					},
					{
						Name:   "last_category",
						Value:  &featurestreamv1.FeatureValue_StringValue{StringValue: "shoes"},
						Status: present,
					},
					{
						Name: "last_items",
						Value: &featurestreamv1.FeatureValue_StringListValue{
							StringListValue: &featurestreamv1.StringList{Values: []string{"a", "b"}},
						},
						Status: present,
					},
				},
			},
			{
				EntityId: "u2",
				Values: []*featurestreamv1.FeatureValue{
					{Name: "views_1h", Status: featurestreamv1.FeatureValue_NOT_FOUND},
				},
			},
		},
	}
}

func TestBinaryRoundTrip(t *testing.T) {
	in := sampleResponse()
	b, err := proto.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	out := &featurestreamv1.GetFeaturesResponse{}
	if err := proto.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(in, out) {
		t.Fatalf("round trip mismatch:\n in: %v\nout: %v", in, out)
	}
	vals := out.GetResults()[0].GetValues()
	if _, ok := vals[1].GetValue().(*featurestreamv1.FeatureValue_Int64Value); !ok {
		t.Errorf("zero int64 lost its oneof case: %T", vals[1].GetValue())
	}
	if got := out.GetResults()[1].GetValues()[0].GetValue(); got != nil {
		t.Errorf("NOT_FOUND value = %v, want unset", got)
	}
}

func TestJSONRoundTrip(t *testing.T) {
	in := sampleResponse()
	raw, err := protojson.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	// protojson deliberately randomizes whitespace; compact it before
	// matching exact substrings.
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		t.Fatal(err)
	}
	js := buf.String()
	for _, want := range []string{
		`"asOf":"2024-01-02T03:04:05Z"`,
		`"entityId":"u1"`,
		`"lastEventTime":"2024-01-02T03:04:05Z"`,
		`{"name":"views_1h","int64Value":"42","status":"PRESENT","windowStart":"2024-01-02T02:04:05Z","windowEnd":"2024-01-02T03:04:05Z"}`,
		`{"name":"carts_1h","int64Value":"0","status":"PRESENT"}`,
		`{"name":"avg_price","doubleValue":1.5,"status":"STALE"}`,
		`{"name":"last_category","stringValue":"shoes","status":"PRESENT"}`,
		`{"name":"last_items","stringListValue":{"values":["a","b"]},"status":"PRESENT"}`,
		`{"entityId":"u2","values":[{"name":"views_1h","status":"NOT_FOUND"}]}`,
	} {
		if !strings.Contains(js, want) {
			t.Errorf("JSON lacks %s\ngot: %s", want, js)
		}
	}
	out := &featurestreamv1.GetFeaturesResponse{}
	if err := protojson.Unmarshal(raw, out); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(in, out) {
		t.Fatalf("round trip mismatch:\n in: %v\nout: %v", in, out)
	}
}

func TestJSONRequestFieldNames(t *testing.T) {
	req := &featurestreamv1.GetFeaturesRequest{EntityIds: []string{"u1", "u2"}, Features: []string{"views_1h"}}
	raw, err := protojson.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		t.Fatal(err)
	}
	if want := `{"entityIds":["u1","u2"],"features":["views_1h"]}`; buf.String() != want {
		t.Errorf("JSON = %s, want %s", buf.String(), want)
	}
	// protojson also accepts the proto field names on input.
	got := &featurestreamv1.GetFeaturesRequest{}
	if err := protojson.Unmarshal([]byte(`{"entity_ids":["u1","u2"],"features":["views_1h"]}`), got); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(req, got) {
		t.Errorf("unmarshal of proto names = %v, want %v", got, req)
	}
}
