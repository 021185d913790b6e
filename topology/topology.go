package topology

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/DataDog/sketches-go/ddsketch"
	"github.com/DataDog/sketches-go/ddsketch/mapping"
	"github.com/axiomhq/hyperloglog"
	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"
)

// Topology is a compiled spec: filters compiled, defaults filled, ready to
// apply events and evaluate features. It is immutable and safe for
// concurrent use, except that Apply mutates the EntityState it is given.
type Topology struct {
	Spec     *Spec
	Features []CompiledFeature

	byName    map[string]int
	maxWindow int64
	// stateful counts the features that are not derived.
	stateful int
	// filters are the distinct where expressions; vms recycles the VMs
	// that run them.
	filters []filter
	vms     sync.Pool
	// needVM is set when a filter needs the VM (has no eq).
	needVM bool
	// slotted is set when Apply can read every field it needs from
	// Event.Slots; slotNames are the fields by slot.
	slotted   bool
	slotNames []string
}

// filter is one compiled where expression.
type filter struct {
	prog *vm.Program
	// eq is set when the expression is a field compared with a string
	// literal (`type == "view"`, `"view" != type`), the usual where, which
	// is then evaluated without the VM, with the VM's meaning: a missing,
	// null or non-string field is not equal.
	eq *fieldEquals
	// idents are the identifiers the expression uses as values: the event
	// fields it may read, and local names.
	idents map[string]struct{}
}

type fieldEquals struct {
	field, value string
	ne           bool
	// slot is field's in Event.Slots.
	slot int
}

// pass evaluates the filter on ev.
func (f *filter) pass(machine *vm.VM, ev *Event) (bool, error) {
	if eq := f.eq; eq != nil {
		if ev.Slots != nil {
			sl := &ev.Slots[eq.slot]
			return (sl.Kind == SlotString && sl.Str == eq.value) != eq.ne, nil
		}
		s, ok := ev.Fields[eq.field].(string)
		return (ok && s == eq.value) != eq.ne, nil
	}
	out, err := machine.Run(f.prog, ev.Fields)
	if err != nil {
		return false, err
	}
	pass, _ := out.(bool)
	return pass, nil
}

// CompiledFeature is a feature ready to run.
type CompiledFeature struct {
	Feature
	Index int
	Kind  AggKind
	Type  ValueType
	// WindowKind is the kind of window.
	WindowKind WindowKind
	// Window is the window size (sliding, tumbling, hopping), the gap of a
	// session window, 0 for lifetime.
	Window time.Duration
	// Tile is the time bucket state is kept in: the tile of a sliding
	// window, the size of a tumbling one, the hop of a hopping one; 0 for
	// session and lifetime windows.
	Tile time.Duration
	// EmitLastClosed is set when a read returns the newest closed window
	// rather than the current one (tumbling, hopping, session).
	EmitLastClosed bool
	// MaxStaleness is the age past which a served value is STALE; 0 never.
	MaxStaleness time.Duration

	// windowMs is the window size in ms (0 for session and lifetime);
	// tileMs the tile; gapMs a session's gap.
	windowMs, tileMs, gapMs int64
	k                       int
	numeric                 bool
	// filter indexes Topology.filters; -1 when every event counts.
	filter    int
	fieldPath []string
	// slot is the field's in Event.Slots.
	slot int

	// program and inputs: a derived feature's expression and the features
	// it reads.
	program *vm.Program
	inputs  []int

	// Sketch parameters: top_k's capacity per tile, count_distinct's exact
	// bound, the HyperLogLog precision, approx_quantile's quantiles and
	// index mapping.
	capacity    int
	maxDistinct int
	precision   int
	quantiles   []float64
	ddMapping   mapping.IndexMapping
}

// Lifetime reports whether the feature has no window: lifetime features,
// and derived ones (which have no state either).
func (f *CompiledFeature) Lifetime() bool { return f.WindowKind == WindowLifetime }

