package state

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"github.com/featurestream/featurestream/internal/testshop"
	"github.com/featurestream/featurestream/topology"
)

// BenchmarkStore measures the processor's use of the store, tuned and with
// Pebble's defaults, on a real directory: commits of 1000 entity states
// (ns/op is per state) and point reads of existing and missing entities.
func BenchmarkStore(b *testing.B) {
	top := testshop.Topology(b)
	const entities = 200_000
	enc := top.AppendState(nil, stateOf(b, top, "u", 10))
	for _, tuned := range []bool{true, false} {
		// Named key=value so that benchstat -col /pebble compares them.
		name := "pebble=tuned"
		if !tuned {
			name = "pebble=defaults"
		}
		open := func(b *testing.B) *Store {
			s, err := Open(Options{Dir: b.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), pebbleDefaults: !tuned}, top)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			return s
		}
		b.Run(name+"/op=write", func(b *testing.B) {
			s := open(b)
			rng := rand.New(rand.NewPCG(1, 2))
			b.SetBytes(int64(len(enc)))
			b.ResetTimer()
			for i := 0; i < b.N; {
				batch := s.NewBatch()
				for j := 0; j < 1000 && i < b.N; j, i = j+1, i+1 {
					batch.Set(int32(i%8), fmt.Sprintf("u%d", rng.IntN(entities)), enc)
				}
				if err := batch.Commit(); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/op=get", func(b *testing.B) {
			s := open(b)
			for i := 0; i < entities; i += 1000 {
				batch := s.NewBatch()
				for j := i; j < i+1000; j++ {
					batch.Set(int32(j%8), fmt.Sprintf("u%d", j), enc)
				}
				batch.Commit()
			}
			s.DB().Flush()
			rng := rand.New(rand.NewPCG(3, 4))
			b.ResetTimer()
			for i := range b.N {
				// Half the reads are of entities that do not exist yet, as
				// for new users: the bloom filters answer those.
				j := rng.IntN(2 * entities)
				if _, err := s.Get(int32(j%8), fmt.Sprintf("u%d", j)); err != nil {
					b.Fatal(err, i)
				}
			}
		})
	}
}

