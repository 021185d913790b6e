package topology

import (
	"cmp"
	"math"
	"slices"
	"strings"
	"unsafe"

	"github.com/DataDog/sketches-go/ddsketch"
	"github.com/DataDog/sketches-go/ddsketch/store"
	"github.com/axiomhq/hyperloglog"
)

// AggKind is an aggregation. Its numeric value is part of the version 2
// feature encoding: never renumber.
type AggKind uint8

// The aggregations. Each keeps a mergeable partial aggregate per tile.
const (
	AggCount AggKind = iota + 1
	AggSum
	AggMin
	AggMax
	AggAvg
	AggFirst
	AggLast
	AggFirstK
	AggLastK
	AggVariance
	AggStddev
	AggTopK
	AggCountDistinct
	AggApproxDistinct
	AggApproxQuantile
)

// ValueType is the type of a feature's value, as served.
type ValueType uint8

// Value types.
const (
	TypeInt64 ValueType = iota + 1
	TypeDouble
	TypeString
	TypeStringList
	// TypeDoubleList is a list of doubles: approx_quantile with quantiles,
	// one value per quantile in spec order.
	TypeDoubleList
	// TypeItemCounts is a list of (value, count) pairs, most frequent
	// first: top_k.
	TypeItemCounts
)

func (t ValueType) String() string {
	switch t {
	case TypeInt64:
		return "int64"
	case TypeDouble:
		return "double"
	case TypeString:
		return "string"
	case TypeStringList:
		return "string_list"
	case TypeDoubleList:
		return "double_list"
	case TypeItemCounts:
		return "item_counts"
	}
	return "unknown"
}

type aggSpec struct {
	name       string
	needsField bool
	needsK     bool
	// numeric aggregations read the field as a number; the others keep it
	// as a string item.
	numeric bool
	result  ValueType
}

var aggSpecs = map[AggKind]aggSpec{
	AggCount:          {name: "count", result: TypeInt64},
	AggSum:            {name: "sum", needsField: true, numeric: true, result: TypeDouble},
	AggMin:            {name: "min", needsField: true, numeric: true, result: TypeDouble},
	AggMax:            {name: "max", needsField: true, numeric: true, result: TypeDouble},
	AggAvg:            {name: "avg", needsField: true, numeric: true, result: TypeDouble},
	AggFirst:          {name: "first", needsField: true, result: TypeString},
	AggLast:           {name: "last", needsField: true, result: TypeString},
	AggFirstK:         {name: "first_k", needsField: true, needsK: true, result: TypeStringList},
	AggLastK:          {name: "last_k", needsField: true, needsK: true, result: TypeStringList},
	AggVariance:       {name: "variance", needsField: true, numeric: true, result: TypeDouble},
	AggStddev:         {name: "stddev", needsField: true, numeric: true, result: TypeDouble},
	AggTopK:           {name: "top_k", needsField: true, needsK: true, result: TypeItemCounts},
	AggCountDistinct:  {name: "count_distinct", needsField: true, result: TypeInt64},
	AggApproxDistinct: {name: "approx_distinct", needsField: true, result: TypeInt64},
	// A single q gives a double; quantiles a double list (see Compile).
	AggApproxQuantile: {name: "approx_quantile", needsField: true, numeric: true, result: TypeDouble},
}

var aggByName = func() map[string]AggKind {
	m := make(map[string]AggKind, len(aggSpecs))
	for k, s := range aggSpecs {
		m[s.name] = k
	}
	return m
}()

