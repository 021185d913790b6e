package state

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/featurestream/featurestream/internal/testshop"
	"github.com/featurestream/featurestream/topology"
)

// TestCrashConsistency writes random batches, each a commit of entity
// states with the changelog offset they reflect, to Pebble on a crashable
// in-memory filesystem, then crashes it keeping a random part of what was
// not synced. The recovered store must equal the model at the changelog
// offset its metadata says, every time: never half a batch. With no WAL
// (decision 0018) what was flushed survives and what was not is lost
// whole, for the changelog to replay.
func TestCrashConsistency(t *testing.T) {
	top := testshop.Topology(t)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	rounds := 30
	for round := range rounds {
		rng := rand.New(rand.NewPCG(uint64(round), 7))
		fs := vfs.NewCrashableMem()
		s, err := Open(Options{FS: fs, Dir: "db", Logger: logger, MemTableSize: 256 << 10}, top)
		if err != nil {
			t.Fatal(err)
		}
		// model[i] is the store after batch i: entity -> encoded state.
		model := []map[string][]byte{{}}
		batches := 20 + rng.IntN(60)
		flushed := 0 // the last batch flushed on purpose
		for i := 1; i <= batches; i++ {
			next := make(map[string][]byte, len(model[i-1]))
			for k, v := range model[i-1] {
				next[k] = v
			}
			b := s.NewBatch()
			for range 1 + rng.IntN(40) {
				u := fmt.Sprintf("u%d", rng.IntN(200))
				enc := top.AppendState(nil, randomState(top, rng))
				if err := b.Set(3, u, enc); err != nil {
					t.Fatal(err)
				}
				next[u] = enc
			}
			if err := b.SetMeta(3, Meta{ChangelogNext: int64(i), InputNext: int64(10 * i), MaxEventMs: math.MinInt64, Generation: "g"}); err != nil {
				t.Fatal(err)
			}
			if err := b.Commit(); err != nil {
				t.Fatal(err)
			}
			model = append(model, next)
			if rng.IntN(10) == 0 {
				// Now and then Pebble syncs (a flush), as it does in
				// production when a memtable fills.
				if err := s.DB().Flush(); err != nil {
					t.Fatal(err)
				}
				flushed = i
			}
		}
		crashed := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(101), RNG: rand.New(rand.NewPCG(uint64(round), 9))})
		s.Close()

		r, err := Open(Options{FS: crashed, Dir: "db", Logger: logger}, top)
		if err != nil {
			t.Fatalf("round %d: reopen after crash: %v", round, err)
		}
		m, ok, err := r.Meta(3)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		at := 0
		if ok {
			at = int(m.ChangelogNext)
			if m.InputNext != int64(10*at) {
				t.Fatalf("round %d: meta %+v is not one batch's", round, m)
			}
		}
		got := storedStates(t, r, 3)
		if at < flushed {
			t.Fatalf("round %d: recovered at batch %d, before batch %d that was flushed", round, at, flushed)
		}
		want := model[at]
		if len(got) != len(want) {
			t.Fatalf("round %d: recovered at batch %d of %d with %d entities, model has %d", round, at, batches, len(got), len(want))
		}
		for k, v := range want {
			if !bytes.Equal(got[k], v) {
				t.Fatalf("round %d: entity %s differs from the model at batch %d", round, k, at)
			}
		}
		r.Close()
	}
}

// storedStates reads a partition of s back: entity -> encoded state.
func storedStates(t *testing.T, s *Store, partition int32) map[string][]byte {
	t.Helper()
	got := map[string][]byte{}
	if err := s.Entities(partition, func(entity string, st *topology.EntityState) error {
		got[entity] = s.top.AppendState(nil, st)
		return nil
	}); err != nil {
		t.Fatalf("read partition %d back: %v", partition, err)
	}
	return got
}

func randomState(top *topology.Topology, rng *rand.Rand) *topology.EntityState {
	st := top.NewEntityState()
	for i := range 1 + rng.IntN(12) {
		ev := &topology.Event{Key: "u", TimeMs: 1_000_000 + int64(rng.IntN(7_200_000)), Fields: map[string]any{
			"type": []string{"view", "purchase"}[rng.IntN(2)], "item_id": fmt.Sprintf("i%d", i), "price": float64(rng.IntN(10000)) / 100,
		}}
		_ = top.Apply(st, ev, math.MinInt64)
	}
	return st
}

