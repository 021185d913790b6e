package topology

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

const shopSpecPath = "../examples/shop/spec.yaml"

// specWith returns a minimal valid spec whose single feature has the given
// body lines (indented under "- "), so a case only states what it changes.
// The feature starts at line 5.
func specWith(featureLines ...string) string {
	var b strings.Builder
	b.WriteString("app: shop\nsource:\n  topic: events\nfeatures:\n")
	for i, l := range featureLines {
		if i == 0 {
			b.WriteString("  - " + l + "\n")
		} else {
			b.WriteString("    " + l + "\n")
		}
	}
	return b.String()
}

func TestParseSpecErrors(t *testing.T) {
	tests := []struct {
		name string
		spec string
		line int
		msg  []string // substrings of the message
	}{
		{
			name: "unknown top-level key",
			spec: "app: shop\nsource:\n  topic: events\nfeaturez: []\n",
			line: 4,
			msg:  []string{`unknown key "featurez"`, "app, source, features"},
		},
		{
			name: "unknown source key",
			spec: "app: shop\nsource:\n  topic: events\n  formt: json\nfeatures:\n  - name: a\n    agg: count\n",
			line: 4,
			msg:  []string{`unknown key "formt"`, "topic, format, schema, schemas, key, time, grace, max_future"},
		},
		{
			name: "unknown feature key",
			spec: specWith("name: a", "agg: count", "windw: 1h"),
			line: 7,
			msg:  []string{`unknown key "windw"`, "name, description, where, agg, field, window, tile, emit, k"},
		},
		{
			name: "bad duration unit",
			spec: specWith("name: a", "agg: count", "window: 5x"),
			line: 7,
			msg:  []string{`bad duration "5x"`},
		},
		{
			name: "negative duration",
			spec: specWith("name: a", "agg: count", "window: -1h"),
			line: 7,
			msg:  []string{`bad duration "-1h"`, "negative"},
		},
		{
			name: "fractional days",
			spec: specWith("name: a", "agg: count", "window: 7.5d"),
			line: 7,
			msg:  []string{`bad duration "7.5d"`, "whole number of days"},
		},
		{
			name: "negative days",
			spec: specWith("name: a", "agg: count", "window: -1d"),
			line: 7,
			msg:  []string{`bad duration "-1d"`},
		},
		{
			name: "bad grace",
			spec: "app: shop\nsource:\n  topic: events\n  grace: soon\nfeatures:\n  - name: a\n    agg: count\n",
			line: 4,
			msg:  []string{`bad duration "soon"`},
		},
		{
			name: "duration not a scalar",
			spec: specWith("name: a", "agg: count", "window: [1h]"),
			line: 7,
			msg:  []string{"bad duration"},
		},
		{
			name: "unknown agg",
			spec: specWith("name: a", "agg: median", "field: price"),
			line: 5,
			msg:  []string{`unknown agg "median"`, "approx_distinct, approx_quantile, avg, count, count_distinct, first, first_k, last, last_k, max, min, stddev, sum, top_k, variance"},
		},
		{
			name: "sum without field",
			spec: specWith("name: a", "agg: sum", "window: 1h"),
			line: 5,
			msg:  []string{`feature "a"`, "agg sum needs field"},
		},
		{
			name: "count with field",
			spec: specWith("name: a", "agg: count", "field: price"),
			line: 5,
			msg:  []string{"agg count takes no field", `"price"`},
		},
		{
			name: "last_k without k",
			spec: specWith("name: a", "agg: last_k", "field: item_id"),
			line: 5,
			msg:  []string{"agg last_k needs k between 1 and 1000, got 0"},
		},
		{
			name: "last_k with k over max",
			spec: specWith("name: a", "agg: last_k", "field: item_id", "k: 1001"),
			line: 5,
			msg:  []string{"agg last_k needs k between 1 and 1000, got 1001"},
		},
		{
			name: "first_k with negative k",
			spec: specWith("name: a", "agg: first_k", "field: item_id", "k: -1"),
			line: 5,
			msg:  []string{"needs k between 1 and 1000"},
		},
		{
			name: "count with k",
			spec: specWith("name: a", "agg: count", "k: 3"),
			line: 5,
			msg:  []string{"agg count takes no k"},
		},
		{
			name: "k not an int",
			spec: specWith("name: a", "agg: last_k", "field: item_id", "k: ten"),
			line: 8,
			msg:  []string{"cannot unmarshal"},
		},
		{
			name: "tile larger than window",
			spec: specWith("name: a", "agg: count", "window: 1h", "tile: 2h"),
			line: 5,
			msg:  []string{"tile 2h0m0s is larger than window 1h0m0s"},
		},
		{
			name: "tile not whole seconds",
			spec: specWith("name: a", "agg: count", "window: 1h", "tile: 1500ms"),
			line: 5,
			msg:  []string{"whole number of seconds"},
		},
		{
			name: "too many tiles",
			spec: specWith("name: a", "agg: count", "window: 30d", "tile: 1s"),
			line: 5,
			msg:  []string{"at most 10000 tiles per window"},
		},
		{
			name: "window too small",
			spec: specWith("name: a", "agg: count", "window: 500ms"),
			line: 5,
			msg:  []string{"window 500ms is too small"},
		},
		{
			name: "window mapping without kind",
			spec: specWith("name: a", "agg: count", "window: {size: 1h}"),
			line: 7,
			msg:  []string{"window: kind is required"},
		},
		{
			name: "unknown window key",
			spec: specWith("name: a", "agg: count", "window: {kind: tumbling, sise: 1h}"),
			line: 7,
			msg:  []string{`window: unknown key "sise"`, "kind, size, hop, gap, tile"},
		},
		{
			name: "unknown window kind",
			spec: specWith("name: a", "agg: count", "window: {kind: rolling, size: 1h}"),
			line: 5,
			msg:  []string{`window kind "rolling"`, "sliding, tumbling, hopping, session or lifetime"},
		},
		{
			name: "tumbling without size",
			spec: specWith("name: a", "agg: count", "window: {kind: tumbling}"),
			line: 5,
			msg:  []string{"window kind tumbling needs size"},
		},
		{
			name: "tumbling with tile",
			spec: specWith("name: a", "agg: count", "window: {kind: tumbling, size: 1h}", "tile: 5m"),
			line: 5,
			msg:  []string{"window kind tumbling takes no tile"},
		},
		{
			name: "hop not dividing size",
			spec: specWith("name: a", "agg: count", "window: {kind: hopping, size: 1h, hop: 7m}"),
			line: 5,
			msg:  []string{"hop 7m0s must divide size 1h0m0s"},
		},
		{
			name: "hopping without hop",
			spec: specWith("name: a", "agg: count", "window: {kind: hopping, size: 1h}"),
			line: 5,
			msg:  []string{"window kind hopping needs hop"},
		},
		{
			name: "hop on a tumbling window",
			spec: specWith("name: a", "agg: count", "window: {kind: tumbling, size: 1h, hop: 5m}"),
			line: 5,
			msg:  []string{"window kind tumbling takes no hop"},
		},
		{
			name: "session without gap",
			spec: specWith("name: a", "agg: count", "window: {kind: session}"),
			line: 5,
			msg:  []string{"window kind session needs gap"},
		},
		{
			name: "session with size",
			spec: specWith("name: a", "agg: count", "window: {kind: session, gap: 30m, size: 1h}"),
			line: 5,
			msg:  []string{"window kind session takes no size"},
		},
		{
			name: "gap on a sliding window",
			spec: specWith("name: a", "agg: count", "window: {kind: sliding, size: 1h, gap: 5m}"),
			line: 5,
			msg:  []string{"window kind sliding takes no gap"},
		},
		{
			name: "emit on a sliding window",
			spec: specWith("name: a", "agg: count", "window: 1h", "emit: last_closed"),
			line: 5,
			msg:  []string{"emit last_closed: only tumbling, hopping and session windows"},
		},
		{
			name: "bad emit",
			spec: specWith("name: a", "agg: count", "window: {kind: tumbling, size: 1h}", "emit: previous"),
			line: 5,
			msg:  []string{`emit "previous": want current or last_closed`},
		},
		{
			name: "tile set twice",
			spec: specWith("name: a", "agg: count", "window: {kind: sliding, size: 1h, tile: 5m}", "tile: 10m"),
			line: 7,
			msg:  []string{"tile is set twice"},
		},
		{
			name: "approx_quantile without q",
			spec: specWith("name: a", "agg: approx_quantile", "field: price"),
			line: 5,
			msg:  []string{"agg approx_quantile needs q"},
		},
		{
			name: "quantile out of range",
			spec: specWith("name: a", "agg: approx_quantile", "field: price", "quantiles: [0.5, 1.5]"),
			line: 5,
			msg:  []string{"quantile 1.5: want a number between 0 and 1"},
		},
		{
			name: "q on a sum",
			spec: specWith("name: a", "agg: sum", "field: price", "q: 0.5"),
			line: 5,
			msg:  []string{"agg sum takes no q"},
		},
		{
			name: "precision out of range",
			spec: specWith("name: a", "agg: approx_distinct", "field: category", "precision: 20"),
			line: 5,
			msg:  []string{"precision 20: want 4..18"},
		},
		{
			name: "max_distinct on approx_distinct",
			spec: specWith("name: a", "agg: approx_distinct", "field: category", "max_distinct: 10"),
			line: 5,
			msg:  []string{"agg approx_distinct takes no max_distinct"},
		},
		{
			name: "top_k without k",
			spec: specWith("name: a", "agg: top_k", "field: category"),
			line: 5,
			msg:  []string{"agg top_k needs k between 1 and 1000"},
		},
		{
			name: "tile without window",
			spec: specWith("name: a", "agg: count", "tile: 5m"),
			line: 5,
			msg:  []string{"tile 5m0s set without window"},
		},
		{
			name: "duplicate feature names both lines",
			spec: specWith("name: a", "agg: count") + "  - name: b\n    agg: count\n  - name: a\n    agg: count\n    window: 1h\n",
			line: 9,
			msg:  []string{`feature "a" is defined twice (first at line 5)`},
		},
		{
			name: "bad feature name",
			spec: specWith("name: Views-1h", "agg: count"),
			line: 5,
			msg:  []string{`feature name "Views-1h"`, "[a-z][a-z0-9_]*"},
		},
		{
			name: "missing feature name",
			spec: specWith("agg: count", "window: 1h"),
			line: 5,
			msg:  []string{`feature name ""`},
		},
		{
			name: "bad app name on line 1",
			spec: "app: Shop\nsource:\n  topic: events\nfeatures:\n  - name: a\n    agg: count\n",
			line: 1,
			msg:  []string{`app "Shop"`, "lowercase"},
		},
		{
			// A spec usually opens with comments, as the shop example does;
			// the error must point at the app key, not at line 1.
			name: "bad app name after comments",
			spec: "# The shop.\n\napp: my-shop\nsource:\n  topic: events\nfeatures:\n  - name: a\n    agg: count\n",
			line: 3,
			msg:  []string{`app "my-shop"`},
		},
		{
			name: "missing source.topic",
			spec: "app: shop\nsource:\n  format: json\nfeatures:\n  - name: a\n    agg: count\n",
			line: 3,
			msg:  []string{"source.topic is required"},
		},
		{
			name: "missing source",
			spec: "app: shop\nfeatures:\n  - name: a\n    agg: count\n",
			line: 1,
			msg:  []string{"source.topic is required"},
		},
		{
			name: "format not json or avro",
			spec: "app: shop\nsource:\n  topic: events\n  format: protobuf\nfeatures:\n  - name: a\n    agg: count\n",
			line: 4,
			msg:  []string{`source.format "protobuf": want json or avro`},
		},
		{
			name: "avro without schema",
			spec: "app: shop\nsource:\n  topic: events\n  format: avro\nfeatures:\n  - name: a\n    agg: count\n",
			line: 4,
			msg:  []string{"source.schema (or source.schemas) is required with format avro"},
		},
		{
			name: "schemas with json",
			spec: "app: shop\nsource:\n  topic: events\n  format: json\n  schemas:\n    1: e.avsc\nfeatures:\n  - name: a\n    agg: count\n",
			line: 4,
			msg:  []string{"source.schema and source.schemas are for format avro"},
		},
		{
			name: "negative schema id",
			spec: "app: shop\nsource:\n  topic: events\n  format: avro\n  schemas:\n    -1: e.avsc\nfeatures:\n  - name: a\n    agg: count\n",
			line: 5,
			msg:  []string{"source.schemas: id -1: want a Confluent schema id"},
		},
		{
			name: "schema id without a file",
			spec: "app: shop\nsource:\n  topic: events\n  format: avro\n  schemas:\n    3: \"\"\nfeatures:\n  - name: a\n    agg: count\n",
			line: 5,
			msg:  []string{"source.schemas: id 3 has no file"},
		},
		{
			name: "schema id not a number",
			spec: "app: shop\nsource:\n  topic: events\n  format: avro\n  schemas:\n    v1: e.avsc\nfeatures:\n  - name: a\n    agg: count\n",
			line: 6,
			msg:  []string{"v1"},
		},
		{
			name: "no features",
			spec: "app: shop\nsource:\n  topic: events\n",
			line: 1,
			msg:  []string{"at least one feature is required"},
		},
		{
			name: "empty file",
			spec: "",
			line: 1,
			msg:  []string{"empty spec"},
		},
		{
			name: "only comments",
			spec: "# nothing yet\n",
			line: 1,
			msg:  []string{"empty spec"},
		},
		{
			name: "top level not a mapping",
			spec: "- app: shop\n",
			line: 1,
			msg:  []string{"top level: want a mapping"},
		},
		{
			name: "yaml tab indentation",
			spec: "app: shop\nsource:\n\ttopic: events\n",
			line: 3,
			msg:  []string{"cannot start any token"},
		},
		{
			name: "yaml unterminated string",
			spec: "app: shop\nsource:\n  topic: \"events\nfeatures:\n",
			line: 3,
			msg:  []string{"unexpected end of stream"},
		},
		{
			name: "yaml duplicate key",
			spec: "app: shop\napp: shop2\n",
			line: 2,
			msg:  []string{`mapping key "app" already defined at line 1`},
		},
		{
			name: "yaml bad indentation",
			spec: "app: shop\nsource:\n  topic: events\n   format: json\n",
			line: 4,
			msg:  []string{"mapping values are not allowed"},
		},
		{
			name: "features not a list",
			spec: "app: shop\nsource:\n  topic: events\nfeatures: views\n",
			line: 4,
			msg:  []string{"cannot unmarshal"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseSpec("spec.yaml", []byte(tt.spec))
			if err == nil {
				t.Fatalf("ParseSpec succeeded (%+v), want an error at line %d", s, tt.line)
			}
			if !errors.Is(err, ErrSpec) {
				t.Errorf("error %v does not wrap ErrSpec", err)
			}
			var se *SpecError
			if !errors.As(err, &se) {
				t.Fatalf("error %T %v is not a *SpecError", err, err)
			}
			if se.File != "spec.yaml" {
				t.Errorf("File = %q, want spec.yaml", se.File)
			}
			prefix := fmt.Sprintf("spec.yaml:%d: ", tt.line)
			if got := err.Error(); !strings.HasPrefix(got, prefix) {
				t.Errorf("error = %q, want prefix %q", got, prefix)
			}
			for _, m := range tt.msg {
				if !strings.Contains(se.Msg, m) {
					t.Errorf("message %q does not contain %q", se.Msg, m)
				}
			}
		})
	}
}

