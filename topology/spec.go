package topology

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Spec is a feature spec as written in YAML: what to read and what to
// compute. Load it with LoadSpec or ParseSpec, then Compile it.
type Spec struct {
	// App names the application: the consumer group, the changelog and DLQ
	// topic prefixes and the Redis key prefix all derive from it.
	App string `yaml:"app"`
	// Source says where events come from and how to read them.
	Source Source `yaml:"source"`
	// Features are computed per entity, in this order.
	Features []Feature `yaml:"features"`

	// File is the path the spec was read from, for error messages.
	File string `yaml:"-"`

	appLine int
}

// Source describes the input topic and its records.
type Source struct {
	// Topic is the Kafka topic of events.
	Topic string `yaml:"topic"`
	// Format is "json" or "avro".
	Format string `yaml:"format"`
	// Schema is the Avro schema file, relative to the spec file, of records
	// without Confluent wire framing (and of framed ones when Schemas is
	// empty).
	Schema string `yaml:"schema"`
	// Schemas maps Confluent schema ids to Avro schema files, relative to
	// the spec file: a record framed with magic byte 0 and a schema id is
	// read with that id's writer schema.
	Schemas map[int]string `yaml:"schemas"`
	// Key is the event field holding the entity id; empty means the record key.
	Key string `yaml:"key"`
	// Time is the event field holding the event time (epoch milliseconds or
	// RFC 3339); empty means the record timestamp.
	Time string `yaml:"time"`
	// Grace is how late, behind the newest event of its partition, an event
	// may arrive and still count. Default 5m.
	Grace Duration `yaml:"grace"`
	// MaxFuture is how far ahead of the processor's clock an event time may
	// be before the event is rejected. Default 1h.
	MaxFuture Duration `yaml:"max_future"`
	// IdleTimeout is how long a partition may go without events before its
	// watermark starts to advance with the wall clock, so windows close
	// (and late events are recognised) without new traffic. Default 30s.
	IdleTimeout Duration `yaml:"idle_timeout"`

	line, formatLine, schemasLine int
}

// Feature is one computed value per entity.
type Feature struct {
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	// Where is an expression over event fields; the event counts for this
	// feature only when it is true. Empty means every event.
	Where string `yaml:"where"`
	// Agg is the aggregation: see Aggregations.
	Agg string `yaml:"agg"`
	// Field is the event field the aggregation reads (dotted for nested
	// fields). Not used by count.
	Field string `yaml:"field"`
	// Window is the window's size: of the sliding window ending at request
	// time, or of a tumbling or hopping window's buckets; zero for lifetime
	// and session windows. A spec writes either a duration (a sliding
	// window: "window: 1h") or a mapping with a kind ("window: {kind:
	// tumbling, size: 1h}"), which fills WindowKind, Hop and Gap too.
	Window Duration `yaml:"window"`
	// Tile is the time bucket partial aggregates are kept in. Sliding
	// windows: default window/12 (so the far edge of the window is within
	// 1/12 of its size). After validation it is also set for tumbling (the
	// size) and hopping (the hop) windows.
	Tile Duration `yaml:"tile"`
	// WindowKind is "sliding", "tumbling", "hopping", "session" or
	// "lifetime". Validation fills it: sliding with a window size,
	// lifetime without.
	WindowKind string `yaml:"-"`
	// Hop is how far apart hopping windows start; it divides Window.
	Hop Duration `yaml:"-"`
	// Gap closes a session: events further apart than Gap are in different
	// sessions.
	Gap Duration `yaml:"-"`
	// Emit says which window of a tumbling, hopping or session feature a
	// read returns: "current" (default; the one holding as_of) or
	// "last_closed" (the newest one that ended before as_of).
	Emit string `yaml:"emit"`
	// K bounds first_k and last_k, and is how many values top_k returns.
	K int `yaml:"k"`
	// Q is approx_quantile's quantile, in [0, 1]; the value is a double.
	Q *float64 `yaml:"q"`
	// Quantiles are approx_quantile's quantiles, each in [0, 1]; the value
	// is a list of doubles in this order. Set Q or Quantiles, not both.
	Quantiles []float64 `yaml:"quantiles"`
	// RelativeAccuracy is approx_quantile's relative accuracy α: a
	// returned quantile is within α·|exact| of the exact one. Default 0.01.
	RelativeAccuracy float64 `yaml:"relative_accuracy"`
	// Precision is the HyperLogLog precision p (2^p registers) of
	// approx_distinct, 4..18. Default 14.
	Precision int `yaml:"precision"`
	// MaxDistinct is how many distinct values count_distinct keeps exactly
	// per tile before falling back to HyperLogLog. Default 1000.
	MaxDistinct int `yaml:"max_distinct"`
	// Expr makes a derived feature: an expression over other features of
	// the same entity (such as clicks_1h / views_1h), evaluated at read
	// time. A derived feature has no agg, where, field or window.
	Expr string `yaml:"expr"`
	// MaxStaleness marks a served value STALE when the entity's state was
	// last updated longer ago than this. Zero: never stale by age.
	MaxStaleness Duration `yaml:"max_staleness"`

	// Line is the line of the feature in the spec file.
	Line int `yaml:"-"`
}

