package topology

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// This file holds the naive reference model of Apply/Evaluate and the
// property test that compares the two. The model keeps every applied event
// and recomputes each aggregate from scratch; it shares no code with the
// package beyond the spec it is given.

// t0 is an instant in November 2025, in epoch milliseconds.
const t0 = int64(1_764_133_200_000)

const (
	msMinute = int64(time.Minute / time.Millisecond)
	msHour   = int64(time.Hour / time.Millisecond)
)

// Where filters the model understands. Field names avoid expr builtins
// (type, count, ...): TestWhereFilter covers those. The price filter is
// written nil-safe because a bare `price > 10` rejects events without a
// price (see TestWhereFilter); its wrong-type behaviour is still exercised.
const (
	whereNone     = ""
	whereView     = `kind == "view"`
	whereNotView  = `kind != "view"`
	wherePriceGT  = `(price ?? 0) > 10`
	wherePriceAnd = `kind == "purchase" && (price ?? 0) > 10`
)

// modelFeature is a feature as the model sees it: plain numbers.
type modelFeature struct {
	name           string
	agg            string
	field          string
	where          string
	windowMs       int64 // 0: lifetime
	tileMs         int64 // 0: default (window/12), resolved by resolveTile
	k              int
	windowS, tileS string // as written in the spec
	// approx_quantile: the quantiles, and whether they were written as a
	// single q. count_distinct: the exact bound per tile.
	quantiles   []float64
	singleQ     bool
	maxDistinct int
	// kind is the window kind: "sliding" (windowMs > 0), "lifetime",
	// "tumbling" (windowMs, tileMs = windowMs), "hopping" (windowMs, tileMs
	// = hop) or "session" (gapMs). emitLast reads the last closed window.
	kind     string
	gapMs    int64
	emitLast bool
	hopS     string
	gapS     string
	// expr makes a derived feature dividing feature num by feature den.
	expr     string
	num, den int
}

type modelEvent struct {
	key    string
	timeMs int64
	fields map[string]any
}

// model is the reference: per entity, the events applied, in arrival order.
type model struct {
	features []modelFeature
	applied  map[string][]modelEvent
	lastMs   map[string]int64
	// contrib caches, per key and feature, the applied events that count
	// for the feature, in arrival order; apply clears it.
	contrib map[string][][]modelEvent
}

func newModel(fs []modelFeature) *model {
	return &model{features: fs, applied: map[string][]modelEvent{}, lastMs: map[string]int64{}, contrib: map[string][][]modelEvent{}}
}

func (m *model) contributions(key string, fi int) []modelEvent {
	c, ok := m.contrib[key]
	if !ok {
		c = make([][]modelEvent, len(m.features))
		for i := range m.features {
			for _, ev := range m.applied[key] {
				if ok, _ := m.features[i].contributes(ev.fields); ok {
					c[i] = append(c[i], ev)
				}
			}
		}
		m.contrib[key] = c
	}
	return c[fi]
}

func specYAML(fs []modelFeature) string {
	var b strings.Builder
	b.WriteString("app: model\nsource:\n  topic: events\nfeatures:\n")
	for _, f := range fs {
		if f.expr != "" {
			fmt.Fprintf(&b, "  - name: %s\n    expr: %s\n", f.name, f.expr)
			continue
		}
		fmt.Fprintf(&b, "  - name: %s\n    agg: %s\n", f.name, f.agg)
		if f.field != "" {
			fmt.Fprintf(&b, "    field: %s\n", f.field)
		}
		if f.where != "" {
			fmt.Fprintf(&b, "    where: '%s'\n", f.where)
		}
		switch f.kind {
		case "tumbling":
			fmt.Fprintf(&b, "    window: {kind: tumbling, size: %s}\n", f.windowS)
		case "hopping":
			fmt.Fprintf(&b, "    window: {kind: hopping, size: %s, hop: %s}\n", f.windowS, f.hopS)
		case "session":
			fmt.Fprintf(&b, "    window:\n      kind: session\n      gap: %s\n", f.gapS)
		case "lifetime":
			if f.windowS == "explicit" {
				b.WriteString("    window: {kind: lifetime}\n")
			}
		default:
			if f.windowS != "" {
				fmt.Fprintf(&b, "    window: %s\n", f.windowS)
			}
			if f.tileS != "" {
				fmt.Fprintf(&b, "    tile: %s\n", f.tileS)
			}
		}
		if f.emitLast {
			b.WriteString("    emit: last_closed\n")
		} else if f.kind == "tumbling" && f.gapMs == 0 && len(f.name)%2 == 0 {
			b.WriteString("    emit: current\n") // the default, sometimes written out
		}
		if f.k != 0 {
			fmt.Fprintf(&b, "    k: %d\n", f.k)
		}
		if f.singleQ {
			fmt.Fprintf(&b, "    q: %v\n", f.quantiles[0])
		} else if len(f.quantiles) > 0 {
			fmt.Fprintf(&b, "    quantiles: %s\n", strings.Join(strings.Fields(fmt.Sprint(f.quantiles)), ", "))
		}
		if f.maxDistinct != 0 {
			fmt.Fprintf(&b, "    max_distinct: %d\n", f.maxDistinct)
		}
	}
	return b.String()
}