// Compile checks a parsed spec's expressions and builds its Topology.
func Compile(s *Spec) (*Topology, error) {
	t := &Topology{Spec: s, byName: make(map[string]int, len(s.Features))}
	t.vms.New = func() any { return new(vm.VM) }
	filterIndex := map[string]int{}
	for i, f := range s.Features {
		kind := aggByName[f.Agg]
		as := aggSpecs[kind]
		cf := CompiledFeature{
			Feature:      f,
			Index:        i,
			Kind:         kind,
			Type:         as.result,
			Window:       time.Duration(f.Window),
			Tile:         time.Duration(f.Tile),
			MaxStaleness: time.Duration(f.MaxStaleness),
			windowMs:     time.Duration(f.Window).Milliseconds(),
			tileMs:       time.Duration(f.Tile).Milliseconds(),
			k:            kOf(kind, f.K),
			numeric:      as.numeric,
			filter:       -1,
		}
		if f.Expr != "" {
			cf.Kind, cf.numeric, cf.WindowKind = 0, false, WindowLifetime
			if err := t.compileDerived(&cf, s.Features); err != nil {
				return nil, &SpecError{File: s.File, Line: f.Line, Msg: fmt.Sprintf("feature %q: %v", f.Name, err)}
			}
			t.byName[f.Name] = i
			t.Features = append(t.Features, cf)
			continue
		}
		if err := cf.compileWindow(); err != nil {
			return nil, &SpecError{File: s.File, Line: f.Line, Msg: fmt.Sprintf("feature %q: %v", f.Name, err)}
		}
		if err := cf.compileSketch(); err != nil {
			return nil, &SpecError{File: s.File, Line: f.Line, Msg: fmt.Sprintf("feature %q: %v", f.Name, err)}
		}
		if f.Field != "" {
			cf.fieldPath = strings.Split(f.Field, ".")
		}
		cf.filter = -1
		if where := strings.TrimSpace(f.Where); where != "" {
			if fi, ok := filterIndex[where]; ok {
				cf.filter = fi
			} else {
				flt, err := compileWhere(f.Where)
				if err != nil {
					return nil, &SpecError{File: s.File, Line: f.Line, Msg: fmt.Sprintf("feature %q: where %q: %s", f.Name, f.Where, oneLine(err.Error()))}
				}
				cf.filter = len(t.filters)
				filterIndex[where] = cf.filter
				t.filters = append(t.filters, flt)
				t.needVM = t.needVM || flt.eq == nil
			}
		}
		t.maxWindow = max(t.maxWindow, cf.extentMs())
		t.stateful++
		t.byName[f.Name] = i
		t.Features = append(t.Features, cf)
	}
	t.compileSlots()
	return t, nil
}

// compileSketch sets the parameters of the sketch aggregations. A spec built
// in code rather than parsed may leave them unset: defaults apply.
func (cf *CompiledFeature) compileSketch() error {
	switch cf.Kind {
	case AggTopK:
		cf.capacity = max(MinTopKCapacity, TopKCapacityFactor*cf.k)
	case AggCountDistinct, AggApproxDistinct:
		cf.precision = cmp.Or(cf.Precision, DefaultHLLPrecision)
		cf.maxDistinct = cmp.Or(cf.MaxDistinct, DefaultMaxDistinct)
	case AggApproxQuantile:
		m, err := mapping.NewLogarithmicMapping(cmp.Or(cf.RelativeAccuracy, DefaultRelativeAccuracy))
		if err != nil {
			return fmt.Errorf("relative_accuracy %v: %w", cf.RelativeAccuracy, err)
		}
		cf.ddMapping = m
		if cf.Q != nil {
			cf.quantiles = []float64{*cf.Q}
		} else {
			cf.quantiles = cf.Quantiles
			cf.Type = TypeDoubleList
		}
	}
	return nil
}

