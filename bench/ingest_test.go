package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/featurestream/featurestream/processor"
)

// TestRunIngest runs the ingest benchmark small, and checks that it
// measured every part and that each processor run consumed the whole input.
func TestRunIngest(t *testing.T) {
	env := newTestEnv(t)
	res, err := RunIngest(context.Background(), IngestConfig{
		Brokers: env.brokers, RedisAddr: env.redisAddr, Top: env.top,
		Events: 5000, Users: 300, Partitions: 3, Rounds: 2, Dir: t.TempDir(),
	}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if res.RawConsume <= 0 || len(res.Runs) != 2 || res.RestoreRate <= 0 || res.RawChangelog <= 0 || res.RestoreRatio <= 0 {
		t.Fatalf("incomplete result: %+v", res)
	}
	for _, r := range res.Runs {
		if r.Rate <= 0 || r.CPUPerMillion <= 0 || r.RawRatio <= 0 || len(r.RoundRates) != 2 {
			t.Errorf("%s: %+v", r.Guarantee, r)
			continue
		}
		// The median of two rounds is their mean.
		if want := (r.RoundRates[0] + r.RoundRates[1]) / 2; r.Rate != want {
			t.Errorf("%s: rate %v, want the median %v of %v", r.Guarantee, r.Rate, want, r.RoundRates)
		}
	}
	if res.Rounds != 2 || res.EOSOverALO <= 0 || len(res.RawRounds) != 2 {
		t.Errorf("rounds %d, exactly-once over at-least-once %v, raw rounds %v", res.Rounds, res.EOSOverALO, res.RawRounds)
	}
	rep := &Report{Command: "test", Machine: MachineString(), Started: time.Now(), Ingest: res}
	var text, html strings.Builder
	rep.WriteText(&text)
	if err := rep.WriteHTML(&html); err != nil {
		t.Fatal(err)
	}
	wantSpread := fmt.Sprintf("raw consume per round: %.2f–%.2f M events/s", slices.Min(res.RawRounds)/1e6, slices.Max(res.RawRounds)/1e6)
	if !strings.Contains(text.String(), wantSpread) {
		t.Errorf("report lacks %q:\n%s", wantSpread, text.String())
	}
	for _, out := range []string{text.String(), html.String()} {
		for _, want := range []string{"medians of 2 rounds", "exactly-once / at-least-once"} {
			if !strings.Contains(out, want) {
				t.Errorf("report lacks %q:\n%s", want, out)
			}
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

// TestShopEventJSON: the generator's own encoder writes exactly what
// encoding/json writes, for generated events and for values that need
// escapes or exponents.
func TestShopEventJSON(t *testing.T) {
	gen := NewShopGenerator(7, 10_000, 2_000)
	events := []ShopEvent{
		{UserID: `a"b\c`, Type: "<view>&", ItemID: "é", Category: "\x01", Price: 1e-7},
		{UserID: "u1", Price: 1e21},
		{UserID: "u2", Price: -0.5, TS: -1},
		{},
	}
	now := time.UnixMilli(1_764_133_200_000)
	for i := range 10_000 {
		events = append(events, gen.Next(now.Add(time.Duration(i)*time.Millisecond)))
	}
	for _, ev := range events {
		want, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		if got := ev.AppendJSON(nil); string(got) != string(want) {
			t.Fatalf("AppendJSON(%+v) = %s, want %s", ev, got, want)
		}
	}
}