// floorDivModel and ceilDivModel are for b > 0.
func floorDivModel(a, b int64) int64 {
	q := a / b
	if a%b < 0 {
		q--
	}
	return q
}

func ceilDivModel(a, b int64) int64 { return -floorDivModel(-a, b) }

// refWhere evaluates the filters of the model; err reports an event the
// filter cannot be evaluated on (a bad event).
func refWhere(where string, fields map[string]any) (pass bool, bad bool) {
	kindView := fields["kind"] == "view"
	priceGT := func() (bool, bool) {
		p, ok := fields["price"]
		if !ok || p == nil {
			return false, false
		}
		switch x := p.(type) {
		case float64:
			return x > 10, false
		case float32:
			return x > 10, false
		case int:
			return x > 10, false
		case int32:
			return x > 10, false
		case int64:
			return x > 10, false
		}
		return false, true
	}
	switch where {
	case whereNone:
		return true, false
	case whereView:
		return kindView, false
	case whereNotView:
		return !kindView, false
	case wherePriceGT:
		return priceGT()
	case wherePriceAnd:
		if fields["kind"] != "purchase" {
			return false, false // && short-circuits
		}
		return priceGT()
	}
	panic("model: unknown where " + where)
}

func lookupModel(fields map[string]any, path string) (any, bool) {
	var cur any = fields
	for p := range strings.SplitSeq(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		cur = m[p]
	}
	return cur, cur != nil
}

func refNumber(v any) (float64, bool) {
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
	default:
		return 0, false
	}
	return n, !math.IsNaN(n) && !math.IsInf(n, 0)
}

func refString(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case int:
		return strconv.Itoa(x), true
	case int64:
		return strconv.FormatInt(x, 10), true
	case bool:
		return strconv.FormatBool(x), true
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), true
	}
	return "", false
}

var numericAggs = map[string]bool{"sum": true, "min": true, "max": true, "avg": true,
	"variance": true, "stddev": true, "approx_quantile": true}

// sketchAggs are checked within their documented bounds, by checkSketch.
var sketchAggs = map[string]bool{"top_k": true, "count_distinct": true, "approx_distinct": true, "approx_quantile": true}

// contributes says whether ev counts for f and whether it is a bad event
// because of f.
func (f *modelFeature) contributes(fields map[string]any) (ok, bad bool) {
	pass, bad := refWhere(f.where, fields)
	if bad || !pass {
		return false, bad
	}
	if f.field == "" {
		return true, false
	}
	v, found := lookupModel(fields, f.field)
	if !found {
		return false, false
	}
	if numericAggs[f.agg] {
		_, ok := refNumber(v)
		return ok, !ok
	}
	_, ok = refString(v)
	return ok, !ok
}

// apply records ev unless it is bad, and reports whether it was bad.
func (m *model) apply(ev modelEvent) (bad bool) {
	for i := range m.features {
		if _, b := m.features[i].contributes(ev.fields); b {
			return true
		}
	}
	m.applied[ev.key] = append(m.applied[ev.key], ev)
	delete(m.contrib, ev.key)
	m.lastMs[ev.key] = max(m.lastMs[ev.key], ev.timeMs)
	return false
}