func TestParseSpecDefaults(t *testing.T) {
	s, err := ParseSpec("spec.yaml", []byte(`app: shop
source:
  topic: events
features:
  - name: views_1h
    agg: count
    window: 1h
  - name: views_24h
    agg: count
    window: 24h
  - name: views_90m
    agg: count
    window: 90m
  - name: views_7d
    agg: count
    window: 7d
  - name: views_2s
    agg: count
    window: 2s
  - name: views_tiled
    agg: count
    window: 30d
    tile: 1d
  - name: views
    agg: count
`))
	if err != nil {
		t.Fatal(err)
	}
	if got := time.Duration(s.Source.Grace); got != 5*time.Minute {
		t.Errorf("grace = %v, want 5m", got)
	}
	if got := time.Duration(s.Source.MaxFuture); got != time.Hour {
		t.Errorf("max_future = %v, want 1h", got)
	}
	if s.Source.Format != "json" {
		t.Errorf("format = %q, want json", s.Source.Format)
	}
	want := []struct {
		line         int
		window, tile time.Duration
	}{
		{5, time.Hour, 5 * time.Minute},
		{8, 24 * time.Hour, 2 * time.Hour},
		{11, 90 * time.Minute, 7*time.Minute + 30*time.Second},
		{14, 7 * 24 * time.Hour, 14 * time.Hour},
		{17, 2 * time.Second, time.Second},
		{20, 30 * 24 * time.Hour, 24 * time.Hour},
		{24, 0, 0},
	}
	if len(s.Features) != len(want) {
		t.Fatalf("got %d features, want %d", len(s.Features), len(want))
	}
	for i, w := range want {
		f := s.Features[i]
		t.Run(f.Name, func(t *testing.T) {
			if f.Line != w.line {
				t.Errorf("Line = %d, want %d", f.Line, w.line)
			}
			if got := time.Duration(f.Window); got != w.window {
				t.Errorf("window = %v, want %v", got, w.window)
			}
			if got := time.Duration(f.Tile); got != w.tile {
				t.Errorf("tile = %v, want %v", got, w.tile)
			}
		})
	}

	top, err := Compile(s)
	if err != nil {
		t.Fatal(err)
	}
	if got := top.MaxWindow(); got != 30*24*time.Hour {
		t.Errorf("MaxWindow = %v, want 720h", got)
	}
	if !top.Features[6].Lifetime() || top.Features[0].Lifetime() {
		t.Errorf("Lifetime() wrong: views %v, views_1h %v", top.Features[6].Lifetime(), top.Features[0].Lifetime())
	}
}

