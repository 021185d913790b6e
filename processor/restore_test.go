package processor

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/featurestream/featurestream/sinks"
	"github.com/featurestream/featurestream/sinks/redisserver"
	"github.com/featurestream/featurestream/state"
	"github.com/featurestream/featurestream/topology"
)

// restoreEnv is a kfake broker with a two-partition input topic, a
// redis-server and the shop spec, for processors that restore.
type restoreEnv struct {
	t       *testing.T
	brokers []string
	top     *topology.Topology
	sink    *sinks.Store
	rdb     *redis.Client
	prod    *kgo.Client
	adm     *kadm.Client
	// users are the entities of each partition; items what each has seen,
	// newest last.
	users map[int32][]string
	items map[string][]string
	ts    int64
	// stops stops each started processor (and closes its store), once.
	stops map[*Processor]func()
}

func newRestoreEnv(t *testing.T) *restoreEnv {
	t.Helper()
	top, err := topology.Compile(shopSpec(t, "spec.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	kafka, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, top.Spec.Source.Topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kafka.Close)
	rs := redisserver.StartForTest(t)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	t.Cleanup(func() { rdb.Close() })
	sink, err := sinks.NewStore(rdb, top, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	prod, err := kgo.NewClient(kgo.SeedBrokers(kafka.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prod.Close)
	return &restoreEnv{
		t: t, brokers: kafka.ListenAddrs(), top: top, sink: sink, rdb: rdb, prod: prod, adm: kadm.NewClient(prod),
		users: map[int32][]string{0: {"a1", "a2", "a3"}, 1: {"b1", "b2", "b3"}},
		items: map[string][]string{},
		ts:    time.Now().Add(-10 * time.Minute).UnixMilli(),
		stops: map[*Processor]func(){},
	}
}

// start runs a processor of group "shop" on its own state directory.
func (e *restoreEnv) start(hook func(context.Context, int32) error) *Processor {
	e.t.Helper()
	return e.startWith(e.sink, hook)
}

// startWith is start with another sink in front of Redis.
func (e *restoreEnv) startWith(sink Sink, hook func(context.Context, int32) error) *Processor {
	e.t.Helper()
	return e.startConfig(sink, Config{SessionTimeout: 6 * time.Second}, hook)
}

// startConfig is startWith with cfg (its brokers set here).
func (e *restoreEnv) startConfig(sink Sink, cfg Config, hook func(context.Context, int32) error) *Processor {
	e.t.Helper()
	store, err := state.Open(state.Options{Dir: e.t.TempDir(), Logger: slog.New(slog.DiscardHandler)}, e.top)
	if err != nil {
		e.t.Fatal(err)
	}
	cfg.Brokers = e.brokers
	p, err := New(cfg, e.top, store, sink, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		e.t.Fatal(err)
	}
	p.restoreHook = hook
	p.renewEvery = 10 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	stop := sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("processor: %v", err)
		}
		store.Close()
	})
	e.stops[p] = stop
	e.t.Cleanup(stop)
	return p
}

// stop stops p, which leaves its group.
func (e *restoreEnv) stop(p *Processor) { e.stops[p]() }

// produce sends n views to every user of partition part, each of a new
// item, and returns the partition's end offset.
func (e *restoreEnv) produce(part int32, n int) int64 {
	e.t.Helper()
	var recs []*kgo.Record
	for range n {
		for _, u := range e.users[part] {
			e.ts++
			item := fmt.Sprintf("i%d", len(e.items[u]))
			e.items[u] = append(e.items[u], item)
			recs = append(recs, &kgo.Record{
				Topic: e.top.Spec.Source.Topic, Partition: part, Key: []byte(u),
				Value: fmt.Appendf(nil, `{"user_id":%q,"ts":%d,"type":"view","item_id":%q}`, u, e.ts, item),
			})
		}
	}
	if err := e.prod.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		e.t.Fatal(err)
	}
	return recs[len(recs)-1].Offset + 1
}