// Defaults for a Source.
const (
	DefaultGrace     = 5 * time.Minute
	DefaultMaxFuture = time.Hour
	// DefaultIdleTimeout is Source.IdleTimeout's default.
	DefaultIdleTimeout = 30 * time.Second
	// DefaultTilesPerWindow is the window/tile ratio when a feature sets no tile.
	DefaultTilesPerWindow = 12
	// MaxK bounds first_k/last_k so one entity's state stays small.
	MaxK = 1000
	// MaxItemBytes bounds a value kept by first/last aggregations.
	MaxItemBytes = 1024
)

// ErrSpec is wrapped by every spec validation error.
var ErrSpec = errors.New("topology: invalid spec")

// SpecError is a problem at a line of a spec file.
type SpecError struct {
	File string
	Line int
	Msg  string
}

func (e *SpecError) Error() string {
	file := e.File
	if file == "" {
		file = "spec"
	}
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", file, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", file, e.Msg)
}

func (e *SpecError) Unwrap() error { return ErrSpec }

func lineErrorf(n *yaml.Node, format string, args ...any) error {
	return &SpecError{Line: n.Line, Msg: fmt.Sprintf(format, args...)}
}

// LoadSpec reads and validates the spec file at path.
func LoadSpec(path string) (*Spec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load spec: %w", err)
	}
	return ParseSpec(path, data)
}

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// ParseSpec parses and validates a spec. file names it in errors. Every error
// is a *SpecError wrapping ErrSpec, naming the line and what to do.
func ParseSpec(file string, data []byte) (*Spec, error) {
	s, err := parseSpec(data)
	if err != nil {
		var se *SpecError
		if errors.As(err, &se) {
			se.File = file
			return nil, se
		}
		return nil, &SpecError{File: file, Msg: err.Error()}
	}
	s.File = file
	if err := s.validate(); err != nil {
		var se *SpecError
		if errors.As(err, &se) {
			se.File = file
		}
		return nil, err
	}
	return s, nil
}

func parseSpec(data []byte) (*Spec, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &SpecError{Line: 1, Msg: "empty spec: want app, source and features"}
		}
		line, msg := splitLine(strings.TrimPrefix(err.Error(), "yaml: "))
		return nil, &SpecError{Line: line, Msg: msg}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if err := checkKeys(root, "top level", "app", "source", "features"); err != nil {
		return nil, err
	}
	var s Spec
	if err := root.Decode(&s); err != nil {
		return nil, yamlError(err)
	}
	s.appLine = keyLine(root, "app")
	return &s, nil
}

// splitLine splits yaml's "line N: msg" into N and msg.
func splitLine(msg string) (int, string) {
	var line int
	if _, err := fmt.Sscanf(msg, "line %d:", &line); err == nil {
		return line, strings.TrimSpace(msg[strings.Index(msg, ":")+1:])
	}
	return 0, msg
}

