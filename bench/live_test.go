package bench

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"
)

// TestRunLive runs live traffic briefly, after a warm-up, and checks that
// freshness probes and GetFeatures calls were measured, that the events
// counted are the measured seconds' and not the warm-up's, and that the
// report renders.
func TestRunLive(t *testing.T) {
	env := newTestEnv(t)
	res, err := RunLive(context.Background(), LiveConfig{
		Brokers: env.brokers, RedisAddr: env.redisAddr, Top: env.top, Partitions: 2, Users: 100,
		Rate: 500, Duration: 3 * time.Second, Warmup: time.Second, ServeRate: 50, Dir: t.TempDir(),
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if res.Freshness.N < 3 || res.Freshness.P50 <= 0 || res.Freshness.P50 > res.Freshness.P99 {
		t.Errorf("freshness not measured: %+v", res.Freshness)
	}
	// Every stage ran during the live phase: events were processed,
	// committed in transactions and written to Redis.
	var stages []string
	for _, s := range res.Stages {
		if s.N > 0 && s.P50 > 0 && s.P50 <= s.P99 {
			stages = append(stages, s.Metric)
		}
	}
	if len(stages) != len(liveStages) {
		t.Errorf("stages measured: %v; want all %d of liveStages", stages, len(liveStages))
	}
	if res.Serving.N < 50 {
		t.Errorf("GetFeatures under load: %d calls measured, want about 150", res.Serving.N)
	}
	total, slowest := 0, time.Duration(0)
	for i, s := range res.PerSecond {
		total += s.Events
		if s.FreshnessMax < s.Freshness {
			t.Errorf("second %d: slowest probe %s, under the median %s", i+1, s.FreshnessMax, s.Freshness)
		}
		slowest = max(slowest, s.FreshnessMax)
	}
	// The slowest probe of the run was sent in one of its seconds.
	if slowest != res.Freshness.Max {
		t.Errorf("slowest probe of the seconds %s, of the run %s", slowest, res.Freshness.Max)
	}
	// 1,500 in the measured 3 s, give or take a 10 ms tick's 5; the
	// warm-up's 500 are not counted.
	if total < 1400 || total > 1600 {
		t.Errorf("counted %d events in 3 s at 500/s after a 1 s warm-up, want about 1500", total)
	}
	rep := &Report{Command: "test", Machine: MachineString(), Started: time.Now(), Ingest: &IngestResult{Events: 1, RawConsume: 1}, Live: res}
	var b bytesBuffer
	if err := rep.WriteHTML(&b); err != nil {
		t.Fatal(err)
	}
	if len(b) < 500 || !strings.Contains(string(b), "featurestream_redis_write_duration_seconds") {
		t.Errorf("HTML report of %d bytes, with the stages: %v", len(b), strings.Contains(string(b), "Where freshness goes"))
	}
}

type bytesBuffer []byte

func (b *bytesBuffer) Write(p []byte) (int, error) { *b = append(*b, p...); return len(p), nil }

// TestSustainedRateSearch: with no rate given, the live run first finds the
// maximum sustained rate below the backlog rate and runs at half of it. At
// 2,000 events/s a test processor keeps up, so every step of the bisection
// holds and the search ends just below the bound.
func TestSustainedRateSearch(t *testing.T) {
	env := newTestEnv(t)
	const bound = 2000
	res, err := RunLive(context.Background(), LiveConfig{
		Brokers: env.brokers, RedisAddr: env.redisAddr, Top: env.top, Partitions: 2, Users: 100,
		MaxRate: bound, Duration: time.Second, ServeRate: 10, Dir: t.TempDir(),
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for range sustainSteps {
		want = (want + bound) / 2
	}
	if res.Sustained != want {
		t.Errorf("sustained rate %d, want %d (every step kept up)", res.Sustained, want)
	}
	if res.Rate != res.Sustained/2 {
		t.Errorf("ran at %d events/s, want half the sustained %d", res.Rate, res.Sustained)
	}
}

// TestTailNote: the report's note on small samples says exactly when
// summarize's p99 and p999 are the sample's maximum.
func TestTailNote(t *testing.T) {
	for _, n := range []int{1, 65, 100, 101, 400, 1000, 1001} {
		sample := make([]time.Duration, n)
		for i := range sample {
			sample[i] = time.Duration(i+1) * time.Millisecond
		}
		l := summarize(sample)
		p99Max, p999Max := l.P99 == l.Max, l.P999 == l.Max
		var want string
		switch {
		case p99Max && p999Max:
			want = "p99 and p999 are the slowest one"
		case p999Max:
			want = "p999 is the slowest one"
		}
		if n <= 1000 && tailNote(n) != want || n > 1000 && want != "" {
			t.Errorf("n=%d: p99 max %v, p999 max %v; note %q", n, p99Max, p999Max, tailNote(n))
		}
	}
}
