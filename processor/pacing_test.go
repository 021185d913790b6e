package processor

import (
	"context"
	"math"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/featurestream/featurestream/sinks"
	"github.com/featurestream/featurestream/state"
)

// countingSink counts the writes to Redis that carry states.
type countingSink struct {
	*sinks.Store
	writes atomic.Int64
}

func (c *countingSink) Write(ctx context.Context, recs []sinks.Record) error {
	if len(recs) > 0 {
		c.writes.Add(1)
	}
	return c.Store.Write(ctx, recs)
}

// TestPushPacedWhileCatchingUp: a processor catching up with a backlog
// writes to Redis far less often than it commits, ends with every value
// exact, and once caught up writes at every commit again (with a pacing
// bound of an hour, a new event would otherwise wait that long).
func TestPushPacedWhileCatchingUp(t *testing.T) {
	const perUser = 5000 // 30,000 records over two partitions
	e := newRestoreEnv(t)
	e.produce(0, perUser)
	e.produce(1, perUser)
	sink := &countingSink{Store: e.sink}
	p := e.startConfig(sink, Config{
		SessionTimeout: 6 * time.Second,
		// A commit after every poll of 200 records: 150 commits, and
		// without pacing about as many writes, fewer only when writes
		// coalesce behind a slow one.
		CommitInterval:      time.Nanosecond,
		MaxPollRecords:      200,
		CatchUpPushInterval: time.Hour,
	}, nil)
	e.waitItems(0, perUser)
	e.waitItems(1, perUser)
	writes := sink.writes.Load()
	commits := testutil.ToFloat64(p.m.txns.WithLabelValues("committed"))
	t.Logf("catching up: %d writes to Redis, %.0f commits", writes, commits)
	// Writes start about one lag apart, and the lag shrinks with the
	// backlog; the last five polls, under catchUpMinLag behind, write at
	// every commit.
	if commits < 150 || float64(writes) > commits/5 {
		t.Errorf("catching up: %d writes to Redis in %.0f commits, want at least 150 commits and at most a fifth as many writes", writes, commits)
	}

	// Caught up: a new event reaches Redis at the next commits.
	e.produce(0, 1)
	e.produce(1, 1)
	e.waitItems(0, perUser+1)
	e.waitItems(1, perUser+1)
}

// TestPacedLocked: the wait between writes is the lag in time at the
// consume rate, at most the interval, and none under catchUpMinLag.
func TestPacedLocked(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name      string
		every     time.Duration
		lags      []int64
		rate      float64
		sinceLast time.Duration
		wantWait  time.Duration
		paced     bool
	}{
		{name: "caught up", every: time.Second, lags: []int64{10, 20}, rate: 1000, sinceLast: time.Millisecond},
		{name: "lag under the minimum", every: time.Second, lags: []int64{catchUpMinLag - 1, 0}, rate: 1, sinceLast: time.Millisecond},
		{name: "lag in time", every: time.Second, lags: []int64{60_000, 40_000}, rate: 500_000, sinceLast: 100 * time.Millisecond, wantWait: 200 * time.Millisecond, paced: true},
		{name: "lag in time passed", every: time.Second, lags: []int64{60_000, 40_000}, rate: 500_000, sinceLast: 300 * time.Millisecond, wantWait: 200 * time.Millisecond},
		{name: "bounded by the interval", every: time.Second, lags: []int64{5_000_000}, rate: 100_000, sinceLast: 900 * time.Millisecond, wantWait: time.Second, paced: true},
		{name: "no rate yet", every: time.Second, lags: []int64{5_000}, sinceLast: 999 * time.Millisecond, wantWait: time.Second, paced: true},
		{name: "disabled", every: -1, lags: []int64{5_000_000}, rate: 1, sinceLast: time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := offlineProcessor(t, now)
			p.cfg.CatchUpPushInterval = tc.every
			for i, lag := range tc.lags {
				task := p.newTask(int32(i), state.Meta{})
				task.lag = lag
				p.mu.tasks[int32(i)] = task
			}
			p.rate = tc.rate
			p.lastPush = time.Now().Add(-tc.sinceLast)
			if got := p.pacedLocked(); got != tc.paced {
				t.Errorf("paced = %v, want %v", got, tc.paced)
			}
			if tc.every > 0 {
				if got := testutil.ToFloat64(p.m.pushPacing); math.Abs(got-tc.wantWait.Seconds()) > 1e-9 {
					t.Errorf("featurestream_push_pacing_seconds = %v, want %v", got, tc.wantWait.Seconds())
				}
			}
		})
	}
}