// TestCrashConsistencyConcurrent: partitions commit from goroutines of
// their own, as restores and the processor do, while Pebble flushes now
// and then; after a crash each partition is whole at some batch of its
// own, at or after the last one committed before a finished flush began.
func TestCrashConsistencyConcurrent(t *testing.T) {
	top := testshop.Topology(t)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	const parts = 4
	for round := range 10 {
		fs := vfs.NewCrashableMem()
		s, err := Open(Options{FS: fs, Dir: "db", Logger: logger, MemTableSize: 256 << 10}, top)
		if err != nil {
			t.Fatal(err)
		}
		models := make([][]map[string][]byte, parts)
		var committed [parts]atomic.Int64
		var wg sync.WaitGroup
		for p := range parts {
			rng := rand.New(rand.NewPCG(uint64(round), uint64(p)))
			models[p] = []map[string][]byte{{}}
			wg.Go(func() {
				for i := 1; i <= 60; i++ {
					next := maps.Clone(models[p][i-1])
					b := s.NewBatch()
					for range 1 + rng.IntN(40) {
						u := fmt.Sprintf("u%d", rng.IntN(200))
						enc := top.AppendState(nil, randomState(top, rng))
						if err := b.Set(int32(p), u, enc); err != nil {
							t.Error(err)
							return
						}
						next[u] = enc
					}
					if err := b.SetMeta(int32(p), Meta{ChangelogNext: int64(i), MaxEventMs: math.MinInt64, Generation: "g"}); err != nil {
						t.Error(err)
						return
					}
					if err := b.Commit(); err != nil {
						t.Error(err)
						return
					}
					models[p] = append(models[p], next)
					committed[p].Store(int64(i))
				}
			})
		}
		// Flush while they commit; a finished flush holds every batch
		// committed before it began.
		var flushed [parts]int64
		for range 5 {
			var before [parts]int64
			for p := range parts {
				before[p] = committed[p].Load()
			}
			if err := s.DB().Flush(); err != nil {
				t.Fatal(err)
			}
			flushed = before
		}
		wg.Wait()
		rng := rand.New(rand.NewPCG(uint64(round), 99))
		crashed := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(101), RNG: rng})
		s.Close()

		r, err := Open(Options{FS: crashed, Dir: "db", Logger: logger}, top)
		if err != nil {
			t.Fatalf("round %d: reopen after crash: %v", round, err)
		}
		for p := range int32(parts) {
			m, ok, err := r.Meta(p)
			if err != nil {
				t.Fatalf("round %d partition %d: %v", round, p, err)
			}
			at := 0
			if ok {
				at = int(m.ChangelogNext)
			}
			if int64(at) < flushed[p] {
				t.Fatalf("round %d partition %d: recovered at batch %d, before batch %d that a finished flush held", round, p, at, flushed[p])
			}
			got := storedStates(t, r, p)
			if want := models[p][at]; !maps.EqualFunc(got, want, bytes.Equal) {
				t.Fatalf("round %d partition %d: recovered state differs from the model at batch %d (%d entities, model %d)", round, p, at, len(got), len(want))
			}
		}
		r.Close()
	}
}

// TestPeriodicFlush: a committed batch reaches disk within FlushInterval
// without a memtable filling, so a crash after that keeps it; without the
// periodic flush the same crash loses it.
func TestPeriodicFlush(t *testing.T) {
	top := testshop.Topology(t)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		interval time.Duration
		kept     bool
	}{{20 * time.Millisecond, true}, {time.Hour, false}} {
		fs := vfs.NewCrashableMem()
		s, err := Open(Options{FS: fs, Dir: "db", Logger: logger, FlushInterval: tc.interval}, top)
		if err != nil {
			t.Fatal(err)
		}
		flushes := s.DB().Metrics().Flush.Count
		b := s.NewBatch()
		if err := b.Set(1, "u1", top.AppendState(nil, randomState(top, rand.New(rand.NewPCG(1, 2))))); err != nil {
			t.Fatal(err)
		}
		if err := b.SetMeta(1, Meta{ChangelogNext: 7, MaxEventMs: math.MinInt64, Generation: "g"}); err != nil {
			t.Fatal(err)
		}
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
		if tc.kept {
			deadline := time.Now().Add(10 * time.Second)
			for s.DB().Metrics().Flush.Count == flushes {
				if time.Now().After(deadline) {
					t.Fatal("no flush within 10s of a commit, with FlushInterval 20ms")
				}
				time.Sleep(5 * time.Millisecond)
			}
		} else {
			time.Sleep(100 * time.Millisecond)
		}
		crashed := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
		s.Close()
		r, err := Open(Options{FS: crashed, Dir: "db", Logger: logger}, top)
		if err != nil {
			t.Fatal(err)
		}
		m, ok, err := r.Meta(1)
		if err != nil {
			t.Fatal(err)
		}
		if ok != tc.kept || (ok && m.ChangelogNext != 7) {
			t.Errorf("FlushInterval %s: after a crash the batch's meta is %+v (found %v); want found %v", tc.interval, m, ok, tc.kept)
		}
		r.Close()
	}
}