// compileWhere compiles a where expression over event fields. An event
// field may share its name with an expression builtin (type, count, now):
// every identifier the expression uses as a value is taken to be a field, so
// `type == "view"` means the field. Builtins called as functions still work.
func compileWhere(src string) (filter, error) {
	tree, err := parser.Parse(src)
	if err != nil {
		return filter{}, err
	}
	idents := identCollector{names: map[string]struct{}{}}
	ast.Walk(&tree.Node, &idents)
	if idents.unknownCall != "" {
		// It would compile, then fail on every event.
		return filter{}, fmt.Errorf("unknown function %s", idents.unknownCall)
	}
	// The env is a map[string]any: expr then reads fields with a plain map
	// lookup, not reflection, which would allocate per field.
	opts := []expr.Option{expr.Env(map[string]any{}), expr.AllowUndefinedVariables(), expr.AsBool(), expr.Patch(nilSafeCompare{})}
	for name := range idents.names {
		opts = append(opts, expr.DisableBuiltin(name))
	}
	prog, err := expr.Compile(src, opts...)
	if err != nil {
		return filter{}, err
	}
	return filter{prog: prog, eq: fieldEqualsOf(tree.Node), idents: idents.names}, nil
}

// EventFields returns the top-level event fields the features can read: their
// fields (the first part of a dotted path) and the identifiers of their
// where expressions. It returns all when an expression reads the event as
// a whole ($env), so any field may matter. A decoder may leave every other
// field out of Event.Fields: nothing in Apply reads it.
func (t *Topology) EventFields() (names []string, all bool) {
	seen := map[string]struct{}{}
	for _, f := range t.Features {
		if len(f.fieldPath) > 0 {
			seen[f.fieldPath[0]] = struct{}{}
		}
	}
	for _, flt := range t.filters {
		for name := range flt.idents {
			if name == "$env" {
				return nil, true
			}
			seen[name] = struct{}{}
		}
	}
	names = make([]string, 0, len(seen))
	for name := range seen {
		names = append(names, name)
	}
	slices.Sort(names)
	return names, false
}

// fieldEqualsOf returns n as a field compared with a string literal, or
// nil if it is anything else.
func fieldEqualsOf(n ast.Node) *fieldEquals {
	b, ok := n.(*ast.BinaryNode)
	if !ok || (b.Operator != "==" && b.Operator != "!=") {
		return nil
	}
	id, okID := b.Left.(*ast.IdentifierNode)
	lit, okLit := b.Right.(*ast.StringNode)
	if !okID || !okLit {
		id, okID = b.Right.(*ast.IdentifierNode)
		lit, okLit = b.Left.(*ast.StringNode)
	}
	if !okID || !okLit || id.Value == "$env" { // $env is the whole event
		return nil
	}
	return &fieldEquals{field: id.Value, value: lit.Value, ne: b.Operator == "!="}
}

type identCollector struct {
	names       map[string]struct{}
	unknownCall string
}

func (c *identCollector) Visit(n *ast.Node) {
	switch x := (*n).(type) {
	case *ast.IdentifierNode:
		c.names[x.Value] = struct{}{}
	case *ast.CallNode:
		// Builtins parse as BuiltinNode and no functions are defined, so a
		// call by name is a call of an unknown function.
		if id, ok := x.Callee.(*ast.IdentifierNode); ok && c.unknownCall == "" {
			c.unknownCall = id.Value
		}
	}
}

// nilSafeCompare makes an ordering comparison with a nil operand (a missing
// or null field) false, as NULL compares in SQL, rather than a runtime error
// that would reject the event for every feature.
type nilSafeCompare struct{}

func (nilSafeCompare) Visit(n *ast.Node) {
	b, ok := (*n).(*ast.BinaryNode)
	if !ok {
		return
	}
	switch b.Operator {
	case "<", ">", "<=", ">=":
	default:
		return
	}
	notNil := func(x ast.Node) ast.Node { return &ast.BinaryNode{Operator: "!=", Left: x, Right: &ast.NilNode{}} }
	ast.Patch(n, &ast.BinaryNode{
		Operator: "&&",
		Left:     &ast.BinaryNode{Operator: "&&", Left: notNil(b.Left), Right: notNil(b.Right)},
		Right:    b,
	})
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// FeatureIndex returns the index of the named feature.
func (t *Topology) FeatureIndex(name string) (int, bool) {
	i, ok := t.byName[name]
	return i, ok
}

// MaxWindow is the longest span of event time before as_of that any read
// covers: a sliding window's size, two tumbling buckets (the current and
// the last closed), a hopping window and a hop, a session's gap.
func (t *Topology) MaxWindow() time.Duration { return time.Duration(t.maxWindow) * time.Millisecond }

// Event is a decoded input event.
type Event struct {
	// Key is the entity id.
	Key string
	// TimeMs is the event time in milliseconds since the Unix epoch.
	TimeMs int64
	// Fields are the decoded fields; nested records are map[string]any.
	Fields map[string]any
	// Slots, when not nil, hold the fields of Topology.SlotFields, and
	// Apply reads them instead of Fields.
	Slots []Slot
}

// Lookup returns the value at a dotted path such as "item.price".
func (e *Event) Lookup(path []string) (any, bool) {
	if len(path) == 1 {
		v := e.Fields[path[0]]
		return v, v != nil
	}
	var cur any = e.Fields
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[p]; !ok {
			return nil, false
		}
	}
	return cur, cur != nil
}

