package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/featurestream/featurestream/processor"
	"github.com/featurestream/featurestream/state"
)

// TestExpiredEntitiesAreDeleted: once every window of an entity has passed
// the watermark, the processor writes a changelog tombstone for it (so
// compaction removes it), and its served value stays right (zero).
func TestExpiredEntitiesAreDeleted(t *testing.T) {
	spec := `app: exp
source: {topic: events, key: user_id, time: ts, grace: 1m}
features:
  - {name: views_1h, agg: count, window: 1h}
`
	top, kafka, store := specEnv(t, spec, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- runProcessor(ctx, processorParams{
			top: top, brokers: kafka.ListenAddrs(), stateDir: t.TempDir(), sink: store, reg: newRegistry(), logger: discardLogger(),
			cfg: processor.Config{CommitInterval: 50 * time.Millisecond, ExpireInterval: 200 * time.Millisecond}, adminAddr: "127.0.0.1:0",
		})
	}()
	prod, err := kgo.NewClient(kgo.SeedBrokers(kafka.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	t0 := time.Date(2026, 11, 3, 8, 0, 0, 0, time.UTC).UnixMilli()
	send := func(user string, ts int64) {
		v := fmt.Sprintf(`{"user_id":%q,"ts":%d}`, user, ts)
		if err := prod.ProduceSync(ctx, &kgo.Record{Topic: "events", Key: []byte(user), Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	send("old", t0)
	send("old", t0+60_000)
	send("new", t0+3*3600_000) // moves the watermark 3 hours on

	// The changelog's last record for "old" becomes a tombstone; "new" stays.
	deadline := time.Now().Add(20 * time.Second)
	for {
		last := lastChangelogValues(t, kafka.ListenAddrs(), state.ChangelogTopic("exp"))
		if v, ok := last["old"]; ok && v == nil {
			if last["new"] == nil {
				t.Fatal("the live entity was deleted too")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no tombstone for the expired entity; last changelog values: %v", last)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The online store follows (it is written after the commit).
	for {
		entries, err := store.Read(ctx, []string{"old", "new"}, []int{0}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if entries[0].Found && len(entries[0].Tiles[0]) == 0 && entries[1].Found && len(entries[1].Tiles[0]) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("online store: old %+v, new %+v; want old empty (reads 0), new with its tile", entries[0], entries[1])
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// lastChangelogValues reads a topic's committed records and returns each
// key's last value (nil for a tombstone).
func lastChangelogValues(t *testing.T, brokers []string, topic string) map[string][]byte {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	last := map[string][]byte{}
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		f := cl.PollFetches(ctx)
		cancel()
		if f.NumRecords() == 0 {
			return last
		}
		f.EachRecord(func(r *kgo.Record) { last[string(r.Key)] = r.Value })
	}
}