// AggregationNames lists the aggregations a spec may name, sorted.
func AggregationNames() []string {
	names := make([]string, 0, len(aggByName))
	for n := range aggByName {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func (k AggKind) String() string { return aggSpecs[k].name }

// Bounds and defaults of the sketch aggregations.
const (
	// DefaultMaxDistinct is how many distinct values count_distinct keeps
	// exactly per tile before it falls back to HyperLogLog.
	DefaultMaxDistinct = 1000
	// MaxMaxDistinct bounds max_distinct.
	MaxMaxDistinct = 100_000
	// DefaultHLLPrecision is the HyperLogLog precision of approx_distinct
	// (and of count_distinct past max_distinct): 2^14 registers, a relative
	// standard error of 1.04/sqrt(2^14) ≈ 0.81% once dense. Small sets stay
	// in the sparse representation, which is near exact.
	DefaultHLLPrecision = 14
	// DefaultRelativeAccuracy is approx_quantile's relative accuracy.
	DefaultRelativeAccuracy = 0.01
	// ddMaxBins bounds each DDSketch store; with the lowest bins collapsed
	// beyond it. At 1% accuracy 2048 bins span 17 orders of magnitude, so
	// collapsing needs values that far apart.
	ddMaxBins = 2048
	// TopKCapacityFactor sets top_k's per-tile capacity: TopKCapacityFactor
	// × k counters, at least MinTopKCapacity.
	TopKCapacityFactor = 8
	MinTopKCapacity    = 64
)

// Tile is the partial aggregate of one feature over one time bucket
// [Start, Start+tile) of event time, or over one session [Start, End]. A
// lifetime feature has one tile with Start 0. Which fields are used depends
// on the aggregation: Count always; Num is the sum (sum, avg), the minimum
// (min), the maximum (max) or the mean (variance, stddev); Items holds
// first/last values ordered oldest first (first, first_k) or newest first
// (last, last_k), at most k of them. The sketches of top_k,
// count_distinct, approx_distinct and approx_quantile are unexported: only
// Apply and DecodeFeature make them.
type Tile struct {
	Start int64
	// End is the time of the newest event of a session; 0 for other
	// window kinds.
	End   int64
	Count int64
	Num   float64
	Items []Item

	// x holds the variance and sketch state; nil for the other
	// aggregations, which keeps their tiles small to decode and copy.
	x *tileSketch
}

// tileSketch is the part of a tile only some aggregations use.
type tileSketch struct {
	// m2 is the sum of squared deviations from the mean (variance, stddev).
	m2 float64
	// counts maps a value to its count: top_k (a Space-Saving summary of at
	// most the feature's capacity), count_distinct while exact.
	counts map[string]int64
	// hll is approx_distinct's sketch, and count_distinct's once the tile
	// has more than max_distinct values.
	hll *hyperloglog.Sketch
	// dd is approx_quantile's sketch.
	dd *ddsketch.DDSketch
}

// noSketch is what sk returns for a tile without one; never written.
var noSketch tileSketch

// sk returns the tile's sketch state for reading.
func (t *Tile) sk() *tileSketch {
	if t.x == nil {
		return &noSketch
	}
	return t.x
}

// sketch returns the tile's sketch state for writing, making it if needed.
func (t *Tile) sketch() *tileSketch {
	if t.x == nil {
		t.x = new(tileSketch)
	}
	return t.x
}

// Item is a value kept by first/last aggregations with its event time.
type Item struct {
	TimeMs int64
	Value  string
}

// ItemCount is a value and how often it occurred (top_k).
type ItemCount struct {
	Value string
	Count int64
}

// stringBytes views s as bytes without a copy; the bytes must not be
// written.
func stringBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// kept is the contribution's string to keep in state: a copy when it may
// share memory with the input, which a state must not pin.
func (c *contribution) kept() string {
	if c.borrowed {
		return strings.Clone(c.str)
	}
	return c.str
}

// addTo folds one event's contribution into the tile. For item aggregations,
// among equal event times the later arrival is the newer one.
func (f *CompiledFeature) addTo(t *Tile, timeMs int64, c *contribution) {
	num, str := c.num, c.str
	switch f.Kind {
	case AggCount:
	case AggSum, AggAvg:
		t.Num += num
	case AggMin:
		if t.Count == 0 || num < t.Num {
			t.Num = num
		}
	case AggMax:
		if t.Count == 0 || num > t.Num {
			t.Num = num
		}
	case AggFirst, AggFirstK:
		// Oldest first: insert after every item at or before timeMs.
		i, _ := slices.BinarySearchFunc(t.Items, timeMs, func(it Item, ts int64) int {
			if it.TimeMs <= ts {
				return -1
			}
			return 1
		})
		if i < f.k {
			t.Items = insertItem(t.Items, i, f.k, Item{TimeMs: timeMs, Value: c.kept()})
		}
	case AggLast, AggLastK:
		// Newest first: insert before every item at or before timeMs.
		i, _ := slices.BinarySearchFunc(t.Items, timeMs, func(it Item, ts int64) int {
			if it.TimeMs > ts {
				return -1
			}
			return 1
		})
		if i < f.k {
			t.Items = insertItem(t.Items, i, f.k, Item{TimeMs: timeMs, Value: c.kept()})
		}
	case AggVariance, AggStddev:
		// Welford's update.
		x := t.sketch()
		d := num - t.Num
		t.Num += d / float64(t.Count+1)
		x.m2 += d * (num - t.Num)
	case AggTopK:
		t.sketch().addTopK(c, f.capacity)
	case AggCountDistinct:
		x := t.sketch()
		if x.hll != nil {
			x.hll.Insert(stringBytes(str))
			break
		}
		if x.counts == nil {
			x.counts = make(map[string]int64)
		}
		// An assignment stores its key even over an equal one, so the
		// key is never a borrowed string.
		x.counts[c.kept()]++
		if len(x.counts) > f.maxDistinct {
			x.countsToHLL(f)
		}
	case AggApproxDistinct:
		x := t.sketch()
		if x.hll == nil {
			x.hll = f.newHLL()
		}
		x.hll.Insert(stringBytes(str))
	case AggApproxQuantile:
		x := t.sketch()
		if x.dd == nil {
			x.dd = f.newDD()
		}
		// contribution checked the range, so Add cannot fail.
		_ = x.dd.Add(num)
	}
	t.Count++
}

func insertItem(items []Item, i, k int, it Item) []Item {
	if i >= k {
		return items
	}
	if len(items) >= k {
		// Full: the last falls off, in place rather than into a new array
		// one longer (a last_k tile is usually full).
		items = items[:k]
		copy(items[i+1:], items[i:k-1])
		items[i] = it
		return items
	}
	return slices.Insert(items, i, it)
}

// addTopK counts c's value in a Space-Saving summary of at most capacity counters:
// a new value when the summary is full replaces the value with the lowest
// count (the greatest such value, so the result does not depend on map
// order) and inherits that count plus one. Every count is then at most
// min-count too high, and min-count ≤ events/capacity.
func (t *tileSketch) addTopK(c *contribution, capacity int) {
	if t.counts == nil {
		t.counts = make(map[string]int64)
	}
	// An assignment stores its key even over an equal one, so the key is
	// never a borrowed string.
	v := c.kept()
	if _, ok := t.counts[v]; ok || len(t.counts) < capacity {
		t.counts[v]++
		return
	}
	var minV string
	minC := int64(math.MaxInt64)
	for x, c := range t.counts {
		if c < minC || (c == minC && x > minV) {
			minV, minC = x, c
		}
	}
	delete(t.counts, minV)
	t.counts[v] = minC + 1
}

// mergeTile folds src into dst, as if dst had seen src's events too. src's
// events must all be newer than dst's or all older (sessions never
// overlap), so first/last items keep their order. src is not retained
// except for strings.
func (f *CompiledFeature) mergeTile(dst, src *Tile) {
	if src.Count == 0 {
		return
	}
	if dst.Count == 0 {
		start, end := dst.Start, dst.End
		*dst = f.cloneTile(src)
		dst.Start, dst.End = start, end
		return
	}
	switch f.Kind {
	case AggSum, AggAvg:
		dst.Num += src.Num
	case AggMin:
		dst.Num = min(dst.Num, src.Num)
	case AggMax:
		dst.Num = max(dst.Num, src.Num)
	case AggFirst, AggFirstK, AggLast, AggLastK:
		merged := append(slices.Clone(dst.Items), src.Items...)
		if f.Kind == AggFirst || f.Kind == AggFirstK {
			slices.SortStableFunc(merged, func(a, b Item) int { return cmp.Compare(a.TimeMs, b.TimeMs) })
		} else {
			slices.SortStableFunc(merged, func(a, b Item) int { return cmp.Compare(b.TimeMs, a.TimeMs) })
		}
		if len(merged) > f.k {
			merged = merged[:f.k]
		}
		dst.Items = merged
	case AggVariance, AggStddev:
		d := dst.sketch()
		dst.Num, d.m2 = chanMerge(dst.Count, dst.Num, d.m2, src.Count, src.Num, src.sk().m2)
	case AggTopK:
		// Sum the summaries, then keep the capacity most frequent: a
		// dropped value's count is at most the total over capacity, the
		// bound each summary already had.
		d := dst.sketch()
		if d.counts == nil {
			d.counts = make(map[string]int64)
		}
		for v, c := range src.sk().counts {
			d.counts[v] += c
		}
		if len(d.counts) > f.capacity {
			all := make([]ItemCount, 0, len(d.counts))
			for v, c := range d.counts {
				all = append(all, ItemCount{v, c})
			}
			sortItemCounts(all)
			for _, ic := range all[f.capacity:] {
				delete(d.counts, ic.Value)
			}
		}
	case AggCountDistinct:
		d, s := dst.sketch(), src.sk()
		if d.hll == nil && s.hll == nil {
			if d.counts == nil {
				d.counts = make(map[string]int64)
			}
			for v, c := range s.counts {
				d.counts[v] += c
			}
			if len(d.counts) > f.maxDistinct {
				d.countsToHLL(f)
			}
			break
		}
		if d.hll == nil {
			d.countsToHLL(f)
		}
		for v := range s.counts {
			d.hll.Insert(stringBytes(v))
		}
		if s.hll != nil {
			_ = d.hll.Merge(s.hll)
		}
	case AggApproxDistinct:
		if s := src.sk(); s.hll != nil {
			d := dst.sketch()
			if d.hll == nil {
				d.hll = f.newHLL()
			}
			_ = d.hll.Merge(s.hll)
		}
	case AggApproxQuantile:
		if s := src.sk(); s.dd != nil {
			d := dst.sketch()
			if d.dd == nil {
				d.dd = f.newDD()
			}
			_ = d.dd.MergeWith(s.dd)
		}
	}
	dst.Count += src.Count
}

// countsToHLL moves count_distinct's exact set into a HyperLogLog sketch.
func (t *tileSketch) countsToHLL(f *CompiledFeature) {
	t.hll = f.newHLL()
	for v := range t.counts {
		t.hll.Insert(stringBytes(v))
	}
	t.counts = nil
}

// cloneTile returns a deep copy of t (strings are shared).
func (f *CompiledFeature) cloneTile(t *Tile) Tile {
	c := *t
	c.Items = slices.Clone(t.Items)
	if t.x == nil {
		return c
	}
	x := *t.x
	c.x = &x
	if t.x.counts != nil {
		x.counts = make(map[string]int64, len(t.x.counts))
		for k, v := range t.x.counts {
			x.counts[k] = v
		}
	}
	if t.x.hll != nil {
		x.hll = t.x.hll.Clone()
	}
	if t.x.dd != nil {
		x.dd = t.x.dd.Copy()
	}
	return c
}

// sortItemCounts orders by count, highest first, then by value.
func sortItemCounts(ics []ItemCount) {
	slices.SortFunc(ics, func(a, b ItemCount) int {
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		return strings.Compare(a.Value, b.Value)
	})
}

// chanMerge combines two (count, mean, M2) partial aggregates (Chan et al.).
func chanMerge(na int64, ma, m2a float64, nb int64, mb, m2b float64) (mean, m2 float64) {
	if na == 0 {
		return mb, m2b
	}
	if nb == 0 {
		return ma, m2a
	}
	n := float64(na + nb)
	d := mb - ma
	mean = ma + d*float64(nb)/n
	m2 = m2a + m2b + d*d*float64(na)*float64(nb)/n
	return mean, m2
}

// kOf is how many items an item aggregation keeps.
func kOf(kind AggKind, k int) int {
	if kind == AggFirst || kind == AggLast {
		return 1
	}
	return k
}

func (f *CompiledFeature) newHLL() *hyperloglog.Sketch {
	sk, err := hyperloglog.NewSketch(uint8(f.precision), true)
	if err != nil {
		// Validate bounds the precision, so this is a bug.
		panic("topology: hyperloglog precision " + err.Error())
	}
	return sk
}

func (f *CompiledFeature) newDD() *ddsketch.DDSketch {
	return ddsketch.NewDDSketch(f.ddMapping, newDDStore(), newDDStore())
}

func newDDStore() store.Store { return store.NewCollapsingLowestDenseStore(ddMaxBins) }
