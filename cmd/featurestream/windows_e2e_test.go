package main

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/featurestream/featurestream/bench"
	"github.com/featurestream/featurestream/processor"
	featurestreamv1 "github.com/featurestream/featurestream/proto/featurestream/v1"
	"github.com/featurestream/featurestream/sinks"
	"github.com/featurestream/featurestream/sinks/redisserver"
	"github.com/featurestream/featurestream/topology"
)

const windowKindsSpec = `app: kinds
source: {topic: events, format: json, key: user_id, time: ts, grace: 5m}
features:
  - {name: views_1h, where: 'type == "view"', agg: count, window: 1h}
  - {name: views_this_hour, where: 'type == "view"', agg: count, window: {kind: tumbling, size: 1h}}
  - {name: views_last_hour_bucket, where: 'type == "view"', agg: count, window: {kind: tumbling, size: 1h}, emit: last_closed}
  - {name: spend_hopping, where: 'type == "purchase"', agg: sum, field: price, window: {kind: hopping, size: 1h, hop: 15m}}
  - {name: session_events, agg: count, window: {kind: session, gap: 10m}}
  - {name: last_session_events, agg: count, window: {kind: session, gap: 10m}, emit: last_closed}
  - {name: spend_lifetime, where: 'type == "purchase"', agg: sum, field: price}
  - {name: categories_24h, agg: approx_distinct, field: category, window: 24h}
  - {name: price_p50_24h, agg: approx_quantile, field: price, q: 0.5, window: 24h}
  - {name: view_share, expr: 'views_1h / (views_1h + 1.0)'}
`

// TestEndToEndWindowKinds runs one feature of every window kind (and a
// sketch and a derived feature) through Kafka, the processor, Redis and
// gRPC, and checks every served value against the same spec evaluated on
// state built in the test from the same events: the pipeline must carry
// each kind's state and serve it exactly as the engine computes it (the
// engine itself is checked against a naive model in package topology).
func TestEndToEndWindowKinds(t *testing.T) {
	top, kafka, store := specEnv(t, windowKindsSpec, 3)
	srv, ln, err := newServer("127.0.0.1:0", 1000, top, store, discardLogger(), newRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 2)
	go func() { done <- srv.Serve(ctx, ln) }()
	go func() {
		done <- runProcessor(ctx, processorParams{
			top: top, brokers: kafka.ListenAddrs(), stateDir: t.TempDir(), sink: store, reg: newRegistry(), logger: discardLogger(),
			cfg: processor.Config{CommitInterval: 50 * time.Millisecond}, adminAddr: "127.0.0.1:0",
		})
	}()

	// Events for 30 users over 6 hours with pauses, so sessions open and
	// close, in time order up to 2 minutes (grace is 5).
	rng := rand.New(rand.NewPCG(21, 22))
	gen := bench.NewShopGenerator(23, 30, 300)
	t0 := time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC).UnixMilli()
	ref := map[string]*topology.EntityState{}
	var recs []*kgo.Record
	var end int64
	for i := range 3000 {
		// Every 300 events a 20-minute pause, longer than the session gap.
		ts := t0 + int64(i)*7200 + int64(i/300)*20*60_000 + rng.Int64N(120_000) - 60_000
		ev := gen.Next(time.UnixMilli(ts))
		rec := ev.Record("events")
		recs = append(recs, rec)
		end = max(end, ts)
		st := ref[ev.UserID]
		if st == nil {
			st = top.NewEntityState()
			ref[ev.UserID] = st
		}
		fields := map[string]any{"user_id": ev.UserID, "ts": float64(ev.TS), "type": ev.Type, "item_id": ev.ItemID, "category": ev.Category, "price": ev.Price}
		if err := top.Apply(st, &topology.Event{Key: ev.UserID, TimeMs: ev.TS, Fields: fields}, math.MinInt64); err != nil {
			t.Fatal(err)
		}
	}
	prod, err := kgo.NewClient(kgo.SeedBrokers(kafka.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fs := featurestreamv1.NewFeatureServiceClient(conn)
	var users []string
	for u := range ref {
		users = append(users, u)
	}
	slices.Sort(users)
	all := make([]int, len(top.Features))
	for i := range all {
		all[i] = i
	}
	compare := func(asOf int64) string {
		resp, err := fs.GetFeatures(ctx, &featurestreamv1.GetFeaturesRequest{EntityIds: users, AsOf: timestamppb.New(time.UnixMilli(asOf))})
		if err != nil {
			t.Fatal(err)
		}
		want := make([]topology.Value, len(all))
		for i, r := range resp.Results {
			// Through the stored encoding, as Redis holds it: a feature
			// with no events yet is stored as no tiles (PRESENT, zero),
			// not left out.
			st, err := top.DecodeState(top.AppendState(nil, ref[users[i]]))
			if err != nil {
				t.Fatal(err)
			}
			top.EvaluateAll(st.Features, asOf, all, want)
			for j, got := range r.Values {
				w := want[j]
				name := top.Features[j].Name
				if w.Present != (got.Status == featurestreamv1.FeatureValue_PRESENT) {
					return fmt.Sprintf("%s %s: status %s, engine says present=%v", users[i], name, got.Status, w.Present)
				}
				if !w.Present {
					continue
				}
				var ok bool
				switch w.Type {
				case topology.TypeInt64:
					ok = got.GetInt64Value() == w.Int
				case topology.TypeDouble:
					ok = math.Abs(got.GetDoubleValue()-w.Float) <= 1e-9*math.Max(1, math.Abs(w.Float))
				default:
					t.Fatalf("%s: value type %s not compared", name, w.Type)
				}
				if !ok {
					return fmt.Sprintf("%s %s at %s: served %v, engine %+v", users[i], name, time.UnixMilli(asOf).UTC(), got, w)
				}
				if w.WindowStartMs != 0 && got.GetWindowStart().AsTime().UnixMilli() != w.WindowStartMs {
					return fmt.Sprintf("%s %s: window start %s, engine %d", users[i], name, got.GetWindowStart().AsTime(), w.WindowStartMs)
				}
			}
		}
		return ""
	}
	deadline := time.Now().Add(30 * time.Second)
	for d := compare(end); d != ""; d = compare(end) {
		if time.Now().After(deadline) {
			t.Fatalf("not converged: %s", d)
		}
		select {
		case err := <-done:
			t.Fatalf("stopped: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	for _, asOf := range []int64{end + 5*60_000, end + 30*60_000, end + 61*60_000, end + 3*3600_000} {
		if d := compare(asOf); d != "" {
			t.Error(d)
		}
	}
	cancel()
	for range 2 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

// specEnv writes specYAML to a file and starts what a test of it needs: a
// kfake broker with the spec's topic (partitions partitions), a real
// redis-server and the online store on it; all stop with the test.
func specEnv(t *testing.T, specYAML string, partitions int32) (*topology.Topology, *kfake.Cluster, *sinks.Store) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "spec.yaml")
	if err := os.WriteFile(path, []byte(specYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	top, err := loadTopology(path)
	if err != nil {
		t.Fatal(err)
	}
	kafka := inputCluster(t, top, partitions)
	rs := redisserver.StartForTest(t)
	store, client, err := openStore(t.Context(), rs.Addr(), false, top, discardLogger(), newRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return top, kafka, store
}
