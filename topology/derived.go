package topology

import (
	"fmt"
	"math"
	"reflect"
	"slices"
	"sync"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"
)

// A derived feature is computed at read time from other features of the
// same entity, by an expression over their values (expr:). It has no
// state: Apply skips it, AppendState does not write it, and only
// EvaluateAll can compute it.

// Derived reports whether the feature is computed at read time from other
// features (expr:) rather than kept in tiles.
func (f *CompiledFeature) Derived() bool { return f.program != nil }

// Inputs returns the indexes of the features a derived feature's
// expression reads, ascending; nil for other features. The slice must not
// be modified.
func (f *CompiledFeature) Inputs() []int { return f.inputs }

// compileDerived compiles a derived feature's expression over the features
// before it, or any stateful feature. Every identifier must name such a
// feature, and the result must be a number or a string.
func (t *Topology) compileDerived(cf *CompiledFeature, specFeatures []Feature) error {
	tree, err := parser.Parse(cf.Expr)
	if err != nil {
		return fmt.Errorf("expr %q: %s", cf.Expr, oneLine(err.Error()))
	}
	idents := identCollector{names: map[string]struct{}{}}
	ast.Walk(&tree.Node, &idents)
	if idents.unknownCall != "" {
		return fmt.Errorf("expr %q: unknown function %s", cf.Expr, idents.unknownCall)
	}
	env := map[string]any{}
	opts := []expr.Option{}
	for name := range idents.names {
		if name == cf.Name {
			return fmt.Errorf("expr %q: a feature cannot use itself", cf.Expr)
		}
		fi, ok := t.byName[name]
		if !ok {
			// A stateful feature defined further down is fine: only
			// derived ones must come first, so there are no cycles.
			for j := range specFeatures {
				if specFeatures[j].Name == name && specFeatures[j].Expr == "" {
					ok, fi = true, j
				}
			}
		}
		if !ok {
			if _, later := findFeature(specFeatures, name); later {
				return fmt.Errorf("expr %q: derived feature %s is defined after %s: define it first", cf.Expr, name, cf.Name)
			}
			return fmt.Errorf("expr %q: unknown feature %s", cf.Expr, name)
		}
		typ := t.typeOf(fi, specFeatures)
		zero, ok := exprZero[typ]
		if !ok {
			return fmt.Errorf("expr %q: feature %s is %s, which expressions cannot read", cf.Expr, name, typ)
		}
		env[name] = zero
		cf.inputs = append(cf.inputs, fi)
		// A feature named like a builtin (count, max) is the feature.
		opts = append(opts, expr.DisableBuiltin(name))
	}
	slices.Sort(cf.inputs)
	prog, err := expr.Compile(cf.Expr, append(opts, expr.Env(env))...)
	if err != nil {
		return fmt.Errorf("expr %q: %s", cf.Expr, oneLine(err.Error()))
	}
	switch rt := prog.Node().Type(); {
	case rt == nil || rt.Kind() == reflect.Interface:
		// Unknown until run (such as a ternary of an int and a float):
		// served as a double.
		cf.Type = TypeDouble
	case rt.Kind() >= reflect.Int && rt.Kind() <= reflect.Uint64:
		cf.Type = TypeInt64
	case rt.Kind() == reflect.Float32 || rt.Kind() == reflect.Float64:
		cf.Type = TypeDouble
	case rt.Kind() == reflect.String:
		cf.Type = TypeString
	case rt.Kind() == reflect.Bool:
		return fmt.Errorf("expr %q is a bool, and features are numbers or strings: write (%s) ? 1 : 0", cf.Expr, cf.Expr)
	default:
		return fmt.Errorf("expr %q is a %s: want a number or a string", cf.Expr, rt)
	}
	cf.program = prog
	return nil
}

func findFeature(fs []Feature, name string) (int, bool) {
	for i := range fs {
		if fs[i].Name == name {
			return i, true
		}
	}
	return 0, false
}

// typeOf is the value type of feature fi, compiled or not yet.
func (t *Topology) typeOf(fi int, specFeatures []Feature) ValueType {
	if fi < len(t.Features) {
		return t.Features[fi].Type
	}
	f := specFeatures[fi]
	kind := aggByName[f.Agg]
	if kind == AggApproxQuantile && f.Q == nil {
		return TypeDoubleList
	}
	return aggSpecs[kind].result
}

