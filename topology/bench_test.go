package topology

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// benchEvents returns n events one second apart, their fields built up
// front so the benchmarks measure Apply, not event construction.
func benchEvents(n int, typeField string) []*Event {
	rng := rand.New(rand.NewPCG(7, 8))
	evs := make([]*Event, n)
	for i := range evs {
		evs[i] = shopEvent(rng, t0+int64(i)*1000, typeField)
	}
	return evs
}

// BenchmarkApply applies one event a second to a single-feature topology
// with a 1h sliding window (5m tiles), with the watermark 5m behind; the
// state holds about 13 tiles throughout, as it would in steady state.
func BenchmarkApply(b *testing.B) {
	evs := benchEvents(1<<16, "type")
	for _, tc := range []struct{ agg, extra string }{
		{"count", ""},
		{"sum", "    field: price\n"},
		{"min", "    field: price\n"},
		{"max", "    field: price\n"},
		{"avg", "    field: price\n"},
		{"last", "    field: item_id\n"},
		{"last_k", "    field: item_id\n    k: 10\n"},
		{"first_k", "    field: item_id\n    k: 10\n"},
		{"variance", "    field: price\n"},
		{"stddev", "    field: price\n"},
		{"top_k", "    field: item_id\n    k: 10\n"},
		{"count_distinct", "    field: item_id\n"},
		{"approx_distinct", "    field: item_id\n"},
		{"approx_quantile", "    field: price\n    quantiles: [0.5, 0.99]\n"},
	} {
		b.Run(tc.agg, func(b *testing.B) {
			top := mustTopology(b, fmt.Sprintf("app: bench\nsource:\n  topic: events\nfeatures:\n  - name: f\n    agg: %s\n    window: 1h\n%s", tc.agg, tc.extra))
			benchApply(b, top, evs)
		})
	}
}

// BenchmarkApplyWindows applies events to a count in each window kind.
func BenchmarkApplyWindows(b *testing.B) {
	evs := benchEvents(1<<16, "type")
	for _, tc := range []struct{ name, window string }{
		{"sliding", "1h"},
		{"tumbling", "{kind: tumbling, size: 1h}"},
		{"hopping", "{kind: hopping, size: 1h, hop: 5m}"},
		{"session", "{kind: session, gap: 30m}"},
		{"lifetime", "{kind: lifetime}"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			top := mustTopology(b, "app: bench\nsource:\n  topic: events\nfeatures:\n  - name: f\n    agg: count\n    window: "+tc.window+"\n")
			benchApply(b, top, evs)
		})
	}
}

// BenchmarkWhere applies events to one count behind a where filter: the
// filter's cost per event (compare BenchmarkApply/count). A filtered event
// must not allocate.
func BenchmarkWhere(b *testing.B) {
	evs := benchEvents(1<<16, "type")
	for _, tc := range []struct{ name, where string }{
		{"eq", `type == "view"`},
		{"3_clauses", `type == "purchase" && price > 10 && category in ["shoes", "bags"]`},
	} {
		b.Run(tc.name, func(b *testing.B) {
			top := mustTopology(b, "app: bench\nsource:\n  topic: events\nfeatures:\n  - name: f\n    agg: count\n    window: 1h\n    where: '"+tc.where+"'\n")
			benchApply(b, top, evs)
		})
	}
}

// BenchmarkApplyShop applies events to the four features of the shop
// example, two of them behind a where filter.
func BenchmarkApplyShop(b *testing.B) {
	benchApply(b, mustShop(b), benchEvents(1<<16, "type"))
}

func benchApply(b *testing.B, top *Topology, evs []*Event) {
	st := top.NewEntityState()
	// Fill the window first, so tiles are pruned as well as added.
	for _, ev := range evs[:4000] {
		mustApply(b, top, st, ev, ev.TimeMs-5*msMinute)
	}
	b.ReportAllocs()
	i := 4000
	for b.Loop() {
		if i == len(evs) {
			// Start over from the first hour with a fresh state; rare enough
			// (once per 60k events) not to show in the numbers.
			b.StopTimer()
			st = top.NewEntityState()
			for _, ev := range evs[:4000] {
				mustApply(b, top, st, ev, ev.TimeMs-5*msMinute)
			}
			i = 4000
			b.StartTimer()
		}
		ev := evs[i]
		if err := top.Apply(st, ev, ev.TimeMs-5*msMinute); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkEvaluate reads the four shop features of an entity with a
// day of events, one a minute, as a request would.
func BenchmarkEvaluate(b *testing.B) {
	top := mustShop(b)
	st := filledState(b, top, 24*60, "type")
	asOf := st.LastEventMs
	b.ReportAllocs()
	for b.Loop() {
		for fi := range top.Features {
			_ = top.Evaluate(fi, st.Features[fi], asOf)
		}
	}
}

// BenchmarkDecodeState decodes that same entity, as a read from Pebble or
// Redis would before evaluating.
func BenchmarkDecodeState(b *testing.B) {
	top := mustShop(b)
	enc := top.AppendState(nil, filledState(b, top, 24*60, "type"))
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := top.DecodeState(enc); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppendState encodes shop entities of a few events each, as a
// commit does for each changelog record, into one buffer with room to
// spare (flushLocked's).
func BenchmarkAppendState(b *testing.B) {
	top := mustShop(b)
	st := filledState(b, top, 5, "type")
	buf := make([]byte, 0, 64<<10)
	b.SetBytes(int64(len(top.AppendState(nil, st))))
	b.ReportAllocs()
	for b.Loop() {
		buf = top.AppendState(buf[:0], st)
	}
}
