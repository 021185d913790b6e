package client

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/featurestream/featurestream/proto/featurestream/v1"
)

// Status says what a value is worth.
type Status int

// The statuses of a value.
const (
	// Unknown is a status this client does not know (a newer server's).
	Unknown Status = iota
	// Present: computed from the entity's up-to-date state.
	Present
	// NotFound: nothing is known about the entity, or the aggregation has
	// no value over the window; the value is zero.
	NotFound
	// Stale: a value is given but may lag, because the entity's partition
	// is being restored or its state is older than the feature's
	// max_staleness.
	Stale
	// Missing is the status of a feature the request did not ask for.
	Missing
)

func (s Status) String() string {
	switch s {
	case Present:
		return "PRESENT"
	case NotFound:
		return "NOT_FOUND"
	case Stale:
		return "STALE"
	case Missing:
		return "MISSING"
	}
	return "UNKNOWN"
}

// HasValue reports whether a value was given: Present or Stale.
func (s Status) HasValue() bool { return s == Present || s == Stale }

func statusOf(s int32) Status {
	switch s {
	case int32(pb.FeatureValue_PRESENT):
		return Present
	case int32(pb.FeatureValue_NOT_FOUND):
		return NotFound
	case int32(pb.FeatureValue_STALE):
		return Stale
	}
	return Unknown
}

// Features is a GetFeatures result: one Entity per requested id, in request
// order, each with one Value per feature, in the same order for every
// entity. It is read-only and safe for concurrent reads. Its strings share
// the response's memory, which stays alive while any of them is used.
type Features struct {
	d     *decoded
	names []string
}

func newFeatures(d *decoded) *Features {
	f := &Features{d: d}
	if len(d.columns) > 0 {
		f.names = make([]string, len(d.columns))
		for j, c := range d.columns {
			f.names[j] = c.name
		}
	} else if len(d.entities) > 0 {
		// A server from before columns names each value.
		e := d.entities[0]
		f.names = make([]string, e.n)
		for j := range e.n {
			f.names[j] = d.values[e.first+j].name
		}
	}
	return f
}

// AsOf is the instant the values were evaluated at.
func (f *Features) AsOf() time.Time { return f.d.asOf.time() }

// Len is the number of entities.
func (f *Features) Len() int { return len(f.d.entities) }

// Entity returns the i-th entity, in request order.
func (f *Features) Entity(i int) Entity { return Entity{e: &f.d.entities[i], f: f} }

// Names are the feature names, in the order of every entity's values. Do
// not modify it.
func (f *Features) Names() []string { return f.names }

// Index returns the position of feature name in every entity's values, or
// -1. Look it up once outside a loop over entities and use Entity.Value.
func (f *Features) Index(name string) int {
	for j, n := range f.names {
		if n == name {
			return j
		}
	}
	return -1
}

// Proto decodes the response with the generated code, for what this
// package does not expose. Each call decodes anew.
func (f *Features) Proto() (*pb.GetFeaturesResponse, error) {
	resp := &pb.GetFeaturesResponse{}
	if err := proto.Unmarshal(f.d.buf, resp); err != nil {
		return nil, err
	}
	return resp, nil
}

// Entity is one entity's features.
type Entity struct {
	e *entityRec
	f *Features
}

// ID is the entity id.
func (e Entity) ID() string { return e.e.id }

// LastEventTime is the time of the newest event seen for the entity; ok is
// false when nothing is known about it.
func (e Entity) LastEventTime() (t time.Time, ok bool) {
	if !e.e.lastEvent.set {
		return time.Time{}, false
	}
	return e.e.lastEvent.time(), true
}

// Found reports whether anything is known about the entity.
func (e Entity) Found() bool { return e.e.lastEvent.set }

// Len is the number of values.
func (e Entity) Len() int { return e.e.n }

// Value returns the j-th value, in the order of Features.Names.
func (e Entity) Value(j int) Value {
	if j < 0 || j >= e.e.n {
		panic(fmt.Sprintf("featurestream client: value %d of %d", j, e.e.n))
	}
	v := Value{d: e.f.d, v: &e.f.d.values[e.e.first+j], found: e.e.lastEvent.set}
	if j < len(e.f.d.columns) {
		v.col = &e.f.d.columns[j]
	}
	return v
}

// ByName returns the value of feature name; a feature not requested has
// status Missing.
func (e Entity) ByName(name string) Value {
	j := e.f.Index(name)
	if j < 0 || j >= e.e.n {
		return Value{}
	}
	return e.Value(j)
}

// Status returns the status of feature name (Missing if not requested).
func (e Entity) Status(name string) Status { return e.ByName(name).Status() }

