package sinks_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/featurestream/featurestream/internal/testshop"
	"github.com/featurestream/featurestream/sinks"
	"github.com/featurestream/featurestream/topology"
)

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		name string
		o    sinks.Options
		want []string // substrings of the error; none means valid
	}{
		{name: "single", o: sinks.Options{Addrs: []string{"127.0.0.1:6379"}}},
		{name: "cluster seeds", o: sinks.Options{Addrs: []string{"a:1", "b:2"}, Cluster: true}},
		{name: "no addrs", o: sinks.Options{}, want: []string{"addrs: at least one address"}},
		{name: "bad addr", o: sinks.Options{Addrs: []string{"localhost"}}, want: []string{`addrs[0] "localhost": want host:port`}},
		{name: "bad port", o: sinks.Options{Addrs: []string{"h:99999"}}, want: []string{`addrs[0] "h:99999": port must be 1-65535`}},
		{name: "many without cluster", o: sinks.Options{Addrs: []string{"a:1", "b:2"}}, want: []string{"2 addresses without cluster"}},
		{name: "cluster db", o: sinks.Options{Addrs: []string{"a:1"}, Cluster: true, DB: 2}, want: []string{"db 2: Redis Cluster has only db 0"}},
		{
			name: "every problem at once",
			o:    sinks.Options{Addrs: []string{"x"}, DB: -1, PoolSize: -1, ReadTimeout: -time.Second},
			want: []string{`addrs[0] "x"`, "db -1", "pool_size -1", "read_timeout -1s"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.o.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, sinks.ErrInvalidOptions) {
				t.Fatalf("Validate = %v, want ErrInvalidOptions", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if _, err := sinks.NewClient(tt.o); !errors.Is(err, sinks.ErrInvalidOptions) {
				t.Errorf("NewClient = %v, want ErrInvalidOptions", err)
			}
		})
	}
}