// ErrBadEvent is wrapped by Apply's errors: the event cannot be applied as
// it is and belongs in the dead-letter path.
var ErrBadEvent = errors.New("topology: bad event")

// EntityState is everything kept for one entity: per feature (indexed like
// Topology.Features) its tiles in ascending Start order.
type EntityState struct {
	// LastEventMs is the newest event time applied.
	LastEventMs int64
	Features    [][]Tile
}

// Empty reports whether st holds no tile of any feature.
func (st *EntityState) Empty() bool {
	for _, tiles := range st.Features {
		if len(tiles) > 0 {
			return false
		}
	}
	return true
}

// SizeBytes estimates the memory st holds: its tiles and items as laid
// out, maps of counts by their entries, a HyperLogLog or DDSketch as 1 KiB.
// Caches bound themselves with it; TestSizeBytes keeps it within a factor
// of two of the heap (it errs high with small maps).
func (st *EntityState) SizeBytes() int {
	const (
		tileSize = int(unsafe.Sizeof(Tile{}))
		itemSize = int(unsafe.Sizeof(Item{}))
	)
	n := int(unsafe.Sizeof(*st)) + cap(st.Features)*int(unsafe.Sizeof([]Tile(nil)))
	for _, tiles := range st.Features {
		n += cap(tiles) * tileSize
		for i := range tiles {
			n += len(tiles[i].Items) * itemSize
			for _, it := range tiles[i].Items {
				n += len(it.Value)
			}
			if x := tiles[i].x; x != nil {
				n += int(unsafe.Sizeof(*x))
				if x.counts != nil {
					n += 64 + max(len(x.counts), 8)*48 // a map of at least one group
				}
				if x.hll != nil {
					n += 1 << 10
				}
				if x.dd != nil {
					n += 1 << 10
				}
			}
		}
	}
	return n
}

// NewEntityState returns an empty state for t.
func (t *Topology) NewEntityState() *EntityState {
	return &EntityState{Features: make([][]Tile, len(t.Features))}
}

// CloneState returns a deep copy of st, which Apply can change while st is
// read elsewhere.
func (t *Topology) CloneState(st *EntityState) *EntityState {
	c := &EntityState{LastEventMs: st.LastEventMs, Features: make([][]Tile, len(st.Features))}
	for i, tiles := range st.Features {
		if tiles == nil {
			continue
		}
		c.Features[i] = make([]Tile, len(tiles))
		for j := range tiles {
			c.Features[i][j] = t.Features[i].cloneTile(&tiles[j])
		}
	}
	return c
}

type contribution struct {
	ok  bool
	num float64
	str string
	// borrowed is set when str may share memory with the input: what
	// keeps it copies it.
	borrowed bool
}

// Apply folds ev into st. It first evaluates every filter and reads every
// field, and changes nothing when one fails, so an event is applied whole or
// not at all. watermarkMs is the partition's watermark: tiles that no read
// at or after it can need are dropped, which keeps state bounded.
func (t *Topology) Apply(st *EntityState, ev *Event, watermarkMs int64) error {
	var buf [16]contribution
	contrib, err := t.contributions(ev, buf[:0], false)
	if err != nil {
		return err
	}
	for i := range t.Features {
		f := &t.Features[i]
		if contrib[i].ok {
			st.Features[i] = f.add(st.Features[i], ev.TimeMs, &contrib[i])
		}
		st.Features[i] = f.prune(st.Features[i], watermarkMs)
	}
	if ev.TimeMs > st.LastEventMs {
		st.LastEventMs = ev.TimeMs
	}
	return nil
}

