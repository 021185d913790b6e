package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/featurestream/featurestream/bench"
	"github.com/featurestream/featurestream/processor"
	featurestreamv1 "github.com/featurestream/featurestream/proto/featurestream/v1"
	"github.com/featurestream/featurestream/serving"
	"github.com/featurestream/featurestream/sinks"
	"github.com/featurestream/featurestream/sinks/redisserver"
	"github.com/featurestream/featurestream/topology"
)

const shopSpec = "../../examples/shop/spec.yaml"

// shopModel is the naive reference for the shop spec: it keeps every event
// and computes each feature from scratch.
type shopModel struct {
	byUser map[string][]modelEvent
}

type modelEvent struct {
	seq int // produce order; among equal times the later one is newer
	bench.ShopEvent
}

func (m *shopModel) add(seq int, ev bench.ShopEvent) {
	m.byUser[ev.UserID] = append(m.byUser[ev.UserID], modelEvent{seq: seq, ShopEvent: ev})
}

// inWindow reports whether an event at ts counts in a sliding window of
// size w kept in tiles of t, read at asOf: its tile must start at or after
// the first tile boundary inside the window, and at or before asOf.
func inWindow(ts, asOf int64, w, t time.Duration) bool {
	wm, tm := w.Milliseconds(), t.Milliseconds()
	start := floorDiv(ts, tm) * tm
	from := asOf - wm
	first := floorDiv(from, tm) * tm
	if first < from {
		first += tm
	}
	return start >= first && start <= asOf
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

type shopValues struct {
	found        bool
	views1h      int64
	purchases24h int64
	spend24h     float64
	lastItems    []string
}

func (m *shopModel) values(user string, asOf int64) shopValues {
	return m.valuesWith(user, asOf, nil)
}

// valuesWith is values with another definition of the first feature
// (views_1h), for specs that change it.
func (m *shopModel) valuesWith(user string, asOf int64, views func(e modelEvent, asOf int64) bool) shopValues {
	if views == nil {
		views = func(e modelEvent, asOf int64) bool {
			return e.Type == "view" && inWindow(e.TS, asOf, time.Hour, 5*time.Minute)
		}
	}
	evs := m.byUser[user]
	if len(evs) == 0 {
		return shopValues{}
	}
	v := shopValues{found: true, lastItems: []string{}}
	for _, e := range evs {
		if views(e, asOf) {
			v.views1h++
		}
		if e.Type == "purchase" && inWindow(e.TS, asOf, 24*time.Hour, 2*time.Hour) {
			v.purchases24h++
			v.spend24h += e.Price
		}
	}
	sorted := slices.Clone(evs)
	sort.SliceStable(sorted, func(i, j int) bool {
		if sorted[i].TS != sorted[j].TS {
			return sorted[i].TS > sorted[j].TS
		}
		return sorted[i].seq > sorted[j].seq
	})
	for i := 0; i < len(sorted) && i < 10; i++ {
		v.lastItems = append(v.lastItems, sorted[i].ItemID)
	}
	return v
}

// e2eEnv is a kfake broker, a redis-server and a gRPC server, with
// processors started and stopped by the test.
type e2eEnv struct {
	t       *testing.T
	top     *topology.Topology
	kafka   *kfake.Cluster
	brokers []string
	redis   *redisserver.Server
	rdb     *redis.Client
	store   *sinks.Store
	client  featurestreamv1.FeatureServiceClient
	logger  *slog.Logger
}

func newE2EEnv(t *testing.T, partitions int32) *e2eEnv {
	t.Helper()
	top, err := loadTopology(shopSpec)
	if err != nil {
		t.Fatal(err)
	}
	kafka := inputCluster(t, top, partitions)
	rs := redisserver.StartForTest(t)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	env := &e2eEnv{t: t, top: top, kafka: kafka, brokers: kafka.ListenAddrs(), redis: rs, logger: logger}
	env.rdb = redis.NewClient(&redis.Options{Addr: rs.Addr()})
	t.Cleanup(func() { env.rdb.Close() })

	store, client, err := openStore(t.Context(), rs.Addr(), false, top, logger, newRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	env.store = store
	// Restoring marks and the state generation are read every 20 ms, so
	// the tests see their effects at once.
	srv, ln, err := newServerWith(serving.Config{Addr: "127.0.0.1:0", MaxEntities: 1000, RestoringInterval: 20 * time.Millisecond}, top, store, logger, newRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("grpc server: %v", err)
		}
	})
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	env.client = featurestreamv1.NewFeatureServiceClient(conn)
	return env
}