func TestNewClientKind(t *testing.T) {
	c, err := sinks.NewClient(sinks.Options{Addrs: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(*redis.Client); !ok {
		t.Errorf("single: got %T", c)
	}
	cc, err := sinks.NewClient(sinks.Options{Addrs: []string{"127.0.0.1:1"}, Cluster: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, ok := cc.(*redis.ClusterClient); !ok {
		t.Errorf("cluster: got %T", cc)
	}
}

func TestWriteReadRoundtrip(t *testing.T) {
	top := testshop.Topology(t)
	s, client, reg, _ := startStore(t, top)
	ctx := context.Background()

	states := map[string]*topology.EntityState{
		"u1":        shopState(t, top, "u1", t0, 7),
		"u2":        shopState(t, top, "u2", t0+3*time.Hour.Milliseconds(), 30),
		"u:{odd} 3": shopState(t, top, "u3", t0, 1),
	}
	var recs []sinks.Record
	for id, st := range states {
		recs = append(recs, sinks.Record{Entity: id, Partition: 5, Version: 42, Generation: "topic-id-1", State: st, HorizonMs: t0 - 1})
	}
	writtenAt := time.UnixMilli(t0 + 90*time.Minute.Milliseconds())
	sinks.SetClock(s, func() time.Time { return writtenAt })
	if err := s.Write(ctx, recs); err != nil {
		t.Fatal(err)
	}
	if got := metric(t, reg, "featurestream_redis_records_written_total"); got != 3 {
		t.Errorf("records_written_total = %v, want 3", got)
	}

	// The layout (value.go), as another reader (redis-cli, a debugging
	// session) sees it.
	raw, err := client.Get(ctx, "fs:shop:e:u1").Result()
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte{1, byte(len("topic-id-1"))}, "topic-id-1"...)
	want = binary.BigEndian.AppendUint64(want, 42)
	want = binary.AppendVarint(want, writtenAt.UnixMilli())
	want = binary.AppendUvarint(want, 5)
	want = binary.AppendVarint(want, t0-1)
	want = top.AppendState(want, states["u1"])
	if raw != string(want) {
		t.Errorf("value of fs:shop:e:u1 =\n%q\nwant\n%q", raw, want)
	}
	if g, v, ok := sinks.ValueVersion(raw); !ok || g != "topic-id-1" || v != 42 {
		t.Errorf("ValueVersion = %q, %d, %v; want topic-id-1, 42, true", g, v, ok)
	}

	tests := []struct {
		name     string
		features []int
	}{
		{"all", allFeatures(top)},
		{"subset reordered", []int{3, 0}},
		{"none", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ids := []string{"u2", "nobody", "u1", "u:{odd} 3", "u1"}
			got, err := s.Read(ctx, ids, tt.features, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(ids) {
				t.Fatalf("got %d entries for %d ids", len(got), len(ids))
			}
			for i, id := range ids {
				e := got[i]
				st, ok := states[id]
				if !ok {
					if e.Found || len(e.Tiles) != len(tt.features) || e.Version != 0 || e.LastEventMs != 0 || e.WrittenMs != 0 {
						t.Errorf("%s: %+v, want not found with %d nil tiles", id, e, len(tt.features))
					}
					for j := range e.Tiles {
						if e.Tiles[j] != nil {
							t.Errorf("%s: Tiles[%d] = %v, want nil", id, j, e.Tiles[j])
						}
					}
					continue
				}
				if !e.Found || e.Version != 42 || e.Generation != "topic-id-1" || e.Partition != 5 || e.LastEventMs != st.LastEventMs || e.WrittenMs != writtenAt.UnixMilli() || e.HorizonMs != t0-1 {
					t.Errorf("%s: header %+v", id, e)
				}
				if len(e.Tiles) != len(tt.features) {
					t.Fatalf("%s: %d tile slices for %d features", id, len(e.Tiles), len(tt.features))
				}
				for j, fi := range tt.features {
					wantTiles := st.Features[fi]
					if len(wantTiles) == 0 {
						wantTiles = []topology.Tile{}
					}
					if !reflect.DeepEqual(e.Tiles[j], wantTiles) {
						t.Errorf("%s feature %s: tiles\n%+v\nwant\n%+v", id, top.Features[fi].Name, e.Tiles[j], wantTiles)
					}
				}
			}
		})
	}
}

func TestReadReusesDst(t *testing.T) {
	top := testshop.Topology(t)
	s, _, _, _ := startStore(t, top)
	ctx := context.Background()
	st := shopState(t, top, "u1", t0, 5)
	if err := s.Write(ctx, []sinks.Record{{Entity: "u1", Version: 1, State: st}}); err != nil {
		t.Fatal(err)
	}
	dst, err := s.Read(ctx, []string{"u1", "u1"}, allFeatures(top), nil)
	if err != nil {
		t.Fatal(err)
	}
	first := &dst[0]
	dst, err = s.Read(ctx, []string{"nobody"}, []int{1}, dst)
	if err != nil {
		t.Fatal(err)
	}
	if len(dst) != 1 || &dst[0] != first || dst[0].Found || len(dst[0].Tiles) != 1 || dst[0].Tiles[0] != nil {
		t.Fatalf("second read into dst: %+v", dst)
	}
}

func TestWriteVersionOrdering(t *testing.T) {
	top := testshop.Topology(t)
	s, _, reg, _ := startStore(t, top)
	checkVersionOrdering(t, top, s, reg)
}

// TestWriteVersionOrderingUnderLocale runs the same cases against a
// redis-server whose locale collates strings out of byte order, as
// en_US.UTF-8 does: the script must not compare versions as Lua strings
// (strcoll). scripts/ensure-locale.sh, run by make test, installs it.
func TestWriteVersionOrderingUnderLocale(t *testing.T) {
	out, err := exec.Command("locale", "-a").Output()
	if err != nil || !strings.Contains(strings.ToLower(string(out)), "en_us.utf8") {
		t.Skipf("locale en_US.UTF-8 not installed (locale -a: %v); run scripts/ensure-locale.sh", err)
	}
	t.Setenv("LC_ALL", "en_US.UTF-8") // the redis-server started next inherits it
	top := testshop.Topology(t)
	s, client, reg, _ := startStore(t, top)
	// Proof that this server collates: in byte order 'B' < 'b'.
	if got, err := client.Eval(context.Background(), `return tostring('b' < 'B')`, nil).Text(); err != nil || got != "true" {
		t.Fatalf("redis-server under en_US.UTF-8: 'b' < 'B' is %q (%v), want true: the locale did not take effect", got, err)
	}
	checkVersionOrdering(t, top, s, reg)
}

// checkVersionOrdering writes a version over another, for pairs of
// versions and generations, and checks which stays.
func checkVersionOrdering(t *testing.T, top *topology.Topology, s *sinks.Store, reg *prometheus.Registry) {
	t.Helper()
	ctx := context.Background()
	stale := func() float64 { return metric(t, reg, "featurestream_redis_stale_writes_skipped_total") }

	older := shopState(t, top, "old", t0, 2)
	newer := shopState(t, top, "new", t0, 9)
	const big = uint64(1) << 60 // above 2^53: Lua numbers would round it

	tests := []struct {
		name       string
		storedVer  uint64
		storedGen  string
		ver        uint64
		gen        string
		wantUpdate bool
	}{
		{"older version skipped", 10, "g1", 9, "g1", false},
		{"same version skipped", 10, "g1", 10, "g1", false},
		{"newer version replaces", 10, "g1", 11, "g1", true},
		{"fewer digits is older", 10, "g1", 9, "g1", false},
		{"more digits is newer", 9, "g1", 10, "g1", true},
		{"other generation replaces older version", 10, "g1", 3, "g2", true},
		{"empty to named generation replaces", 10, "", 3, "g2", true},
		{"beyond 2^53 newer by one", big, "g1", big + 1, "g1", true},
		{"beyond 2^53 older by one", big + 1, "g1", big, "g1", false},
		{"max uint64 stays", ^uint64(0), "g1", ^uint64(0) - 1, "g1", false},
		{"256 after 255 replaces", 255, "g1", 256, "g1", true},
		{"255 after 256 skipped", 256, "g1", 255, "g1", false},
		// Bytes that collate out of byte order in en_US.UTF-8.
		{"0x80 after 0x7f replaces", 0x7f, "g1", 0x80, "g1", true},
		{"0x7f after 0x80 skipped", 0x80, "g1", 0x7f, "g1", false},
		{"'B' after 'b' skipped", 0x62, "g1", 0x42, "g1", false},
		{"'b' after 'B' replaces", 0x42, "g1", 0x62, "g1", true},
		{"0xff00 after 0x0100 replaces", 0x0100, "g1", 0xff00, "g1", true},
		{"high half decides", 1 << 32, "g1", 1<<32 - 1, "g1", false},
		{"generation extending the stored one replaces", 10, "g1", 3, "g10", true},
		{"generation the stored one extends replaces", 10, "g10", 3, "g1", true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := fmt.Sprintf("e%d", i)
			if err := s.Write(ctx, []sinks.Record{{Entity: id, Partition: 1, Version: tt.storedVer, Generation: tt.storedGen, State: older}}); err != nil {
				t.Fatal(err)
			}
			before := stale()
			if err := s.Write(ctx, []sinks.Record{{Entity: id, Partition: 2, Version: tt.ver, Generation: tt.gen, State: newer}}); err != nil {
				t.Fatal(err)
			}
			got, err := s.Read(ctx, []string{id}, allFeatures(top), nil)
			if err != nil {
				t.Fatal(err)
			}
			e := got[0]
			wantVer, wantGen, wantPart, wantState := tt.storedVer, tt.storedGen, int32(1), older
			wantStale := 1.0
			if tt.wantUpdate {
				wantVer, wantGen, wantPart, wantState = tt.ver, tt.gen, 2, newer
				wantStale = 0
			}
			if e.Version != wantVer || e.Generation != wantGen || e.Partition != wantPart || e.LastEventMs != wantState.LastEventMs {
				t.Errorf("stored %d/%q/p%d/t%d, want %d/%q/p%d/t%d", e.Version, e.Generation, e.Partition, e.LastEventMs, wantVer, wantGen, wantPart, wantState.LastEventMs)
			}
			if !reflect.DeepEqual(e.Tiles[3], wantState.Features[3]) {
				t.Errorf("last_items tiles %+v, want %+v", e.Tiles[3], wantState.Features[3])
			}
			if d := stale() - before; d != wantStale {
				t.Errorf("stale_writes_skipped_total grew by %v, want %v", d, wantStale)
			}
		})
	}

	// The same cases in one Write: each entity is checked on its own,
	// and generations change from record to record, so a script call
	// ends at each change (a call's entities share their generation).
	t.Run("all in one write", func(t *testing.T) {
		var stored, updates []sinks.Record
		ids := make([]string, len(tests))
		wantStale := 0.0
		for i, tt := range tests {
			ids[i] = fmt.Sprintf("m%d", i)
			stored = append(stored, sinks.Record{Entity: ids[i], Partition: 1, Version: tt.storedVer, Generation: tt.storedGen, State: older})
			updates = append(updates, sinks.Record{Entity: ids[i], Partition: 2, Version: tt.ver, Generation: tt.gen, State: newer})
			if !tt.wantUpdate {
				wantStale++
			}
		}
		if err := s.Write(ctx, stored); err != nil {
			t.Fatal(err)
		}
		before := stale()
		if err := s.Write(ctx, updates); err != nil {
			t.Fatal(err)
		}
		got, err := s.Read(ctx, ids, allFeatures(top), nil)
		if err != nil {
			t.Fatal(err)
		}
		for i, tt := range tests {
			wantVer, wantGen, wantPart := tt.storedVer, tt.storedGen, int32(1)
			if tt.wantUpdate {
				wantVer, wantGen, wantPart = tt.ver, tt.gen, 2
			}
			if e := got[i]; e.Version != wantVer || e.Generation != wantGen || e.Partition != wantPart {
				t.Errorf("%s: stored %d/%q/p%d, want %d/%q/p%d", tt.name, e.Version, e.Generation, e.Partition, wantVer, wantGen, wantPart)
			}
		}
		if d := stale() - before; d != wantStale {
			t.Errorf("stale_writes_skipped_total grew by %v, want %v", d, wantStale)
		}
	})
}

// TestWriteSameEntityTwice: records of one entity in one Write (one script
// call) count as if written one after the other: the newest stays.
func TestWriteSameEntityTwice(t *testing.T) {
	top := testshop.Topology(t)
	s, _, reg, _ := startStore(t, top)
	ctx := context.Background()
	var recs []sinks.Record
	for i, v := range []uint64{5, 3, 7, 6, 7} {
		recs = append(recs, sinks.Record{Entity: "u1", Partition: int32(i), Version: v, Generation: "g", State: shopState(t, top, "u1", t0, 1+i)})
	}
	if err := s.Write(ctx, recs); err != nil {
		t.Fatal(err)
	}
	got, err := s.Read(ctx, []string{"u1"}, allFeatures(top), nil)
	if err != nil {
		t.Fatal(err)
	}
	if e := got[0]; e.Version != 7 || e.Partition != 2 || !reflect.DeepEqual(e.Tiles[3], recs[2].State.Features[3]) {
		t.Errorf("stored version %d of partition %d, want version 7 of partition 2, its own last_items", e.Version, e.Partition)
	}
	if w, st := metric(t, reg, "featurestream_redis_records_written_total"), metric(t, reg, "featurestream_redis_stale_writes_skipped_total"); w != 2 || st != 3 {
		t.Errorf("written %v, skipped %v; want 2 and 3", w, st)
	}
}

// TestWriteReplacesWholeValue: a write replaces the whole value, so a
// feature that the writer's spec lacks does not survive with older tiles,
// and a hash of the layout before this one reads as nothing and is
// replaced by the entity's next write.
func TestWriteReplacesWholeValue(t *testing.T) {
	top := testshop.Topology(t)
	s, client, _, _ := startStore(t, top)
	sinks.SetClock(s, func() time.Time { return time.UnixMilli(t0) })
	ctx := context.Background()
	// valueOf is what a write of r must leave in Redis.
	valueOf := func(r sinks.Record) string {
		r.Encoded = top.AppendState(nil, r.State)
		return string(sinks.AppendValue(nil, &r, t0))
	}
	check := func(r sinks.Record) {
		t.Helper()
		got, err := client.Get(ctx, "fs:shop:e:"+r.Entity).Result()
		if err != nil || got != valueOf(r) {
			t.Fatalf("%s, version %d: value %q (err %v), want %q", r.Entity, r.Version, got, err, valueOf(r))
		}
	}

	if err := client.HSet(ctx, "fs:shop:e:u1", "_v", "9", "_g", "g", "_t", "0", "_p", "0", "views_1h", "x").Err(); err != nil {
		t.Fatal(err)
	}
	got, err := s.Read(ctx, []string{"u1"}, allFeatures(top), nil)
	if err != nil || got[0].Found {
		t.Fatalf("an older layout's hash: read %+v, %v; want not found", got, err)
	}
	r := sinks.Record{Entity: "u1", Version: 2, Generation: "g", HorizonMs: math.MinInt64, State: shopState(t, top, "u1", t0, 1)}
	if err := s.Write(ctx, []sinks.Record{r}); err != nil {
		t.Fatal(err)
	}
	check(r)

	// A newer version written under a spec with one feature more.
	wider, err := topology.Compile(func() *topology.Spec {
		spec := testshop.Spec(t)
		spec.Features = append(spec.Features, topology.Feature{Name: "gone_feature", Agg: "count", Window: topology.Duration(time.Hour)})
		return spec
	}())
	if err != nil {
		t.Fatal(err)
	}
	ws := sinks.Record{Entity: "u1", Version: 3, Generation: "g", HorizonMs: math.MinInt64, Encoded: wider.AppendState(nil, shopState(t, wider, "u1", t0, 2))}
	if err := client.Set(ctx, "fs:shop:e:u1", sinks.AppendValue(nil, &ws, t0), 0).Err(); err != nil {
		t.Fatal(err)
	}
	r.Version = ws.Version
	for _, h := range []int64{t0, math.MinInt64} {
		r.Version++
		r.HorizonMs = h
		r.State = shopState(t, top, "u1", t0, int(r.Version))
		if err := s.Write(ctx, []sinks.Record{r}); err != nil {
			t.Fatal(err)
		}
		check(r)
	}

	// The same within one script call: entities with a horizon and
	// without alternate, and each value is exactly its own record's.
	for _, round := range []struct {
		version uint64
		odd     int64 // the horizon of odd entities; even ones get none
	}{{1, t0}, {2, math.MinInt64}} {
		var recs []sinks.Record
		for i := range 8 {
			h := int64(math.MinInt64)
			if i%2 == 1 {
				h = round.odd
			} else if round.odd == math.MinInt64 {
				h = t0 + int64(i)
			}
			id := fmt.Sprintf("m%d", i)
			recs = append(recs, sinks.Record{Entity: id, Partition: int32(i), Version: round.version + uint64(i), Generation: "g", HorizonMs: h,
				State: shopState(t, top, id, t0, 1+i)})
		}
		if err := s.Write(ctx, recs); err != nil {
			t.Fatal(err)
		}
		ids := make([]string, len(recs))
		for i, r := range recs {
			ids[i] = r.Entity
		}
		got, err := s.Read(ctx, ids, allFeatures(top), nil)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range recs {
			check(r)
			e := got[i]
			if e.Version != r.Version || e.Partition != r.Partition || e.HorizonMs != r.HorizonMs || e.LastEventMs != r.State.LastEventMs ||
				!reflect.DeepEqual(e.Tiles[3], r.State.Features[3]) {
				t.Errorf("%s: stored version %d, partition %d, horizon %d, last event %d; want %d, %d, %d, %d, and its own last_items",
					r.Entity, e.Version, e.Partition, e.HorizonMs, e.LastEventMs, r.Version, r.Partition, r.HorizonMs, r.State.LastEventMs)
			}
		}
	}
}

// TestWriteRoundTrips: a write takes one round trip per 512 records, each
// of script calls of 64 entities, and a read of as many entities one in
// all.
func TestWriteRoundTrips(t *testing.T) {
	top := testshop.Topology(t)
	s, client, _, _ := startStore(t, top)
	hook := &callHook{}
	client.AddHook(hook)
	ctx := context.Background()

	recs := make([]sinks.Record, 1000)
	for i := range recs {
		id := fmt.Sprintf("user-%04d", i)
		recs[i] = sinks.Record{Entity: id, Partition: int32(i % 8), Version: uint64(i), Generation: "g", State: shopState(t, top, id, t0, 1+i%5)}
	}
	// Load the script and open the connections first: a cold client's
	// handshakes and the first NOSCRIPT retry are not what is measured.
	if err := s.Write(ctx, recs); err != nil {
		t.Fatal(err)
	}
	hook.reset()
	if err := s.Write(ctx, recs); err != nil {
		t.Fatal(err)
	}
	perPipeline, alone := hook.pipelinesWith("evalsha")
	if !slices.Equal(perPipeline, []int{8, 8}) || alone != 0 {
		t.Fatalf("write of 1000 records: evalsha per pipeline %v, alone %d; want two pipelines of 8 calls", perPipeline, alone)
	}
	keys := hook.evalKeys()
	slices.Sort(keys)
	if want := append([]int{40}, slices.Repeat([]int{64}, 15)...); !slices.Equal(keys, want) {
		t.Fatalf("write of 1000 records: keys per script call %v, want %v (512 and 488 records in calls of 64)", keys, want)
	}
	if singles := hook.singleNames(); len(singles) != 0 {
		t.Errorf("commands outside the pipeline: %v", singles)
	}

	hook.reset()
	ids := make([]string, len(recs))
	for i := range recs {
		ids[i] = recs[i].Entity
	}
	got, err := s.Read(ctx, ids, allFeatures(top), nil)
	if err != nil {
		t.Fatal(err)
	}
	perPipeline, alone = hook.pipelinesWith("get")
	if len(perPipeline) != 1 || perPipeline[0] != 1000 || alone != 0 {
		t.Fatalf("read of 1000 entities: get per pipeline %v, alone %d; want one pipeline of 1000", perPipeline, alone)
	}
	for i, e := range got {
		if !e.Found || e.Version != uint64(i) || !reflect.DeepEqual(e.Tiles[0], nonNil(recs[i].State.Features[0])) {
			t.Fatalf("entity %s: %+v", ids[i], e)
		}
	}
}

// TestWriteSplitsLargeCalls: entities with large states (long item ids in
// last_items) go fewer to one script call, so no call holds Redis for
// long; every one of them is still written.
func TestWriteSplitsLargeCalls(t *testing.T) {
	top := testshop.Topology(t)
	s, client, _, _ := startStore(t, top)
	hook := &callHook{}
	client.AddHook(hook)
	ctx := context.Background()

	const n = 100
	long := strings.Repeat("x", 1000) // values of up to 1 KiB are kept
	recs := make([]sinks.Record, n)
	for i := range recs {
		id := fmt.Sprintf("user-%03d", i)
		st := top.NewEntityState()
		for j := range 10 {
			ev := topology.Event{Key: id, TimeMs: t0 + int64(j), Fields: map[string]any{"type": "view", "item_id": fmt.Sprintf("%s-%d-%s", id, j, long)}}
			if err := top.Apply(st, &ev, ev.TimeMs); err != nil {
				t.Fatal(err)
			}
		}
		recs[i] = sinks.Record{Entity: id, Version: 1, Generation: "g", State: st}
	}
	var size int
	for fi := range top.Features {
		size += len(top.AppendFeature(nil, fi, recs[0].State.Features[fi]))
	}
	// A call takes entities until their features reach 256 KiB.
	per := (256<<10 + size - 1) / size
	if per < 2 || per >= 64 {
		t.Fatalf("test entities take %d bytes, %d to a call: want a size that splits calls below 64", size, per)
	}
	var want []int
	for left := n; left > 0; left -= per {
		want = append(want, min(per, left))
	}
	// The first write loads the script; the second, all stale, makes the
	// same calls without the NOSCRIPT retry.
	for range 2 {
		hook.reset()
		if err := s.Write(ctx, recs); err != nil {
			t.Fatal(err)
		}
	}
	if got := hook.evalKeys(); !slices.Equal(got, want) {
		t.Fatalf("keys per script call %v, want %v (%d-byte entities)", got, want, size)
	}
	ids := make([]string, n)
	for i := range recs {
		ids[i] = recs[i].Entity
	}
	got, err := s.Read(ctx, ids, allFeatures(top), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range got {
		if !e.Found || !reflect.DeepEqual(e.Tiles[3], recs[i].State.Features[3]) {
			t.Fatalf("entity %s: found %v, last_items %v", ids[i], e.Found, e.Tiles[3])
		}
	}
}

func nonNil(t []topology.Tile) []topology.Tile {
	if t == nil {
		return []topology.Tile{}
	}
	return t
}

// TestWriteReloadsScript: after Redis loses its script cache (restart,
// SCRIPT FLUSH) a write loads the script and retries, once.
func TestWriteReloadsScript(t *testing.T) {
	top := testshop.Topology(t)
	s, client, _, _ := startStore(t, top)
	ctx := context.Background()
	if err := client.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	hook := &callHook{}
	client.AddHook(hook)
	recs := []sinks.Record{
		{Entity: "a", Version: 1, State: shopState(t, top, "a", t0, 3)},
		{Entity: "b", Version: 1, State: shopState(t, top, "b", t0, 4)},
	}
	if err := s.Write(ctx, recs); err != nil {
		t.Fatal(err)
	}
	perPipeline, _ := hook.pipelinesWith("evalsha")
	if !reflect.DeepEqual(perPipeline, []int{1, 1}) || !reflect.DeepEqual(hook.evalKeys(), []int{2, 2}) || countOf(hook.singleNames(), "script") != 1 {
		t.Errorf("evalsha pipelines %v with keys %v, singles %v; want one call of both records twice, around one script load", perPipeline, hook.evalKeys(), hook.singleNames())
	}
	got, err := s.Read(ctx, []string{"a", "b"}, []int{0}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !got[0].Found || !got[1].Found {
		t.Fatalf("after reload: %+v", got)
	}
}

func TestWriteRejectsBadRecords(t *testing.T) {
	top := testshop.Topology(t)
	s, _, _, _ := startStore(t, top)
	good := shopState(t, top, "u", t0, 1)
	tests := []struct {
		name string
		rec  sinks.Record
		want string
	}{
		{"empty entity", sinks.Record{State: good}, "record 1: empty entity id"},
		{"nil state", sinks.Record{Entity: "x"}, `record 1 (entity "x"): nil state`},
		{"short state", sinks.Record{Entity: "x", State: &topology.EntityState{Features: make([][]topology.Tile, 2)}}, "state has 2 features, spec has 4"},
		{"long generation", sinks.Record{Entity: "x", State: good, Generation: strings.Repeat("g", 256)}, `record 1 (entity "x"): generation "ggg`},
		{"negative partition", sinks.Record{Entity: "x", State: good, Partition: -1}, `record 1 (entity "x"): partition -1 is negative`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Write(context.Background(), []sinks.Record{{Entity: "ok", State: good}, tt.rec})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Write = %v, want error containing %q", err, tt.want)
			}
		})
	}
}

func TestReadCorrupt(t *testing.T) {
	top := testshop.Topology(t)
	s, client, _, _ := startStore(t, top)
	ctx := context.Background()
	st := shopState(t, top, "u1", t0, 3)
	good := sinks.AppendValue(nil, &sinks.Record{Version: 1, Generation: "g", Encoded: top.AppendState(nil, st)}, t0)
	// state is a state encoding (topology.AppendState's layout) holding
	// the given features, name then encoding.
	state := func(features ...string) []byte {
		b := binary.AppendVarint([]byte{1}, t0)
		b = binary.AppendUvarint(b, uint64(len(features)/2))
		for _, f := range features {
			b = append(binary.AppendUvarint(b, uint64(len(f))), f...)
		}
		return b
	}
	head := func(r sinks.Record) string { return string(sinks.AppendValue(nil, &r, t0)) }
	tests := []struct {
		name, val, want string
	}{
		{"feature truncated", head(sinks.Record{Generation: "g", Encoded: state("spend_24h", "\x01\x01\x00")}), `entity "u1": feature spend_24h`},
		{"feature unknown version", head(sinks.Record{Generation: "g", Encoded: state("views_1h", "\x09")}), `entity "u1": feature views_1h`},
		{"state cut short", string(good[:len(good)-1]), `entity "u1": state`},
		{"state with a byte more", string(good) + "x", `entity "u1": state`},
		{"another layout", "\x02" + string(good[1:]), `entity "u1": header`},
		{"header cut short", string(good[:5]), `entity "u1": header`},
		{"write time cut short", string(good[:2+1+8]), `entity "u1": write time`},
		{"partition over int32", string(binary.AppendVarint(binary.BigEndian.AppendUint64([]byte("\x01\x01g"), 1), t0)) + "\x80\x80\x80\x80\x08", `entity "u1": partition: sinks: corrupt redis record: 2147483648 is not an int32`},
		{"empty", "", `entity "u1": header`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := client.Set(ctx, "fs:shop:e:u1", tt.val, 0).Err(); err != nil {
				t.Fatal(err)
			}
			_, err := s.Read(ctx, []string{"u0", "u1"}, allFeatures(top), nil)
			if !errors.Is(err, sinks.ErrCorrupt) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Read = %v, want ErrCorrupt naming %q", err, tt.want)
			}
		})
	}
}

