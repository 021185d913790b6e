package topology

import (
	"slices"
)

// AggKind is an aggregation.
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
)

// ValueType is the type of a feature's value, as served.
type ValueType uint8

// Value types.
const (
	TypeInt64 ValueType = iota + 1
	TypeDouble
	TypeString
	TypeStringList
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
	AggCount:  {name: "count", result: TypeInt64},
	AggSum:    {name: "sum", needsField: true, numeric: true, result: TypeDouble},
	AggMin:    {name: "min", needsField: true, numeric: true, result: TypeDouble},
	AggMax:    {name: "max", needsField: true, numeric: true, result: TypeDouble},
	AggAvg:    {name: "avg", needsField: true, numeric: true, result: TypeDouble},
	AggFirst:  {name: "first", needsField: true, result: TypeString},
	AggLast:   {name: "last", needsField: true, result: TypeString},
	AggFirstK: {name: "first_k", needsField: true, needsK: true, result: TypeStringList},
	AggLastK:  {name: "last_k", needsField: true, needsK: true, result: TypeStringList},
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

// Tile is the partial aggregate of one feature over one time bucket
// [Start, Start+tile) of event time. A lifetime feature has one tile with
// Start 0. Which fields are used depends on the aggregation: Count always;
// Num is the sum (sum, avg), the minimum (min) or the maximum (max); Items
// holds first/last values ordered oldest first (first, first_k) or newest
// first (last, last_k), at most k of them.
type Tile struct {
	Start int64
	Count int64
	Num   float64
	Items []Item
}

// Item is a value kept by first/last aggregations with its event time.
type Item struct {
	TimeMs int64
	Value  string
}

// add folds one event into the tile. For item aggregations, among equal
// event times the later arrival is the newer one.
func (t *Tile) add(kind AggKind, k int, num float64, str string, timeMs int64) {
	switch kind {
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
		if i < k {
			t.Items = slices.Insert(t.Items, i, Item{TimeMs: timeMs, Value: str})
			if len(t.Items) > k {
				t.Items = t.Items[:k]
			}
		}
	case AggLast, AggLastK:
		// Newest first: insert before every item at or before timeMs.
		i, _ := slices.BinarySearchFunc(t.Items, timeMs, func(it Item, ts int64) int {
			if it.TimeMs > ts {
				return -1
			}
			return 1
		})
		if i < k {
			t.Items = slices.Insert(t.Items, i, Item{TimeMs: timeMs, Value: str})
			if len(t.Items) > k {
				t.Items = t.Items[:k]
			}
		}
	}
	t.Count++
}

// kOf is how many items an item aggregation keeps.
func kOf(kind AggKind, k int) int {
	if kind == AggFirst || kind == AggLast {
		return 1
	}
	return k
}