// userIDs returns u0 .. u<n-1>.
func userIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("u%d", i)
	}
	return ids
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

// startProcessor runs a processor on stateDir until the returned stop is
// called.
func (e *e2eEnv) startProcessor(stateDir string, g processor.Guarantee) (stop func()) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runProcessor(ctx, processorParams{
			top: e.top, brokers: e.brokers, stateDir: stateDir, sink: e.store, reg: newRegistry(), logger: e.logger,
			cfg:       processor.Config{CommitInterval: 50 * time.Millisecond, SessionTimeout: 6 * time.Second, Guarantee: g},
			adminAddr: "127.0.0.1:0",
		})
	}()
	return func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				e.t.Errorf("processor: %v", err)
			}
		case <-time.After(30 * time.Second):
			e.t.Fatal("processor did not stop within 30s")
		}
	}
}

func (e *e2eEnv) produce(events []bench.ShopEvent) {
	e.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...))
	if err != nil {
		e.t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for _, ev := range events {
		rec := ev.Record(e.top.Spec.Source.Topic)
		recs = append(recs, rec)
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		e.t.Fatal(err)
	}
}

// producePoison sends records that must all be dead-lettered, and returns
// how many of each reason.
func (e *e2eEnv) producePoison(t0 int64) map[string]int {
	e.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.ProducerBatchMaxBytes(4<<20))
	if err != nil {
		e.t.Fatal(err)
	}
	defer cl.Close()
	ok := t0 + 5*3600_000
	huge := strings.Repeat("x", 2<<20)
	poison := []struct{ key, value, reason string }{
		{"u1", `{not json`, "decode"},
		{"u1", `{"user_id":"u1","ts":1,"price":1e400}`, "decode"},
		{"", `{"ts":1764133200000,"type":"view"}`, "no_key"},
		{"u2", `{"user_id":null,"ts":1764133200000,"type":"view"}`, "no_key"},
		{"u2", `{"user_id":"u2","type":"view"}`, "no_time"},
		{"u2", `{"user_id":"u2","ts":"yesterday","type":"view"}`, "no_time"},
		{"u3", fmt.Sprintf(`{"user_id":"u3","ts":%d,"type":"purchase","item_id":"i1","price":"abc"}`, ok), "bad_value"},
		{"u5", fmt.Sprintf(`{"user_id":"u5","ts":%d,"type":"view","item_id":"%s"}`, ok, huge), "bad_value"},
		{"u4", fmt.Sprintf(`{"user_id":"u4","ts":%d,"type":"view","item_id":"i1"}`, t0-24*3600_000), "late"},
		{"u6", fmt.Sprintf(`{"user_id":"u6","ts":%d,"type":"view","item_id":"i1"}`, time.Now().Add(48*time.Hour).UnixMilli()), "future"},
	}
	want := map[string]int{}
	for _, p := range poison {
		rec := &kgo.Record{Topic: e.top.Spec.Source.Topic, Key: []byte(p.key), Value: []byte(p.value)}
		if p.key == "" {
			rec.Key = nil
		}
		if err := cl.ProduceSync(context.Background(), rec).FirstErr(); err != nil {
			e.t.Fatalf("produce poison %s: %v", p.reason, err)
		}
		want[p.reason]++
	}
	return want
}