// value is what the model expects feature fi of key to read at asOfMs.
// absTotal is the sum of |x| over the summed values, to bound rounding error.
func (m *model) value(key string, fi int, asOfMs int64) (v Value, absTotal float64) {
	f := &m.features[fi]
	v.Type = map[string]ValueType{
		"count": TypeInt64, "sum": TypeDouble, "min": TypeDouble, "max": TypeDouble, "avg": TypeDouble,
		"first": TypeString, "last": TypeString, "first_k": TypeStringList, "last_k": TypeStringList,
		"variance": TypeDouble, "stddev": TypeDouble,
	}[f.agg]
	in, start, end, ok := m.window(key, fi, asOfMs)
	if !ok {
		return v, 0
	}
	v.WindowStartMs, v.WindowEndMs = start, end
	num := func(ev modelEvent) float64 {
		x, _ := lookupModel(ev.fields, f.field)
		n, _ := refNumber(x)
		return n
	}
	str := func(ev modelEvent) string {
		x, _ := lookupModel(ev.fields, f.field)
		s, _ := refString(x)
		return s
	}
	switch f.agg {
	case "count":
		v.Int, v.Present = int64(len(in)), true
	case "sum", "avg":
		for _, ev := range in {
			v.Float += num(ev)
			absTotal += math.Abs(num(ev))
		}
		v.Present = true
		if f.agg == "avg" {
			if len(in) == 0 {
				return Value{Type: v.Type, WindowStartMs: v.WindowStartMs, WindowEndMs: v.WindowEndMs}, 0
			}
			v.Float /= float64(len(in))
			absTotal /= float64(len(in))
		}
	case "variance", "stddev":
		if len(in) == 0 {
			break
		}
		var mean, sq float64
		for _, ev := range in {
			mean += num(ev)
		}
		mean /= float64(len(in))
		for _, ev := range in {
			d := num(ev) - mean
			v.Float += d * d
			sq += num(ev) * num(ev)
		}
		v.Float /= float64(len(in))
		v.Present = true
		// Rounding of the variance scales with the mean square.
		absTotal = sq / float64(len(in))
		if f.agg == "stddev" {
			v.Float = math.Sqrt(v.Float)
			// Compared as a variance: see checkValue.
		}
	case "min", "max":
		for _, ev := range in {
			n := num(ev)
			if !v.Present || (f.agg == "min" && n < v.Float) || (f.agg == "max" && n > v.Float) {
				v.Float, v.Present = n, true
			}
		}
	case "first", "first_k", "last", "last_k":
		order := slices.Clone(in)
		if strings.HasPrefix(f.agg, "first") {
			// Oldest first; among equal times the earlier arrival first.
			slices.SortStableFunc(order, func(a, b modelEvent) int { return cmp.Compare(a.timeMs, b.timeMs) })
		} else {
			// Newest first; among equal times the later arrival first.
			slices.Reverse(order)
			slices.SortStableFunc(order, func(a, b modelEvent) int { return cmp.Compare(b.timeMs, a.timeMs) })
		}
		k := f.k
		if k == 0 {
			k = 1
		}
		list := []string{}
		for i := 0; i < len(order) && i < k; i++ {
			list = append(list, str(order[i]))
		}
		if f.k == 0 {
			if len(list) > 0 {
				v.Str, v.Present = list[0], true
			}
		} else {
			v.List, v.Present = list, true
		}
	}
	return v, absTotal
}

// checkValue compares got with the model's want; sums are compared within
// 1e-9 of the sum of magnitudes, everything else exactly.
func checkValue(want Value, absTotal float64, got Value) error {
	wf, gf := want.Float, got.Float
	want.Float, got.Float = 0, 0
	if want.Type != got.Type || want.Present != got.Present || want.Int != got.Int || want.Str != got.Str ||
		!slices.Equal(want.List, got.List) || (want.List == nil) != (got.List == nil) ||
		want.WindowStartMs != got.WindowStartMs || want.WindowEndMs != got.WindowEndMs {
		want.Float, got.Float = wf, gf
		return fmt.Errorf("got %+v, want %+v", got, want)
	}
	if math.Abs(wf-gf) > 1e-9*math.Max(1, absTotal) {
		return fmt.Errorf("float: got %v, want %v (±%g)", gf, wf, 1e-9*math.Max(1, absTotal))
	}
	return nil
}

// checkStddev compares a standard deviation as a variance, whose rounding
// error checkValue can bound.
func checkStddev(want Value, absTotal float64, got Value) error {
	w, g := want, got
	w.Float, g.Float = want.Float*want.Float, got.Float*got.Float
	if err := checkValue(w, absTotal, g); err != nil {
		return fmt.Errorf("stddev %v, want %v: %w", got.Float, want.Float, err)
	}
	return nil
}

// window returns the events of key that count for feature fi read at
// asOfMs, in arrival order, and the interval the read covers; ok is false
// for a session feature with no session to read.
func (m *model) window(key string, fi int, asOfMs int64) (in []modelEvent, start, end int64, ok bool) {
	f := &m.features[fi]
	evs := m.contributions(key, fi)
	pick := func(lo, hi int64) { // tile starts in [lo, hi]
		for _, ev := range evs {
			if s := f.tileOf(ev); s >= lo && s <= hi {
				in = append(in, ev)
			}
		}
	}
	switch f.kind {
	case "lifetime":
		return evs, 0, 0, true
	case "sliding":
		lo := ceilDivModel(asOfMs-f.windowMs, f.tileMs) * f.tileMs
		pick(lo, asOfMs)
		return in, lo, asOfMs, true
	case "tumbling", "hopping":
		// Windows end on tile boundaries: the current one at the next
		// boundary after as_of, the last closed one at or before it.
		b := floorDivModel(asOfMs, f.tileMs) * f.tileMs
		if f.emitLast {
			pick(b-f.windowMs, b-1)
			return in, b - f.windowMs, b, true
		}
		pick(b+f.tileMs-f.windowMs, asOfMs)
		return in, b + f.tileMs - f.windowMs, asOfMs, true
	case "session":
		// Sessions from every event, in time order: a new one starts after
		// a gap longer than gapMs.
		sorted := slices.Clone(evs)
		slices.SortStableFunc(sorted, func(a, b modelEvent) int { return cmp.Compare(a.timeMs, b.timeMs) })
		type session struct {
			start, end int64
			evs        []modelEvent
		}
		var ss []session
		for _, ev := range sorted {
			if len(ss) == 0 || ev.timeMs-ss[len(ss)-1].end > f.gapMs {
				ss = append(ss, session{start: ev.timeMs})
			}
			ss[len(ss)-1].end = ev.timeMs
			ss[len(ss)-1].evs = append(ss[len(ss)-1].evs, ev)
		}
		for i := len(ss) - 1; i >= 0; i-- {
			s := ss[i]
			if f.emitLast && s.end < asOfMs-f.gapMs || !f.emitLast && s.start <= asOfMs && s.end >= asOfMs-f.gapMs {
				// Back to arrival order.
				for _, ev := range evs {
					if ev.timeMs >= s.start && ev.timeMs <= s.end {
						in = append(in, ev)
					}
				}
				return in, s.start, s.end, true
			}
			if !f.emitLast && s.start <= asOfMs {
				break
			}
		}
		return nil, 0, 0, false
	}
	panic("model: window kind " + f.kind)
}

