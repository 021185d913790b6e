package client_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/featurestream/featurestream/client"
	"github.com/featurestream/featurestream/serving"
	"github.com/featurestream/featurestream/sinks"
	"github.com/featurestream/featurestream/sinks/redisserver"
	"github.com/featurestream/featurestream/topology"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startServer runs a real feature server on loopback against a fresh
// redis-server holding u1 (two views, one purchase of 12.5), and returns its
// address.
func startServer(t *testing.T, cfg serving.Config) (addr string, lastEvent time.Time) {
	t.Helper()
	return startSpec(t, cfg, "../examples/shop/spec.yaml", []map[string]any{
		{"type": "view", "item_id": "i1"},
		{"type": "purchase", "item_id": "i1", "price": 12.5},
		{"type": "view", "item_id": "i2"},
	})
}

// startSpec is startServer for another spec and u1's events, a minute
// apart, the last a minute ago.
func startSpec(t *testing.T, cfg serving.Config, specFile string, events []map[string]any) (addr string, lastEvent time.Time) {
	t.Helper()
	spec, err := topology.LoadSpec(specFile)
	if err != nil {
		t.Fatal(err)
	}
	top, err := topology.Compile(spec)
	if err != nil {
		t.Fatal(err)
	}
	rs := redisserver.StartForTest(t)
	rdb, err := sinks.NewClient(sinks.Options{Addrs: []string{rs.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	store, err := sinks.NewStore(rdb, top, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Truncate(time.Millisecond)
	st := top.NewEntityState()
	for i, ev := range events {
		e := topology.Event{Key: "u1", TimeMs: now.Add(time.Duration(i-len(events)) * time.Minute).UnixMilli(), Fields: ev}
		if err := top.Apply(st, &e, e.TimeMs); err != nil {
			t.Fatal(err)
		}
	}
	if err := store.Write(context.Background(), []sinks.Record{{Entity: "u1", Version: 1, State: st}}); err != nil {
		t.Fatal(err)
	}
	srv, err := serving.New(cfg, top, store, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return ln.Addr().String(), now.Add(-time.Minute)
}

func TestGetFeatures(t *testing.T) {
	addr, lastEvent := startServer(t, serving.Config{AuthTokens: []string{"tok"}})
	c, err := client.New(addr, client.Insecure(), client.Token("tok"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()

	fs, err := c.GetFeatures(ctx, client.Request{EntityIDs: []string{"u1", "ghost"}})
	if err != nil {
		t.Fatal(err)
	}
	if fs.Len() != 2 || !reflect.DeepEqual(fs.Names(), []string{"views_1h", "purchases_24h", "spend_24h", "last_items"}) {
		t.Fatalf("%d entities, names %v", fs.Len(), fs.Names())
	}
	u1 := fs.Entity(0)
	if u1.ID() != "u1" || !u1.Found() {
		t.Fatalf("entity 0: %q found %v", u1.ID(), u1.Found())
	}
	if got, ok := u1.LastEventTime(); !ok || !got.Equal(lastEvent) {
		t.Errorf("last event %v %v, want %v", got, ok, lastEvent)
	}
	if got := u1.Int64("views_1h"); got != 2 {
		t.Errorf("views_1h = %d, want 2", got)
	}
	if got := u1.Int64("purchases_24h"); got != 1 {
		t.Errorf("purchases_24h = %d, want 1", got)
	}
	if got := u1.Float64("spend_24h"); got != 12.5 {
		t.Errorf("spend_24h = %v, want 12.5", got)
	}
	if got := u1.Strings("last_items"); !reflect.DeepEqual(got, []string{"i2", "i1", "i1"}) {
		t.Errorf("last_items = %v", got)
	}
	for _, n := range fs.Names() {
		if st := u1.Status(n); st != client.Present {
			t.Errorf("u1 %s: %v, want PRESENT", n, st)
		}
	}
	j := fs.Index("views_1h")
	if v := u1.Value(j); v.Name() != "views_1h" || v.Int64() != 2 {
		t.Errorf("Value(%d) = %s %d", j, v.Name(), v.Int64())
	}
	if start, end, ok := u1.ByName("views_1h").Window(); !ok || !end.Equal(fs.AsOf()) || end.Sub(start) > time.Hour {
		t.Errorf("views_1h window %v..%v %v, as_of %v", start, end, ok, fs.AsOf())
	}
	if _, _, ok := u1.ByName("last_items").Window(); ok {
		t.Error("lifetime feature has a window")
	}
	ghost := fs.Entity(1)
	if ghost.Found() || ghost.Status("views_1h") != client.NotFound || ghost.Int64("views_1h") != 0 || ghost.Status("views_1h").HasValue() {
		t.Errorf("ghost: found %v, views_1h %v %d", ghost.Found(), ghost.Status("views_1h"), ghost.Int64("views_1h"))
	}
	if got := u1.ByName("spend_24h").Any(); got != 12.5 {
		t.Errorf("spend_24h Any = %#v", got)
	}
	if got := ghost.ByName("spend_24h").Any(); got != nil {
		t.Errorf("ghost spend_24h Any = %#v, want nil", got)
	}
	if st := u1.Status("no_such_feature"); st != client.Missing {
		t.Errorf("unrequested feature: %v, want MISSING", st)
	}

	// A subset, in the asked order, as of an hour later: the views decay.
	later := fs.AsOf().Add(time.Hour)
	sub, err := c.GetFeatures(ctx, client.Request{EntityIDs: []string{"u1"}, Features: []string{"spend_24h", "views_1h"}, AsOf: later})
	if err != nil {
		t.Fatal(err)
	}
	if !sub.AsOf().Equal(later) || !reflect.DeepEqual(sub.Names(), []string{"spend_24h", "views_1h"}) ||
		sub.Entity(0).Int64("views_1h") != 0 || sub.Entity(0).Float64("spend_24h") != 12.5 {
		t.Errorf("subset as of +1h: as_of %v names %v views %d spend %v", sub.AsOf(), sub.Names(), sub.Entity(0).Int64("views_1h"), sub.Entity(0).Float64("spend_24h"))
	}

	_, err = c.GetFeatures(ctx, client.Request{EntityIDs: []string{"u1"}, Features: []string{"nope"}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), `unknown feature "nope"`) {
		t.Errorf("unknown feature: %v", err)
	}

	app, infos, err := c.ListFeatures(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if app != "shop" || len(infos) != 4 || infos[0].Window != time.Hour || infos[0].Tile != 5*time.Minute || infos[3].Window != 0 || infos[3].ValueType != "string_list" {
		t.Errorf("ListFeatures = %q %+v", app, infos)
	}
}

func TestTokenRefused(t *testing.T) {
	addr, _ := startServer(t, serving.Config{AuthTokens: []string{"tok"}})
	for _, opts := range [][]client.Option{
		{client.Insecure()},
		{client.Insecure(), client.Token("other")},
	} {
		c, err := client.New(addr, opts...)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.GetFeatures(context.Background(), client.Request{EntityIDs: []string{"u1"}})
		c.Close()
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("err = %v, want Unauthenticated", err)
		}
	}
}

func TestNewOptionErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts []client.Option
		want string
	}{
		{"tls and insecure", []client.Option{client.Insecure(), client.TLSFiles("", "", "")}, "both TLS and Insecure"},
		{"missing ca file", []client.Option{client.TLSFiles("/nonexistent/ca.pem", "", "")}, "ca file"},
		{"token with newline", []client.Option{client.Insecure(), client.Token("tok\n")}, "white space"},
	} {
		_, err := client.New("127.0.0.1:1", tt.opts...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.want)
		}
	}
	// Without TLS options the client insists on TLS: a plaintext server
	// does not answer it.
	addr, _ := startServer(t, serving.Config{})
	c, err := client.New(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.GetFeatures(ctx, client.Request{EntityIDs: []string{"u1"}}); status.Code(err) != codes.Unavailable || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("TLS client against plaintext server: %v, want Unavailable", err)
	}
}

func TestEveryValueType(t *testing.T) {
	var events []map[string]any
	for i, item := range []string{"a", "b", "a", "c", "a"} {
		events = append(events, map[string]any{"item_id": item, "price": float64(10 * (i + 1))})
	}
	addr, _ := startSpec(t, serving.Config{}, "../serving/testdata/every-type.yaml", events)
	c, err := client.New(addr, client.Insecure())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fs, err := c.GetFeatures(context.Background(), client.Request{EntityIDs: []string{"u1"}})
	if err != nil {
		t.Fatal(err)
	}
	u := fs.Entity(0)
	if got := u.Float64s("price_quantiles"); len(got) != 2 || got[0] > got[1] || got[1] < 30 {
		t.Errorf("price_quantiles = %v", got)
	}
	if got := u.ItemCounts("top_items"); len(got) != 2 || got[0] != (client.ItemCount{Value: "a", Count: 3}) {
		t.Errorf("top_items = %v", got)
	}
	if got, ok := u.ByName("top_items").Any().([]client.ItemCount); !ok || len(got) != 2 {
		t.Errorf("top_items Any = %#v", u.ByName("top_items").Any())
	}
	// Whether items_seen is an estimate depends on how the events fall in
	// tiles; serving's tests pin Approximate down.
	if v := u.ByName("items_seen"); v.Int64() < 2 {
		t.Errorf("items_seen = %d", v.Int64())
	}
	if u.ByName("views").Approximate() || u.Int64("views") != 5 {
		t.Errorf("views = %d approximate %v", u.Int64("views"), u.ByName("views").Approximate())
	}
}
