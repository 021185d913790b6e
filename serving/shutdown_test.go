package serving

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/featurestream/featurestream/internal/testshop"
	pb "github.com/featurestream/featurestream/proto/featurestream/v1"
	"github.com/featurestream/featurestream/sinks"
	"github.com/featurestream/featurestream/sinks/redisserver"
)

// TestShutdownDrains: when the server stops, a call already waiting on
// Redis still gets its answer, health says NOT_SERVING first, and new
// connections are refused; with a short ShutdownTimeout a call that takes
// too long is cut off instead of holding the shutdown.
func TestShutdownDrains(t *testing.T) {
	for _, tt := range []struct {
		name    string
		timeout time.Duration
		want    codes.Code
	}{
		{"drained", 10 * time.Second, codes.OK},
		{"cut off after the timeout", 50 * time.Millisecond, codes.Unavailable},
	} {
		t.Run(tt.name, func(t *testing.T) {
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
			if err := store.Write(context.Background(), []sinks.Record{{Entity: "u1", Version: 1, State: state(t, top, u1Events...)}}); err != nil {
				t.Fatal(err)
			}
			srv, err := New(Config{ShutdownTimeout: tt.timeout, HealthInterval: 20 * time.Millisecond}, top, store, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			srv.now = func() time.Time { return testNow }
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ctx, stop := context.WithCancel(context.Background())
			served := make(chan error, 1)
			go func() { served <- srv.Serve(ctx, ln) }()
			conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			client := pb.NewFeatureServiceClient(conn)
			if _, err := client.GetFeatures(context.Background(), &pb.GetFeaturesRequest{EntityIds: []string{"u1"}}); err != nil {
				t.Fatal(err)
			}

			// Redis holds every read for a second: the next call is in
			// flight when the server is told to stop.
			if err := rdb.Do(context.Background(), "client", "pause", "1000", "all").Err(); err != nil {
				t.Fatal(err)
			}
			type result struct {
				resp *pb.GetFeaturesResponse
				err  error
			}
			inflight := make(chan result, 1)
			go func() {
				resp, err := client.GetFeatures(context.Background(), &pb.GetFeaturesRequest{EntityIds: []string{"u1"}})
				inflight <- result{resp, err}
			}()
			time.Sleep(200 * time.Millisecond)
			stop()
			stopAt := time.Now()
			r := <-inflight
			t.Logf("in-flight returned %s after stop: %v", time.Since(stopAt), r.err)
			if status.Code(r.err) != tt.want {
				t.Fatalf("in-flight call: %v, want %v", r.err, tt.want)
			}
			if tt.want == codes.OK && r.resp.GetResults()[0].GetValues()[0].GetStatus() != pb.FeatureValue_PRESENT {
				t.Fatalf("in-flight call answered %v", r.resp)
			}
			select {
			case err := <-served:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("Serve did not return")
			}
			// Stopped: health no longer answers SERVING, calls fail.
			hctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			if resp, err := healthpb.NewHealthClient(conn).Check(hctx, &healthpb.HealthCheckRequest{}); err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
				t.Error("health SERVING after shutdown")
			}
		})
	}
}

// TestDeadlineWhileRedisSlow: a call's deadline holds while Redis does not
// answer; the handler gives up at the deadline, not at Redis's read
// timeout.
func TestDeadlineWhileRedisSlow(t *testing.T) {
	e := start(t, Config{})
	e.write(t, sinks.Record{Entity: "u1", Version: 1, State: state(t, e.top, u1Events...)})
	if err := e.rdb.Do(context.Background(), "client", "pause", "2000", "all").Err(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	begin := time.Now()
	_, err := e.srv.GetFeatures(ctx, &pb.GetFeaturesRequest{EntityIds: []string{"u1"}})
	took := time.Since(begin)
	if status.Code(err) != codes.DeadlineExceeded || took > time.Second {
		t.Fatalf("GetFeatures with a 200ms deadline against a paused Redis: %v after %s, want DeadlineExceeded within 1s", err, took)
	}
}
