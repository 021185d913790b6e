package state

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/featurestream/featurestream/internal/testshop"
	"github.com/featurestream/featurestream/topology"
)

func openMem(t testing.TB, top *topology.Topology) *Store {
	t.Helper()
	s, err := Open(Options{FS: vfs.NewMem(), Dir: "db", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, top)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func stateOf(t testing.TB, top *topology.Topology, user string, events int) *topology.EntityState {
	st := top.NewEntityState()
	for i := range events {
		ev := &topology.Event{Key: user, TimeMs: int64(1_000_000 + i*1000), Fields: map[string]any{
			"type": "view", "item_id": fmt.Sprintf("i%d", i), "price": 2.5,
		}}
		if err := top.Apply(st, ev, math.MinInt64); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

func TestStoreBatchAndMeta(t *testing.T) {
	top := testshop.Topology(t)
	s := openMem(t, top)
	st := stateOf(t, top, "u1", 3)
	b := s.NewBatch()
	if err := b.Set(2, "u1", top.AppendState(nil, st)); err != nil {
		t.Fatal(err)
	}
	want := Meta{ChangelogNext: 7, InputNext: 42, SinkNext: 5, MaxEventMs: 1_003_000, Generation: "gen-a"}
	if err := b.SetMeta(2, want); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(2, "u1")
	if err != nil || got == nil {
		t.Fatalf("Get = %v, %v", got, err)
	}
	if !bytes.Equal(top.AppendState(nil, got), top.AppendState(nil, st)) {
		t.Fatal("state changed through the store")
	}
	if other, _ := s.Get(3, "u1"); other != nil {
		t.Fatal("partition 3 sees partition 2's entity")
	}
	m, ok, err := s.Meta(2)
	if err != nil || !ok || m != want {
		t.Fatalf("Meta = %+v, %v, %v; want %+v", m, ok, err, want)
	}
	if err := s.DropPartition(2); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get(2, "u1"); got != nil {
		t.Fatal("state survived DropPartition")
	}
	if _, ok, _ := s.Meta(2); ok {
		t.Fatal("meta survived DropPartition")
	}
}

// changelogCluster is a kfake broker with an app's changelog topic, and a
// client that produces to the partition each record names.
type changelogCluster struct {
	c          *kfake.Cluster
	cl         *kgo.Client
	adm        *kadm.Client
	topic, gen string
}

func newChangelogCluster(t testing.TB, app string, partitions int32) *changelogCluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	adm := kadm.NewClient(cl)
	topic := ChangelogTopic(app)
	gen, err := EnsureTopic(context.Background(), adm, topic, partitions, true)
	if err != nil {
		t.Fatal(err)
	}
	return &changelogCluster{c: c, cl: cl, adm: adm, topic: topic, gen: gen}
}

// TestRestore writes changelog records as the processor does and checks a
// restore into an empty store, a restore of only the tail into a store
// that has the head, and that a store of another generation is wiped.
func TestRestore(t *testing.T) {
	top := testshop.Topology(t)
	ctx := context.Background()
	cc := newChangelogCluster(t, "shop", 2)
	c, cl, adm, topic, gen := cc.c, cc.cl, cc.adm, cc.topic, cc.gen
	if again, err := EnsureTopic(ctx, adm, topic, 2, true); err != nil || again != gen {
		t.Fatalf("EnsureTopic again = %q, %v; want %q", again, err, gen)
	}
	if _, err := EnsureTopic(ctx, adm, topic, 3, true); err == nil {
		t.Fatal("EnsureTopic accepted a partition count mismatch")
	}

	// Two commits of partition 1: u1..u5 then u1..u3 again, each with the
	// input-offset header on its last record; the second also with its
	// horizon, the first as written before that header existed.
	var want = map[string]*topology.EntityState{}
	produce := func(users []string, events, inputNext int, horizon int64) {
		var recs []*kgo.Record
		for i, u := range users {
			st := stateOf(t, top, u, events+i)
			want[u] = st
			rec := &kgo.Record{Topic: topic, Partition: 1, Key: []byte(u), Value: top.AppendState(nil, st)}
			if i == len(users)-1 {
				rec.Headers = []kgo.RecordHeader{InputNextHeader(int64(inputNext))}
				if horizon != 0 {
					rec.Headers = append(rec.Headers, HorizonHeader(horizon))
				}
			}
			recs = append(recs, rec)
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	produce([]string{"u1", "u2", "u3", "u4", "u5"}, 2, 100, 0)

	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	base := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}
	check := func(s *Store, wantMeta Meta) {
		t.Helper()
		for u, st := range want {
			got, err := s.Get(1, u)
			if err != nil || got == nil {
				t.Fatalf("%s: Get = %v, %v", u, got, err)
			}
			if !bytes.Equal(top.AppendState(nil, got), top.AppendState(nil, st)) {
				t.Fatalf("%s: restored state differs", u)
			}
		}
		m, ok, err := s.Meta(1)
		if err != nil || !ok || m != wantMeta {
			t.Fatalf("meta = %+v, %v, %v; want %+v", m, ok, err, wantMeta)
		}
	}

	s := openMem(t, top)
	r := NewRestorer(s, adm, base, topic, logger, nil)
	meta, list, err := r.Restore(ctx, 1, gen)
	if err != nil {
		t.Fatal(err)
	}
	repush := newestRepush(t, list)
	if len(repush) != 5 || repush["u5"].Offset != 4 || repush["u1"].HorizonMs != math.MinInt64 {
		t.Fatalf("repush = %v, want all 5 entities, u5 at offset 4, no horizon known", repush)
	}
	wantMeta := Meta{ChangelogNext: 5, InputNext: 100, SinkNext: 0, MaxEventMs: 1_000_000 + 5*1000, Generation: gen}
	if meta != wantMeta {
		t.Fatalf("meta = %+v, want %+v", meta, wantMeta)
	}
	check(s, wantMeta)

	// The online store caught up to offset 5; then a second commit.
	b := s.NewBatch()
	wantMeta.SinkNext = 5
	b.SetMeta(1, wantMeta)
	b.Commit()
	produce([]string{"u1", "u2", "u3"}, 7, 180, 1_005_000)
	meta, list, err = r.Restore(ctx, 1, gen)
	if err != nil {
		t.Fatal(err)
	}
	repush = newestRepush(t, list)
	if len(repush) != 3 || repush["u1"].Offset != 5 || repush["u3"].Offset != 7 {
		t.Fatalf("tail repush = %v, want u1..u3 at 5..7", repush)
	}
	for u, rp := range repush {
		if rp.HorizonMs != 1_005_000 {
			t.Fatalf("%s: horizon %d, want the commit's 1005000 from its last record", u, rp.HorizonMs)
		}
	}
	wantMeta = Meta{ChangelogNext: 8, InputNext: 180, SinkNext: 5, MaxEventMs: 1_000_000 + 8*1000, Generation: gen}
	check(s, wantMeta)

	// An empty store rebuilt from the whole changelog equals the one
	// restored from its checkpoint plus the tail.
	s2 := openMem(t, top)
	meta2, _, err := NewRestorer(s2, adm, base, topic, logger, nil).Restore(ctx, 1, gen)
	if err != nil {
		t.Fatal(err)
	}
	wantMeta.SinkNext = 0
	if meta2 != wantMeta {
		t.Fatalf("full restore meta = %+v, want %+v", meta2, wantMeta)
	}
	check(s2, wantMeta)

	// The same after the broker compacts the changelog: superseded records
	// of u1..u3 go, the newest stay. (Compact ignores the last stable
	// offset, so it is only called with no transaction open, as here.)
	// kfake, like Kafka, never compacts the active (last) batch, so one
	// more commit makes the second one cleanable.
	produce([]string{"u4"}, 11, 200, 1_011_000)
	wantMeta = Meta{ChangelogNext: 9, InputNext: 200, MaxEventMs: 1_000_000 + 10*1000, Generation: gen}
	c.Compact()
	if n := countRecords(t, c.ListenAddrs(), topic, 1); n != 6 {
		t.Fatalf("after compaction the changelog partition has %d records, want 6 (u1..u3 of the first commit gone)", n)
	}
	s3 := openMem(t, top)
	meta4, _, err := NewRestorer(s3, adm, base, topic, logger, nil).Restore(ctx, 1, gen)
	if err != nil {
		t.Fatal(err)
	}
	if meta4 != wantMeta {
		t.Fatalf("restore after compaction: meta = %+v, want %+v", meta4, wantMeta)
	}
	check(s3, wantMeta)

	// A tombstone deletes its entity in a full restore.
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: 1, Key: []byte("u5")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	delete(want, "u5")
	produce([]string{"u2"}, 13, 220, 1_013_000)
	wantMeta = Meta{ChangelogNext: 11, InputNext: 220, MaxEventMs: 1_000_000 + 12*1000, Generation: gen}
	s4 := openMem(t, top)
	meta5, _, err := NewRestorer(s4, adm, base, topic, logger, nil).Restore(ctx, 1, gen)
	if err != nil {
		t.Fatal(err)
	}
	if meta5 != wantMeta {
		t.Fatalf("restore with a tombstone: meta = %+v, want %+v", meta5, wantMeta)
	}
	check(s4, wantMeta)
	if st, err := s4.Get(1, "u5"); err != nil || st != nil {
		t.Fatalf("deleted u5 restored as %v (%v)", st, err)
	}

	// State of another generation is not trusted.
	meta3, _, err := r.Restore(ctx, 1, "another-generation")
	if err != nil {
		t.Fatal(err)
	}
	if meta3.ChangelogNext != 11 || meta3.Generation != "another-generation" {
		t.Fatalf("meta after generation change = %+v", meta3)
	}
}

func countRecords(t *testing.T, brokers []string, topic string, partition int32) int {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {partition: kgo.NewOffset().AtStart()}}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	n := 0
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		f := cl.PollFetches(ctx)
		cancel()
		if f.NumRecords() == 0 {
			return n
		}
		n += f.NumRecords()
	}
}

// TestRestoreRepushModel checks a restore's re-push set (value, offset and
// horizon of each entity's newest state) and local state against a model, over
// commits that span the restore's batches, repeat keys, delete some, and
// carry a horizon or (as before the header existed) none. A second restore
// continues from a store whose online-store offset (SinkNext) is behind its
// local state, so some re-pushed entities are read but not applied.
func TestRestoreRepushModel(t *testing.T) {
	top := testshop.Topology(t)
	ctx := context.Background()
	cc := newChangelogCluster(t, "model", 1)
	c, cl, adm, topic, gen := cc.c, cc.cl, cc.adm, cc.topic, cc.gen
	rng := rand.New(rand.NewPCG(13, 14))
	values := make([][]byte, 8)
	for i := range values {
		values[i] = top.AppendState(nil, stateOf(t, top, "u", 1+i))
	}
	var log []changelogEntry
	produce := func(records int) {
		for len(log) < records {
			n := 1 + rng.IntN(900)
			horizon := int64(math.MinInt64)
			if rng.IntN(4) > 0 {
				horizon = 2_000_000 + int64(len(log))
			}
			recs := make([]*kgo.Record, n)
			for i := range recs {
				key := fmt.Sprintf("u%d", rng.IntN(3000))
				var value []byte
				if rng.IntN(10) > 0 {
					value = values[rng.IntN(len(values))]
				}
				recs[i] = &kgo.Record{Topic: topic, Key: []byte(key), Value: value}
			}
			log = closeHorizons(log, horizon)
			for _, rec := range recs {
				log = append(log, changelogEntry{int64(len(log)), string(rec.Key), rec.Value, horizon})
			}
			recs[n-1].Headers = []kgo.RecordHeader{InputNextHeader(int64(len(log)))}
			if horizon != math.MinInt64 {
				recs[n-1].Headers = append(recs[n-1].Headers, HorizonHeader(horizon))
			}
			if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	s := openMem(t, top)
	r := NewRestorer(s, adm, []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, topic, logger, nil)
	produce(3 * restoreBatchRecords)
	_, repush, err := r.Restore(ctx, 0, gen)
	if err != nil {
		t.Fatal(err)
	}
	checkRestored(t, s, log, repush, 0)

	// The online store has what the first 5,000 records wrote; local state
	// has them all. Then more commits.
	meta, _, err := s.Meta(0)
	if err != nil {
		t.Fatal(err)
	}
	meta.SinkNext = 5000
	b := s.NewBatch()
	if err := b.SetMeta(0, meta); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	produce(len(log) + 2*restoreBatchRecords)
	_, repush, err = r.Restore(ctx, 0, gen)
	if err != nil {
		t.Fatal(err)
	}
	checkRestored(t, s, log, repush, 5000)
}

// changelogEntry is a changelog record of a test's model, with the horizon
// a restore gives it: its commit's or, where its commit has none (written
// before the header existed), the next one in the changelog, which is
// later.
type changelogEntry struct {
	offset  int64
	key     string
	value   []byte
	horizon int64
}

// closeHorizons gives the entries at the end of log without a horizon the
// next commit's, h, unless that has none either.
func closeHorizons(log []changelogEntry, h int64) []changelogEntry {
	for i := len(log) - 1; i >= 0 && log[i].horizon == math.MinInt64 && h != math.MinInt64; i-- {
		log[i].horizon = h
	}
	return log
}

// checkRestored checks a restore's re-push list against log: each entity's
// newest record from sinkNext on, with its value, offset and horizon; and
// the partition 0 of s against every entity's newest record.
func checkRestored(t *testing.T, s *Store, log []changelogEntry, list []Repush, sinkNext int64) {
	t.Helper()
	repush := newestRepush(t, list)
	want := map[string]changelogEntry{}
	states := map[string][]byte{}
	for _, e := range log {
		states[e.key] = e.value
		if e.offset >= sinkNext {
			want[e.key] = e
		}
	}
	if len(repush) != len(want) {
		t.Fatalf("SinkNext %d: %d entities to re-push, want %d", sinkNext, len(repush), len(want))
	}
	for k, w := range want {
		got := repush[k]
		if got.Offset != w.offset || got.HorizonMs != w.horizon || !bytes.Equal(got.Value, w.value) || (got.Value == nil) != (w.value == nil) {
			t.Fatalf("SinkNext %d: re-push %s = offset %d, horizon %d, %d bytes; want offset %d, horizon %d, %d bytes",
				sinkNext, k, got.Offset, got.HorizonMs, len(got.Value), w.offset, w.horizon, len(w.value))
		}
	}
	got := storedStates(t, s, 0)
	for k, v := range states {
		if !bytes.Equal(got[k], v) {
			t.Fatalf("state of %s: stored %d bytes, want %d", k, len(got[k]), len(v))
		}
	}
	if len(got) != len(states)-countNil(states) {
		t.Fatalf("%d states stored, want %d", len(got), len(states)-countNil(states))
	}
}

// newestRepush folds a restore's re-push list into each entity's newest
// entry, checking that the list has each entity's states oldest first.
func newestRepush(t *testing.T, list []Repush) map[string]Repush {
	t.Helper()
	m := map[string]Repush{}
	for _, rp := range list {
		if old, ok := m[rp.Entity]; ok && old.Offset >= rp.Offset {
			t.Fatalf("re-push list has %s at offset %d after offset %d", rp.Entity, rp.Offset, old.Offset)
		}
		m[rp.Entity] = rp
	}
	return m
}

func countNil(m map[string][]byte) int {
	n := 0
	for _, v := range m {
		if v == nil {
			n++
		}
	}
	return n
}

// TestRepushesCompact adds states of a few entities, some with their
// commit's horizon and some before it is known, compacting at a small size:
// the list keeps each entity's newest state, in order, entries compacted
// while open still learn their horizon, and what a compaction kept no
// longer refers to the bytes added.
func TestRepushesCompact(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 18))
	r := newRepushes(2000, 100)
	type entry struct {
		value   string
		offset  int64
		horizon int64
	}
	model := map[string]entry{}
	var open []string
	// passed are the keys and values added since the last compaction.
	var passed [][]byte
	compactions := 0
	for off := range int64(5000) {
		key := fmt.Sprintf("e%d", rng.IntN(50))
		value := fmt.Sprintf("v%d", off)
		horizon := int64(math.MinInt64)
		if rng.IntN(3) == 0 {
			horizon = 10 * off // a commit's horizon already known
		} else {
			open = append(open, key)
		}
		model[key] = entry{value, off, horizon}
		before := len(r.list)
		kb, vb := []byte(key), []byte(value)
		passed = append(passed, kb, vb)
		r.add(kb, vb, off, horizon)
		if len(r.list) <= before {
			compactions++
			// The list kept copies: the fetches it referred to may go.
			for _, b := range passed {
				for i := range b {
					b[i] = '#'
				}
			}
			passed = passed[:0]
			seen := map[string]bool{}
			for _, rp := range r.list {
				if seen[rp.Entity] {
					t.Fatalf("after compacting, %s is in the list twice", rp.Entity)
				}
				seen[rp.Entity] = true
			}
		}
		if rng.IntN(20) == 0 { // a commit's last record
			for _, k := range open {
				if e := model[k]; e.horizon == math.MinInt64 {
					e.horizon = off
					model[k] = e
				}
			}
			open = open[:0]
			r.close(off)
		}
	}
	if compactions == 0 {
		t.Fatal("the list never compacted")
	}
	got := newestRepush(t, r.list)
	if len(got) != len(model) {
		t.Fatalf("%d entities, want %d", len(got), len(model))
	}
	for k, w := range model {
		g := got[k]
		if string(g.Value) != w.value || g.Offset != w.offset || g.HorizonMs != w.horizon {
			t.Fatalf("%s = %s at %d, horizon %d; want %s at %d, horizon %d", k, g.Value, g.Offset, g.HorizonMs, w.value, w.offset, w.horizon)
		}
	}
}

// TestRestoreRepushTransactions checks the re-push list and local state
// against a model on a changelog written in transactions, some aborted (so
// control records and aborted records are read and skipped), with the
// online store's offset (SinkNext) anywhere: mid-transaction, and ahead of
// local state's ChangelogNext. The list compacts at a few kilobytes, inside
// the restores.
func TestRestoreRepushTransactions(t *testing.T) {
	top := testshop.Topology(t)
	ctx := context.Background()
	cc := newChangelogCluster(t, "txn", 1)
	tcl, err := kgo.NewClient(kgo.SeedBrokers(cc.c.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.TransactionalID("txn"))
	if err != nil {
		t.Fatal(err)
	}
	defer tcl.Close()
	rng := rand.New(rand.NewPCG(21, 22))
	values := make([][]byte, 8)
	for i := range values {
		values[i] = top.AppendState(nil, stateOf(t, top, "u", 1+i))
	}
	var log []changelogEntry // the committed records
	horizon := int64(2_000_000)
	produce := func(commits int) {
		for range commits {
			n := 1 + rng.IntN(700)
			h := int64(math.MinInt64)
			if rng.IntN(3) > 0 {
				horizon++
				h = horizon
			}
			recs := make([]*kgo.Record, n)
			for i := range recs {
				var value []byte
				if rng.IntN(8) > 0 {
					value = values[rng.IntN(len(values))]
				}
				recs[i] = &kgo.Record{Topic: cc.topic, Key: fmt.Appendf(nil, "u%d", rng.IntN(2000)), Value: value}
			}
			recs[n-1].Headers = []kgo.RecordHeader{InputNextHeader(int64(len(log) + n))}
			if h != math.MinInt64 {
				recs[n-1].Headers = append(recs[n-1].Headers, HorizonHeader(h))
			}
			if err := tcl.BeginTransaction(); err != nil {
				t.Fatal(err)
			}
			res := tcl.ProduceSync(ctx, recs...)
			if err := res.FirstErr(); err != nil {
				t.Fatal(err)
			}
			commit := rng.IntN(6) > 0
			if err := tcl.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
				t.Fatal(err)
			}
			if !commit {
				continue
			}
			log = closeHorizons(log, h)
			for _, r := range res {
				log = append(log, changelogEntry{r.Record.Offset, string(r.Record.Key), r.Record.Value, h})
			}
		}
	}
	s := openMem(t, top)
	r := NewRestorer(s, cc.adm, []kgo.Opt{kgo.SeedBrokers(cc.c.ListenAddrs()...)}, cc.topic, slog.New(slog.DiscardHandler), nil)
	r.compactBytes = 4000
	produce(30)
	_, list, err := r.Restore(ctx, 0, cc.gen)
	if err != nil {
		t.Fatal(err)
	}
	checkRestored(t, s, log, list, 0)
	for round := range 12 {
		meta, _, err := s.Meta(0)
		if err != nil {
			t.Fatal(err)
		}
		// The online store's offset anywhere, mid-transaction included;
		// every third round local state is behind it.
		sinkNext := rng.Int64N(meta.ChangelogNext + 1)
		meta.SinkNext = sinkNext
		if round%3 == 2 {
			meta.ChangelogNext = rng.Int64N(sinkNext + 1)
		}
		b := s.NewBatch()
		if err := b.SetMeta(0, meta); err != nil {
			t.Fatal(err)
		}
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
		produce(rng.IntN(15))
		if _, list, err = r.Restore(ctx, 0, cc.gen); err != nil {
			t.Fatal(err)
		}
		checkRestored(t, s, log, list, sinkNext)
	}
}
