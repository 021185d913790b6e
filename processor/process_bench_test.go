package processor

import (
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/featurestream/featurestream/state"
	"github.com/featurestream/featurestream/topology"
)

// BenchmarkProcess is the processor's per-record CPU without Kafka or
// Redis: polls of shop events over 8 partitions (Zipf-distributed users,
// as featurestream bench makes them) are decoded and applied the way the
// poll loop does, and every 10 polls the touched entities are encoded and
// written to Pebble, as a commit does, and kept in the tasks' state caches
// as the end of the push does. ns/op is per record.
func BenchmarkProcess(b *testing.B) {
	now := time.UnixMilli(1_764_133_200_000)
	p := offlineProcessor(b, now)
	top := p.top
	store, err := state.Open(state.Options{Dir: b.TempDir(), Logger: slog.New(slog.DiscardHandler)}, top)
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	p.store = store
	const (
		partitions = 8
		perPoll    = 4096 // records per poll, all partitions
		polls      = 64   // distinct polls, cycled
	)
	committed := make([]map[string]*topology.EntityState, partitions)
	for part := range int32(partitions) {
		p.mu.tasks[part] = p.newTask(part, state.Meta{MaxEventMs: math.MinInt64})
		committed[part] = make(map[string]*topology.EntityState)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	users := rand.NewZipf(rng, 1.1, 1, 9_999)
	items := rand.NewZipf(rng, 1.2, 1, 1_999)
	types := []string{"view", "view", "view", "view", "click", "purchase"}
	fetches := make([]kgo.Fetches, polls)
	offsets := make([]int64, partitions)
	for i := range fetches {
		byPart := make([][]*kgo.Record, partitions)
		for range perPoll {
			user := users.Uint64()
			part := int32(user % partitions)
			v := fmt.Appendf(nil, `{"user_id":"u%d","ts":%d,"type":%q,"item_id":"i%d","category":"c%d","price":%.2f}`,
				user, now.UnixMilli()-rng.Int64N(60_000), types[rng.IntN(len(types))], items.Uint64(), rng.IntN(40), rng.Float64()*100)
			byPart[part] = append(byPart[part], &kgo.Record{Topic: "events", Partition: part, Value: v})
		}
		var fps []kgo.FetchPartition
		for part, recs := range byPart {
			fps = append(fps, kgo.FetchPartition{Partition: int32(part), Records: recs})
		}
		fetches[i] = kgo.Fetches{{Topics: []kgo.FetchTopic{{Topic: "events", Partitions: fps}}}}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i += perPoll {
		f := fetches[(i/perPoll)%polls]
		// Records are renumbered so every poll is new to its task.
		f.EachPartition(func(fp kgo.FetchTopicPartition) {
			for _, r := range fp.Records {
				r.Offset = offsets[fp.Partition]
				offsets[fp.Partition]++
			}
		})
		p.processLocked(f)
		if (i/perPoll)%10 == 9 {
			batch := store.NewBatch()
			for _, t := range p.mu.tasks {
				for entity, st := range t.dirty {
					if err := batch.Set(t.partition, entity, top.AppendState(nil, st)); err != nil {
						b.Fatal(err)
					}
					committed[t.partition][entity] = st
				}
				clear(t.dirty)
			}
			if err := batch.Commit(); err != nil {
				b.Fatal(err)
			}
			batch.Close()
			// As the push's end does (finishPushLocked).
			for _, t := range p.mu.tasks {
				for entity, st := range committed[t.partition] {
					t.keep(entity, st)
				}
				clear(committed[t.partition])
			}
		}
	}
}
