package processor

import (
	stdjson "encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	goccy "github.com/goccy/go-json"
	"github.com/hamba/avro/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/featurestream/featurestream/topology"
)

func shopSpec(t testing.TB, file string) *topology.Spec {
	t.Helper()
	s, err := topology.LoadSpec("../examples/shop/" + file)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// offlineProcessor is a processor of the shop spec, with its clock stopped
// at now, that never connects: tests drive its tasks directly. It has no
// store; set p.store if the test reads state.
func offlineProcessor(tb testing.TB, now time.Time) *Processor {
	tb.Helper()
	top, err := topology.Compile(shopSpec(tb, "spec.yaml"))
	if err != nil {
		tb.Fatal(err)
	}
	p, err := New(Config{Brokers: []string{"127.0.0.1:1"}, Now: func() time.Time { return now }}, top, nil, nil, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// decoders are spec's decoder into Event.Fields, and a processor's
// decoder into Event.Slots (spec's features must allow slots).
func decoders(tb testing.TB, spec *topology.Spec) map[string]*Decoder {
	tb.Helper()
	fields, err := NewDecoder(spec)
	if err != nil {
		tb.Fatal(err)
	}
	top, err := topology.Compile(spec)
	if err != nil {
		tb.Fatal(err)
	}
	slots, err := newDecoder(spec, top)
	if err != nil {
		tb.Fatal(err)
	}
	if slots.slotIndex == nil {
		tb.Fatal("the decoder for the topology does not decode into slots")
	}
	return map[string]*Decoder{"fields": fields, "slots": slots}
}

func TestDecodeJSON(t *testing.T) {
	for name, d := range decoders(t, shopSpec(t, "spec.yaml")) {
		t.Run(name, func(t *testing.T) { testDecodeJSON(t, d) })
	}
}

func testDecodeJSON(t *testing.T, d *Decoder) {
	recTime := time.UnixMilli(1_700_000_000_000)
	tests := []struct {
		name    string
		key     string
		value   string
		wantKey string
		wantMs  int64
		reason  string
	}{
		{name: "epoch ms", value: `{"user_id":"u1","ts":1764133200000,"type":"view"}`, wantKey: "u1", wantMs: 1764133200000},
		{name: "rfc3339", value: `{"user_id":"u1","ts":"2025-11-26T05:00:00.5Z"}`, wantKey: "u1", wantMs: 1764133200500},
		{name: "digits string", value: `{"user_id":"u1","ts":"1764133200000"}`, wantKey: "u1", wantMs: 1764133200000},
		{name: "integer id", value: `{"user_id":42,"ts":1}`, wantKey: "42", wantMs: 1},
		{name: "not json", value: `{"user_id":`, reason: ReasonDecode},
		{name: "empty", value: ``, reason: ReasonDecode},
		{name: "json null", value: `null`, reason: ReasonDecode},
		{name: "array", value: `[1,2]`, reason: ReasonDecode},
		{name: "no key", value: `{"ts":1}`, reason: ReasonNoKey},
		{name: "null key", value: `{"user_id":null,"ts":1}`, reason: ReasonNoKey},
		{name: "empty key", value: `{"user_id":"","ts":1}`, reason: ReasonNoKey},
		{name: "fractional id", value: `{"user_id":1.5,"ts":1}`, reason: ReasonNoKey},
		{name: "object key", value: `{"user_id":{"a":1},"ts":1}`, reason: ReasonNoKey},
		{name: "no time", value: `{"user_id":"u1"}`, reason: ReasonNoTime},
		{name: "bad time", value: `{"user_id":"u1","ts":"yesterday"}`, reason: ReasonNoTime},
		{name: "huge time", value: `{"user_id":"u1","ts":1e300}`, reason: ReasonNoTime},
		{name: "bool time", value: `{"user_id":"u1","ts":true}`, reason: ReasonNoTime},
		{name: "null time", value: `{"user_id":"u1","ts":null}`, reason: ReasonNoTime},
		{name: "escaped id", value: `{"user_id":"u\u00e9","ts":1}`, wantKey: "ué", wantMs: 1},
		{name: "later duplicate wins", value: `{"user_id":"u1","ts":1,"user_id":"u2","ts":2}`, wantKey: "u2", wantMs: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ev topology.Event
			err := d.Decode(&kgo.Record{Key: []byte(tt.key), Value: []byte(tt.value), Timestamp: recTime}, &ev)
			if tt.reason != "" {
				var re *RejectError
				if !errors.As(err, &re) || re.Reason != tt.reason {
					t.Fatalf("err = %v, want reason %s", err, tt.reason)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ev.Key != tt.wantKey || ev.TimeMs != tt.wantMs {
				t.Fatalf("got key %q time %d, want %q %d", ev.Key, ev.TimeMs, tt.wantKey, tt.wantMs)
			}
		})
	}
}

func TestDecodeRecordKeyAndTimestamp(t *testing.T) {
	spec := shopSpec(t, "spec.yaml")
	spec.Source.Key, spec.Source.Time = "", ""
	for name, d := range decoders(t, spec) {
		t.Run(name, func(t *testing.T) { testDecodeRecordKeyAndTimestamp(t, d) })
	}
}

func testDecodeRecordKeyAndTimestamp(t *testing.T, d *Decoder) {
	var ev topology.Event
	ts := time.UnixMilli(1_764_133_200_123)
	if err := d.Decode(&kgo.Record{Key: []byte("k9"), Value: []byte(`{"type":"view"}`), Timestamp: ts}, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Key != "k9" || ev.TimeMs != ts.UnixMilli() {
		t.Fatalf("got %q %d", ev.Key, ev.TimeMs)
	}
	err := d.Decode(&kgo.Record{Value: []byte(`{"type":"view"}`), Timestamp: ts}, &ev)
	var re *RejectError
	if !errors.As(err, &re) || re.Reason != ReasonNoKey {
		t.Fatalf("keyless record: err = %v, want no_key", err)
	}
}

func TestDecodeAvro(t *testing.T) {
	spec := shopSpec(t, "spec-avro.yaml")
	d, err := NewDecoder(spec)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("../examples/shop/event.avsc")
	if err != nil {
		t.Fatal(err)
	}
	schema := avro.MustParse(string(raw))
	price := 19.99
	item := "i9"
	body, err := avro.Marshal(schema, map[string]any{
		"user_id": "u1", "ts": time.UnixMilli(1764133200000), "type": "purchase",
		"item_id": &item, "category": nil, "price": &price,
	})
	if err != nil {
		t.Fatal(err)
	}
	framed := append([]byte{0, 0, 0, 0, 7}, body...)
	for name, value := range map[string][]byte{"raw": body, "confluent framing": framed} {
		t.Run(name, func(t *testing.T) {
			var ev topology.Event
			if err := d.Decode(&kgo.Record{Value: value}, &ev); err != nil {
				t.Fatal(err)
			}
			if ev.Key != "u1" || ev.TimeMs != 1764133200000 || ev.Fields["price"] != 19.99 || ev.Fields["item_id"] != "i9" || ev.Fields["category"] != nil {
				t.Fatalf("decoded %+v", ev)
			}
		})
	}
	var ev topology.Event
	err = d.Decode(&kgo.Record{Value: []byte{0xff, 0xff, 0xff}}, &ev)
	var re *RejectError
	if !errors.As(err, &re) || re.Reason != ReasonDecode {
		t.Fatalf("garbage: err = %v, want decode", err)
	}
}

// TestDecodeAvroSchemaIDs: with source.schemas, a framed record is read
// with its id's writer schema, so producers can move to a new schema
// version while old records are still in the topic; unknown ids and
// records read with the wrong schema are dead letters.
func TestDecodeAvroSchemaIDs(t *testing.T) {
	spec := shopSpec(t, "spec-avro.yaml")
	d, err := NewDecoder(spec)
	if err != nil {
		t.Fatal(err)
	}
	schema := func(file string) avro.Schema {
		raw, err := os.ReadFile("../examples/shop/" + file)
		if err != nil {
			t.Fatal(err)
		}
		return avro.MustParse(string(raw))
	}
	v1, v2 := schema("event.avsc"), schema("event-v2.avsc")
	ts := time.UnixMilli(1764133200000)
	body1, err := avro.Marshal(v1, map[string]any{"user_id": "u1", "ts": ts, "type": "view", "item_id": nil, "category": nil, "price": nil})
	if err != nil {
		t.Fatal(err)
	}
	body2, err := avro.Marshal(v2, map[string]any{"user_id": "u2", "ts": ts, "type": "purchase", "item_id": nil, "category": nil, "price": nil, "quantity": 3, "channel": "app"})
	if err != nil {
		t.Fatal(err)
	}
	frame := func(id byte, body []byte) []byte { return append([]byte{0, 0, 0, 0, id}, body...) }
	for _, tc := range []struct {
		name    string
		value   []byte
		wantKey string
		wantQty any
		wantErr string
	}{
		{name: "id 1", value: frame(1, body1), wantKey: "u1"},
		{name: "id 2", value: frame(2, body2), wantKey: "u2", wantQty: 3},
		{name: "unframed, source.schema", value: body1, wantKey: "u1"},
		{name: "v2 body under id 1", value: frame(1, body2), wantErr: "trailing bytes"},
		{name: "unknown id, not a raw record either", value: frame(9, body2), wantErr: "avro"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ev topology.Event
			err := d.Decode(&kgo.Record{Value: tc.value}, &ev)
			if tc.wantErr != "" {
				var re *RejectError
				if !errors.As(err, &re) || re.Reason != ReasonDecode || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want a decode rejection with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ev.Key != tc.wantKey || ev.TimeMs != ts.UnixMilli() || ev.Fields["quantity"] != tc.wantQty {
				t.Fatalf("decoded %+v", ev)
			}
		})
	}

	// Without source.schema every record must be framed with a known id.
	spec.Source.Schema = ""
	if d, err = NewDecoder(spec); err != nil {
		t.Fatal(err)
	}
	for value, want := range map[string]string{string(frame(9, body1)): "schema id 9 is not in source.schemas", string(body1): "no Confluent wire framing"} {
		var ev topology.Event
		if err := d.Decode(&kgo.Record{Value: []byte(value)}, &ev); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want %q", err, want)
		}
	}

	// A bad schema file fails at startup naming the key and the file.
	spec.Source.Schemas = map[int]string{7: "spec.yaml"}
	if _, err := NewDecoder(spec); err == nil || !strings.Contains(err.Error(), "source.schemas.7") || !strings.Contains(err.Error(), "spec.yaml") {
		t.Fatalf("bad schema file: err = %v", err)
	}
}

// FuzzDecodeJSON and FuzzDecodeAvro: no input may panic the decoder. A
// JSON record decodes into slots as into fields: the same entity id, event
// time and field values, or the same error (for a record that is not JSON,
// the same reason).
func FuzzDecodeJSON(f *testing.F) {
	ds := decoders(f, shopSpec(f, "spec.yaml"))
	for _, s := range []string{`{"user_id":"u1","ts":1764133200000,"type":"view","item_id":"i9","price":19.99}`, `{"user_id":1,"ts":"2025-11-26T05:00:00Z"}`, `[]`, `{"ts":{}}`,
		`{"user_id":"u\u00e9","ts":1,"price":null,"type":["x"]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, value []byte) {
		var viaFields, viaSlots topology.Event
		errFields := ds["fields"].Decode(&kgo.Record{Value: value}, &viaFields)
		errSlots := ds["slots"].Decode(&kgo.Record{Value: value}, &viaSlots)
		// Skipping a field finds its error by another route, so a
		// decode error may read differently.
		var ref, res *RejectError
		bothDecode := errors.As(errFields, &ref) && errors.As(errSlots, &res) && ref.Reason == ReasonDecode && res.Reason == ReasonDecode
		if !bothDecode && fmt.Sprint(errFields) != fmt.Sprint(errSlots) {
			t.Fatalf("%q: error into fields %v, into slots %v", value, errFields, errSlots)
		}
		if errFields != nil {
			return
		}
		if viaFields.Key != viaSlots.Key || viaFields.TimeMs != viaSlots.TimeMs {
			t.Fatalf("%q: %q at %d into fields, %q at %d into slots", value, viaFields.Key, viaFields.TimeMs, viaSlots.Key, viaSlots.TimeMs)
		}
		for name, i := range ds["slots"].slotIndex {
			want, wantOK := viaFields.Fields[name]
			got, ok := viaSlots.Slots[i].Value()
			if wantOK && want == nil {
				wantOK = false // null reads as absent
			}
			if ok != wantOK || !reflect.DeepEqual(got, want) {
				t.Fatalf("%q: field %s is %#v into slots, %#v into fields", value, name, got, want)
			}
		}
	})
}

func FuzzDecodeAvro(f *testing.F) {
	d, err := NewDecoder(shopSpec(f, "spec-avro.yaml"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte{0x04, 'u', '1', 0x80, 0x80, 0x01, 0x08, 'v', 'i', 'e', 'w', 0, 0, 0})
	f.Add([]byte{0, 0, 0, 0, 1, 0x04, 'u', '1'})
	f.Fuzz(func(t *testing.T, value []byte) {
		var ev topology.Event
		_ = d.Decode(&kgo.Record{Value: value}, &ev)
	})
}

// TestDecodeProjected: a processor's decoder keeps only the fields the shop
// features read, with the entity id and event time, in Event.Slots (the
// shop's features need no Event.Fields), and still rejects a record whose
// skipped field is not valid JSON.
func TestDecodeProjected(t *testing.T) {
	p := offlineProcessor(t, time.Now())
	ev := topology.Event{}
	rec := &kgo.Record{Value: []byte(`{"user_id":"u1","ts":1764133200000,"type":"view","item_id":"i9","category":"shoes","price":19.99,"extra":{"x":[1,"\u00e9"]}}`)}
	if err := p.dec.Decode(rec, &ev); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"user_id": "u1", "ts": 1764133200000.0, "type": "view", "item_id": "i9", "price": 19.99}
	if got := slotValues(p.dec.slotIndex, ev.Slots); ev.Fields != nil || !reflect.DeepEqual(got, want) || ev.Key != "u1" || ev.TimeMs != 1764133200000 {
		t.Errorf("decoded %q at %d: %#v and fields %#v, want u1 at 1764133200000: %#v and no fields", ev.Key, ev.TimeMs, got, ev.Fields, want)
	}
	for _, bad := range []string{
		`{"user_id":"u1","ts":1,"category":"sh` + "\x01" + `oes"}`,
		`{"user_id":"u1","ts":1,"category":01}`,
		`{"user_id":"u1","ts":1,"extra":{"x":}}`,
	} {
		var re *RejectError
		if err := p.dec.Decode(&kgo.Record{Value: []byte(bad)}, &ev); !errors.As(err, &re) || re.Reason != ReasonDecode {
			t.Errorf("%q: err = %v, want a %s rejection", bad, err, ReasonDecode)
		}
	}
}

// BenchmarkDecodeJSON decodes a 100-byte shop event into a reused map, as
// a partition task does ("decoder": the whole Decode, with the entity id and
// event time), beside encoding/json and goccy/go-json unmarshalling the
// same bytes into a reused map.
func BenchmarkDecodeJSON(b *testing.B) {
	d, err := NewDecoder(shopSpec(b, "spec.yaml"))
	if err != nil {
		b.Fatal(err)
	}
	rec := &kgo.Record{Value: []byte(`{"user_id":"u1234","ts":1764133200000,"type":"view","item_id":"i9876","category":"shoes","price":19.99}`)}
	// A wider event, as apps often send (device, session, geo, a nested
	// context, an escaped user agent), of which the shop features read the
	// same five fields.
	wide := &kgo.Record{Value: []byte(`{"user_id":"u1234","ts":1764133200000,"type":"view","item_id":"i9876","category":"shoes","price":19.99,` +
		`"session_id":"s-5f2c9a7e41b3","device":"phone","os":"android","os_version":"15.1","app_version":"8.42.0","country":"DE","city":"Berlin",` +
		`"referrer":"https://example.com/feed?tab=new","page":"/item/i9876","ab_bucket":"b","screen_w":1080,"screen_h":2400,"lat":52.52,"lon":13.405,"consent":true,` +
		`"context":{"campaign":"winter","tags":["sale","new"],"slot":3},"ua":"Mozilla/5.0 (Linux; Android 15) \"Chrome\" M\u00fcnchen"}`)}
	// A processor's decoder keeps only the fields the shop features read.
	projected := offlineProcessor(b, time.Now()).dec
	for _, c := range []struct {
		name string
		dec  *Decoder
		rec  *kgo.Record
	}{
		{"decoder", d, rec},
		{"decoder-projected", projected, rec},
		{"wide-full", d, wide},
		{"wide-projected", projected, wide},
	} {
		b.Run(c.name, func(b *testing.B) {
			ev := topology.Event{Fields: make(map[string]any, 32)}
			b.SetBytes(int64(len(c.rec.Value)))
			b.ReportAllocs()
			for b.Loop() {
				if err := c.dec.Decode(c.rec, &ev); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	for name, unmarshal := range map[string]func([]byte, any) error{"encoding-json": stdjson.Unmarshal, "goccy-json": goccy.Unmarshal} {
		b.Run(name, func(b *testing.B) {
			m := make(map[string]any, 8)
			b.SetBytes(int64(len(rec.Value)))
			b.ReportAllocs()
			for b.Loop() {
				clear(m)
				if err := unmarshal(rec.Value, &m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
