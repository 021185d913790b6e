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
	writes := map[bool]int64{}
	for _, paced := range []bool{false, true} {
		e := newRestoreEnv(t)
		e.produce(0, perUser)
		e.produce(1, perUser)
		sink := &countingSink{Store: e.sink}
		every := time.Duration(-1)
		if paced {
			every = time.Hour
		}
		e.startConfig(sink, Config{
			SessionTimeout: 6 * time.Second,
			// A commit after every poll of 200 records: unpaced, about
			// one write per commit.
			CommitInterval:      time.Nanosecond,
			MaxPollRecords:      200,
			CatchUpPushInterval: every,
		}, nil)
		e.waitItems(0, perUser)
		e.waitItems(1, perUser)
		writes[paced] = sink.writes.Load()

		// Caught up: a new event reaches Redis at the next commits.
		e.produce(0, 1)
		e.produce(1, 1)
		e.waitItems(0, perUser+1)
		e.waitItems(1, perUser+1)
	}
	t.Logf("writes to Redis while catching up: %d unpaced, %d paced", writes[false], writes[true])
	// Unpaced, about one write per commit; paced, writes start about one
	// lag apart, and the lag shrinks as the backlog does.
	if writes[false] < 5*writes[true]/2 {
		t.Errorf("%d writes while catching up paced, %d unpaced: want at most 2/5 as many paced", writes[true], writes[false])
	}
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