func TestParseSpecWindowKinds(t *testing.T) {
	top := mustTopology(t, `app: shop
source:
  topic: events
features:
  - name: sliding
    agg: count
    window: 1h
  - name: sliding_mapping
    agg: count
    window: {kind: sliding, size: 90m, tile: 10m}
  - name: tumbling
    agg: count
    window: {kind: tumbling, size: 1h}
  - name: tumbling_closed
    agg: count
    window: {kind: tumbling, size: 1d}
    emit: last_closed
  - name: hopping
    agg: count
    window:
      kind: hopping
      size: 1h
      hop: 15m
  - name: session
    agg: count
    window: {kind: session, gap: 30m}
  - name: lifetime
    agg: count
    window: {kind: lifetime}
  - name: implicit_lifetime
    agg: count
`)
	want := []struct {
		kind         WindowKind
		window, tile time.Duration
		last         bool
		emit         string
	}{
		{WindowSliding, time.Hour, 5 * time.Minute, false, ""},
		{WindowSliding, 90 * time.Minute, 10 * time.Minute, false, ""},
		{WindowTumbling, time.Hour, time.Hour, false, "current"},
		{WindowTumbling, 24 * time.Hour, 24 * time.Hour, true, "last_closed"},
		{WindowHopping, time.Hour, 15 * time.Minute, false, "current"},
		{WindowSession, 30 * time.Minute, 0, false, "current"},
		{WindowLifetime, 0, 0, false, ""},
		{WindowLifetime, 0, 0, false, ""},
	}
	for i, w := range want {
		f := top.Features[i]
		if f.WindowKind != w.kind || f.Window != w.window || f.Tile != w.tile || f.EmitLastClosed != w.last || f.Emit != w.emit {
			t.Errorf("%s: %v window %v tile %v last_closed %v emit %q; want %+v", f.Name, f.WindowKind, f.Window, f.Tile, f.EmitLastClosed, f.Emit, w)
		}
		if f.Lifetime() != (w.kind == WindowLifetime) {
			t.Errorf("%s: Lifetime() = %v", f.Name, f.Lifetime())
		}
	}
	// Two tumbling days: the current one and the last closed one.
	if got := top.MaxWindow(); got != 48*time.Hour {
		t.Errorf("MaxWindow = %v, want 48h", got)
	}
}

