package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/featurestream/featurestream/bench"
	"github.com/featurestream/featurestream/processor"
	featurestreamv1 "github.com/featurestream/featurestream/proto/featurestream/v1"
	"github.com/featurestream/featurestream/sinks"
	"github.com/featurestream/featurestream/state"
)

// TestReplay: `featurestream replay --from <offset>` rebuilds the features
// from that offset of every partition into state generation 1 while
// generation 0 keeps serving; a client polling GetFeatures throughout sees
// every response wholly from one generation (the old values, then the new
// ones, never a mix or a half-built state, never back); the running
// processor follows the switch and keeps processing in generation 1; and
// generation 0's changelog, group and Redis keys are deleted.
func TestReplay(t *testing.T) {
	env := newE2EEnv(t, 3)
	app := env.top.Spec.App
	rng := rand.New(rand.NewPCG(5, 8))
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	users := userIDs(20)
	gen := bench.NewShopGenerator(4, 20, 100)
	const n = 2400
	events := make([]bench.ShopEvent, n)
	recs := make([]*kgo.Record, n)
	var end int64
	for i := range events {
		ts := t0 + int64(i)*3*3600_000/n + rng.Int64N(60_000)
		events[i] = gen.Next(time.UnixMilli(ts))
		events[i].UserID = users[rng.IntN(len(users))]
		end = max(end, events[i].TS)
		rec := events[i].Record(env.top.Spec.Source.Topic)
		recs[i] = rec
	}
	// A transactional producer, so every partition ends in a commit
	// marker that no consumer commits past: the replay must still see
	// that it has caught up.
	prod, err := kgo.NewClient(kgo.SeedBrokers(env.brokers...), kgo.TransactionalID("replay-test-producer"))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	if err := prod.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := prod.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := prod.EndTransaction(context.Background(), kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	// The whole history, and what a replay from offset 300 of every
	// partition sees: ProduceSync filled in each record's offset.
	const from = 300
	oldModel := &shopModel{byUser: map[string][]modelEvent{}}
	newModel := &shopModel{byUser: map[string][]modelEvent{}}
	for i, ev := range events {
		oldModel.add(i, ev)
		if recs[i].Offset >= from {
			newModel.add(i, ev)
		}
	}
	asked := append(slices.Clone(users), "nobody")
	if diff(oldModel, asked, end, fakeResponse(newModel, asked, end)) == "" {
		t.Fatal("the two generations' values do not differ; the test would show nothing")
	}

	stop := env.startProcessor(t.TempDir(), processor.ExactlyOnce)
	defer func() {
		if stop != nil {
			stop()
		}
	}()
	waitFor(t, "generation 0 serves the whole history", func() string { return diff(oldModel, asked, end, env.get(asked, end)) })

	// Poll GetFeatures while the replay runs.
	var (
		mu              sync.Mutex
		sawOld, sawNew  int
		problems        []string
		watchCtx, watch = context.WithCancel(context.Background())
		watched         = make(chan struct{})
	)
	go func() {
		defer close(watched)
		for watchCtx.Err() == nil {
			ctx, cancel := context.WithTimeout(watchCtx, 5*time.Second)
			resp, err := env.client.GetFeatures(ctx, &featurestreamv1.GetFeaturesRequest{EntityIds: asked, AsOf: timestamppb.New(time.UnixMilli(end))})
			cancel()
			if watchCtx.Err() != nil {
				return
			}
			mu.Lock()
			switch {
			case err != nil:
				problems = append(problems, "GetFeatures: "+err.Error())
			case diffStatus(oldModel, asked, end, resp, true) == "":
				if sawNew > 0 {
					problems = append(problems, "old values served after new ones")
				}
				sawOld++
			case diffStatus(newModel, asked, end, resp, true) == "":
				sawNew++
			default:
				problems = append(problems, "a response of neither generation: against the old "+diffStatus(oldModel, asked, end, resp, true)+"; against the new "+diffStatus(newModel, asked, end, resp, true))
			}
			mu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
	}()

	replay := &replayCmd{
		specFlag: specFlag{Spec: shopSpec}, redisFlags: redisFlags{RedisAddr: env.redis.Addr()},
		kafkaFlags: kafkaFlags{Brokers: env.brokers}, From: fmt.Sprint(from), Guarantee: string(processor.ExactlyOnce),
		CommitInterval: 10 * time.Millisecond, CatchUp: 2 * time.Second, OldTimeout: 30 * time.Second,
		// Many small commits, so generation 1 is half built for a while
		// (and a server switching early would be caught).
		maxPollRecords: 40,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// One replay at a time: while another holds the lease, a replay
	// refuses to start (and changes nothing).
	if err := env.rdb.Set(ctx, "fs:shop:replay", "another host", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if err := replay.Run(ctx, env.logger); err == nil || !strings.Contains(err.Error(), "another replay of app shop is running (another host") {
		t.Fatalf("replay while another holds the lease: %v", err)
	}
	env.rdb.Del(ctx, "fs:shop:replay")
	if err := replay.Run(ctx, env.logger); err != nil {
		t.Fatalf("replay: %v", err)
	}
	waitFor(t, "the server reads generation 1", func() string {
		mu.Lock()
		defer mu.Unlock()
		if sawNew == 0 {
			return "no response from generation 1 yet"
		}
		return ""
	})
	watch()
	<-watched
	if len(problems) > 0 {
		t.Fatalf("%d bad responses during the replay, first: %s", len(problems), problems[0])
	}
	if sawOld == 0 {
		t.Fatal("no response from generation 0 during the replay")
	}
	t.Logf("responses: %d from generation 0, %d from generation 1", sawOld, sawNew)

	opts := []kgo.Opt{kgo.SeedBrokers(env.brokers...)}
	if g, err := processor.ReadStateGeneration(ctx, opts, app); err != nil || g != 1 {
		t.Fatalf("current state generation = %d (%v), want 1", g, err)
	}
	// Generation 0 is gone: its Redis keys, its changelog, its group.
	if keys, err := env.rdb.Keys(ctx, sinks.EntityKeyFor(app, 0, "*")).Result(); err != nil || len(keys) != 0 {
		t.Fatalf("generation 0 still has %d Redis keys (%v)", len(keys), err)
	}
	adm := kadm.NewClient(prod)
	topics, err := adm.ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := env.rdb.Exists(ctx, "fs:shop:replay").Result(); err != nil || n != 0 {
		t.Fatalf("the replay lease is still held (%d, %v)", n, err)
	}
	if topics.Has(state.ChangelogTopic(app)) || !topics.Has(state.ChangelogTopicFor(app, 1)) {
		t.Fatalf("topics after the replay: %v; want %s gone and %s there", topics.Names(), state.ChangelogTopic(app), state.ChangelogTopicFor(app, 1))
	}

	// The processor moved to generation 1 and goes on from where the
	// replay stopped.
	more := make([]bench.ShopEvent, 600)
	var moreRecs []*kgo.Record
	for i := range more {
		ts := end + int64(i)*1000 + rng.Int64N(30_000)
		more[i] = gen.Next(time.UnixMilli(ts))
		more[i].UserID = users[rng.IntN(len(users))]
		newModel.add(n+i, more[i])
		rec := more[i].Record(env.top.Spec.Source.Topic)
		moreRecs = append(moreRecs, rec)
	}
	if err := prod.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := prod.ProduceSync(ctx, moreRecs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := prod.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	end2 := end + 600*1000 + 30_000
	waitFor(t, "generation 1 processes new events", func() string { return diff(newModel, asked, end2, env.get(asked, end2)) })
	stop()
	stop = nil
	if !strings.HasPrefix(sinks.EntityKeyFor(app, 1, "u1"), "fs:shop:g1:e:") {
		t.Fatalf("generation 1 key %s", sinks.EntityKeyFor(app, 1, "u1"))
	}
}

// waitFor polls check until it returns "" or 30 s pass.
func waitFor(t *testing.T, what string, check func() string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		d := check()
		if d == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s: %s", what, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// fakeResponse is the response a server holding exactly model would give,
// to compare two models with diff.
func fakeResponse(model *shopModel, users []string, asOf int64) *featurestreamv1.GetFeaturesResponse {
	resp := &featurestreamv1.GetFeaturesResponse{}
	for _, u := range users {
		v := model.values(u, asOf)
		r := &featurestreamv1.EntityFeatures{EntityId: u}
		st := featurestreamv1.FeatureValue_PRESENT
		if !v.found {
			st = featurestreamv1.FeatureValue_NOT_FOUND
		}
		r.Values = []*featurestreamv1.FeatureValue{
			{Name: "views_1h", Status: st, Value: &featurestreamv1.FeatureValue_Int64Value{Int64Value: v.views1h}},
			{Name: "purchases_24h", Status: st, Value: &featurestreamv1.FeatureValue_Int64Value{Int64Value: v.purchases24h}},
			{Name: "spend_24h", Status: st, Value: &featurestreamv1.FeatureValue_DoubleValue{DoubleValue: v.spend24h}},
			{Name: "last_items", Status: st, Value: &featurestreamv1.FeatureValue_StringListValue{StringListValue: &featurestreamv1.StringList{Values: v.lastItems}}},
		}
		resp.Results = append(resp.Results, r)
	}
	return resp
}
