package bench

import (
	"context"
	"io"
	"testing"
	"time"
)

// TestRunLive runs live traffic briefly and checks that freshness probes
// and GetFeatures calls were measured, and that the report renders.
func TestRunLive(t *testing.T) {
	env := newTestEnv(t)
	res, err := RunLive(context.Background(), LiveConfig{
		Brokers: env.brokers, RedisAddr: env.redisAddr, Top: env.top, Partitions: 2, Users: 100,
		Rate: 500, Duration: 3 * time.Second, ServeRate: 50, Dir: t.TempDir(),
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if res.Freshness.N < 3 || res.Freshness.P50 <= 0 || res.Freshness.P50 > res.Freshness.P99 {
		t.Errorf("freshness not measured: %+v", res.Freshness)
	}
	if res.Serving.N < 50 {
		t.Errorf("GetFeatures under load: %d calls measured, want about 150", res.Serving.N)
	}
	total := 0
	for _, s := range res.PerSecond {
		total += s.Events
	}
	if total < 1000 {
		t.Errorf("produced %d events in 3s at 500/s", total)
	}
	rep := &Report{Command: "test", Machine: MachineString(), Started: time.Now(), Ingest: &IngestResult{Events: 1, RawConsume: 1}, Live: res}
	var b bytesBuffer
	if err := rep.WriteHTML(&b); err != nil {
		t.Fatal(err)
	}
	if len(b) < 500 {
		t.Errorf("HTML report of %d bytes", len(b))
	}
}

type bytesBuffer []byte

func (b *bytesBuffer) Write(p []byte) (int, error) { *b = append(*b, p...); return len(p), nil }