// TestReadFeatureNotStored: a state written under a spec without a feature,
// or with another kind of feature under its name, reads as nil tiles for
// it, distinct from a stored feature with no tiles.
func TestReadFeatureNotStored(t *testing.T) {
	top := testshop.Topology(t)
	s, client, _, _ := startStore(t, top)
	ctx := context.Background()
	// views_1h as the shop spec has it, and purchases_24h as another kind
	// of feature.
	other := testshop.Spec(t)
	other.Features = other.Features[:2]
	other.Features[1].Agg, other.Features[1].Field = "approx_distinct", "item_id"
	otherTop, err := topology.Compile(other)
	if err != nil {
		t.Fatal(err)
	}
	r := sinks.Record{Version: 7, Generation: "g", Partition: 3, HorizonMs: math.MinInt64, Encoded: otherTop.AppendState(nil, otherTop.NewEntityState())}
	if err := client.Set(ctx, "fs:shop:e:u1", sinks.AppendValue(nil, &r, 0), 0).Err(); err != nil {
		t.Fatal(err)
	}
	got, err := s.Read(ctx, []string{"u1"}, []int{0, 1, 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := got[0]
	if !e.Found || e.Version != 7 || e.Generation != "g" || e.Partition != 3 || e.HorizonMs != math.MinInt64 {
		t.Fatalf("header %+v", e)
	}
	if e.Tiles[0] == nil || len(e.Tiles[0]) != 0 || e.Tiles[1] != nil || e.Tiles[2] != nil {
		t.Fatalf("tiles %#v: want [] for views_1h and nil for purchases_24h and spend_24h", e.Tiles)
	}
}

func TestReadBadFeatureIndex(t *testing.T) {
	top := testshop.Topology(t)
	s, _, _, _ := startStore(t, top)
	if _, err := s.Read(context.Background(), []string{"u"}, []int{0, 4}, nil); err == nil || !strings.Contains(err.Error(), "features[1]: index 4 out of range") {
		t.Fatalf("Read = %v", err)
	}
}

func TestRedisDown(t *testing.T) {
	top := testshop.Topology(t)
	s, _, reg, srv := startStore(t, top)
	ctx := context.Background()
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s.Ping(ctx); err == nil {
		t.Error("Ping succeeded with Redis stopped")
	}
	_, err := s.Read(ctx, []string{"u1"}, []int{0}, nil)
	if err == nil || errors.Is(err, sinks.ErrCorrupt) {
		t.Errorf("Read = %v, want a connection error", err)
	}
	if err := s.Write(ctx, []sinks.Record{{Entity: "u1", State: top.NewEntityState()}}); err == nil {
		t.Error("Write succeeded with Redis stopped")
	}
	for _, op := range []string{"ping", "read", "write"} {
		if got := metric(t, reg, "featurestream_redis_errors_total", "op", op); got != 1 {
			t.Errorf("errors_total{op=%q} = %v, want 1", op, got)
		}
	}
}

func TestMetricsNamesAndDoubleRegister(t *testing.T) {
	top := testshop.Topology(t)
	s, client, reg, _ := startStore(t, top)
	ctx := context.Background()
	if err := s.Write(ctx, []sinks.Record{{Entity: "u", State: top.NewEntityState()}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Read(ctx, []string{"u"}, nil, nil); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	want := []string{
		"featurestream_redis_errors_total",
		"featurestream_redis_read_duration_seconds",
		"featurestream_redis_records_written_total",
		"featurestream_redis_stale_writes_skipped_total",
		"featurestream_redis_write_duration_seconds",
		"featurestream_state_generation",
	}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("metrics %v, want %v", names, want)
	}
	if _, err := sinks.NewStore(client, top, nil, reg); err == nil {
		t.Error("second NewStore on the same registry succeeded")
	}
}

// TestWriteTimeOnlyMovesWithVersion: _w is when the stored version was
// written; a write skipped as stale does not refresh it.
func TestWriteTimeOnlyMovesWithVersion(t *testing.T) {
	top := testshop.Topology(t)
	s, _, _, _ := startStore(t, top)
	ctx := context.Background()
	at := func(ms int64) { sinks.SetClock(s, func() time.Time { return time.UnixMilli(ms) }) }
	read := func() int64 {
		t.Helper()
		got, err := s.Read(ctx, []string{"u"}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		return got[0].WrittenMs
	}
	st := shopState(t, top, "u", t0, 2)
	for _, step := range []struct {
		clock   int64
		version uint64
		want    int64
	}{
		{1000, 5, 1000},
		{2000, 5, 1000}, // same version: skipped
		{3000, 4, 1000}, // older: skipped
		{4000, 6, 4000},
	} {
		at(step.clock)
		if err := s.Write(ctx, []sinks.Record{{Entity: "u", Version: step.version, Generation: "g", State: st}}); err != nil {
			t.Fatal(err)
		}
		if got := read(); got != step.want {
			t.Fatalf("after version %d at %d: written %d, want %d", step.version, step.clock, got, step.want)
		}
	}
}

func TestPartitionRestoring(t *testing.T) {
	top := testshop.Topology(t)
	s, client, reg, _ := startStore(t, top)
	ctx := context.Background()
	now := time.UnixMilli(t0)
	sinks.SetClock(s, func() time.Time { return now })
	half := sinks.RestoringTTL / 2
	check := func(want ...int32) {
		t.Helper()
		got, err := s.RestoringPartitions(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) || (len(want) > 0 && !reflect.DeepEqual(got, want)) {
			t.Fatalf("restoring %v, want %v", got, want)
		}
	}
	check()
	for _, p := range []int32{7, 0, 12} {
		if err := s.SetPartitionRestoring(ctx, p, true); err != nil {
			t.Fatal(err)
		}
	}
	check(0, 7, 12)
	if ttl, err := client.PTTL(ctx, sinks.RestoringKey("shop")).Result(); err != nil || ttl <= 0 || ttl > sinks.RestoringTTL {
		t.Fatalf("ttl of %s = %v (%v), want in (0, %v]", sinks.RestoringKey("shop"), ttl, err, sinks.RestoringTTL)
	}
	if err := s.SetPartitionRestoring(ctx, 7, false); err != nil {
		t.Fatal(err)
	}
	check(0, 12)

	// A mark nobody renewed (its processor crashed) stops counting after
	// RestoringTTL; a renewed one goes on.
	now = now.Add(half)
	if err := s.SetPartitionRestoring(ctx, 12, true); err != nil {
		t.Fatal(err)
	}
	now = now.Add(half + time.Millisecond)
	check(12)

	// Foreign fields neither fail the read nor hide the others.
	if err := client.HSet(ctx, sinks.RestoringKey("shop"), "not-a-partition", "1", "3", "garbage").Err(); err != nil {
		t.Fatal(err)
	}
	check(3, 12)
	if err := s.SetPartitionRestoring(ctx, -1, true); err == nil {
		t.Error("negative partition accepted")
	}
	if got := metric(t, reg, "featurestream_redis_errors_total", "op", "restoring"); got != 0 {
		t.Errorf("errors_total{op=restoring} = %v, want 0", got)
	}
}

// TestWriteFromEncoded: a record that carries its state's encoding (the
// changelog's value) is stored exactly as one written from the state, for
// a spec with derived features too, and nothing of a state updated since
// is written; an encoding under another spec is ignored, and the state
// written instead.
func TestWriteFromEncoded(t *testing.T) {
	spec, err := topology.ParseSpec("derived.yaml", []byte(`app: shop
source:
  topic: events
features:
  - name: views_1h
    where: type == "view"
    agg: count
    window: 1h
  - name: per_view
    expr: views_1h * 2
  - name: last_items
    agg: last_k
    field: item_id
    k: 10
`))
	if err != nil {
		t.Fatal(err)
	}
	derived, err := topology.Compile(spec)
	if err != nil {
		t.Fatal(err)
	}
	shop := testshop.Topology(t)
	for _, c := range []struct {
		name       string
		top, other *topology.Topology
	}{{"shop", shop, derived}, {"derived", derived, shop}} {
		t.Run(c.name, func(t *testing.T) {
			s, client, _, _ := startStore(t, c.top)
			sinks.SetClock(s, func() time.Time { return time.UnixMilli(t0) })
			ctx := context.Background()
			st := shopState(t, c.top, "u", t0, 40)
			foreign := c.other.AppendState(nil, shopState(t, c.other, "u", t0, 40))
			// A state its owner went on updating after encoding it: the
			// write takes nothing from it but the encoding.
			updated := shopState(t, c.top, "u", t0, 60)
			recs := []sinks.Record{
				{Entity: "from-state", Version: 7, Generation: "g", State: st, HorizonMs: t0},
				{Entity: "from-encoding", Version: 7, Generation: "g", State: st, HorizonMs: t0, Encoded: c.top.AppendState(nil, st)},
				{Entity: "since-updated", Version: 7, Generation: "g", State: updated, HorizonMs: t0, Encoded: c.top.AppendState(nil, st)},
				{Entity: "foreign-encoding", Version: 7, Generation: "g", State: st, HorizonMs: t0, Encoded: foreign},
			}
			if err := s.Write(ctx, recs); err != nil {
				t.Fatal(err)
			}
			want, err := client.Get(ctx, sinks.EntityKey("shop", "from-state")).Result()
			if err != nil || want != string(sinks.AppendValue(nil, &sinks.Record{Version: 7, Generation: "g", HorizonMs: t0, Encoded: c.top.AppendState(nil, st)}, t0)) {
				t.Fatalf("value written from the state: %q, %v", want, err)
			}
			for _, id := range []string{"from-encoding", "since-updated", "foreign-encoding"} {
				got, err := client.Get(ctx, sinks.EntityKey("shop", id)).Result()
				if err != nil || got != want {
					t.Errorf("value of %s =\n%q\nwant, as from the state,\n%q (err %v)", id, got, want, err)
				}
			}
		})
	}
}