// exprZero gives each readable value type its Go type in expressions.
var exprZero = map[ValueType]any{
	TypeInt64:      int(0),
	TypeDouble:     float64(0),
	TypeString:     "",
	TypeStringList: []string(nil),
	TypeDoubleList: []float64(nil),
}

// Needs returns the stateful features whose tiles evaluating want takes:
// want's own stateful features and every input of its derived ones,
// ascending and without duplicates. The result is newly allocated.
func (t *Topology) Needs(want []int) []int {
	out := make([]int, 0, len(want))
	var visit func(fi int)
	visit = func(fi int) {
		f := &t.Features[fi]
		if !f.Derived() {
			out = append(out, fi)
			return
		}
		for _, in := range f.inputs {
			visit(in)
		}
	}
	for _, fi := range want {
		visit(fi)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// EvaluateAll evaluates features want[j] into dst[j] as of asOfMs, derived
// ones included. tiles is indexed like t.Features and must hold the tiles
// of every feature Needs(want) names; a nil entry means the feature's state
// is unknown (a stored entity written under a spec without it), so its
// value and any derived value that reads it are not present. An empty,
// non-nil slice is a feature with no events. dst must be as long as want.
//
// A derived value is not present when an input is not present, when the
// expression fails at run time, or when it is not a finite number (a
// division by zero).
func (t *Topology) EvaluateAll(tiles [][]Tile, asOfMs int64, want []int, dst []Value) {
	var sc *derivedScratch
	for j, fi := range want {
		if t.Features[fi].Derived() && sc == nil {
			sc = derivedScratchPool.Get().(*derivedScratch)
			defer derivedScratchPool.Put(sc)
		}
		dst[j] = t.evaluateOne(tiles, asOfMs, fi, 0, sc)
	}
}

// derivedScratch is what evaluating derived features reuses across calls:
// a VM, and an env map per nesting depth.
type derivedScratch struct {
	vm   vm.VM
	envs []map[string]any
}

var derivedScratchPool = sync.Pool{New: func() any { return new(derivedScratch) }}

func (sc *derivedScratch) env(depth int) map[string]any {
	for len(sc.envs) <= depth {
		sc.envs = append(sc.envs, make(map[string]any, 4))
	}
	env := sc.envs[depth]
	clear(env)
	return env
}

// maxDerivedDepth bounds derived-on-derived recursion; the spec order
// rules out cycles, so this only guards against a bug.
const maxDerivedDepth = 64

func (t *Topology) evaluateOne(tiles [][]Tile, asOfMs int64, fi, depth int, sc *derivedScratch) Value {
	f := &t.Features[fi]
	if !f.Derived() {
		if fi >= len(tiles) || tiles[fi] == nil {
			return Value{Type: f.Type}
		}
		return t.Evaluate(fi, tiles[fi], asOfMs)
	}
	v := Value{Type: f.Type}
	if depth > maxDerivedDepth {
		return v
	}
	// Inputs first: a derived input evaluates with the same scratch at the
	// next depth, so this depth's env is filled only after.
	var ins [8]Value
	inputs := ins[:0]
	for _, in := range f.inputs {
		iv := t.evaluateOne(tiles, asOfMs, in, depth+1, sc)
		if !iv.Present {
			return v
		}
		inputs = append(inputs, iv)
	}
	env := sc.env(depth)
	for i, in := range f.inputs {
		env[t.Features[in].Name] = inputs[i].exprValue()
	}
	out, err := sc.vm.Run(f.program, env)
	if err != nil {
		return v
	}
	switch x := out.(type) {
	case int:
		v.Int, v.Present = int64(x), f.Type == TypeInt64
		if f.Type == TypeDouble {
			v.Float, v.Present = float64(x), true
		}
	case int64:
		v.Int, v.Present = x, f.Type == TypeInt64
		if f.Type == TypeDouble {
			v.Float, v.Present = float64(x), true
		}
	case float64:
		if f.Type == TypeDouble && !math.IsNaN(x) && !math.IsInf(x, 0) {
			v.Float, v.Present = x, true
		}
	case string:
		if f.Type == TypeString {
			v.Str, v.Present = x, true
		}
	}
	return v
}

// exprValue is the value as a derived expression sees it.
func (v *Value) exprValue() any {
	switch v.Type {
	case TypeInt64:
		return int(v.Int)
	case TypeDouble:
		return v.Float
	case TypeString:
		return v.Str
	case TypeStringList:
		return v.List
	case TypeDoubleList:
		return v.Floats
	}
	return nil
}