func TestParseSpecExplicitSource(t *testing.T) {
	s, err := ParseSpec("spec.yaml", []byte(`app: shop2
source:
  topic: events
  format: avro
  schema: event.avsc
  key: user_id
  time: ts
  grace: 90m
  max_future: 2d
features:
  - name: a
    agg: first_k
    field: item.id
    k: 1000
    max_staleness: 10m
`))
	if err != nil {
		t.Fatal(err)
	}
	src := s.Source
	if src.Format != "avro" || src.Schema != "event.avsc" || src.Key != "user_id" || src.Time != "ts" {
		t.Errorf("source = %+v", src)
	}
	if time.Duration(src.Grace) != 90*time.Minute || time.Duration(src.MaxFuture) != 48*time.Hour {
		t.Errorf("grace %v, max_future %v; want 90m, 48h", src.Grace, src.MaxFuture)
	}
	top, err := Compile(s)
	if err != nil {
		t.Fatal(err)
	}
	if f := top.Features[0]; f.MaxStaleness != 10*time.Minute {
		t.Errorf("max_staleness = %v, want 10m", f.MaxStaleness)
	}
	if f := top.Features[0]; f.Kind != AggFirstK || f.Type != TypeStringList || f.k != 1000 || !slicesEqual(f.fieldPath, []string{"item", "id"}) {
		t.Errorf("compiled feature = %+v", f)
	}
}