// waitCommitted waits until the group has committed every input offset.
func (e *e2eEnv) waitCommitted() {
	e.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...))
	if err != nil {
		e.t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	topic := e.top.Spec.Source.Topic
	deadline := time.Now().Add(30 * time.Second)
	for {
		ends, err1 := adm.ListEndOffsets(context.Background(), topic)
		committed, err2 := adm.FetchOffsets(context.Background(), e.top.Spec.App)
		caughtUp := err1 == nil && err2 == nil
		ends.Each(func(o kadm.ListedOffset) {
			if c, ok := committed.Lookup(topic, o.Partition); !ok || c.At < o.Offset {
				caughtUp = false
			}
		})
		if caughtUp {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("input offsets not all committed after 30s (%v, %v)", err1, err2)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// deadLetters reads the committed dead-letter topic and counts by reason,
// checking each letter's headers name where it came from.
func (e *e2eEnv) deadLetters() map[string]int {
	e.t.Helper()
	got := map[string]int{}
	seen := map[string]bool{}
	for _, r := range readCommitted(e.t, e.brokers, processor.DLQTopic(e.top.Spec.App)) {
		h := map[string]string{}
		for _, kv := range r.Headers {
			h[kv.Key] = string(kv.Value)
		}
		where := h[processor.HeaderTopic] + "/" + h[processor.HeaderPartition] + "/" + h[processor.HeaderOffset]
		if h[processor.HeaderTopic] != e.top.Spec.Source.Topic || h[processor.HeaderError] == "" || seen[where] {
			e.t.Errorf("dead letter with headers %v (seen before: %v)", h, seen[where])
		}
		seen[where] = true
		got[h[processor.HeaderReason]]++
	}
	return got
}

func (e *e2eEnv) get(users []string, asOf int64) *featurestreamv1.GetFeaturesResponse {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := e.client.GetFeatures(ctx, &featurestreamv1.GetFeaturesRequest{
		EntityIds: users,
		AsOf:      timestamppb.New(time.UnixMilli(asOf)),
	})
	if err != nil {
		e.t.Fatalf("GetFeatures: %v", err)
	}
	return resp
}

// diff compares a response with the model and returns the first mismatch.
func diff(model *shopModel, users []string, asOf int64, resp *featurestreamv1.GetFeaturesResponse) string {
	return diffStatus(model, users, asOf, resp, false)
}

// diffStatus is diff that, with stale, also accepts STALE for a value
// (one of a partition being restored) as long as the value is right.
func diffStatus(model *shopModel, users []string, asOf int64, resp *featurestreamv1.GetFeaturesResponse, stale bool) string {
	if len(resp.Results) != len(users) {
		return fmt.Sprintf("%d results for %d users", len(resp.Results), len(users))
	}
	for i, user := range users {
		r := resp.Results[i]
		want := model.values(user, asOf)
		if r.EntityId != user {
			return fmt.Sprintf("result %d is %q, want %q", i, r.EntityId, user)
		}
		if len(r.Values) != 4 {
			return fmt.Sprintf("%s: %d values, want 4", user, len(r.Values))
		}
		if !want.found {
			for _, v := range r.Values {
				if v.Status != featurestreamv1.FeatureValue_NOT_FOUND {
					return fmt.Sprintf("%s %s: status %s, want NOT_FOUND", user, v.Name, v.Status)
				}
			}
			continue
		}
		byName := map[string]*featurestreamv1.FeatureValue{}
		for _, v := range r.Values {
			if v.Status != featurestreamv1.FeatureValue_PRESENT && !(stale && v.Status == featurestreamv1.FeatureValue_STALE) {
				return fmt.Sprintf("%s %s: status %s, want PRESENT", user, v.Name, v.Status)
			}
			byName[v.Name] = v
		}
		if got := byName["views_1h"].GetInt64Value(); got != want.views1h {
			return fmt.Sprintf("%s views_1h at %s = %d, want %d", user, time.UnixMilli(asOf).UTC(), got, want.views1h)
		}
		if got := byName["purchases_24h"].GetInt64Value(); got != want.purchases24h {
			return fmt.Sprintf("%s purchases_24h = %d, want %d", user, got, want.purchases24h)
		}
		if got := byName["spend_24h"].GetDoubleValue(); math.Abs(got-want.spend24h) > 1e-9*math.Max(1, math.Abs(want.spend24h)) {
			return fmt.Sprintf("%s spend_24h = %v, want %v", user, got, want.spend24h)
		}
		if got := byName["last_items"].GetStringListValue().GetValues(); !slices.Equal(got, want.lastItems) {
			return fmt.Sprintf("%s last_items = %v, want %v", user, got, want.lastItems)
		}
	}
	return ""
}

// TestEndToEnd produces a known event set in three batches, with a
// processor restart on the same state dir between the first two and a
// restart on an empty state dir (and an emptied Redis) before the third,
// and checks every feature of every user over gRPC against the model at
// several as_of times.
func TestEndToEnd(t *testing.T) {
	for _, g := range []processor.Guarantee{processor.ExactlyOnce, processor.AtLeastOnce} {
		t.Run(string(g), func(t *testing.T) { testEndToEnd(t, g) })
	}
}

func testEndToEnd(t *testing.T, g processor.Guarantee) {
	env := newE2EEnv(t, 3)
	rng := rand.New(rand.NewPCG(7, 11))
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	span := 6 * time.Hour.Milliseconds()
	const n = 3000
	users := userIDs(25)
	gen := bench.NewShopGenerator(3, 25, 200)
	events := make([]bench.ShopEvent, n)
	for i := range events {
		// Mostly in time order, up to 2 minutes out of order (grace is 5m).
		ts := t0 + int64(i)*span/n + rng.Int64N(4*60_000) - 2*60_000
		events[i] = gen.Next(time.UnixMilli(ts))
		events[i].UserID = users[rng.IntN(len(users))]
	}
	asked := append(slices.Clone(users), "nobody") // one entity never seen

	model := &shopModel{byUser: map[string][]modelEvent{}}
	check := func(phase string, upTo int) {
		t.Helper()
		var end int64
		for _, ev := range events[:upTo] {
			end = max(end, ev.TS)
		}
		// Wait until the last batch is visible, then check all instants.
		deadline := time.Now().Add(30 * time.Second)
		for {
			d := diff(model, asked, end, env.get(asked, end))
			if d == "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not converged after 30s: %s", phase, d)
			}
			time.Sleep(50 * time.Millisecond)
		}
		// Every partition has been restored and pushed: none is still
		// marked restoring (serving would say STALE).
		deadline = time.Now().Add(10 * time.Second)
		for {
			n, err := env.rdb.HLen(context.Background(), sinks.RestoringKey(env.top.Spec.App)).Result()
			if err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d partitions still marked restoring", phase, n)
			}
			time.Sleep(20 * time.Millisecond)
		}
		instants := []int64{end, end + 30*60_000, end + 61*60_000, end + 25*3600_000}
		for _, asOf := range instants {
			if d := diff(model, asked, asOf, env.get(asked, asOf)); d != "" {
				t.Errorf("%s: as of %s: %s", phase, time.UnixMilli(asOf).UTC(), d)
			}
		}
	}
	produce := func(from, to int) {
		for i := from; i < to; i++ {
			model.add(i, events[i])
		}
		env.produce(events[from:to])
	}

	dir := t.TempDir()
	stop := env.startProcessor(dir, g)
	produce(0, 1800)
	check("first run", 1800)
	stop()

	stop = env.startProcessor(dir, g)
	produce(1800, 2400)
	// Poison after valid events, so every partition has a watermark and
	// the late one is late; none of it may change any value.
	wantDLQ := env.producePoison(t0)
	check("restart on the same state dir", 2400)
	// The poison changes no value, so check cannot tell it was processed:
	// wait for its offsets to be committed before stopping.
	env.waitCommitted()
	stop()
	if got := env.deadLetters(); !maps.Equal(got, wantDLQ) {
		t.Errorf("dead letters by reason = %v, want %v", got, wantDLQ)
	}

	if err := env.rdb.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	stop = env.startProcessor(t.TempDir(), g)
	produce(2400, n)
	check("restart on an empty state dir and an empty Redis", n)
	stop()

	// views_1h decays with no new event: an hour and a tile after the last
	// event, every user has zero views but is still PRESENT.
	var last int64
	for _, ev := range events {
		last = max(last, ev.TS)
	}
	late := last + 66*60_000
	for _, r := range env.get(users, late).Results {
		if r.Values[0].Name != "views_1h" || r.Values[0].GetInt64Value() != 0 || r.Values[0].Status != featurestreamv1.FeatureValue_PRESENT {
			t.Errorf("%s: views_1h at +66m = %v, want PRESENT 0", r.EntityId, r.Values[0])
		}
	}
}
