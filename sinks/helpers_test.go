package sinks_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/featurestream/featurestream/sinks"
	"github.com/featurestream/featurestream/sinks/redisserver"
	"github.com/featurestream/featurestream/topology"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// After a failed dial go-redis probes in a goroutine that sleeps 1s
		// between tries and notices Close only when it wakes: it outlives
		// Close by up to a second, longer than goleak waits. Only the tests
		// that stop Redis start it.
		goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"),
	)
}

// t0 is an even hour, so tile boundaries of every shop feature (5m, 2h)
// fall on it.
var t0 = time.Date(2025, 11, 26, 4, 0, 0, 0, time.UTC).UnixMilli()

// shopState applies n events to a new state: views, with every third a
// purchase, one minute apart from base, items named by seed.
func shopState(t testing.TB, top *topology.Topology, seed string, base int64, n int) *topology.EntityState {
	t.Helper()
	st := top.NewEntityState()
	for i := range n {
		ev := topology.Event{
			Key:    seed,
			TimeMs: base + int64(i)*time.Minute.Milliseconds(),
			Fields: map[string]any{"type": "view", "item_id": fmt.Sprintf("%s-i%d", seed, i)},
		}
		if i%3 == 2 {
			ev.Fields["type"] = "purchase"
			ev.Fields["price"] = float64(i) + 0.25
		}
		if err := top.Apply(st, &ev, ev.TimeMs); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

func allFeatures(top *topology.Topology) []int {
	fs := make([]int, len(top.Features))
	for i := range fs {
		fs[i] = i
	}
	return fs
}

// newStore returns a Store on a client of addrs, closed when t ends.
func newStore(t testing.TB, top *topology.Topology, o sinks.Options) (*sinks.Store, redis.UniversalClient, *prometheus.Registry) {
	t.Helper()
	client, err := sinks.NewClient(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	reg := prometheus.NewRegistry()
	s, err := sinks.NewStore(client, top, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	return s, client, reg
}

func startStore(t testing.TB, top *topology.Topology) (*sinks.Store, redis.UniversalClient, *prometheus.Registry, *redisserver.Server) {
	t.Helper()
	srv := redisserver.StartForTest(t)
	s, c, reg := newStore(t, top, sinks.Options{Addrs: []string{srv.Addr()}})
	return s, c, reg, srv
}

// callHook records the commands a client sends: each pipeline (one round
// trip) as the list of its command names, and each single command.
type callHook struct {
	mu        sync.Mutex
	pipelines [][]string
	singles   []string
	keys      []int // keys of each pipelined evalsha
}

func (h *callHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *callHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.mu.Lock()
		h.singles = append(h.singles, cmd.Name())
		h.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (h *callHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		names := make([]string, len(cmds))
		var keys []int
		for i, c := range cmds {
			names[i] = c.Name()
			if args := c.Args(); c.Name() == "evalsha" && len(args) > 2 {
				n, _ := args[2].(int)
				keys = append(keys, n)
			}
		}
		h.mu.Lock()
		h.pipelines = append(h.pipelines, names)
		h.keys = append(h.keys, keys...)
		h.mu.Unlock()
		return next(ctx, cmds)
	}
}

func (h *callHook) reset() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.pipelines, h.singles, h.keys = nil, nil, nil
}

// evalKeys returns how many keys each pipelined EVALSHA carried.
func (h *callHook) evalKeys() []int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.keys)
}

// pipelinesWith returns the pipelines that carried command name, with how
// many of it each carried, and how many times name went alone.
func (h *callHook) pipelinesWith(name string) (perPipeline []int, alone int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range h.pipelines {
		if n := countOf(p, name); n > 0 {
			perPipeline = append(perPipeline, n)
		}
	}
	return perPipeline, countOf(h.singles, name)
}

func countOf(names []string, name string) int {
	n := 0
	for _, s := range names {
		if s == name {
			n++
		}
	}
	return n
}

func (h *callHook) singleNames() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.singles)
}

// metric returns the value of the counter or gauge name with the given
// label pairs, as reg exposes it.
func metric(t testing.TB, reg *prometheus.Registry, name string, labelPairs ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for i := 0; i+1 < len(labelPairs); i += 2 {
				if have[labelPairs[i]] != labelPairs[i+1] {
					continue next
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("metric %s%v not found", name, labelPairs)
	return 0
}