// Feeds appends to dst the indices of the features ev would update if it
// were applied: its where filter passes and it has the feature's field. A
// processor uses it to count a late event against the features it missed.
// Features whose contribution fails (a bad value) are left out.
func (t *Topology) Feeds(ev *Event, dst []int) []int {
	var buf [16]contribution
	contrib, _ := t.contributions(ev, buf[:0], true)
	for i := range contrib {
		if contrib[i].ok {
			dst = append(dst, i)
		}
	}
	return dst
}

// contributions appends each feature's contribution of ev to contrib, in
// feature order, evaluating each distinct where expression once, on a VM
// reused across events (a filtered event allocates nothing). A feature
// whose filter or field fails makes it return the error, or with skipBad
// contribute nothing.
func (t *Topology) contributions(ev *Event, contrib []contribution, skipBad bool) ([]contribution, error) {
	var fbuf [16]int8
	filtered := fbuf[:0]
	if len(t.filters) > len(fbuf) {
		filtered = make([]int8, 0, len(t.filters))
	}
	filtered = filtered[:len(t.filters)]
	var machine *vm.VM
	if t.needVM {
		machine = t.vms.Get().(*vm.VM)
		defer t.vms.Put(machine)
	}
	for i := range t.Features {
		f := &t.Features[i]
		c, err := t.contribution(f, ev, machine, filtered)
		if err != nil {
			if !skipBad {
				return contrib, fmt.Errorf("%w: feature %s: %w", ErrBadEvent, f.Name, err)
			}
			c = contribution{}
		}
		contrib = append(contrib, c)
	}
	return contrib, nil
}

// Filter results cached per event in Apply.
const (
	filterUnknown int8 = iota
	filterPass
	filterSkip
)

func (t *Topology) contribution(f *CompiledFeature, ev *Event, machine *vm.VM, filtered []int8) (contribution, error) {
	if f.program != nil {
		return contribution{}, nil // derived: no state
	}
	if f.filter >= 0 {
		switch filtered[f.filter] {
		case filterSkip:
			return contribution{}, nil
		case filterUnknown:
			pass, err := t.filters[f.filter].pass(machine, ev)
			if err != nil {
				return contribution{}, fmt.Errorf("where: %s", oneLine(err.Error()))
			}
			if !pass {
				filtered[f.filter] = filterSkip
				return contribution{}, nil
			}
			filtered[f.filter] = filterPass
		}
	}
	if f.fieldPath == nil {
		return contribution{ok: true}, nil
	}
	var (
		v     any
		found bool
	)
	if ev.Slots != nil {
		sl := &ev.Slots[f.slot]
		switch {
		case sl.Kind == SlotNumber && f.numeric:
			return f.numContribution(sl.Num)
		case sl.Kind == SlotString && !f.numeric:
			c, err := f.strContribution(sl.Str)
			c.borrowed = true
			return c, err
		}
		v, found = sl.Value()
	} else {
		v, found = ev.Lookup(f.fieldPath)
	}
	if !found {
		// A missing or null field contributes nothing, as NULL in SQL.
		return contribution{}, nil
	}
	if f.numeric {
		n, err := toFloat(v)
		if err != nil {
			return contribution{}, fmt.Errorf("field %s: %w", f.Field, err)
		}
		return f.numContribution(n)
	}
	s, err := toString(v)
	if err != nil {
		return contribution{}, fmt.Errorf("field %s: %w", f.Field, err)
	}
	return f.strContribution(s)
}

func (f *CompiledFeature) numContribution(n float64) (contribution, error) {
	if math.IsNaN(n) || math.IsInf(n, 0) {
		return contribution{}, fmt.Errorf("field %s: out of range: %v", f.Field, n)
	}
	if f.ddMapping != nil && (n > f.ddMapping.MaxIndexableValue() || n < -f.ddMapping.MaxIndexableValue()) {
		return contribution{}, fmt.Errorf("field %s: %v is out of approx_quantile's range (±%g)", f.Field, n, f.ddMapping.MaxIndexableValue())
	}
	return contribution{ok: true, num: n}, nil
}

