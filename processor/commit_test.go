package processor

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/featurestream/featurestream/state"
	"github.com/featurestream/featurestream/topology"
)

// TestCommitsWriteLocalState: after many commits of two partitions (each
// written to Pebble by a goroutine of its own), local state holds exactly
// what the model says of every user, under its own partition, and each
// partition's metadata reflects its whole input and the changelog up to its
// last record, for both guarantees.
func TestCommitsWriteLocalState(t *testing.T) {
	for _, g := range []Guarantee{ExactlyOnce, AtLeastOnce} {
		t.Run(string(g), func(t *testing.T) {
			e := newRestoreEnv(t)
			dir := t.TempDir()
			store, err := state.Open(state.Options{Dir: dir, Logger: slog.New(slog.DiscardHandler)}, e.top)
			if err != nil {
				t.Fatal(err)
			}
			p, err := New(Config{Brokers: e.brokers, SessionTimeout: 6 * time.Second, CommitInterval: 5 * time.Millisecond, Guarantee: g},
				e.top, store, e.sink, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- p.Run(ctx) }()

			// Rounds of events, each in Redis before the next is produced,
			// so each takes a commit of its own; partition 1 gets more
			// than partition 0.
			ends := map[int32]int64{}
			const rounds = 8
			for r := range rounds {
				ends[0] = e.produce(0, 3)
				ends[1] = e.produce(1, 3+r%4)
				e.waitItems(0, len(e.items["a1"]))
				e.waitItems(1, len(e.items["b1"]))
			}
			n0, n1 := len(e.items["a1"]), len(e.items["b1"])
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if err := store.Close(); err != nil {
				t.Fatal(err)
			}
			// The changelog's last record of each partition, and how many
			// it has: one per user and commit that changed the user.
			last, count := map[int32]int64{}, map[int32]int{}
			cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.ConsumeTopics(p.clTopic),
				kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			for {
				fctx, fcancel := context.WithTimeout(context.Background(), time.Second)
				fs := cl.PollFetches(fctx)
				fcancel()
				if fs.NumRecords() == 0 {
					break
				}
				fs.EachRecord(func(r *kgo.Record) {
					last[r.Partition] = max(last[r.Partition], r.Offset)
					count[r.Partition]++
				})
			}

			store, err = state.Open(state.Options{Dir: dir, Logger: slog.New(slog.DiscardHandler)}, e.top)
			if err != nil {
				t.Fatal(err)
			}
			defer store.Close()
			fi, _ := e.top.FeatureIndex("last_items")
			vi, _ := e.top.FeatureIndex("views_1h")
			now := time.Now().UnixMilli()
			for part, n := range map[int32]int{0: n0, 1: n1} {
				var users []string
				if count[part] < rounds*len(e.users[part]) {
					t.Errorf("partition %d: %d changelog records, want each user's state of %d commits at least", part, count[part], rounds)
				}
				if err := store.Entities(part, func(entity string, st *topology.EntityState) error {
					users = append(users, entity)
					if got, want := e.top.Evaluate(fi, st.Features[fi], now).List, e.want(entity, n); !slices.Equal(got, want) {
						t.Errorf("partition %d, %s: last_items %v, want %v", part, entity, got, want)
					}
					if got := e.top.Evaluate(vi, st.Features[vi], now).Int; got != int64(n) {
						t.Errorf("partition %d, %s: views_1h %d, want %d", part, entity, got, n)
					}
					return nil
				}); err != nil {
					t.Fatal(err)
				}
				slices.Sort(users)
				if !slices.Equal(users, e.users[part]) {
					t.Errorf("partition %d holds %v, want %v", part, users, e.users[part])
				}
				meta, ok, err := store.Meta(part)
				if err != nil || !ok {
					t.Fatalf("partition %d: meta %v, %v", part, ok, err)
				}
				if meta.InputNext != ends[part] || meta.ChangelogNext != last[part]+1 {
					t.Errorf("partition %d: meta input next %d, changelog next %d; want %d, %d", part, meta.InputNext, meta.ChangelogNext, ends[part], last[part]+1)
				}
			}
		})
	}
}
