package bench

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestRunServeSmall runs the serve benchmark on a tiny scale: every cell is
// measured without errors and the report says what it needs to.
func TestRunServeSmall(t *testing.T) {
	rep, err := RunServe(context.Background(), ServeConfig{
		Spec: "../examples/shop/spec.yaml", Entities: 300, EventsPerEntity: 5,
		Duration: 100 * time.Millisecond, Callers: []int{1, 4}, Batches: []int{1, 10},
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	// raw and grpc for each callers × batch, and health for batch 1.
	if len(rep.Cells) != 10 {
		t.Fatalf("%d cells, want 10", len(rep.Cells))
	}
	for _, c := range rep.Cells {
		if c.Errors > 0 || c.Calls == 0 || c.P50 <= 0 || c.P50 > c.P99 || c.P99 > c.P999 {
			t.Errorf("%s callers=%d batch=%d: %d calls, %d errors (%v), p50 %v p99 %v p999 %v", c.Path, c.Callers, c.Batch, c.Calls, c.Errors, c.FirstErr, c.P50, c.P99, c.P999)
		}
	}
	var md strings.Builder
	if err := rep.WriteMarkdown(&md, "featurestream bench serve --entities 300"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"featurestream bench serve --entities 300", "nproc", "| 4 | 10 |", "1 caller × 1 entity", "4 callers: health check"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, md.String())
		}
	}
}

func TestServeConfigRefuses(t *testing.T) {
	for _, tt := range []struct {
		cfg  ServeConfig
		want string
	}{
		{ServeConfig{RedisAddr: "192.0.2.1:6379"}, "not a loopback address"},
		{ServeConfig{Callers: []int{0}}, "callers 0"},
		{ServeConfig{Entities: 10, Batches: []int{100}}, "batch 100: more than the 10 entities"},
	} {
		_, err := RunServe(context.Background(), tt.cfg, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: err = %v, want %q", tt.cfg, err, tt.want)
		}
	}
}