// keyLine is the line of key in mapping n, or 1 when n has no such key.
func keyLine(n *yaml.Node, key string) int {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i].Line
		}
	}
	return 1
}

// yamlError turns yaml's "line N: ..." type errors into a SpecError.
func yamlError(err error) error {
	var se *SpecError
	if errors.As(err, &se) {
		return se
	}
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		line, msg := splitLine(te.Errors[0])
		return &SpecError{Line: line, Msg: msg}
	}
	return &SpecError{Msg: err.Error()}
}

// checkKeys reports the first key of mapping n that is not allowed, with the
// keys that are.
func checkKeys(n *yaml.Node, what string, allowed ...string) error {
	if n.Kind != yaml.MappingNode {
		return lineErrorf(n, "%s: want a mapping with keys %s", what, strings.Join(allowed, ", "))
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if !slices.Contains(allowed, k.Value) {
			return lineErrorf(k, "%s: unknown key %q (known keys: %s)", what, k.Value, strings.Join(allowed, ", "))
		}
	}
	return nil
}

// UnmarshalYAML implements yaml.Unmarshaler, rejecting unknown keys.
func (s *Source) UnmarshalYAML(n *yaml.Node) error {
	if err := checkKeys(n, "source", "topic", "format", "schema", "schemas", "key", "time", "grace", "max_future", "idle_timeout"); err != nil {
		return err
	}
	type plain Source
	var p plain
	if err := n.Decode(&p); err != nil {
		return yamlError(err)
	}
	*s = Source(p)
	s.line = n.Line
	s.formatLine = keyLine(n, "format")
	s.schemasLine = keyLine(n, "schemas")
	return nil
}

// featureKeys are the keys a feature may have.
var featureKeys = []string{"name", "description", "where", "agg", "field", "window", "tile", "emit", "k",
	"q", "quantiles", "relative_accuracy", "precision", "max_distinct", "expr", "max_staleness"}

// UnmarshalYAML implements yaml.Unmarshaler, rejecting unknown keys and
// remembering the feature's line.
func (f *Feature) UnmarshalYAML(n *yaml.Node) error {
	if err := checkKeys(n, "feature", featureKeys...); err != nil {
		return err
	}
	// A window written as a mapping is read here; the rest decodes as is.
	rest := *n
	rest.Content = nil
	var win *yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "window" && n.Content[i+1].Kind == yaml.MappingNode {
			win = n.Content[i+1]
			continue
		}
		rest.Content = append(rest.Content, n.Content[i], n.Content[i+1])
	}
	type plain Feature
	var p plain
	if err := rest.Decode(&p); err != nil {
		return yamlError(err)
	}
	*f = Feature(p)
	f.Line = n.Line
	if win != nil {
		if err := checkKeys(win, "window", "kind", "size", "hop", "gap", "tile"); err != nil {
			return err
		}
		var w struct {
			Kind string   `yaml:"kind"`
			Size Duration `yaml:"size"`
			Hop  Duration `yaml:"hop"`
			Gap  Duration `yaml:"gap"`
			Tile Duration `yaml:"tile"`
		}
		if err := win.Decode(&w); err != nil {
			return yamlError(err)
		}
		if w.Kind == "" {
			return lineErrorf(win, "window: kind is required (sliding, tumbling, hopping, session or lifetime)")
		}
		if w.Tile != 0 && f.Tile != 0 {
			return lineErrorf(win, "tile is set twice, in the window and beside it")
		}
		f.WindowKind, f.Window, f.Hop, f.Gap = w.Kind, w.Size, w.Hop, w.Gap
		f.Tile = max(f.Tile, w.Tile)
	}
	return nil
}