// Int64 returns the int64 value of feature name; 0 if it has none (see
// Status).
func (e Entity) Int64(name string) int64 { return e.ByName(name).Int64() }

// Float64 returns the double value of feature name; 0 if it has none.
func (e Entity) Float64(name string) float64 { return e.ByName(name).Float64() }

// Str returns the string value of feature name; "" if it has none.
func (e Entity) Str(name string) string { return e.ByName(name).Str() }

// Strings returns the string list value of feature name; nil if it has
// none. Do not modify it.
func (e Entity) Strings(name string) []string { return e.ByName(name).Strings() }

// Float64s returns the double list value of feature name (approx_quantile
// with quantiles); nil if it has none. Do not modify it.
func (e Entity) Float64s(name string) []float64 { return e.ByName(name).Float64s() }

// ItemCounts returns the top_k value of feature name, most frequent first;
// nil if it has none. Do not modify it.
func (e Entity) ItemCounts(name string) []ItemCount { return e.ByName(name).ItemCounts() }

// ItemCount is one of top_k's values and how often it occurred.
type ItemCount struct {
	Value string
	Count int64
}

// Value is one feature's value for one entity. Its accessors return the
// zero value when the value is of another type or there is none.
type Value struct {
	d *decoded
	v *valueRec // nil: not requested
	// col is the value's column, which in a compact response holds the
	// name and window the value leaves out.
	col   *column
	found bool // the entity is known
}

// Name is the feature's name.
func (v Value) Name() string {
	switch {
	case v.v == nil:
		return ""
	case v.v.name != "" || v.col == nil:
		return v.v.name
	}
	return v.col.name
}

// Status says whether there is a value and whether it is fresh.
func (v Value) Status() Status {
	if v.v == nil {
		return Missing
	}
	return statusOf(v.v.status)
}

func (v Value) is(kind uint8) bool { return v.v != nil && v.v.kind == kind }

// Int64 is the value of an int64 feature (count, count_distinct,
// approx_distinct).
func (v Value) Int64() int64 {
	if !v.is(kindInt) {
		return 0
	}
	return v.v.i
}

// Float64 is the value of a double feature (sum, avg, min, max, variance,
// stddev, approx_quantile with one q).
func (v Value) Float64() float64 {
	if !v.is(kindDouble) {
		return 0
	}
	return v.v.f
}

// Str is the value of a string feature (first, last).
func (v Value) Str() string {
	if !v.is(kindString) {
		return ""
	}
	return v.v.s
}

// Strings is the value of a string list feature (first_k, last_k). Do not
// modify it.
func (v Value) Strings() []string {
	if !v.is(kindStrings) {
		return nil
	}
	return v.d.strs[v.v.first : v.v.first+v.v.n : v.v.first+v.v.n]
}

// Float64s is the value of a double list feature (approx_quantile with
// quantiles), one per quantile. Do not modify it.
func (v Value) Float64s() []float64 {
	if !v.is(kindDoubles) {
		return nil
	}
	return v.d.floats[v.v.first : v.v.first+v.v.n : v.v.first+v.v.n]
}

// ItemCounts is the value of an item counts feature (top_k), most frequent
// first. Do not modify it.
func (v Value) ItemCounts() []ItemCount {
	if !v.is(kindCounts) {
		return nil
	}
	return v.d.counts[v.v.first : v.v.first+v.v.n : v.v.first+v.v.n]
}

// Approximate reports that an exact aggregation fell back to an estimate
// (count_distinct past its max_distinct).
func (v Value) Approximate() bool { return v.v != nil && v.v.approx }

// Any is the value as int64, float64, string, []string, []float64 or
// []ItemCount, whichever the feature has; nil when there is none.
func (v Value) Any() any {
	if v.v == nil {
		return nil
	}
	switch v.v.kind {
	case kindInt:
		return v.v.i
	case kindDouble:
		return v.v.f
	case kindString:
		return v.v.s
	case kindStrings:
		return v.Strings()
	case kindDoubles:
		return v.Float64s()
	case kindCounts:
		return v.ItemCounts()
	}
	return nil
}

// Window is the event-time interval a windowed value covers; ok is false
// for lifetime features and values not found.
func (v Value) Window() (start, end time.Time, ok bool) {
	switch {
	case v.v == nil:
	case v.v.end.set:
		// Set on the value: a verbose response, or a window of its own
		// (a session).
		return v.v.start.time(), v.v.end.time(), true
	case v.found && v.col != nil && v.col.end.set:
		return v.col.start.time(), v.col.end.time(), true
	}
	return time.Time{}, time.Time{}, false
}
