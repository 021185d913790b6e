package serving

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"math"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/featurestream/featurestream/internal/testshop"
	pb "github.com/featurestream/featurestream/proto/featurestream/v1"
	"github.com/featurestream/featurestream/sinks"
	"github.com/featurestream/featurestream/sinks/redisserver"
	"github.com/featurestream/featurestream/topology"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// After a failed dial go-redis probes in a goroutine that sleeps 1s
		// between tries and notices Close only when it wakes: it outlives
		// Close by up to a second, longer than goleak waits. Only the tests
		// that stop Redis start it.
		goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"),
	)
}

// t0 is an even hour, so the shop features' tiles (5m, 2h) start on it.
var t0 = time.Date(2025, 11, 26, 4, 0, 0, 0, time.UTC).UnixMilli()

const minute = int64(60_000)

// testNow is the server's clock in tests, unless a test sets another: a day
// after t0, so every as_of the tests ask for is inside the horizon.
var testNow = time.UnixMilli(t0 + 24*60*minute)

type testEvent struct {
	atMin int64 // minutes after t0
	typ   string
	item  string
	price float64
}

// state applies events in order, each with the watermark a partition that
// just saw it would have.
func state(t testing.TB, top *topology.Topology, events ...testEvent) *topology.EntityState {
	t.Helper()
	st := top.NewEntityState()
	for _, e := range events {
		ev := topology.Event{TimeMs: t0 + e.atMin*minute, Fields: map[string]any{"type": e.typ, "item_id": e.item}}
		if e.typ == "purchase" {
			ev.Fields["price"] = e.price
		}
		if err := top.Apply(st, &ev, ev.TimeMs-5*minute); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

type env struct {
	srv    *Server
	client pb.FeatureServiceClient
	conn   *grpc.ClientConn
	store  *sinks.Store
	redis  *redisserver.Server
	rdb    redis.UniversalClient
	reg    *prometheus.Registry
	top    *topology.Topology
	addr   string
}

// start runs a Server on a loopback port against a fresh redis-server and
// returns a connected client; everything stops when t ends.
func start(t testing.TB, cfg Config) *env {
	t.Helper()
	return startTop(t, cfg, testshop.Topology(t))
}

// startTop is start for another topology.
func startTop(t testing.TB, cfg Config, top *topology.Topology) *env {
	t.Helper()
	rs := redisserver.StartForTest(t)
	rdb, err := sinks.NewClient(sinks.Options{Addrs: []string{rs.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	reg := prometheus.NewRegistry()
	logger := slog.New(slog.DiscardHandler)
	store, err := sinks.NewStore(rdb, top, logger, reg)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HealthInterval == 0 {
		cfg.HealthInterval = 20 * time.Millisecond
	}
	if cfg.RestoringInterval == 0 {
		cfg.RestoringInterval = 20 * time.Millisecond
	}
	srv, err := New(cfg, top, store, logger, reg)
	if err != nil {
		t.Fatal(err)
	}
	srv.now = func() time.Time { return testNow }
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &env{srv: srv, client: pb.NewFeatureServiceClient(conn), conn: conn, store: store, redis: rs, rdb: rdb, reg: reg, top: top, addr: ln.Addr().String()}
}

func (e *env) write(t testing.TB, recs ...sinks.Record) {
	t.Helper()
	if err := e.store.Write(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
}

// setRaw stores entity id's value as another writer would: version 1 of
// generation "g", written at writtenMs, its state holding only the given
// features (name, then encoding; the layout of topology.AppendState).
func setRaw(e *env, id string, lastEventMs, writtenMs int64, features ...string) error {
	state := binary.AppendVarint([]byte{1}, lastEventMs)
	state = binary.AppendUvarint(state, uint64(len(features)/2))
	for _, f := range features {
		state = append(binary.AppendUvarint(state, uint64(len(f))), f...)
	}
	v := sinks.AppendValue(nil, &sinks.Record{Entity: id, Generation: "g", Version: 1, HorizonMs: math.MinInt64, Encoded: state}, writtenMs)
	return e.rdb.Set(context.Background(), sinks.EntityKey("shop", id), v, 0).Err()
}

func ts(ms int64) *timestamppb.Timestamp { return timestamppb.New(time.UnixMilli(ms)) }

func present(name string, v any, windowStartMs, windowEndMs int64) *pb.FeatureValue {
	fv := &pb.FeatureValue{Name: name, Status: pb.FeatureValue_PRESENT}
	switch x := v.(type) {
	case int:
		fv.Value = &pb.FeatureValue_Int64Value{Int64Value: int64(x)}
	case float64:
		fv.Value = &pb.FeatureValue_DoubleValue{DoubleValue: x}
	case []string:
		fv.Value = &pb.FeatureValue_StringListValue{StringListValue: &pb.StringList{Values: x}}
	case string:
		fv.Value = &pb.FeatureValue_StringValue{StringValue: x}
	}
	if windowEndMs != 0 {
		fv.WindowStart, fv.WindowEnd = ts(windowStartMs), ts(windowEndMs)
	}
	return fv
}

func notFound(names ...string) []*pb.FeatureValue {
	var out []*pb.FeatureValue
	for _, n := range names {
		out = append(out, &pb.FeatureValue{Name: n, Status: pb.FeatureValue_NOT_FOUND})
	}
	return out
}

func checkResponse(t *testing.T, got, want proto.Message) {
	t.Helper()
	// Columns repeat what the values say; TestCompact checks them. A test
	// that does not list them compares the values alone.
	if g, ok := got.(*pb.GetFeaturesResponse); ok && len(want.(*pb.GetFeaturesResponse).GetColumns()) == 0 {
		got = proto.CloneOf(g)
		got.(*pb.GetFeaturesResponse).Columns = nil
	}
	if !proto.Equal(got, want) {
		t.Errorf("response:\n%s\nwant:\n%s", prototext.Format(got), prototext.Format(want))
	}
}

// u1's history: views at 0, 10 and 32 minutes, purchases at 20 and 25.
var u1Events = []testEvent{
	{0, "view", "i1", 0},
	{10, "view", "i2", 0},
	{20, "purchase", "i2", 19.5},
	{25, "purchase", "i3", 5.25},
	{32, "view", "i4", 0},
}

func TestGetFeaturesAsOf(t *testing.T) {
	e := start(t, Config{})
	u1 := state(t, e.top, u1Events...)
	// u2 viewed once, long before: known, with zero recent views.
	u2 := state(t, e.top, testEvent{-180, "view", "x1", 0})
	e.write(t,
		sinks.Record{Entity: "u1", Partition: 3, Version: 100, Generation: "g", State: u1},
		sinks.Record{Entity: "u2", Partition: 1, Version: 7, Generation: "g", State: u2},
	)
	lastItems := []string{"i4", "i3", "i2", "i2", "i1"}

	tests := []struct {
		name    string
		asOfMin int64
		// views_1h, purchases_24h, spend_24h of u1 and their windows' starts
		views, purchases int
		spend            float64
		viewsFrom        int64 // minutes after t0
		dayFrom          int64 // minutes after t0
	}{
		{"just after the last view", 33, 3, 2, 24.75, -25, -22 * 60},
		{"first tile has left the hour", 65, 2, 2, 24.75, 5, -22 * 60},
		// The window [as_of-1h, as_of] starts at the view's own minute, but
		// the view's tile (30m-35m) starts before it: a tile counts only
		// when it starts inside the window, so the value has already decayed.
		{"one hour after the last view", 32 + 60, 0, 2, 24.75, 35, -22 * 60},
		{"a day after the purchases", 25 + 24*60, 0, 0, 0, 25 + 23*60, 2 * 60},
		// An as_of inside a tile takes the whole tile: the purchases at 20m
		// and 25m are in the 2h tile starting at 0, and count at 15m; the
		// view at 32m is in a 5m tile starting after 15m, and does not.
		{"before the purchases, inside their tile", 15, 2, 2, 24.75, -45, -22 * 60},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			asOf := t0 + tt.asOfMin*minute
			resp, err := e.client.GetFeatures(context.Background(), &pb.GetFeaturesRequest{
				EntityIds: []string{"u1", "ghost", "u2"},
				AsOf:      ts(asOf),
			})
			if err != nil {
				t.Fatal(err)
			}
			viewsFrom, dayFrom := t0+tt.viewsFrom*minute, t0+tt.dayFrom*minute
			want := &pb.GetFeaturesResponse{
				AsOf: ts(asOf),
				Results: []*pb.EntityFeatures{
					{
						EntityId:      "u1",
						LastEventTime: ts(t0 + 32*minute),
						Values: []*pb.FeatureValue{
							present("views_1h", tt.views, viewsFrom, asOf),
							present("purchases_24h", tt.purchases, dayFrom, asOf),
							present("spend_24h", tt.spend, dayFrom, asOf),
							// Lifetime: as_of cannot split its one tile, so
							// every stored item counts.
							present("last_items", lastItems, 0, 0),
						},
					},
					{EntityId: "ghost", Values: notFound("views_1h", "purchases_24h", "spend_24h", "last_items")},
					{
						EntityId:      "u2",
						LastEventTime: ts(t0 - 180*minute),
						Values: []*pb.FeatureValue{
							present("views_1h", 0, viewsFrom, asOf),
							present("purchases_24h", 0, dayFrom, asOf),
							present("spend_24h", 0.0, dayFrom, asOf),
							present("last_items", []string{"x1"}, 0, 0),
						},
					},
				},
			}
			checkResponse(t, resp, want)
		})
	}
}

func TestGetFeaturesDefaultsToNow(t *testing.T) {
	e := start(t, Config{})
	e.write(t, sinks.Record{Entity: "u1", Version: 1, State: state(t, e.top, u1Events...)})
	now := time.UnixMilli(t0 + 65*minute).Add(123 * time.Microsecond)
	e.srv.now = func() time.Time { return now }
	resp, err := e.client.GetFeatures(context.Background(), &pb.GetFeaturesRequest{EntityIds: []string{"u1"}, Features: []string{"views_1h"}})
	if err != nil {
		t.Fatal(err)
	}
	// Evaluated at the millisecond, and the response says which.
	asOf := t0 + 65*minute
	checkResponse(t, resp, &pb.GetFeaturesResponse{
		AsOf: ts(asOf),
		Results: []*pb.EntityFeatures{{
			EntityId: "u1", LastEventTime: ts(t0 + 32*minute),
			Values: []*pb.FeatureValue{present("views_1h", 2, t0+5*minute, asOf)},
		}},
	})
}

func TestGetFeaturesSubsetOrder(t *testing.T) {
	e := start(t, Config{})
	e.write(t, sinks.Record{Entity: "u1", Version: 1, State: state(t, e.top, u1Events...)})
	asOf := t0 + 33*minute
	tests := []struct {
		features []string
		want     []*pb.FeatureValue
	}{
		{[]string{"last_items", "views_1h"}, []*pb.FeatureValue{
			present("last_items", []string{"i4", "i3", "i2", "i2", "i1"}, 0, 0),
			present("views_1h", 3, t0-25*minute, asOf),
		}},
		{[]string{"spend_24h"}, []*pb.FeatureValue{present("spend_24h", 24.75, t0-22*60*minute, asOf)}},
		{[]string{"purchases_24h", "spend_24h", "views_1h"}, []*pb.FeatureValue{
			present("purchases_24h", 2, t0-22*60*minute, asOf),
			present("spend_24h", 24.75, t0-22*60*minute, asOf),
			present("views_1h", 3, t0-25*minute, asOf),
		}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.features, ","), func(t *testing.T) {
			resp, err := e.client.GetFeatures(context.Background(), &pb.GetFeaturesRequest{EntityIds: []string{"u1", "nobody"}, Features: tt.features, AsOf: ts(asOf)})
			if err != nil {
				t.Fatal(err)
			}
			checkResponse(t, resp, &pb.GetFeaturesResponse{AsOf: ts(asOf), Results: []*pb.EntityFeatures{
				{EntityId: "u1", LastEventTime: ts(t0 + 32*minute), Values: tt.want},
				{EntityId: "nobody", Values: notFound(tt.features...)},
			}})
		})
	}
}

// TestFeatureMissingFromStoredState: an entity written under a spec without
// a feature says NOT_FOUND for it, not a zero.
func TestFeatureMissingFromStoredState(t *testing.T) {
	e := start(t, Config{})
	empty := string(e.top.AppendFeature(nil, 0, nil))
	if err := setRaw(e, "old", 1000, t0, "views_1h", empty); err != nil {
		t.Fatal(err)
	}
	asOf := t0
	resp, err := e.client.GetFeatures(context.Background(), &pb.GetFeaturesRequest{EntityIds: []string{"old"}, Features: []string{"views_1h", "purchases_24h"}, AsOf: ts(asOf)})
	if err != nil {
		t.Fatal(err)
	}
	checkResponse(t, resp, &pb.GetFeaturesResponse{AsOf: ts(asOf), Results: []*pb.EntityFeatures{{
		EntityId: "old", LastEventTime: ts(1000),
		Values: []*pb.FeatureValue{present("views_1h", 0, t0-60*minute, asOf), notFound("purchases_24h")[0]},
	}}})
}

func TestGetFeaturesInvalidArgument(t *testing.T) {
	e := start(t, Config{MaxEntities: 1000})
	tooMany := make([]string, 1001)
	for i := range tooMany {
		tooMany[i] = "u"
	}
	tests := []struct {
		name string
		req  *pb.GetFeaturesRequest
		want string
	}{
		{"no entities", &pb.GetFeaturesRequest{}, "entity_ids: at least one entity id is required"},
		{"too many entities", &pb.GetFeaturesRequest{EntityIds: tooMany}, "entity_ids: 1001 ids, at most 1000 per call"},
		{"empty entity", &pb.GetFeaturesRequest{EntityIds: []string{"a", "b", "c", ""}}, "entity_ids[3]: empty entity id"},
		{"unknown feature", &pb.GetFeaturesRequest{EntityIds: []string{"a"}, Features: []string{"views_1h", "foo"}},
			`features[1]: unknown feature "foo"; known: views_1h, purchases_24h, spend_24h, last_items`},
		{"duplicate feature", &pb.GetFeaturesRequest{EntityIds: []string{"a"}, Features: []string{"views_1h", "spend_24h", "views_1h"}},
			`features[2]: duplicate feature "views_1h" (also features[0])`},
		{"bad as_of", &pb.GetFeaturesRequest{EntityIds: []string{"a"}, AsOf: &timestamppb.Timestamp{Nanos: -1}}, "as_of: "},
		// The longest shop window is 24h; a day more is retained.
		{"as_of far in the future", &pb.GetFeaturesRequest{EntityIds: []string{"a"}, AsOf: timestamppb.New(testNow.Add(time.Hour + time.Millisecond))},
			"as_of 2025-11-27T05:00:00.001Z: more than 1h0m0s after the server's clock"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.client.GetFeatures(context.Background(), tt.req)
			st := status.Convert(err)
			if st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), tt.want) {
				t.Fatalf("err = %v, want InvalidArgument %q", err, tt.want)
			}
		})
	}
}

