package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/featurestream/featurestream/bench"
	"github.com/featurestream/featurestream/processor"
)

// TestStandbyFailover: two processors with --standby-replicas 1 each own
// one partition and keep a warm copy of the other's. When one stops, the
// other takes its partition over and its restore applies no changelog
// record at all (the copy was complete); values stay exact before and
// after.
func TestStandbyFailover(t *testing.T) {
	env := newE2EEnv(t, 2)
	type instance struct {
		reg  *prometheus.Registry
		stop context.CancelFunc
		done chan error
	}
	start := func(id string) *instance {
		in := &instance{reg: newRegistry(), done: make(chan error, 1)}
		ctx, cancel := context.WithCancel(context.Background())
		in.stop = cancel
		go func() {
			in.done <- runProcessor(ctx, processorParams{
				top: env.top, brokers: env.brokers, stateDir: filepath.Join(t.TempDir(), id), sink: env.store, reg: in.reg, logger: env.logger,
				cfg: processor.Config{CommitInterval: 50 * time.Millisecond, SessionTimeout: 6 * time.Second, InstanceID: id,
					StandbyReplicas: 1, Guarantee: processor.ExactlyOnce},
				adminAddr: "127.0.0.1:0",
			})
		}()
		return in
	}
	stop := func(in *instance) {
		in.stop()
		if err := <-in.done; err != nil {
			t.Errorf("processor: %v", err)
		}
	}
	a, b := start("a"), start("b")
	defer func() {
		for _, in := range []*instance{a, b} {
			if in != nil {
				stop(in)
			}
		}
	}()
	waitFor(t, "one partition each", func() string {
		na, nb := gathered(t, a.reg, "featurestream_assigned_partitions"), gathered(t, b.reg, "featurestream_assigned_partitions")
		if na != 1 || nb != 1 {
			return fmt.Sprintf("assigned %v and %v", na, nb)
		}
		return ""
	})

	rng := rand.New(rand.NewPCG(3, 4))
	t0 := time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC).UnixMilli()
	users := userIDs(30)
	gen := bench.NewShopGenerator(5, 30, 100)
	model := &shopModel{byUser: map[string][]modelEvent{}}
	produce := func(from, n int) int64 {
		events := make([]bench.ShopEvent, n)
		var end int64
		for i := range events {
			events[i] = gen.Next(time.UnixMilli(t0 + int64(from+i)*1000 + rng.Int64N(30_000)))
			events[i].UserID = users[rng.IntN(len(users))]
			model.add(from+i, events[i])
			end = max(end, events[i].TS)
		}
		env.produce(events)
		return end
	}
	asked := append(slices.Clone(users), "nobody")
	end := produce(0, 2000)
	waitFor(t, "values of the first batch", func() string { return diff(model, asked, end, env.get(asked, end)) })
	waitFor(t, "standby copies up to date", func() string {
		for name, in := range map[string]*instance{"a": a, "b": b} {
			if n := gathered(t, in.reg, "featurestream_standby_partitions"); n != 1 {
				return fmt.Sprintf("%s keeps %v standby partitions", name, n)
			}
			if n := gathered(t, in.reg, "featurestream_standby_records_total"); n == 0 {
				return name + " applied no standby record yet"
			}
			if lag := gathered(t, in.reg, "featurestream_standby_lag_records"); lag != 0 {
				return fmt.Sprintf("%s standby lag %v", name, lag)
			}
		}
		return ""
	})
	if n := gathered(t, b.reg, "featurestream_restore_records_total"); n != 0 {
		t.Fatalf("b restored %v records before the failover; the test assumes an empty changelog at assignment", n)
	}

	stop(a)
	a = nil
	waitFor(t, "b owns both partitions", func() string {
		if n := gathered(t, b.reg, "featurestream_assigned_partitions"); n != 2 {
			return fmt.Sprintf("b has %v", n)
		}
		return ""
	})
	if n := gathered(t, b.reg, "featurestream_restore_records_total"); n != 0 {
		t.Errorf("taking the partition over restored %v changelog records; the standby copy should have had them all", n)
	}
	end = produce(2000, 1000)
	waitFor(t, "values after the failover", func() string { return diff(model, asked, end, env.get(asked, end)) })
}

// gathered sums the values of a metric's series in reg (0 if absent).
func gathered(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}