// tileOf is the tile start of an event for feature f (0 for lifetime and
// sessions).
func (f *modelFeature) tileOf(ev modelEvent) int64 {
	if f.tileMs == 0 {
		return 0
	}
	return floorDivModel(ev.timeMs, f.tileMs) * f.tileMs
}

// checkSketch checks a sketch aggregation's value within its documented
// bound:
//   - top_k: exact while no tile holds more distinct values than its
//     capacity (always, with the model's few item ids; TestTopKBound covers
//     the other case);
//   - count_distinct: exact, and not Approximate, while no tile holds more
//     than max_distinct values; else within HyperLogLog's error;
//   - approx_distinct: within HyperLogLog's error (near exact: small sets
//     stay sparse);
//   - approx_quantile: each quantile within relative_accuracy of the exact
//     value at rank floor(q·(n-1)).
func (m *model) checkSketch(key string, fi int, asOfMs int64, got Value) error {
	f := &m.features[fi]
	in, ws, we, ok := m.window(key, fi, asOfMs)
	if got.WindowStartMs != ws || got.WindowEndMs != we {
		return fmt.Errorf("window [%d, %d], want [%d, %d]", got.WindowStartMs, got.WindowEndMs, ws, we)
	}
	if !ok {
		if got.Present {
			return fmt.Errorf("%s = %+v with no session at as_of, want not present", f.agg, got)
		}
		return nil
	}
	str := func(ev modelEvent) string {
		x, _ := lookupModel(ev.fields, f.field)
		s, _ := refString(x)
		return s
	}
	switch f.agg {
	case "top_k":
		counts := map[string]int64{}
		for _, ev := range in {
			counts[str(ev)]++
		}
		want := []ItemCount{}
		for v, c := range counts {
			want = append(want, ItemCount{v, c})
		}
		slices.SortFunc(want, func(a, b ItemCount) int {
			if c := cmp.Compare(b.Count, a.Count); c != 0 {
				return c
			}
			return strings.Compare(a.Value, b.Value)
		})
		want = want[:min(len(want), f.k)]
		if got.Type != TypeItemCounts || !got.Present || !slices.Equal(got.Counts, want) {
			return fmt.Errorf("top_k = %+v, want %v", got, want)
		}
	case "count_distinct", "approx_distinct":
		distinct := map[string]bool{}
		perTile := map[int64]map[string]bool{}
		for _, ev := range in {
			distinct[str(ev)] = true
			t := f.tileOf(ev)
			if perTile[t] == nil {
				perTile[t] = map[string]bool{}
			}
			perTile[t][str(ev)] = true
		}
		exact := int64(len(distinct))
		if got.Type != TypeInt64 || !got.Present {
			return fmt.Errorf("%s = %+v, want a present int64 near %d", f.agg, got, exact)
		}
		if f.agg == "count_distinct" {
			overflow := false
			for _, set := range perTile {
				overflow = overflow || len(set) > f.maxDistinct
			}
			if got.Approximate != overflow {
				return fmt.Errorf("count_distinct Approximate = %v, want %v (max_distinct %d)", got.Approximate, overflow, f.maxDistinct)
			}
			if !overflow {
				if got.Int != exact {
					return fmt.Errorf("count_distinct = %d, want exactly %d", got.Int, exact)
				}
				return nil
			}
		}
		if d := math.Abs(float64(got.Int - exact)); d > 1+0.03*float64(exact) {
			return fmt.Errorf("%s = %d, want %d ± 3%%", f.agg, got.Int, exact)
		}
	case "approx_quantile":
		xs := []float64{}
		for _, ev := range in {
			x, _ := lookupModel(ev.fields, f.field)
			n, _ := refNumber(x)
			xs = append(xs, n)
		}
		slices.Sort(xs)
		wantType := TypeDoubleList
		if f.singleQ {
			wantType = TypeDouble
		}
		if got.Type != wantType || got.Present != (len(xs) > 0) {
			return fmt.Errorf("approx_quantile = %+v, want type %v over %d values", got, wantType, len(xs))
		}
		if len(xs) == 0 {
			if got.Floats != nil || got.Float != 0 {
				return fmt.Errorf("approx_quantile of nothing = %+v", got)
			}
			return nil
		}
		gotQ := got.Floats
		if f.singleQ {
			gotQ = []float64{got.Float}
		}
		if len(gotQ) != len(f.quantiles) {
			return fmt.Errorf("%d quantiles, want %d", len(gotQ), len(f.quantiles))
		}
		within := func(got, x float64) bool {
			return math.Abs(got-x) <= DefaultRelativeAccuracy*math.Abs(x)*(1+1e-9)+1e-12
		}
		for i, q := range f.quantiles {
			// DDSketch reads rank q·(n-1) rounded down among positive
			// values and up among negative ones.
			r := q * float64(len(xs)-1)
			lo, hi := xs[int(math.Floor(r))], xs[int(math.Ceil(r))]
			if !within(gotQ[i], lo) && !within(gotQ[i], hi) {
				return fmt.Errorf("quantile %v = %v, want %v or %v ± %v%% (values %v)", q, gotQ[i], lo, hi, 100*DefaultRelativeAccuracy, xs)
			}
		}
	}
	return nil
}