// TestGetFeaturesBeforeHorizon: an as_of before an entity's retained
// horizon (the partition watermark its state was pruned at) is refused
// naming the entity, since its tiles for such a read may be gone; at the
// horizon and without as_of the read is served.
func TestGetFeaturesBeforeHorizon(t *testing.T) {
	e := start(t, Config{})
	horizon := t0 + 30*minute
	e.write(t,
		sinks.Record{Entity: "u1", Partition: 3, Version: 100, Generation: "g", State: state(t, e.top, u1Events...), HorizonMs: horizon},
		sinks.Record{Entity: "u2", Partition: 1, Version: 7, Generation: "g", State: state(t, e.top, testEvent{-180, "view", "x1", 0}), HorizonMs: math.MinInt64},
	)
	ids := []string{"u2", "ghost", "u1"}
	_, err := e.client.GetFeatures(context.Background(), &pb.GetFeaturesRequest{EntityIds: ids, AsOf: ts(horizon - 1)})
	want := `as_of 2025-11-26T04:29:59.999Z is before the retained horizon of entity "u1" (2025-11-26T04:30:00Z)`
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), want) {
		t.Fatalf("err = %v, want InvalidArgument %q", err, want)
	}
	for _, req := range []*pb.GetFeaturesRequest{{EntityIds: ids, AsOf: ts(horizon)}, {EntityIds: ids}, {EntityIds: []string{"u2"}, AsOf: ts(t0 - 300*minute)}} {
		if _, err := e.client.GetFeatures(context.Background(), req); err != nil {
			t.Errorf("%v: %v", req, err)
		}
	}
}

