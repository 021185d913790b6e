package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
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

// TestShopGeneratorRecords: NextRecord makes, from the same draws, the
// records Next(ts).Record makes, whose values encoding/json would write;
// and the draws are those of a generator drawing with rand.Zipf directly,
// as before the generator kept what it drew, so a seeded run still sends
// the same events. With a small cacheMax, most users and items are made
// anew for each event.
func TestShopGeneratorRecords(t *testing.T) {
	for _, cacheMax := range []uint64{shopCacheMax, 50} {
		byRecord, byEvent := NewShopGenerator(5, 10_000, 2_000), NewShopGenerator(5, 10_000, 2_000)
		byRecord.cacheMax, byEvent.cacheMax = cacheMax, cacheMax
		rng := rand.New(rand.NewPCG(5, 5^0x9e3779b97f4a7c15))
		users, items := rand.NewZipf(rng, 1.1, 1, 10_000-1), rand.NewZipf(rng, 1.2, 1, 2_000-1)
		now := time.UnixMilli(1_764_133_200_000)
		for i := range 50_000 {
			ts := now.Add(time.Duration(i) * time.Millisecond)
			item := items.Uint64()
			want := ShopEvent{
				UserID: "u" + strconv.FormatUint(users.Uint64(), 10), TS: ts.UnixMilli(), Type: "view",
				ItemID: "i" + strconv.FormatUint(item, 10), Category: categories[item%uint64(len(categories))],
				Price: float64(500+(item*7919)%20000) / 100,
			}
			switch r := rng.Float64(); {
			case r < 0.05:
				want.Type = "purchase"
			case r < 0.20:
				want.Type = "click"
			}
			if ev := byEvent.Next(ts); ev != want {
				t.Fatalf("cacheMax %d, event %d: Next = %+v, want %+v", cacheMax, i, ev, want)
			}
			rec := byRecord.NextRecord(ts, "shop")
			wantValue, err := json.Marshal(want)
			if err != nil {
				t.Fatal(err)
			}
			if rec.Topic != "shop" || string(rec.Key) != want.UserID || string(rec.Value) != string(wantValue) {
				t.Fatalf("cacheMax %d, event %d: NextRecord = %s %s %s, want shop %s %s", cacheMax, i, rec.Topic, rec.Key, rec.Value, want.UserID, wantValue)
			}
		}
	}
}

// BenchmarkShopGenerator measures what the load generator spends on each
// event before handing it to franz-go: the draw and the record. It shares
// the machine with what bench e2e measures, so what it spends is taken
// from the processor, Redis and the broker.
func BenchmarkShopGenerator(b *testing.B) {
	gen := NewShopGenerator(1, 10_000, 50_000)
	now := time.Now()
	b.ReportAllocs()
	for range b.N {
		if rec := gen.NextRecord(now, "shop"); len(rec.Value) == 0 {
			b.Fatal("empty record")
		}
	}
}