// Generation.

var allAggs = []string{"count", "sum", "min", "max", "avg", "first", "last", "first_k", "last_k",
	"variance", "stddev", "top_k", "count_distinct", "approx_distinct", "approx_quantile"}

// aggExtra returns the spec lines (indented as feature keys) an aggregation
// needs beyond agg and field.
func aggExtra(agg string) string {
	switch agg {
	case "first_k", "last_k", "top_k":
		return "    k: 3\n"
	case "approx_quantile":
		return "    quantiles: [0.5, 0.99]\n"
	}
	return ""
}

// windowChoices are window sizes in the spec's notation; "" is lifetime.
var windowChoices = []string{"", "", "1s", "10m", "1h", "90m", "3h", "24h", "7d"}

var tileChoices = []string{"", "", "1s", "1m", "7m", "10m", "1h", "5h"}

func durMs(s string) int64 {
	d, err := ParseDuration(s)
	if err != nil {
		panic(err)
	}
	return d.Milliseconds()
}

func genFeatures(t *rapid.T) []modelFeature {
	var fs []modelFeature
	for _, agg := range allAggs {
		n := rapid.IntRange(1, 2).Draw(t, agg+"_n")
		for range n {
			f := modelFeature{name: fmt.Sprintf("f%d_%s", len(fs), agg), agg: agg}
			switch {
			case agg == "count":
			case numericAggs[agg]:
				f.field = rapid.SampledFrom([]string{"price", "price", "item.qty"}).Draw(t, "field")
			default:
				f.field = rapid.SampledFrom([]string{"item_id", "item_id", "item.qty"}).Draw(t, "field")
			}
			if strings.HasSuffix(agg, "_k") {
				f.k = rapid.IntRange(1, 4).Draw(t, "k")
			}
			switch agg {
			case "approx_quantile":
				if rapid.Bool().Draw(t, "single_q") {
					f.singleQ = true
					f.quantiles = []float64{rapid.SampledFrom([]float64{0, 0.5, 0.9, 0.99, 1}).Draw(t, "q")}
				} else {
					f.quantiles = []float64{0.1, 0.5, 0.99}
				}
			case "count_distinct":
				f.maxDistinct = rapid.SampledFrom([]int{1, 3, 1000}).Draw(t, "max_distinct")
			}
			f.where = rapid.SampledFrom([]string{whereNone, whereNone, whereView, whereNotView, wherePriceGT, wherePriceAnd}).Draw(t, "where")
			f.kind = rapid.SampledFrom([]string{"sliding", "sliding", "lifetime", "tumbling", "hopping", "session"}).Draw(t, "window_kind")
			switch f.kind {
			case "lifetime":
				f.windowS = rapid.SampledFrom([]string{"", "explicit"}).Draw(t, "lifetime")
			case "tumbling":
				f.windowS = rapid.SampledFrom([]string{"1s", "10m", "1h", "3h", "24h"}).Draw(t, "size")
				f.windowMs = durMs(f.windowS)
				f.tileMs = f.windowMs
			case "hopping":
				sh := rapid.SampledFrom([][2]string{{"2s", "1s"}, {"10m", "1m"}, {"1h", "15m"}, {"3h", "1h"}, {"24h", "6h"}, {"1h", "1h"}}).Draw(t, "size_hop")
				f.windowS, f.hopS = sh[0], sh[1]
				f.windowMs, f.tileMs = durMs(sh[0]), durMs(sh[1])
			case "session":
				f.gapS = rapid.SampledFrom([]string{"1s", "1m", "10m", "1h"}).Draw(t, "gap")
				f.gapMs = durMs(f.gapS)
			}
			if f.kind == "tumbling" || f.kind == "hopping" || f.kind == "session" {
				f.emitLast = rapid.Bool().Draw(t, "emit_last")
			}
			if f.kind != "sliding" {
				fs = append(fs, f)
				continue
			}
			f.windowS = rapid.SampledFrom(windowChoices).Draw(t, "window")
			if f.windowS == "" {
				f.kind = "lifetime"
			}
			if f.windowS != "" {
				f.windowMs = durMs(f.windowS)
				var tiles []string
				for _, ts := range tileChoices {
					if ts == "" || (durMs(ts) <= f.windowMs && f.windowMs/durMs(ts) <= 10000) {
						tiles = append(tiles, ts)
					}
				}
				f.tileS = rapid.SampledFrom(tiles).Draw(t, "tile")
				if f.tileS != "" {
					f.tileMs = durMs(f.tileS)
				} else {
					f.tileMs = max(f.windowMs/12/1000*1000, 1000)
				}
			}
			fs = append(fs, f)
		}
	}
	// A derived ratio of two numeric features: a count over a sum (a
	// division by zero when the sum is 0) or over another count.
	var counts, sums []int
	for i, f := range fs {
		switch f.agg {
		case "count":
			counts = append(counts, i)
		case "sum":
			sums = append(sums, i)
		}
	}
	num := rapid.SampledFrom(counts).Draw(t, "derived_num")
	den := rapid.SampledFrom(append(counts, sums...)).Draw(t, "derived_den")
	fs = append(fs, modelFeature{name: "d_ratio", agg: "derived", kind: "lifetime", num: num, den: den,
		expr: fs[num].name + " / " + fs[den].name})
	return fs
}