func TestListFeatures(t *testing.T) {
	e := start(t, Config{})
	resp, err := e.client.ListFeatures(context.Background(), &pb.ListFeaturesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	checkResponse(t, resp, &pb.ListFeaturesResponse{App: "shop", Features: []*pb.FeatureInfo{
		{Name: "views_1h", Aggregation: "count", Window: "1h0m0s", Tile: "5m0s", Where: `type == "view"`, ValueType: "int64", Description: "Items viewed in the last hour."},
		{Name: "purchases_24h", Aggregation: "count", Window: "24h0m0s", Tile: "2h0m0s", Where: `type == "purchase"`, ValueType: "int64", Description: "Purchases in the last 24 hours."},
		{Name: "spend_24h", Aggregation: "sum", Window: "24h0m0s", Tile: "2h0m0s", Field: "price", Where: `type == "purchase"`, ValueType: "double", Description: "Money spent in the last 24 hours."},
		{Name: "last_items", Aggregation: "last_k", Field: "item_id", ValueType: "string_list", K: 10, Description: "The last 10 items the user interacted with, newest first."},
	}})
}

func waitHealth(t *testing.T, e *env, service string, want healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	hc := healthpb.NewHealthClient(e.conn)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: service})
		if err == nil && resp.GetStatus() == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("health %q: %v, %v; want %v", service, resp.GetStatus(), err, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRedisDown: without Redis a call fails Unavailable (never empty values
// as PRESENT) and health turns NOT_SERVING, then SERVING again when a
// redis-server is back on the same port.
func TestRedisDown(t *testing.T) {
	e := start(t, Config{})
	e.write(t, sinks.Record{Entity: "u1", Version: 1, State: state(t, e.top, u1Events...)})
	for _, svc := range []string{"", "featurestream.v1.FeatureService"} {
		waitHealth(t, e, svc, healthpb.HealthCheckResponse_SERVING)
	}
	if err := e.redis.Stop(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := e.client.GetFeatures(ctx, &pb.GetFeaturesRequest{EntityIds: []string{"u1"}})
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "read features") {
		t.Fatalf("with redis stopped: err = %v, want Unavailable", err)
	}
	for _, svc := range []string{"", "featurestream.v1.FeatureService"} {
		waitHealth(t, e, svc, healthpb.HealthCheckResponse_NOT_SERVING)
	}
}

func TestCorruptEntityIsDataLoss(t *testing.T) {
	e := start(t, Config{})
	if err := setRaw(e, "bad", 1, t0, "views_1h", "\x01\x05"); err != nil {
		t.Fatal(err)
	}
	_, err := e.client.GetFeatures(context.Background(), &pb.GetFeaturesRequest{EntityIds: []string{"ok", "bad"}})
	if st := status.Convert(err); st.Code() != codes.DataLoss || !strings.Contains(st.Message(), `entity "bad": feature views_1h`) {
		t.Fatalf("err = %v, want DataLoss naming entity and feature", err)
	}
}

// TestContextErrors calls the handler directly: over the wire the client
// sees its own deadline first.
func TestContextErrors(t *testing.T) {
	e := start(t, Config{})
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()
	for _, tt := range []struct {
		ctx  context.Context
		want codes.Code
	}{{canceled, codes.Canceled}, {expired, codes.DeadlineExceeded}} {
		_, err := e.srv.GetFeatures(tt.ctx, &pb.GetFeaturesRequest{EntityIds: []string{"u1"}})
		if status.Code(err) != tt.want {
			t.Errorf("err = %v, want %v", err, tt.want)
		}
	}
}

func TestReflectionListsService(t *testing.T) {
	e := start(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := reflectionpb.NewServerReflectionClient(e.conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	_ = stream.CloseSend()
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	for _, want := range []string{"featurestream.v1.FeatureService", "grpc.health.v1.Health"} {
		found := false
		for _, n := range names {
			found = found || n == want
		}
		if !found {
			t.Errorf("reflection lists %v, missing %s", names, want)
		}
	}
}

func TestGRPCMetrics(t *testing.T) {
	e := start(t, Config{})
	if _, err := e.client.GetFeatures(context.Background(), &pb.GetFeaturesRequest{EntityIds: []string{"x"}}); err != nil {
		t.Fatal(err)
	}
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var histCount uint64
	var notFound float64
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			switch {
			case mf.GetName() == "grpc_server_handling_seconds" && labels["grpc_method"] == "GetFeatures":
				histCount = m.GetHistogram().GetSampleCount()
			case mf.GetName() == "featurestream_serving_entities_total" && labels["result"] == "not_found":
				notFound = m.GetCounter().GetValue()
			}
		}
	}
	if histCount != 1 || notFound != 1 {
		t.Errorf("grpc_server_handling_seconds{GetFeatures} count %d, entities_total{not_found} %v; want 1, 1", histCount, notFound)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []string
	}{
		{"zero is valid", Config{}, nil},
		{"explicit", Config{Addr: ":0", MaxEntities: 5, MaxFeatures: 2, HealthInterval: time.Second}, nil},
		{"bad addr", Config{Addr: "localhost"}, []string{`addr "localhost": want host:port`}},
		{"every problem", Config{Addr: "h:70000", MaxEntities: -1, MaxFeatures: -2, ShutdownTimeout: -time.Second},
			[]string{`addr "h:70000": port`, "max_entities -1", "max_features -2", "shutdown_timeout -1s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("err = %v, want ErrInvalidConfig", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q lacks %q", err, w)
				}
			}
		})
	}
}