// validate checks the whole spec and fills defaults; Compile does the rest
// (expressions).
func (s *Spec) validate() error {
	if !nameRE.MatchString(s.App) {
		return &SpecError{Line: s.appLine, Msg: fmt.Sprintf("app %q: want a lowercase name such as shop ([a-z][a-z0-9_]*); it prefixes topics and Redis keys", s.App)}
	}
	src := &s.Source
	if src.line == 0 {
		src.line = 1 // no source at all
	}
	if src.Topic == "" {
		return &SpecError{Line: src.line, Msg: "source.topic is required: the Kafka topic of events, such as events"}
	}
	switch src.Format {
	case "":
		src.Format = "json"
	case "json":
		if src.Schema != "" || len(src.Schemas) > 0 {
			return &SpecError{Line: src.formatLine, Msg: "source.schema and source.schemas are for format avro; remove them or set format: avro"}
		}
	case "avro":
		if src.Schema == "" && len(src.Schemas) == 0 {
			return &SpecError{Line: src.formatLine, Msg: "source.schema (or source.schemas) is required with format avro: the path of an .avsc file, relative to the spec, or a map from Confluent schema id to such a file"}
		}
		for id, file := range src.Schemas {
			if id < 0 || id > math.MaxInt32 {
				return &SpecError{Line: src.schemasLine, Msg: fmt.Sprintf("source.schemas: id %d: want a Confluent schema id, 0..%d", id, math.MaxInt32)}
			}
			if file == "" {
				return &SpecError{Line: src.schemasLine, Msg: fmt.Sprintf("source.schemas: id %d has no file: give the path of its .avsc file, relative to the spec", id)}
			}
		}
	default:
		return &SpecError{Line: src.formatLine, Msg: fmt.Sprintf("source.format %q: want json or avro", src.Format)}
	}
	if src.Grace == 0 {
		src.Grace = Duration(DefaultGrace)
	}
	if src.MaxFuture == 0 {
		src.MaxFuture = Duration(DefaultMaxFuture)
	}
	if src.IdleTimeout == 0 {
		src.IdleTimeout = Duration(DefaultIdleTimeout)
	}
	if len(s.Features) == 0 {
		return &SpecError{Line: 1, Msg: "features: at least one feature is required"}
	}
	seen := make(map[string]int, len(s.Features))
	for i := range s.Features {
		f := &s.Features[i]
		if !nameRE.MatchString(f.Name) {
			return &SpecError{Line: f.Line, Msg: fmt.Sprintf("feature name %q: want a lowercase name such as views_1h ([a-z][a-z0-9_]*)", f.Name)}
		}
		if prev, dup := seen[f.Name]; dup {
			return &SpecError{Line: f.Line, Msg: fmt.Sprintf("feature %q is defined twice (first at line %d)", f.Name, prev)}
		}
		seen[f.Name] = f.Line
		if err := f.validate(); err != nil {
			return &SpecError{Line: f.Line, Msg: fmt.Sprintf("feature %q: %v", f.Name, err)}
		}
	}
	return nil
}

func (f *Feature) validate() error {
	if f.Expr != "" {
		return f.validateDerived()
	}
	kind, ok := aggByName[f.Agg]
	if !ok {
		if f.Agg == "" {
			return fmt.Errorf("agg is required (known: %s), or expr for a feature derived from others", strings.Join(AggregationNames(), ", "))
		}
		return fmt.Errorf("unknown agg %q (known: %s)", f.Agg, strings.Join(AggregationNames(), ", "))
	}
	spec := aggSpecs[kind]
	switch {
	case spec.needsField && f.Field == "":
		return fmt.Errorf("agg %s needs field: the event field to aggregate, such as price", f.Agg)
	case !spec.needsField && f.Field != "":
		return fmt.Errorf("agg %s takes no field (it counts events); remove field %q", f.Agg, f.Field)
	}
	if spec.needsK {
		if f.K < 1 || f.K > MaxK {
			return fmt.Errorf("agg %s needs k between 1 and %d, got %d", f.Agg, MaxK, f.K)
		}
	} else if f.K != 0 {
		return fmt.Errorf("agg %s takes no k; remove k: %d", f.Agg, f.K)
	}
	if err := f.validateSketch(kind); err != nil {
		return err
	}
	return f.validateWindow()
}