// BenchmarkRestoreCommit measures what a restore does with each fetched
// changelog record once it has it: commitRecords of batches the size one
// fetch of a partition brings (about 13,000 records of the shop spec's
// states, keys uniform over 200,000 users), into a store on a real
// directory that grows as a restore's does, each batch a partition of its
// own as in a full restore. ns/op is per record.
func BenchmarkRestoreCommit(b *testing.B) {
	top := testshop.Topology(b)
	s, err := Open(Options{Dir: b.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, top)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	const batch = 13_000
	rng := rand.New(rand.NewPCG(5, 6))
	recs := make([]*kgo.Record, batch)
	for i := range recs {
		user := fmt.Sprintf("u%d", rng.IntN(200_000))
		recs[i] = &kgo.Record{Key: []byte(user), Value: top.AppendState(nil, stateOf(b, top, user, 1+rng.IntN(8))), Offset: int64(i)}
	}
	// commitRecords sorts what it is given; each batch gets the records in
	// changelog order, as a fetch brings them.
	work := make([]*kgo.Record, batch)
	b.ResetTimer()
	for i := 0; i < b.N; i += batch {
		copy(work, recs)
		if err := commitRecords(s, int32(i/batch), work, Meta{ChangelogNext: int64(i)}, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRestoreFresh measures what a processor's startup restore does
// to a store just opened: eight partitions at once commit their 1,300
// changelog records each (the size of the bench's default changelog),
// while Pebble's memtable is still growing from its first 256 KiB. ns/op
// is per record, store opening excluded.
func BenchmarkRestoreFresh(b *testing.B) {
	top := testshop.Topology(b)
	const parts, perPart = 8, 1300
	rng := rand.New(rand.NewPCG(7, 8))
	recs := make([][]*kgo.Record, parts)
	for p := range recs {
		for i := range perPart {
			user := fmt.Sprintf("u%d", rng.IntN(200_000))
			recs[p] = append(recs[p], &kgo.Record{Key: []byte(user), Value: top.AppendState(nil, stateOf(b, top, user, 1+rng.IntN(8))), Offset: int64(i)})
		}
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	b.ResetTimer()
	for i := 0; i < b.N; i += parts * perPart {
		b.StopTimer()
		s, err := Open(Options{Dir: b.TempDir(), Logger: logger}, top)
		if err != nil {
			b.Fatal(err)
		}
		work := make([][]*kgo.Record, parts)
		for p := range work {
			work[p] = slices.Clone(recs[p])
		}
		b.StartTimer()
		var g errgroup.Group
		for p := range work {
			g.Go(func() error { return commitRecords(s, int32(p), work[p], Meta{ChangelogNext: perPart}, nil) })
		}
		if err := g.Wait(); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		s.Close()
		b.StartTimer()
	}
}

// BenchmarkRestore restores one partition of 50,000 changelog records
// (commits of 500 over 20,000 users, each commit's last record with its
// input offset and horizon) from an in-process kfake broker into an empty
// store: fetching, the metadata and re-push bookkeeping, and the Pebble
// writes; beside it, a raw read of the same partition. ns/op is per read
// of the partition; compare ns/record with benchstat -col /read.
func BenchmarkRestore(b *testing.B) {
	top := testshop.Topology(b)
	ctx := context.Background()
	cc := newChangelogCluster(b, "bench", 1)
	c, cl, topic, gen := cc.c, cc.cl, cc.topic, cc.gen
	const records = 50_000
	produceCommits(b, top, cl, topic, 1, records, 500, 20_000, rand.New(rand.NewPCG(9, 10)))
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	// The baseline: a plain read_committed consumer reading the partition
	// to its end, as bench e2e's raw changelog read does.
	b.Run("read=raw", func(b *testing.B) {
		for range b.N {
			rc, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
				kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))
			if err != nil {
				b.Fatal(err)
			}
			readAll(b, rc, records)
			rc.Close()
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*records), "ns/record")
	})
	b.Run("read=restore", func(b *testing.B) {
		for range b.N {
			b.StopTimer()
			s, r := emptyRestorer(b, top, cc, logger)
			b.StartTimer()
			meta, _, err := r.Restore(ctx, 0, gen)
			b.StopTimer()
			if err != nil || meta.ChangelogNext != records {
				b.Fatalf("restore: %+v, %v", meta, err)
			}
			s.Close()
			b.StartTimer()
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*records), "ns/record")
	})
}

// BenchmarkRestorePartitions restores 8 partitions of 1,400 changelog
// records each at once, as a processor restores its assignment and as
// bench e2e's restore reads its changelog of about 11 k records; beside it,
// a raw read of all 8 with one client. At this size a restore is mostly
// fixed costs (a listing, a client, its first fetch, a Pebble commit), which
// BenchmarkRestore's one large partition hides. ns/op is per read of all 8.
func BenchmarkRestorePartitions(b *testing.B) {
	top := testshop.Topology(b)
	ctx := context.Background()
	const partitions, perPartition = 8, 1400
	cc := newChangelogCluster(b, "bench", partitions)
	c, cl, topic, gen := cc.c, cc.cl, cc.topic, cc.gen
	produceCommits(b, top, cl, topic, partitions, perPartition, 100, 5_000, rand.New(rand.NewPCG(11, 12)))
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	b.Run("read=raw", func(b *testing.B) {
		for range b.N {
			rc, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
				kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
			if err != nil {
				b.Fatal(err)
			}
			readAll(b, rc, partitions*perPartition)
			// Closing is not reading: bench e2e times its raw read to
			// the last record.
			b.StopTimer()
			rc.Close()
			b.StartTimer()
		}
	})
	b.Run("read=restore", func(b *testing.B) {
		for range b.N {
			b.StopTimer()
			s, r := emptyRestorer(b, top, cc, logger)
			b.StartTimer()
			var g errgroup.Group
			for p := range int32(partitions) {
				g.Go(func() error {
					meta, _, err := r.Restore(ctx, p, gen)
					if err == nil && meta.ChangelogNext != perPartition {
						err = fmt.Errorf("partition %d restored to %d", p, meta.ChangelogNext)
					}
					return err
				})
			}
			err := g.Wait()
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			s.Close()
			b.StartTimer()
		}
	})
}

// produceCommits writes perPartition changelog records to each of the
// first partitions of topic, as commits of perCommit states of users drawn
// from rng, each commit's last record with its input offset and horizon.
func produceCommits(b *testing.B, top *topology.Topology, cl *kgo.Client, topic string, partitions int32, perPartition, perCommit, users int, rng *rand.Rand) {
	b.Helper()
	states := make([][]byte, 64)
	for i := range states {
		states[i] = top.AppendState(nil, stateOf(b, top, "u", 1+i%8))
	}
	for p := range partitions {
		for from := 0; from < perPartition; from += perCommit {
			recs := make([]*kgo.Record, perCommit)
			for i := range recs {
				recs[i] = &kgo.Record{Topic: topic, Partition: p, Key: fmt.Appendf(nil, "u%d", rng.IntN(users)), Value: states[rng.IntN(len(states))]}
			}
			recs[perCommit-1].Headers = []kgo.RecordHeader{InputNextHeader(int64(from + perCommit)), HorizonHeader(int64(1_000_000 + from))}
			if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// emptyRestorer opens an empty store and a Restorer of cc's changelog into
// it.
func emptyRestorer(b *testing.B, top *topology.Topology, cc *changelogCluster, logger *slog.Logger) (*Store, *Restorer) {
	b.Helper()
	s, err := Open(Options{Dir: b.TempDir(), Logger: logger}, top)
	if err != nil {
		b.Fatal(err)
	}
	return s, NewRestorer(s, cc.adm, []kgo.Opt{kgo.SeedBrokers(cc.c.ListenAddrs()...)}, cc.topic, logger, nil)
}

// readAll polls rc until it has read n records.
func readAll(b *testing.B, rc *kgo.Client, n int) {
	b.Helper()
	for read := 0; read < n; {
		fetches := rc.PollFetches(context.Background())
		if err := fetches.Err0(); err != nil {
			b.Fatal(err)
		}
		read += fetches.NumRecords()
	}
}

// BenchmarkRepushStates compares two ways for a processor to get the states
// a restore re-pushes to the online store, for 8,000 entities just restored
// (in the memtable, as after a restore): reading each back from the store,
// as it once did, and decoding the value the restore kept (Repush.Value).
// ns/op is per entity.
func BenchmarkRepushStates(b *testing.B) {
	top := testshop.Topology(b)
	s, err := Open(Options{Dir: b.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, top)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	rng := rand.New(rand.NewPCG(15, 16))
	const entities = 8000
	recs := make([]*kgo.Record, entities)
	for i := range recs {
		user := fmt.Sprintf("u%d", i*25+rng.IntN(25))
		recs[i] = &kgo.Record{Key: []byte(user), Value: top.AppendState(nil, stateOf(b, top, user, 1+rng.IntN(8))), Offset: int64(i)}
	}
	if err := commitRecords(s, 0, slices.Clone(recs), Meta{ChangelogNext: entities}, nil); err != nil {
		b.Fatal(err)
	}
	rng.Shuffle(len(recs), func(i, j int) { recs[i], recs[j] = recs[j], recs[i] }) // map order
	b.Run("read=get", func(b *testing.B) {
		for i := range b.N {
			if st, err := s.Get(0, string(recs[i%entities].Key)); err != nil || st == nil {
				b.Fatal(st, err)
			}
		}
	})
	b.Run("read=decode", func(b *testing.B) {
		for i := range b.N {
			if _, err := top.DecodeState(recs[i%entities].Value); err != nil {
				b.Fatal(err)
			}
		}
	})
}