func TestRunListensAndStops(t *testing.T) {
	top := testshop.Topology(t)
	rs := redisserver.StartForTest(t)
	rdb, err := sinks.NewClient(sinks.Options{Addrs: []string{rs.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	store, err := sinks.NewStore(rdb, top, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A taken port is an error from Run, not a hang.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	srv, err := New(Config{Addr: busy.Addr().String()}, top, store, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "listen on") {
		t.Fatalf("Run on a busy port: %v", err)
	}

	srv, err = New(Config{Addr: "127.0.0.1:0"}, top, store, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func TestMsParts(t *testing.T) {
	for _, tt := range []struct {
		ms    int64
		sec   int64
		nanos int32
	}{{0, 0, 0}, {1, 0, 1e6}, {1999, 1, 999e6}, {-1, -1, 999e6}, {-1000, -1, 0}, {-1001, -2, 999e6}} {
		sec, nanos := msParts(tt.ms)
		if sec != tt.sec || nanos != tt.nanos {
			t.Errorf("msParts(%d) = %d, %d; want %d, %d", tt.ms, sec, nanos, tt.sec, tt.nanos)
		}
		if got := msTimestamp(tt.ms).AsTime(); !got.Equal(time.UnixMilli(tt.ms)) {
			t.Errorf("msTimestamp(%d) = %v", tt.ms, got)
		}
	}
}