func slicesEqual(a, b []string) bool { return strings.Join(a, "\x00") == strings.Join(b, "\x00") }

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr string
	}{
		{in: "7d", want: 7 * 24 * time.Hour},
		{in: "30d", want: 30 * 24 * time.Hour},
		{in: "0d", want: 0},
		{in: "90m", want: 90 * time.Minute},
		{in: "1h30m", want: 90 * time.Minute},
		{in: "90s", want: 90 * time.Second},
		{in: " 5m ", want: 5 * time.Minute},
		{in: "0", want: 0},
		{in: "5x", wantErr: `bad duration "5x"`},
		{in: "-1h", wantErr: "must not be negative"},
		{in: "-1d", wantErr: "whole number of days"},
		{in: "7.5d", wantErr: "whole number of days"},
		{in: "d", wantErr: "whole number of days"},
		{in: "36501d", wantErr: "whole number of days"},
		{in: "", wantErr: "bad duration"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseDuration(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseDuration(%q) = %v, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseDuration(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestDurationString(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{7 * 24 * time.Hour, "7d"},
		{90 * time.Minute, "1h30m0s"},
		{25 * time.Hour, "25h0m0s"},
	} {
		if got := Duration(tt.d).String(); got != tt.want {
			t.Errorf("Duration(%v).String() = %q, want %q", tt.d, got, tt.want)
		}
		// What String writes, the spec reads back.
		if back, err := ParseDuration(Duration(tt.d).String()); err != nil || back != tt.d {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", Duration(tt.d).String(), back, err, tt.d)
		}
	}
}

func TestCompileWhereErrors(t *testing.T) {
	tests := []struct {
		name  string
		where string
		msg   string
	}{
		{"syntax", `type ==`, `where "type =="`},
		{"unclosed string", `type == "view`, `feature "b"`},
		{"not bool", `1 + 2`, `where "1 + 2"`},
		{"unknown function", `nosuchfunc(type)`, `where "nosuchfunc(type)"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := "app: shop\nsource:\n  topic: events\nfeatures:\n" +
				"  - name: a\n    agg: count\n" +
				"  - name: b\n    agg: count\n    where: '" + strings.ReplaceAll(tt.where, "'", "''") + "'\n"
			s, err := ParseSpec("spec.yaml", []byte(spec))
			if err != nil {
				t.Fatalf("ParseSpec: %v (where is only checked by Compile)", err)
			}
			top, err := Compile(s)
			if err == nil {
				t.Fatalf("Compile succeeded (%d features), want an error", len(top.Features))
			}
			var se *SpecError
			if !errors.As(err, &se) || !errors.Is(err, ErrSpec) {
				t.Fatalf("error %T %v: want a *SpecError wrapping ErrSpec", err, err)
			}
			if !strings.HasPrefix(err.Error(), "spec.yaml:7: ") {
				t.Errorf("error = %q, want prefix spec.yaml:7: ", err)
			}
			if !strings.Contains(se.Msg, tt.msg) {
				t.Errorf("message %q does not contain %q", se.Msg, tt.msg)
			}
			if strings.Contains(se.Msg, "\n") {
				t.Errorf("message %q spans lines", se.Msg)
			}
		})
	}
}

func TestShopSpec(t *testing.T) {
	for _, path := range []string{shopSpecPath, "../examples/shop/spec-avro.yaml"} {
		t.Run(path, func(t *testing.T) {
			s, err := LoadSpec(path)
			if err != nil {
				t.Fatal(err)
			}
			if s.File != path || s.App != "shop" || s.Source.Topic != "events" || s.Source.Key != "user_id" || s.Source.Time != "ts" {
				t.Errorf("spec = %+v", s)
			}
			top, err := Compile(s)
			if err != nil {
				t.Fatal(err)
			}
			want := []struct {
				name   string
				kind   AggKind
				typ    ValueType
				window time.Duration
				tile   time.Duration
			}{
				{"views_1h", AggCount, TypeInt64, time.Hour, 5 * time.Minute},
				{"purchases_24h", AggCount, TypeInt64, 24 * time.Hour, 2 * time.Hour},
				{"spend_24h", AggSum, TypeDouble, 24 * time.Hour, 2 * time.Hour},
				{"last_items", AggLastK, TypeStringList, 0, 0},
			}
			if len(top.Features) != len(want) {
				t.Fatalf("got %d features, want %d", len(top.Features), len(want))
			}
			for i, w := range want {
				f := top.Features[i]
				if f.Name != w.name || f.Kind != w.kind || f.Type != w.typ || f.Window != w.window || f.Tile != w.tile || f.Index != i {
					t.Errorf("feature %d = {%s %v %v %v %v %d}, want %+v", i, f.Name, f.Kind, f.Type, f.Window, f.Tile, f.Index, w)
				}
				if got, ok := top.FeatureIndex(w.name); !ok || got != i {
					t.Errorf("FeatureIndex(%q) = %d, %v; want %d", w.name, got, ok, i)
				}
			}
			if _, ok := top.FeatureIndex("nope"); ok {
				t.Error("FeatureIndex(nope) found a feature")
			}
			if top.MaxWindow() != 24*time.Hour {
				t.Errorf("MaxWindow = %v, want 24h", top.MaxWindow())
			}
		})
	}
}

func TestLoadSpecMissingFile(t *testing.T) {
	_, err := LoadSpec("testdata/no-such-spec.yaml")
	if err == nil || !strings.Contains(err.Error(), "load spec") {
		t.Fatalf("LoadSpec = %v, want a load spec error", err)
	}
}

func TestAggregationNames(t *testing.T) {
	got := strings.Join(AggregationNames(), ",")
	if want := "approx_distinct,approx_quantile,avg,count,count_distinct,first,first_k,last,last_k,max,min,stddev,sum,top_k,variance"; got != want {
		t.Errorf("AggregationNames = %s, want %s", got, want)
	}
	for _, n := range AggregationNames() {
		if AggKind(aggByName[n]).String() != n {
			t.Errorf("AggKind(%s).String() = %s", n, aggByName[n])
		}
	}
}

// TestShopFeaturesSpec loads the example with every window kind and
// aggregation, applies a day of shop events and reads every feature.
func TestShopFeaturesSpec(t *testing.T) {
	s, err := LoadSpec("../examples/shop/spec-features.yaml")
	if err != nil {
		t.Fatal(err)
	}
	top, err := Compile(s)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[WindowKind]bool{}
	aggs := map[AggKind]bool{}
	derived := 0
	for _, f := range top.Features {
		if f.Derived() {
			derived++
			continue
		}
		kinds[f.WindowKind], aggs[f.Kind] = true, true
	}
	if len(kinds) != 5 || derived == 0 {
		t.Errorf("the example has window kinds %v and %d derived features; want all five kinds and one derived", kinds, derived)
	}
	st := filledState(t, top, 24*60, "type")
	tiles := make([][]Tile, len(top.Features))
	want := make([]int, len(top.Features))
	for fi := range top.Features {
		want[fi] = fi
		tiles[fi] = st.Features[fi]
		if tiles[fi] == nil {
			tiles[fi] = []Tile{}
		}
	}
	vals := make([]Value, len(want))
	top.EvaluateAll(tiles, st.LastEventMs, want, vals)
	for fi, v := range vals {
		if !v.Present && top.Features[fi].Name != "last_session_items" {
			t.Errorf("%s: not present after a day of events: %+v", top.Features[fi].Name, v)
		}
	}
}

func TestWindowString(t *testing.T) {
	s, err := LoadSpec("../examples/shop/spec-features.yaml")
	if err != nil {
		t.Fatal(err)
	}
	top, err := Compile(s)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"views_1h":            "sliding 1h0m0s in 5m0s tiles",
		"ctr_1h":              "derived: clicks_1h / views_1h",
		"views_yesterday":     "tumbling 1d, last closed",
		"spend_hourly_by_15m": "hopping 1h0m0s every 15m0s",
		"session_views":       "session gap 30m0s",
		"first_item":          "lifetime",
	} {
		fi, _ := top.FeatureIndex(name)
		if got := top.Features[fi].WindowString(); got != want {
			t.Errorf("%s: WindowString = %q, want %q", name, got, want)
		}
	}
}