// validateDerived checks that a derived feature (expr) sets nothing that
// only aggregations take. Compile checks the expression.
func (f *Feature) validateDerived() error {
	for _, k := range []struct {
		key string
		set bool
	}{
		{"agg", f.Agg != ""}, {"where", f.Where != ""}, {"field", f.Field != ""},
		{"window", f.Window != 0 || f.WindowKind != "" || f.Gap != 0 || f.Hop != 0}, {"tile", f.Tile != 0},
		{"emit", f.Emit != ""}, {"k", f.K != 0}, {"q", f.Q != nil}, {"quantiles", len(f.Quantiles) > 0},
		{"relative_accuracy", f.RelativeAccuracy != 0}, {"precision", f.Precision != 0}, {"max_distinct", f.MaxDistinct != 0},
	} {
		if k.set {
			return fmt.Errorf("a derived feature (expr) takes no %s: its value comes from the features it names", k.key)
		}
	}
	return nil
}

// validateWindow checks the window keys for the window's kind and fills
// WindowKind, Tile and Emit.
func (f *Feature) validateWindow() error {
	w, t, hop, gap := time.Duration(f.Window), time.Duration(f.Tile), time.Duration(f.Hop), time.Duration(f.Gap)
	if f.WindowKind == "" {
		f.WindowKind = "sliding"
		if w == 0 {
			f.WindowKind = "lifetime"
		}
	}
	wholeSeconds := func(what string, d time.Duration) error {
		if d < time.Second || d%time.Second != 0 {
			return fmt.Errorf("%s %s: want a whole number of seconds, at least 1s", what, Duration(d))
		}
		return nil
	}
	notFor := func(key string, set bool) error {
		if set {
			return fmt.Errorf("window kind %s takes no %s", f.WindowKind, key)
		}
		return nil
	}
	kind := f.WindowKind
	switch kind {
	case "sliding", "tumbling", "hopping":
	case "session", "lifetime":
		if kind == "lifetime" && w == 0 && t != 0 {
			return fmt.Errorf("tile %s set without window: a lifetime feature has no tiles", f.Tile)
		}
		if err := errors.Join(notFor("size", w != 0), notFor("tile", t != 0), notFor("hop", hop != 0)); err != nil {
			return err
		}
	default:
		return fmt.Errorf("window kind %q: want sliding, tumbling, hopping, session or lifetime", kind)
	}
	if kind != "session" {
		if err := notFor("gap", gap != 0); err != nil {
			return err
		}
	}
	if kind != "hopping" {
		if err := notFor("hop", hop != 0); err != nil {
			return err
		}
	}
	switch f.Emit {
	case "":
		if kind == "tumbling" || kind == "hopping" || kind == "session" {
			f.Emit = "current"
		}
	case "current", "last_closed":
		if kind == "sliding" || kind == "lifetime" {
			return fmt.Errorf("emit %s: only tumbling, hopping and session windows have closed windows to emit", f.Emit)
		}
	default:
		return fmt.Errorf("emit %q: want current or last_closed", f.Emit)
	}
	switch kind {
	case "lifetime":
		return nil
	case "session":
		if gap == 0 {
			return fmt.Errorf("window kind session needs gap, such as {kind: session, gap: 30m}")
		}
		return wholeSeconds("gap", gap)
	}
	if w == 0 {
		if t != 0 {
			return fmt.Errorf("tile %s set without window: a lifetime feature has no tiles", f.Tile)
		}
		return fmt.Errorf("window kind %s needs size, such as {kind: %s, size: 1h}", kind, kind)
	}
	if w < time.Second {
		return fmt.Errorf("window %s is too small: want at least 1s", f.Window)
	}
	switch kind {
	case "tumbling":
		if err := errors.Join(notFor("tile", t != 0), wholeSeconds("size", w)); err != nil {
			return err
		}
		f.Tile = f.Window
		return nil
	case "hopping":
		switch {
		case t != 0:
			return notFor("tile", true)
		case hop == 0:
			return fmt.Errorf("window kind hopping needs hop, such as {kind: hopping, size: 1h, hop: 15m}")
		case hop > w || w%hop != 0:
			return fmt.Errorf("hop %s must divide size %s", f.Hop, f.Window)
		case w/hop > 10000:
			return fmt.Errorf("hop %s is too small for size %s: at most 10000 hops per window", f.Hop, f.Window)
		}
		if err := wholeSeconds("hop", hop); err != nil {
			return err
		}
		f.Tile = f.Hop
		return nil
	}
	if t == 0 {
		t = defaultTile(w)
		f.Tile = Duration(t)
	}
	switch {
	case t > w:
		return fmt.Errorf("tile %s is larger than window %s: want tile <= window", f.Tile, f.Window)
	case t < time.Second || t%time.Second != 0:
		return fmt.Errorf("tile %s: want a whole number of seconds, at least 1s", f.Tile)
	case w/t > 10000:
		return fmt.Errorf("tile %s is too small for window %s: at most 10000 tiles per window", f.Tile, f.Window)
	}
	return nil
}