// Field values, including ones of the wrong type for some aggregations.
var (
	kindValues   = []any{"view", "view", "purchase", "click", nil, "absent"}
	itemIDValues = []any{"i1", "i2", "i3", "i17", "", 42, int64(-7), true, 1.5, nil, "absent", []any{"x"}, map[string]any{"a": 1}}
	qtyValues    = []any{1, 2, 3, int64(5), "absent", nil, "x"}
	itemValues   = []string{"map", "map", "map", "absent", "string"}
	badPrices    = []any{"12.5", true, []any{1.0}, math.NaN(), math.Inf(1)}
)

func genFields(t *rapid.T) map[string]any {
	fields := map[string]any{}
	if k := rapid.SampledFrom(kindValues).Draw(t, "kind"); k != "absent" {
		fields["kind"] = k
	}
	switch rapid.IntRange(0, 19).Draw(t, "price_kind") {
	case 0, 1:
		// absent
	case 2:
		fields["price"] = nil
	case 3:
		fields["price"] = rapid.SampledFrom(badPrices).Draw(t, "bad_price")
	case 4, 5:
		fields["price"] = rapid.IntRange(-50, 200).Draw(t, "int_price")
	case 6:
		fields["price"] = float32(rapid.IntRange(-100, 800).Draw(t, "f32_price")) / 4
	default:
		fields["price"] = rapid.Float64Range(-100, 1000).Draw(t, "price")
	}
	if id := rapid.SampledFrom(itemIDValues).Draw(t, "item_id"); id != "absent" {
		fields["item_id"] = id
	}
	switch rapid.SampledFrom(itemValues).Draw(t, "item") {
	case "map":
		item := map[string]any{}
		if q := rapid.SampledFrom(qtyValues).Draw(t, "qty"); q != "absent" {
			item["qty"] = q
		}
		fields["item"] = item
	case "string":
		fields["item"] = "not a record"
	}
	return fields
}

func genEvents(t *rapid.T, keys []string) []modelEvent {
	n := rapid.IntRange(1, 120).Draw(t, "events")
	evs := make([]modelEvent, 0, n)
	for range n {
		var ts int64
		switch rapid.IntRange(0, 9).Draw(t, "time_kind") {
		case 0, 1:
			if len(evs) > 0 {
				ts = evs[rapid.IntRange(0, len(evs)-1).Draw(t, "dup_of")].timeMs
				break
			}
			fallthrough
		case 2:
			// On a tile boundary of every tile choice up to 1h.
			ts = t0 + rapid.Int64Range(-1, 8).Draw(t, "hour")*msHour
		default:
			ts = t0 + rapid.Int64Range(-msHour, 8*msHour).Draw(t, "time")
		}
		evs = append(evs, modelEvent{
			key:    rapid.SampledFrom(keys).Draw(t, "key"),
			timeMs: ts,
			fields: genFields(t),
		})
	}
	return evs
}

func TestApplyEvaluateMatchesModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		fs := genFeatures(t)
		spec, err := ParseSpec("model.yaml", []byte(specYAML(fs)))
		if err != nil {
			t.Fatalf("ParseSpec: %v\n%s", err, specYAML(fs))
		}
		top, err := Compile(spec)
		if err != nil {
			t.Fatalf("Compile: %v", err)
		}
		for i := range fs {
			if got := top.Features[i].Tile.Milliseconds(); got != fs[i].tileMs {
				t.Fatalf("feature %s: tile %dms, model assumes %dms", fs[i].name, got, fs[i].tileMs)
			}
		}

		keys := []string{"u1", "u2", "u3"}[:rapid.IntRange(1, 3).Draw(t, "keys")]
		events := genEvents(t, keys)
		// With pruning on, the watermark trails the newest event by grace and
		// reads are at or after the final watermark; with it off, reads may
		// be anywhere.
		prune := rapid.Bool().Draw(t, "prune")
		graceMs := rapid.SampledFrom([]int64{0, msMinute, 5 * msMinute, msHour}).Draw(t, "grace")

		m := newModel(fs)
		states := map[string]*EntityState{}
		for _, k := range keys {
			states[k] = top.NewEntityState()
		}
		maxSeen := int64(math.MinInt64)
		watermark := int64(0) // below every event: nothing is pruned
		for i, ev := range events {
			if prune && maxSeen != math.MinInt64 && ev.timeMs < watermark {
				// Late: the processor rejects it before Apply, as the DLQ's
				// "late". Sessions and closed buckets rely on that.
				continue
			}
			maxSeen = max(maxSeen, ev.timeMs)
			if prune {
				watermark = maxSeen - graceMs
			}
			st := states[ev.key]
			before := top.AppendState(nil, st)
			err := top.Apply(st, &Event{Key: ev.key, TimeMs: ev.timeMs, Fields: ev.fields}, watermark)
			bad := m.apply(ev)
			switch {
			case bad && err == nil:
				t.Fatalf("event %d %v: Apply accepted it, the model says it is bad", i, ev.fields)
			case !bad && err != nil:
				t.Fatalf("event %d %v: Apply: %v; the model accepts it", i, ev.fields, err)
			case err != nil:
				if !errors.Is(err, ErrBadEvent) {
					t.Fatalf("event %d: error %v does not wrap ErrBadEvent", i, err)
				}
				if after := top.AppendState(nil, st); string(after) != string(before) {
					t.Fatalf("event %d: rejected with %v but the state changed", i, err)
				}
			}
			if prune && err == nil {
				// A rejected event leaves the state as it was, unpruned.
				checkPruned(t, top, st, watermark)
			}
		}

		asOfs := []int64{maxSeen, watermark}
		lowest := watermark
		if !prune {
			lowest = t0 - 2*msHour
		}
		for range 6 {
			asOfs = append(asOfs, lowest+rapid.Int64Range(0, 10*msHour).Draw(t, "as_of"))
		}
		// Reads at the edges of windows, tiles and sessions of events that
		// were applied.
		for range 4 {
			ev := events[rapid.IntRange(0, len(events)-1).Draw(t, "edge_event")]
			f := fs[rapid.IntRange(0, len(fs)-1).Draw(t, "edge_feature")]
			s := f.tileOf(ev)
			for _, a := range []int64{ev.timeMs, ev.timeMs - 1, s - 1, s, s + f.windowMs - 1, s + f.windowMs, s + f.windowMs + 1,
				s + f.tileMs - 1, s + f.tileMs, ev.timeMs + f.gapMs, ev.timeMs + f.gapMs + 1} {
				if a >= lowest {
					asOfs = append(asOfs, a)
				}
			}
		}

		for _, key := range keys {
			st := states[key]
			if st.LastEventMs != m.lastMs[key] {
				t.Fatalf("%s: LastEventMs = %d, model %d", key, st.LastEventMs, m.lastMs[key])
			}
			enc := top.AppendState(nil, st)
			st2, err := top.DecodeState(enc)
			if err != nil {
				t.Fatalf("%s: DecodeState: %v", key, err)
			}
			if enc2 := top.AppendState(nil, st2); string(enc2) != string(enc) {
				t.Fatalf("%s: re-encoding a decoded state differs", key)
			}
			if st2.LastEventMs != st.LastEventMs {
				t.Fatalf("%s: decoded LastEventMs %d, want %d", key, st2.LastEventMs, st.LastEventMs)
			}
			all := make([]int, len(fs))
			known := make([][]Tile, len(fs))
			for fi := range fs {
				all[fi] = fi
				known[fi] = st.Features[fi]
				if known[fi] == nil {
					known[fi] = []Tile{}
				}
			}
			evaluated := make([]Value, len(fs))
			for _, a := range asOfs {
				top.EvaluateAll(known, a, all, evaluated)
				for fi, f := range fs {
					if f.expr == "" {
						if want := top.Evaluate(fi, st.Features[fi], a); !valuesIdentical(evaluated[fi], want) {
							t.Fatalf("%s %s as of t0%+dms: EvaluateAll %+v, Evaluate %+v", key, f.name, a-t0, evaluated[fi], want)
						}
						continue
					}
					// The model's ratio of the model's values.
					n, _ := m.value(key, f.num, a)
					d, _ := m.value(key, f.den, a)
					want := Value{Type: TypeDouble}
					dv := float64(d.Int)
					if d.Type == TypeDouble {
						dv = d.Float
					}
					if r := float64(n.Int) / dv; n.Present && d.Present && !math.IsNaN(r) && !math.IsInf(r, 0) {
						want.Float, want.Present = r, true
					}
					got := evaluated[fi]
					if got.Present != want.Present || got.Type != want.Type || math.Abs(got.Float-want.Float) > 1e-9*math.Max(1, math.Abs(want.Float)) {
						t.Fatalf("%s %s = %s as of t0%+dms: %+v, want %+v", key, f.name, f.expr, a-t0, got, want)
					}
				}
			}
			for fi := range fs {
				if fs[fi].expr != "" {
					continue
				}
				tiles, err := top.DecodeFeature(fi, top.AppendFeature(nil, fi, st.Features[fi]))
				if err != nil {
					t.Fatalf("%s %s: DecodeFeature: %v", key, fs[fi].name, err)
				}
				for _, a := range asOfs {
					got := top.Evaluate(fi, st.Features[fi], a)
					var err error
					switch {
					case sketchAggs[fs[fi].agg]:
						err = m.checkSketch(key, fi, a, got)
					case fs[fi].agg == "stddev":
						want, absTotal := m.value(key, fi, a)
						err = checkStddev(want, absTotal, got)
					default:
						want, absTotal := m.value(key, fi, a)
						err = checkValue(want, absTotal, got)
					}
					if err != nil {
						t.Fatalf("%s %s (%s %s window %s tile %dms gap %dms emit last %v where %q) as of t0%+dms: %v",
							key, fs[fi].name, fs[fi].agg, fs[fi].kind, fs[fi].windowS, fs[fi].tileMs, fs[fi].gapMs, fs[fi].emitLast, fs[fi].where, a-t0, err)
					}
					for name, decoded := range map[string][]Tile{"DecodeState": st2.Features[fi], "DecodeFeature": tiles} {
						if got2 := top.Evaluate(fi, decoded, a); !valuesIdentical(got, got2) {
							t.Fatalf("%s %s as of t0%+dms: after %s %+v, before %+v", key, fs[fi].name, a-t0, name, got2, got)
						}
					}
				}
			}
		}
	})
}