// horizon reads a user's stored horizon (_h) from Redis, and whether Redis
// has the user.
func (e *restoreEnv) horizon(user string) (int64, bool) {
	e.t.Helper()
	got, err := e.sink.Read(context.Background(), []string{user}, nil, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return got[0].HorizonMs, got[0].Found
}

// lastItems reads a user's last_items from Redis as serving would.
func (e *restoreEnv) lastItems(user string) []string {
	e.t.Helper()
	fi, _ := e.top.FeatureIndex("last_items")
	got, err := e.sink.Read(context.Background(), []string{user}, []int{fi}, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if !got[0].Found {
		return nil
	}
	return e.top.Evaluate(fi, got[0].Tiles[0], time.Now().UnixMilli()).List
}

// want is a user's last_items after its first n items: newest first, at
// most 10.
func (e *restoreEnv) want(user string, n int) []string {
	items := slices.Clone(e.items[user][:n])
	slices.Reverse(items)
	return items[:min(len(items), 10)]
}

// waitItems waits until every user of part reads its first n items.
func (e *restoreEnv) waitItems(part int32, n int) {
	e.t.Helper()
	for _, u := range e.users[part] {
		waitFor(e.t, fmt.Sprintf("%s's first %d items in Redis", u, n), func() bool {
			return slices.Equal(e.lastItems(u), e.want(u, n))
		})
	}
}

// committed returns the group's committed input offset of each partition.
func (e *restoreEnv) committed() map[int32]int64 {
	e.t.Helper()
	offs, err := e.adm.FetchOffsets(context.Background(), "shop")
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[int32]int64{}
	offs.Each(func(o kadm.OffsetResponse) { out[o.Partition] = o.At })
	return out
}

func (e *restoreEnv) restoring() []int32 {
	e.t.Helper()
	parts, err := e.sink.RestoringPartitions(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return parts
}

// waitFor polls cond until it holds, failing the test after a generous
// deadline: it waits for an outcome, it does not time one.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRestoreDoesNotBlockOtherPartitions: while partition 0 restores (held
// by the hook), partition 1 is processed and its values reach Redis, and
// partition 0 is neither processed nor committed, reads as restoring (its
// mark renewed meanwhile), and keeps the processor unready; once released
// it catches up exactly.
func TestRestoreDoesNotBlockOtherPartitions(t *testing.T) {
	e := newRestoreEnv(t)
	end0, end1 := e.produce(0, 3), e.produce(1, 3)

	// A first processor builds the changelog, then stops.
	func() {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		store, err := state.Open(state.Options{Dir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)}, e.top)
		if err != nil {
			t.Fatal(err)
		}
		defer store.Close()
		p, err := New(Config{Brokers: e.brokers}, e.top, store, e.sink, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx) }()
		e.waitItems(0, 3)
		e.waitItems(1, 3)
		waitFor(t, "phase 1 offsets committed", func() bool {
			c := e.committed()
			return c[0] == end0 && c[1] == end1
		})
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}()

	// A second processor on an empty state dir replays the changelog;
	// partition 0's restore waits for release.
	release := make(chan struct{})
	held := make(chan struct{})
	p := e.start(func(ctx context.Context, part int32) error {
		if part != 0 {
			return nil
		}
		close(held)
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	<-held
	new0, new1 := e.produce(0, 2), e.produce(1, 2)
	e.waitItems(1, 5)
	waitFor(t, "partition 1's offsets committed", func() bool { return e.committed()[1] == new1 })

	if p.Ready() {
		t.Error("processor ready while partition 0 restores")
	}
	if got := e.restoring(); !slices.Equal(got, []int32{0}) {
		t.Errorf("partitions marked restoring = %v, want [0]", got)
	}
	if got := e.committed()[0]; got != end0 {
		t.Errorf("partition 0's committed offset moved to %d while it restored, want %d", got, end0)
	}
	for _, u := range e.users[0] {
		if got, want := e.lastItems(u), e.want(u, 3); !slices.Equal(got, want) {
			t.Errorf("%s while its partition restores: last_items %v, want the old %v", u, got, want)
		}
	}
	p.mu.Lock()
	_, has0 := p.mu.tasks[0]
	_, restoring0 := p.mu.restores[0]
	p.mu.Unlock()
	if has0 || !restoring0 {
		t.Errorf("partition 0 while held: task %t, restoring %t; want no task, restoring", has0, restoring0)
	}

	// The mark is renewed while the restore runs: its deadline moves on.
	key := sinks.RestoringKey(e.top.Spec.App)
	deadline := func() int64 {
		v, err := e.rdb.HGet(context.Background(), key, "0").Result()
		if err != nil {
			t.Fatal(err)
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	first := deadline()
	waitFor(t, "partition 0's restoring mark renewed", func() bool { return deadline() > first })

	close(release)
	e.waitItems(0, 5)
	waitFor(t, "partition 0's offsets committed", func() bool { return e.committed()[0] == new0 })
	waitFor(t, "processor ready", p.Ready)
	waitFor(t, "no partition marked restoring", func() bool { return len(e.restoring()) == 0 })
	e.waitItems(1, 5)
}

// TestRevokeCancelsRestore: a partition revoked while it restores has its
// restore canceled, gets no task, and is processed by its new owner; the
// other partition's restore goes on, and every value ends exact.
func TestRevokeCancelsRestore(t *testing.T) {
	e := newRestoreEnv(t)
	end0, end1 := e.produce(0, 2), e.produce(1, 2)

	release := map[int32]chan struct{}{0: make(chan struct{}), 1: make(chan struct{})}
	started := make(chan int32, 2)
	canceled := make(chan int32, 2)
	a := e.start(func(ctx context.Context, part int32) error {
		started <- part
		select {
		case <-release[part]:
			return nil
		case <-ctx.Done():
			canceled <- part
			return ctx.Err()
		}
	})
	got := []int32{<-started, <-started}
	slices.Sort(got)
	if !slices.Equal(got, []int32{0, 1}) {
		t.Fatalf("restores started for %v, want [0 1]", got)
	}

	// A second member takes one partition: a's restore of it is canceled.
	b := e.start(nil)
	moved := <-canceled
	kept := 1 - moved
	waitFor(t, fmt.Sprintf("the new member to process partition %d", moved), func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.mu.tasks[moved] != nil
	})
	e.waitItems(moved, 2)

	a.mu.Lock()
	tasks, restores := len(a.mu.tasks), len(a.mu.restores)
	_, restoresKept := a.mu.restores[kept]
	a.mu.Unlock()
	if tasks != 0 || restores != 1 || !restoresKept {
		t.Errorf("first member after the revocation: %d tasks, %d restores (of %d: %t); want none, and %d still restoring", tasks, restores, kept, restoresKept, kept)
	}
	if a.Ready() {
		t.Error("first member ready while partition", kept, "restores")
	}
	if got, want := e.committed()[kept], map[int32]int64{0: end0, 1: end1}[kept]; got != -1 && got != 0 {
		t.Errorf("partition %d committed at %d (of %d) before its restore finished, want nothing", kept, got, want)
	}

	close(release[kept])
	e.waitItems(kept, 2)
	waitFor(t, "first member ready", a.Ready)
	new0, new1 := e.produce(0, 3), e.produce(1, 3)
	e.waitItems(0, 5)
	e.waitItems(1, 5)
	waitFor(t, "all offsets committed", func() bool {
		c := e.committed()
		return c[0] == new0 && c[1] == new1
	})
	select {
	case part := <-canceled:
		t.Errorf("restore of partition %d canceled too", part)
	default:
	}
	a.mu.Lock()
	aOwns := a.mu.tasks[kept] != nil && a.mu.tasks[moved] == nil
	a.mu.Unlock()
	b.mu.Lock()
	bOwns := b.mu.tasks[moved] != nil && b.mu.tasks[kept] == nil
	b.mu.Unlock()
	if !aOwns || !bOwns {
		t.Errorf("ownership: first member has %d only: %t; second has %d only: %t", kept, aOwns, moved, bOwns)
	}
}

// TestRestoreKeepsHorizon: a state pushed again by a restore (here after
// Redis lost everything) is the newest, and carries the horizon it was
// committed with, from its commit's changelog header, not the partition's
// later one, so valid as_of reads of it are not refused.
func TestRestoreKeepsHorizon(t *testing.T) {
	e := newRestoreEnv(t)
	a := e.start(nil)
	e.produce(0, 1)
	e.waitItems(0, 1)
	early, _ := e.horizon("a2")
	// Only a1 again, four minutes of event time later: the partition's
	// watermark moves on, a2's state does not.
	e.users[0] = []string{"a1"}
	e.ts += 4 * 60_000
	e.produce(0, 1)
	e.waitItems(0, 2)
	late, _ := e.horizon("a1")
	if late-early < 4*60_000 {
		t.Fatalf("horizons %d then %d: the partition's did not move on", early, late)
	}

	e.stop(a)
	if err := e.rdb.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	e.start(nil) // an empty state dir: a full restore re-pushes everything
	waitFor(t, "a2 back in Redis", func() bool { _, ok := e.horizon("a2"); return ok })
	waitFor(t, "a1 back in Redis", func() bool { _, ok := e.horizon("a1"); return ok })
	if got, _ := e.horizon("a2"); got != early {
		t.Errorf("a2's horizon after the restore is %d, want %d, as committed (the partition's is %d)", got, early, late)
	}
	if got, _ := e.horizon("a1"); got != late {
		t.Errorf("a1's horizon after the restore is %d, want %d", got, late)
	}
	// And the states pushed again are the newest, a1's of two commits.
	for u, n := range map[string]int{"a1": 2, "a2": 1} {
		if got, want := e.lastItems(u), e.want(u, n); !slices.Equal(got, want) {
			t.Errorf("%s's last items after the restore are %v, want %v", u, got, want)
		}
	}
}

// TestRepushRecords: of a restore's re-push list, each entity's newest entry
// is pushed, with its version and horizon, or nothing when that entry is a
// deletion or unreadable, even where an older state of the entity is in
// the list.
func TestRepushRecords(t *testing.T) {
	top, err := topology.Compile(shopSpec(t, "spec.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	p := &Processor{top: top, grace: 300_000, generation: "g1", logger: slog.New(slog.DiscardHandler)}
	encoded := func(items ...string) []byte {
		st := top.NewEntityState()
		for i, item := range items {
			ev := &topology.Event{Key: "x", TimeMs: 1_000_000 + int64(i), Fields: map[string]any{"type": "view", "item_id": item}}
			if err := top.Apply(st, ev, 0); err != nil {
				t.Fatal(err)
			}
		}
		return top.AppendState(nil, st)
	}
	list := []state.Repush{
		{Entity: "kept", Value: encoded("a"), Offset: 1, HorizonMs: 10},
		{Entity: "deleted", Value: encoded("b"), Offset: 2, HorizonMs: 10},
		{Entity: "corrupt", Value: encoded("c"), Offset: 3, HorizonMs: 10},
		{Entity: "kept", Value: encoded("a", "d"), Offset: 4, HorizonMs: math.MinInt64},
		{Entity: "deleted", Offset: 5, HorizonMs: 20},
		{Entity: "corrupt", Value: []byte{0xff, 0xff}, Offset: 6, HorizonMs: 20},
		{Entity: "once", Value: encoded("e"), Offset: 7, HorizonMs: 20},
	}
	meta := state.Meta{MaxEventMs: 2_000_000}
	got := p.repushRecords(context.Background(), 3, meta, list)
	if len(got) != 2 {
		t.Fatalf("pushes %v, want kept and once only", slices.Collect(maps.Keys(got)))
	}
	fi, _ := top.FeatureIndex("last_items")
	for entity, want := range map[string]struct {
		version uint64
		horizon int64
		items   []string
	}{
		"kept": {4, 2_000_000 - 300_000, []string{"d", "a"}},
		"once": {7, 20, []string{"e"}},
	} {
		r := got[entity]
		items := top.Evaluate(fi, r.State.Features[fi], 1_000_010).List
		if r.Version != want.version || r.HorizonMs != want.horizon || r.Partition != 3 || r.Generation != "g1" || !slices.Equal(items, want.items) {
			t.Errorf("%s: version %d, horizon %d, partition %d, generation %s, items %v; want %d, %d, 3, g1, %v",
				entity, r.Version, r.HorizonMs, r.Partition, r.Generation, items, want.version, want.horizon, want.items)
		}
	}
}
