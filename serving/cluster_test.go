package serving

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/featurestream/featurestream/internal/testshop"
	pb "github.com/featurestream/featurestream/proto/featurestream/v1"
	"github.com/featurestream/featurestream/sinks"
	"github.com/featurestream/featurestream/sinks/redisserver"
)

// startCluster starts three redis-servers in cluster mode, joined into one
// cluster of masters, and returns their addresses.
func startCluster(t *testing.T) []string {
	t.Helper()
	dir := t.TempDir()
	addrs := make([]string, 3)
	for i := range addrs {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		busPort := l.Addr().(*net.TCPAddr).Port
		l.Close()
		// The default bus port (port + 10000) may be past 65535.
		addrs[i] = redisserver.StartForTest(t,
			"--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(dir, fmt.Sprintf("nodes-%d.conf", i)),
			"--cluster-port", strconv.Itoa(busPort),
		).Addr()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := append([]string{"--cluster", "create"}, addrs...)
	if out, err := exec.CommandContext(ctx, "redis-cli", append(args, "--cluster-replicas", "0", "--cluster-yes")...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, a := range addrs {
		c := redis.NewClient(&redis.Options{Addr: a})
		for deadline := time.Now().Add(30 * time.Second); ; {
			if info, err := c.ClusterInfo(ctx).Result(); err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				c.Close()
				t.Fatalf("cluster node %s not ok", a)
			}
			time.Sleep(50 * time.Millisecond)
		}
		c.Close()
	}
	return addrs
}

// TestRedisCluster serves from a 3-node Redis Cluster: entities on every
// node come back in request order, and restoring marks are seen.
func TestRedisCluster(t *testing.T) {
	addrs := startCluster(t)
	top := testshop.Topology(t)
	rdb, err := sinks.NewClient(sinks.Options{Addrs: addrs[:1], Cluster: true})
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	store, err := sinks.NewStore(rdb, top, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const n = 60
	ids := make([]string, n)
	recs := make([]sinks.Record, n)
	for i := range recs {
		ids[i] = fmt.Sprintf("user-%02d", i)
		evs := make([]testEvent, 1+i%5)
		for j := range evs {
			evs[j] = testEvent{int64(j), "view", fmt.Sprintf("i%d", j), 0}
		}
		recs[i] = sinks.Record{Entity: ids[i], Partition: int32(i % 4), Version: 1, State: state(t, top, evs...)}
	}
	if err := store.Write(ctx, recs); err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{HealthInterval: 20 * time.Millisecond, RestoringInterval: 20 * time.Millisecond}, top, store, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv.now = func() time.Time { return testNow }
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sctx, ln) }()
	defer func() {
		stop()
		if err := <-served; err != nil {
			t.Error(err)
		}
	}()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := pb.NewFeatureServiceClient(conn)

	if err := store.SetPartitionRestoring(ctx, 2, true); err != nil {
		t.Fatal(err)
	}
	req := &pb.GetFeaturesRequest{EntityIds: append(ids, "nobody"), Features: []string{"views_1h"}, AsOf: ts(t0 + 10*minute)}
	for deadline := time.Now().Add(10 * time.Second); ; {
		resp, err := client.GetFeatures(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		ok := true
		for i, r := range resp.GetResults() {
			v := r.GetValues()[0]
			if i == n {
				ok = ok && r.GetEntityId() == "nobody" && v.GetStatus() == pb.FeatureValue_NOT_FOUND
				continue
			}
			want := pb.FeatureValue_PRESENT
			if i%4 == 2 {
				want = pb.FeatureValue_STALE
			}
			if r.GetEntityId() != ids[i] || v.GetInt64Value() != int64(1+i%5) {
				t.Fatalf("results[%d] = %s %v, want %s with %d views", i, r.GetEntityId(), v, ids[i], 1+i%5)
			}
			ok = ok && v.GetStatus() == want
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("statuses never showed partition 2 restoring: %v", resp)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