func (f *CompiledFeature) strContribution(s string) (contribution, error) {
	if len(s) > MaxItemBytes {
		return contribution{}, fmt.Errorf("field %s: value of %d bytes, at most %d are kept", f.Field, len(s), MaxItemBytes)
	}
	return contribution{ok: true, str: s}, nil
}

func toFloat(v any) (float64, error) {
	var n float64
	switch x := v.(type) {
	case float64:
		n = x
	case float32:
		n = float64(x)
	case int:
		n = float64(x)
	case int32:
		n = float64(x)
	case int64:
		n = float64(x)
	case json.Number:
		var err error
		if n, err = x.Float64(); err != nil {
			return 0, fmt.Errorf("want a number, got %q", x)
		}
	default:
		return 0, fmt.Errorf("want a number, got %T", v)
	}
	return n, nil
}

func toString(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), nil
	case float32:
		return strconv.FormatFloat(float64(x), 'f', -1, 32), nil
	case int:
		return strconv.Itoa(x), nil
	case int32:
		return strconv.FormatInt(int64(x), 10), nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	case json.Number:
		return x.String(), nil
	case bool:
		return strconv.FormatBool(x), nil
	}
	return "", fmt.Errorf("want a string or number, got %T", v)
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// Value is a feature's value as of some instant.
type Value struct {
	Type ValueType
	// Present is false when the aggregation has no value over the window
	// (min, max, avg, first, last of no events).
	Present bool
	Int     int64
	Float   float64
	Str     string
	List    []string
	// Floats holds approx_quantile's values, one per quantile (with
	// quantiles; a single q is in Float).
	Floats []float64
	// Counts holds top_k's most frequent values, most frequent first; ties
	// in ascending value order.
	Counts []ItemCount
	// Approximate is set when the value comes from a sketch past its exact
	// range: count_distinct beyond max_distinct values in a tile, top_k
	// with a tile whose summary is full. (approx_distinct and
	// approx_quantile are approximate by definition and do not set it.)
	Approximate bool
	// WindowStartMs and WindowEndMs bound the event times the value covers;
	// both are 0 for lifetime features.
	WindowStartMs, WindowEndMs int64
}

// Evaluate merges the tiles of feature fi that fall in its window ending at
// asOfMs and returns the aggregate. tiles must be in ascending Start order,
// as Apply and DecodeFeature leave them. The returned List is newly
// allocated; tiles are not retained.
func (t *Topology) Evaluate(fi int, tiles []Tile, asOfMs int64) Value {
	f := &t.Features[fi]
	v := Value{Type: f.Type}
	in, start, end, ok := f.selectTiles(tiles, asOfMs)
	if !ok {
		return v // no session at as_of
	}
	v.WindowStartMs, v.WindowEndMs = start, end
	var count int64
	for i := range in {
		count += in[i].Count
	}
	switch f.Kind {
	case AggCount:
		v.Int, v.Present = count, true
	case AggSum:
		for i := range in {
			v.Float += in[i].Num
		}
		v.Present = true
	case AggAvg:
		if count > 0 {
			var sum float64
			for i := range in {
				sum += in[i].Num
			}
			v.Float, v.Present = sum/float64(count), true
		}
	case AggMin, AggMax:
		for i := range in {
			if in[i].Count == 0 {
				continue
			}
			if !v.Present || (f.Kind == AggMin && in[i].Num < v.Float) || (f.Kind == AggMax && in[i].Num > v.Float) {
				v.Float, v.Present = in[i].Num, true
			}
		}
	case AggFirst, AggFirstK:
		var list []string
		for i := 0; i < len(in) && len(list) < f.k; i++ {
			for _, it := range in[i].Items {
				if len(list) == f.k {
					break
				}
				list = append(list, it.Value)
			}
		}
		v.setItems(f.Kind == AggFirst, list)
	case AggLast, AggLastK:
		var list []string
		for i := len(in) - 1; i >= 0 && len(list) < f.k; i-- {
			for _, it := range in[i].Items {
				if len(list) == f.k {
					break
				}
				list = append(list, it.Value)
			}
		}
		v.setItems(f.Kind == AggLast, list)
	case AggVariance, AggStddev:
		var n int64
		var mean, m2 float64
		for i := range in {
			mean, m2 = chanMerge(n, mean, m2, in[i].Count, in[i].Num, in[i].sk().m2)
			n += in[i].Count
		}
		if n > 0 {
			// Population variance; rounding can leave M2 a hair below 0.
			v.Float, v.Present = max(m2, 0)/float64(n), true
			if f.Kind == AggStddev {
				v.Float = math.Sqrt(v.Float)
			}
		}
	case AggTopK:
		v.Counts, v.Present = f.topK(in), true
		for i := range in {
			// A full summary may have evicted values: its counts are then
			// within events/capacity, not exact.
			if len(in[i].sk().counts) >= f.capacity {
				v.Approximate = true
			}
		}
	case AggCountDistinct:
		v.Int, v.Approximate = f.countDistinct(in)
		v.Present = true
	case AggApproxDistinct:
		var acc hyperloglog.Sketch
		for i := range in {
			_ = acc.Merge(in[i].sk().hll)
		}
		v.Int, v.Present = int64(acc.Estimate()), true
	case AggApproxQuantile:
		f.quantile(in, &v)
	}
	return v
}

