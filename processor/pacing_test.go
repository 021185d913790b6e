package processor

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

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
		// A commit after every poll of 100 records: 300 commits, and
		// without pacing about as many writes (81-151 in three runs),
		// fewer only when writes coalesce behind a slow one.
		CommitInterval:      time.Nanosecond,
		MaxPollRecords:      100,
		CatchUpPushInterval: time.Hour,
	}, nil)
	e.waitItems(0, perUser)
	e.waitItems(1, perUser)
	writes := sink.writes.Load()
	commits := testutil.ToFloat64(p.m.txns.WithLabelValues("committed"))
	t.Logf("catching up: %d writes to Redis, %.0f commits", writes, commits)
	// Writes start about one lag apart, so each halves the lag left; the
	// last ten polls, under catchUpMinLag behind, write at every commit.
	if commits < 300 || float64(writes) > commits/5 {
		t.Errorf("catching up: %d writes to Redis in %.0f commits, want at least 300 commits and at most a fifth as many writes", writes, commits)
	}

	// Caught up: a new event reaches Redis at the next commits.
	e.produce(0, 1)
	e.produce(1, 1)
	e.waitItems(0, perUser+1)
	e.waitItems(1, perUser+1)
}

// TestPacedLocked: the wait between writes is the lag in time at the
// consume rate, at most the interval, and none when under catchUpMinLag
// records are behind, counting only partitions at least
// catchUpPartitionMinLag behind and measured within catchUpLagTTL, or when
// nothing was consumed.
func TestPacedLocked(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name      string
		every     time.Duration
		lags      []int64
		lagAge    time.Duration
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
		{name: "a huge lag", every: time.Hour, lags: []int64{math.MaxInt64 / 2}, rate: 1e-300, sinceLast: time.Minute, wantWait: time.Hour, paced: true},
		{name: "nothing consumed", every: time.Second, lags: []int64{5_000}, sinceLast: time.Millisecond},
		{name: "stale lag", every: time.Second, lags: []int64{5_000}, lagAge: catchUpLagTTL, rate: 1000, sinceLast: time.Millisecond},
		{name: "markers on many partitions", every: time.Second, lags: slices.Repeat([]int64{catchUpPartitionMinLag - 1}, 20), rate: 1, sinceLast: time.Millisecond},
		{name: "disabled", every: -1, lags: []int64{5_000_000}, rate: 1, sinceLast: time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := offlineProcessor(t, now)
			p.cfg.CatchUpPushInterval = tc.every
			for i, lag := range tc.lags {
				task := p.newTask(int32(i), state.Meta{})
				task.lag, task.lagAt = lag, time.Now().Add(-tc.lagAge)
				p.mu.tasks[int32(i)] = task
			}
			p.rate = tc.rate
			p.lastPush = time.Now().Add(-tc.sinceLast)
			p.m.pushPacing.Set(-1)
			if got := p.pacedLocked(); got != tc.paced {
				t.Errorf("paced = %v, want %v", got, tc.paced)
			}
			if got := testutil.ToFloat64(p.m.pushPacing); math.Abs(got-tc.wantWait.Seconds()) > 1e-9 {
				t.Errorf("featurestream_push_pacing_seconds = %v, want %v", got, tc.wantWait.Seconds())
			}
		})
	}
}

// TestPacingIgnoresUnreadableInput: records a read_committed processor will
// never read (an open transaction's, or an aborted one's after a committed
// record fetched with them) do not make it pace its writes. While events
// trickle into another partition, pacing would hold each write back by the
// lag over the small consume rate: minutes, with a bound of an hour.
func TestPacingIgnoresUnreadableInput(t *testing.T) {
	for _, abort := range []bool{false, true} {
		name := map[bool]string{false: "open transaction", true: "aborted transaction"}[abort]
		t.Run(name, func(t *testing.T) {
			e := newRestoreEnv(t)
			e.produce(0, 1)
			txn, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.TransactionalID("pacing-"+strings.ReplaceAll(name, " ", "-")),
				kgo.RecordPartitioner(kgo.ManualPartitioner()))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(txn.Close)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if err := txn.BeginTransaction(); err != nil {
				t.Fatal(err)
			}
			var recs []*kgo.Record
			for i := range 5000 {
				recs = append(recs, &kgo.Record{Topic: e.top.Spec.Source.Topic, Partition: 0, Key: []byte("a1"),
					Value: fmt.Appendf(nil, `{"user_id":"a1","ts":%d,"type":"view","item_id":"never%d"}`, e.ts, i)})
			}
			if err := txn.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				t.Fatal(err)
			}
			if abort {
				if err := txn.EndTransaction(ctx, kgo.TryAbort); err != nil {
					t.Fatal(err)
				}
			}
			e.startConfig(e.sink, Config{SessionTimeout: 6 * time.Second, CatchUpPushInterval: time.Hour}, nil)
			e.waitItems(0, 1)

			// A trickle of events for b1 (partition 1), items t0, t1, ...
			var trickle sync.WaitGroup
			defer trickle.Wait()
			defer cancel()
			trickle.Go(func() {
				for i := 0; ctx.Err() == nil; i++ {
					rec := &kgo.Record{Topic: e.top.Spec.Source.Topic, Partition: 1, Key: []byte("b1"),
						Value: fmt.Appendf(nil, `{"user_id":"b1","ts":%d,"type":"view","item_id":"t%d"}`, e.ts+int64(i), i)}
					if err := e.prod.ProduceSync(ctx, rec).FirstErr(); err != nil && ctx.Err() == nil {
						t.Error(err)
						return
					}
					time.Sleep(10 * time.Millisecond)
				}
			})
			waitFor(t, "b1's 50th trickled item in Redis while the trickle goes on", func() bool {
				items := e.lastItems("b1")
				var n int
				_, err := fmt.Sscanf(strings.Join(items, " "), "t%d", &n)
				return err == nil && n >= 50
			})
			e.waitItems(0, 1)
		})
	}
}