// checkPruned checks that no tile is kept that no read at or after the
// watermark needs, beyond the one spare tile prune promises.
func checkPruned(t *rapid.T, top *Topology, st *EntityState, watermarkMs int64) {
	for fi := range top.Features {
		f := &top.Features[fi]
		tiles := st.Features[fi]
		w, tl := f.Window.Milliseconds(), f.Tile.Milliseconds()
		switch f.WindowKind {
		case WindowLifetime:
			if len(tiles) > 1 {
				t.Fatalf("lifetime feature %s has %d tiles", f.Name, len(tiles))
			}
		case WindowSliding:
			for _, tile := range tiles {
				if tile.Start < watermarkMs-w-tl {
					t.Fatalf("feature %s kept tile %d, older than watermark %d - window - tile", f.Name, tile.Start, watermarkMs)
				}
			}
		case WindowTumbling, WindowHopping:
			for _, tile := range tiles {
				if tile.Start < floorDivModel(watermarkMs, tl)*tl-w {
					t.Fatalf("feature %s kept tile %d, older than the last closed window at watermark %d", f.Name, tile.Start, watermarkMs)
				}
			}
		case WindowSession:
			closed := 0
			for _, tile := range tiles {
				if tile.End < watermarkMs-w {
					closed++
				}
			}
			want := 0
			if f.EmitLastClosed {
				want = 1
			}
			if closed > want {
				t.Fatalf("feature %s kept %d sessions closed at watermark %d, want at most %d", f.Name, closed, watermarkMs, want)
			}
		}
	}
}

func valuesIdentical(a, b Value) bool {
	return a.Type == b.Type && a.Present == b.Present && a.Int == b.Int &&
		math.Float64bits(a.Float) == math.Float64bits(b.Float) && a.Str == b.Str &&
		slices.Equal(a.List, b.List) && (a.List == nil) == (b.List == nil) &&
		slices.EqualFunc(a.Floats, b.Floats, func(x, y float64) bool { return math.Float64bits(x) == math.Float64bits(y) }) &&
		(a.Floats == nil) == (b.Floats == nil) &&
		slices.Equal(a.Counts, b.Counts) && (a.Counts == nil) == (b.Counts == nil) && a.Approximate == b.Approximate &&
		a.WindowStartMs == b.WindowStartMs && a.WindowEndMs == b.WindowEndMs
}