// topK merges the tiles' summaries and returns the k most frequent values.
func (f *CompiledFeature) topK(in []Tile) []ItemCount {
	var merged map[string]int64
	switch {
	case len(in) == 1:
		merged = in[0].sk().counts
	case len(in) > 1:
		merged = make(map[string]int64, len(in[len(in)-1].sk().counts))
		for i := range in {
			for v, c := range in[i].sk().counts {
				merged[v] += c
			}
		}
	}
	out := make([]ItemCount, 0, len(merged))
	for v, c := range merged {
		out = append(out, ItemCount{Value: v, Count: c})
	}
	sortItemCounts(out)
	if len(out) > f.k {
		out = out[:f.k:f.k]
	}
	return out
}

// countDistinct counts the union of the tiles' values: exactly while every
// tile holds its set, else by merging HyperLogLog sketches.
func (f *CompiledFeature) countDistinct(in []Tile) (n int64, approx bool) {
	for i := range in {
		if in[i].sk().hll != nil {
			approx = true
			break
		}
	}
	if approx {
		var acc hyperloglog.Sketch
		for i := range in {
			if in[i].sk().hll != nil {
				_ = acc.Merge(in[i].sk().hll)
			}
		}
		for i := range in {
			for v := range in[i].sk().counts {
				acc.Insert(stringBytes(v))
			}
		}
		return int64(acc.Estimate()), true
	}
	switch len(in) {
	case 0:
		return 0, false
	case 1:
		return int64(len(in[0].sk().counts)), false
	}
	seen := make(map[string]struct{}, len(in[len(in)-1].sk().counts))
	for i := range in {
		for v := range in[i].sk().counts {
			seen[v] = struct{}{}
		}
	}
	return int64(len(seen)), false
}

// quantile merges the tiles' DDSketches and reads the quantiles.
func (f *CompiledFeature) quantile(in []Tile, v *Value) {
	var acc *ddsketch.DDSketch
	for i := range in {
		if in[i].sk().dd == nil {
			continue
		}
		if acc == nil {
			if len(in) == 1 {
				acc = in[i].sk().dd // only read
				continue
			}
			acc = f.newDD()
		}
		_ = acc.MergeWith(in[i].sk().dd)
	}
	if acc == nil || acc.IsEmpty() {
		return
	}
	if v.Type == TypeDouble {
		q, err := acc.GetValueAtQuantile(f.quantiles[0])
		v.Float, v.Present = q, err == nil
		return
	}
	v.Floats = make([]float64, len(f.quantiles))
	for i, q := range f.quantiles {
		x, err := acc.GetValueAtQuantile(q)
		if err != nil {
			v.Floats = nil
			return
		}
		v.Floats[i] = x
	}
	v.Present = true
}

func (v *Value) setItems(single bool, list []string) {
	if single {
		if len(list) > 0 {
			v.Str, v.Present = list[0], true
		}
		return
	}
	if list == nil {
		list = []string{}
	}
	v.List, v.Present = list, true
}
