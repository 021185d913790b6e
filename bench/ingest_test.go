package bench

import (
	"context"
	"os"
	"testing"

	"github.com/featurestream/featurestream/processor"
)

// TestRunIngest runs the ingest benchmark small, and checks that it
// measured every part and that each processor run consumed the whole input.
func TestRunIngest(t *testing.T) {
	env := newTestEnv(t)
	res, err := RunIngest(context.Background(), IngestConfig{
		Brokers: env.brokers, RedisAddr: env.redisAddr, Top: env.top,
		Events: 5000, Users: 300, Partitions: 3, Dir: t.TempDir(),
	}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if res.RawConsume <= 0 || len(res.Runs) != 2 || res.RestoreRate <= 0 || res.RawChangelog <= 0 {
		t.Fatalf("incomplete result: %+v", res)
	}
	for _, r := range res.Runs {
		if r.Rate <= 0 || r.CPUPerMillion <= 0 {
			t.Errorf("%s: %+v", r.Guarantee, r)
		}
	}
	if res.Runs[1].Guarantee != processor.ExactlyOnce {
		t.Errorf("runs in order %v", res.Runs)
	}
	// The restore applied every record of the changelog.
	if res.RestoreRecords != res.ChangelogRecords || res.RestoreRecords == 0 {
		t.Errorf("restored %d records of a changelog of %d", res.RestoreRecords, res.ChangelogRecords)
	}
}