// TestCommitRecordsNewestWins: a restore batch keeps, of each key, the
// record latest in changelog order (a set or a tombstone), whatever the
// keys' lengths and shared prefixes: keys of 1 to 12 bytes over a
// two-letter alphabet, so that many share their first 8 bytes, including
// a zero byte that a padded prefix cannot tell from the key's end.
func TestCommitRecordsNewestWins(t *testing.T) {
	top := testshop.Topology(t)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := Open(Options{FS: vfs.NewMem(), Dir: "db", Logger: logger}, top)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rng := rand.New(rand.NewPCG(3, 4))
	values := make([][]byte, 4)
	for i := range values {
		values[i] = top.AppendState(nil, randomState(top, rng))
	}
	for round := range 20 {
		model := map[string][]byte{}
		var recs []*kgo.Record
		for i := range 2000 {
			key := make([]byte, 1+rng.IntN(12))
			for j := range key {
				key[j] = "a\x00"[rng.IntN(2)]
			}
			rec := &kgo.Record{Key: key, Offset: int64(i)}
			if rng.IntN(5) > 0 {
				rec.Value = values[rng.IntN(len(values))]
			}
			model[string(key)] = rec.Value
			recs = append(recs, rec)
		}
		part := int32(round)
		if err := commitRecords(s, part, recs, Meta{ChangelogNext: 2000}, nil); err != nil {
			t.Fatal(err)
		}
		got := storedStates(t, s, part)
		for k, v := range model {
			if v == nil {
				if _, ok := got[k]; ok {
					t.Fatalf("round %d: key %q: deleted last, but stored", round, k)
				}
				continue
			}
			if !bytes.Equal(got[k], v) {
				t.Fatalf("round %d: key %q: stored state is not the newest record's", round, k)
			}
			delete(got, k)
		}
		if len(got) != 0 {
			t.Fatalf("round %d: %d keys stored that the batch never set", round, len(got))
		}
	}
}

// TestSortByKey checks the radix sort against a stable comparison sort,
// and sameKey against bytes.Equal, on keys that share long prefixes, differ
// only in zero bytes like the prefix's padding, or are empty.
func TestSortByKey(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	alphabets := []string{"a\x00", "u0123456789", "\x00\x01\xff"}
	for round := range 300 {
		alphabet := alphabets[round%len(alphabets)]
		n := rng.IntN(3000)
		recs := make([]*kgo.Record, n)
		ks := make([]keyedRecord, n)
		for i := range recs {
			key := make([]byte, rng.IntN(14))
			for j := range key {
				key[j] = alphabet[rng.IntN(len(alphabet))]
			}
			if round%2 == 1 && len(key) > 0 {
				key[0] = 'u' // a first byte every key shares
			}
			recs[i] = &kgo.Record{Key: key}
			ks[i] = keyOf(key, i)
		}
		want := slices.Clone(ks)
		slices.SortStableFunc(want, func(a, b keyedRecord) int { return bytes.Compare(recs[a.index].Key, recs[b.index].Key) })
		got := sortByKey(recs, ks, make([]keyedRecord, n))
		for i := range want {
			if got[i].index != want[i].index {
				t.Fatalf("round %d: at %d got record %d, key %q, want record %d, key %q",
					round, i, got[i].index, recs[got[i].index].Key, want[i].index, recs[want[i].index].Key)
			}
			if i > 0 {
				a, b := recs[got[i-1].index].Key, recs[got[i].index].Key
				if sameKey(recs, got[i-1], got[i]) != bytes.Equal(a, b) {
					t.Fatalf("round %d: sameKey(%q, %q) = %v", round, a, b, !bytes.Equal(a, b))
				}
			}
		}
	}
}