// validateSketch checks the keys of the sketch aggregations and fills their
// defaults.
func (f *Feature) validateSketch(kind AggKind) error {
	if kind == AggApproxQuantile {
		switch {
		case f.Q == nil && len(f.Quantiles) == 0:
			return fmt.Errorf("agg approx_quantile needs q (such as q: 0.99) or quantiles (such as quantiles: [0.5, 0.99])")
		case f.Q != nil && len(f.Quantiles) > 0:
			return fmt.Errorf("agg approx_quantile takes q or quantiles, not both")
		case len(f.Quantiles) > 100:
			return fmt.Errorf("quantiles: %d of them, at most 100", len(f.Quantiles))
		}
		qs := f.Quantiles
		if f.Q != nil {
			qs = []float64{*f.Q}
		}
		for _, q := range qs {
			if !(q >= 0 && q <= 1) {
				return fmt.Errorf("quantile %v: want a number between 0 and 1, such as 0.99", q)
			}
		}
		if f.RelativeAccuracy == 0 {
			f.RelativeAccuracy = DefaultRelativeAccuracy
		}
		if !(f.RelativeAccuracy >= 0.0001 && f.RelativeAccuracy <= 0.5) {
			return fmt.Errorf("relative_accuracy %v: want between 0.0001 and 0.5, such as 0.01 (1%%)", f.RelativeAccuracy)
		}
	} else {
		switch {
		case f.Q != nil:
			return fmt.Errorf("agg %s takes no q (only approx_quantile does)", f.Agg)
		case len(f.Quantiles) > 0:
			return fmt.Errorf("agg %s takes no quantiles (only approx_quantile does)", f.Agg)
		case f.RelativeAccuracy != 0:
			return fmt.Errorf("agg %s takes no relative_accuracy (only approx_quantile does)", f.Agg)
		}
	}
	if kind == AggApproxDistinct || kind == AggCountDistinct {
		if f.Precision == 0 {
			f.Precision = DefaultHLLPrecision
		}
		if f.Precision < 4 || f.Precision > 18 {
			return fmt.Errorf("precision %d: want 4..18 (HyperLogLog registers 2^p; 14 gives about 0.8%% error)", f.Precision)
		}
	} else if f.Precision != 0 {
		return fmt.Errorf("agg %s takes no precision (only approx_distinct and count_distinct do)", f.Agg)
	}
	if kind == AggCountDistinct {
		if f.MaxDistinct == 0 {
			f.MaxDistinct = DefaultMaxDistinct
		}
		if f.MaxDistinct < 1 || f.MaxDistinct > MaxMaxDistinct {
			return fmt.Errorf("max_distinct %d: want 1..%d", f.MaxDistinct, MaxMaxDistinct)
		}
	} else if f.MaxDistinct != 0 {
		return fmt.Errorf("agg %s takes no max_distinct (only count_distinct does)", f.Agg)
	}
	return nil
}

// defaultTile is window/12 rounded down to a whole second.
func defaultTile(w time.Duration) time.Duration {
	t := (w / DefaultTilesPerWindow).Truncate(time.Second)
	if t < time.Second {
		t = time.Second
	}
	return t
}
