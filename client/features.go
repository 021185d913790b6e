package client

import (
	"time"

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

func statusOf(s pb.FeatureValue_Status) Status {
	switch s {
	case pb.FeatureValue_PRESENT:
		return Present
	case pb.FeatureValue_NOT_FOUND:
		return NotFound
	case pb.FeatureValue_STALE:
		return Stale
	}
	return Unknown
}

// Features is a GetFeatures result: one Entity per requested id, in request
// order, each with one Value per feature, in the same order for every
// entity. It is read-only and safe for concurrent reads.
type Features struct {
	resp  *pb.GetFeaturesResponse
	names []string
}

func newFeatures(resp *pb.GetFeaturesResponse) *Features {
	f := &Features{resp: resp}
	if cols := resp.GetColumns(); len(cols) > 0 {
		f.names = make([]string, len(cols))
		for j, c := range cols {
			f.names[j] = c.GetName()
		}
	} else if rs := resp.GetResults(); len(rs) > 0 {
		// A server from before columns names each value.
		vals := rs[0].GetValues()
		f.names = make([]string, len(vals))
		for j, v := range vals {
			f.names[j] = v.GetName()
		}
	}
	return f
}

// AsOf is the instant the values were evaluated at.
func (f *Features) AsOf() time.Time { return f.resp.GetAsOf().AsTime() }

// Len is the number of entities.
func (f *Features) Len() int { return len(f.resp.GetResults()) }

// Entity returns the i-th entity, in request order.
func (f *Features) Entity(i int) Entity { return Entity{r: f.resp.GetResults()[i], f: f} }

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

// Proto returns the response as received. Do not modify it.
func (f *Features) Proto() *pb.GetFeaturesResponse { return f.resp }

// Entity is one entity's features.
type Entity struct {
	r *pb.EntityFeatures
	f *Features
}

// ID is the entity id.
func (e Entity) ID() string { return e.r.GetEntityId() }

// LastEventTime is the time of the newest event seen for the entity; ok is
// false when nothing is known about it.
func (e Entity) LastEventTime() (t time.Time, ok bool) {
	if e.r.GetLastEventTime() == nil {
		return time.Time{}, false
	}
	return e.r.GetLastEventTime().AsTime(), true
}

// Found reports whether anything is known about the entity.
func (e Entity) Found() bool { return e.r.GetLastEventTime() != nil }

// Len is the number of values.
func (e Entity) Len() int { return len(e.r.GetValues()) }

// Value returns the j-th value, in the order of Features.Names.
func (e Entity) Value(j int) Value { return e.value(j) }

func (e Entity) value(j int) Value {
	v := Value{v: e.r.GetValues()[j], found: e.r.GetLastEventTime() != nil}
	if cols := e.f.resp.GetColumns(); j < len(cols) {
		v.col = cols[j]
	}
	return v
}

// ByName returns the value of feature name; a feature not requested has
// status Missing.
func (e Entity) ByName(name string) Value {
	j := e.f.Index(name)
	if j < 0 || j >= len(e.r.GetValues()) {
		return Value{}
	}
	return e.value(j)
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
// nil if it has none.
func (e Entity) ItemCounts(name string) []ItemCount { return e.ByName(name).ItemCounts() }

// ItemCount is one of top_k's values and how often it occurred.
type ItemCount struct {
	Value string
	Count int64
}

// Value is one feature's value for one entity. Its accessors return the
// zero value when the value is of another type or there is none.
type Value struct {
	v *pb.FeatureValue // nil: not requested
	// col is the value's column, which in a compact response holds the
	// name and window the value leaves out.
	col   *pb.FeatureColumn
	found bool // the entity is known
}

// Name is the feature's name.
func (v Value) Name() string {
	if n := v.v.GetName(); n != "" {
		return n
	}
	return v.col.GetName()
}

// Status says whether there is a value and whether it is fresh.
func (v Value) Status() Status {
	if v.v == nil {
		return Missing
	}
	return statusOf(v.v.GetStatus())
}

// Int64 is the value of an int64 feature (count).
func (v Value) Int64() int64 { return v.v.GetInt64Value() }

// Float64 is the value of a double feature (sum, avg, min, max).
func (v Value) Float64() float64 { return v.v.GetDoubleValue() }

// Str is the value of a string feature (first, last).
func (v Value) Str() string { return v.v.GetStringValue() }

// Strings is the value of a string list feature (first_k, last_k). Do not
// modify it.
func (v Value) Strings() []string { return v.v.GetStringListValue().GetValues() }

// Float64s is the value of a double list feature (approx_quantile with
// quantiles), one per quantile. Do not modify it.
func (v Value) Float64s() []float64 { return v.v.GetDoubleListValue().GetValues() }

// ItemCounts is the value of an item counts feature (top_k), most frequent
// first. It is a new slice.
func (v Value) ItemCounts() []ItemCount {
	items := v.v.GetItemCountsValue().GetItems()
	if items == nil {
		return nil
	}
	out := make([]ItemCount, len(items))
	for i, it := range items {
		out[i] = ItemCount{Value: it.GetValue(), Count: it.GetCount()}
	}
	return out
}

// Approximate reports that an exact aggregation fell back to an estimate
// (count_distinct past its max_distinct).
func (v Value) Approximate() bool { return v.v.GetApproximate() }

// Any is the value as int64, float64, string, []string, []float64 or
// []ItemCount, whichever the feature has; nil when there is none.
func (v Value) Any() any {
	switch x := v.v.GetValue().(type) {
	case *pb.FeatureValue_Int64Value:
		return x.Int64Value
	case *pb.FeatureValue_DoubleValue:
		return x.DoubleValue
	case *pb.FeatureValue_StringValue:
		return x.StringValue
	case *pb.FeatureValue_StringListValue:
		return x.StringListValue.GetValues()
	case *pb.FeatureValue_DoubleListValue:
		return x.DoubleListValue.GetValues()
	case *pb.FeatureValue_ItemCountsValue:
		return v.ItemCounts()
	}
	return nil
}

// Window is the event-time interval a windowed value covers; ok is false
// for lifetime features and values not found.
func (v Value) Window() (start, end time.Time, ok bool) {
	switch {
	case v.v.GetWindowEnd() != nil:
		// Set on the value: a verbose response, or a window of its own
		// (a session).
		return v.v.GetWindowStart().AsTime(), v.v.GetWindowEnd().AsTime(), true
	case v.v != nil && v.found && v.col.GetWindowEnd() != nil:
		return v.col.GetWindowStart().AsTime(), v.col.GetWindowEnd().AsTime(), true
	}
	return time.Time{}, time.Time{}, false
}
