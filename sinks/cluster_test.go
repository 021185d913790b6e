package sinks_test

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/featurestream/featurestream/internal/testshop"
	"github.com/featurestream/featurestream/sinks"
	"github.com/featurestream/featurestream/sinks/redisserver"
)

// startCluster starts n redis-servers in cluster mode and joins them into
// one cluster of masters, returning their addresses.
func startCluster(t *testing.T, n int) []string {
	t.Helper()
	dir := t.TempDir()
	addrs := make([]string, n)
	for i := range n {
		// redis-server's default bus port is its port + 10000, which may be
		// above 65535 for an ephemeral port: choose one that is free.
		srv := redisserver.StartForTest(t,
			"--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(dir, fmt.Sprintf("nodes-%d.conf", i)),
			"--cluster-port", strconv.Itoa(freePort(t)),
			"--cluster-node-timeout", "5000",
		)
		addrs[i] = srv.Addr()
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, a := range addrs {
		c := redis.NewClient(&redis.Options{Addr: a})
		deadline := time.Now().Add(30 * time.Second)
		for {
			info, err := c.ClusterInfo(ctx).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				c.Close()
				t.Fatalf("cluster node %s not ok: %v\n%s", a, err, info)
			}
			time.Sleep(50 * time.Millisecond)
		}
		c.Close()
	}
	return addrs
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestCluster writes and reads 200 entities through a 3-master Redis
// Cluster: keys spread over the nodes, each node gets one round trip per
// Write and per Read, and values come back exactly.
func TestCluster(t *testing.T) {
	addrs := startCluster(t, 3)
	top := testshop.Topology(t)
	s, client, _ := newStore(t, top, sinks.Options{Addrs: addrs[:1], Cluster: true})
	cc := client.(*redis.ClusterClient)
	var mu sync.Mutex
	hooks := map[string]*callHook{}
	cc.OnNewNode(func(c *redis.Client) {
		h := &callHook{}
		c.AddHook(h)
		mu.Lock()
		hooks[c.Options().Addr] = h
		mu.Unlock()
	})
	ctx := context.Background()
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}

	recs := make([]sinks.Record, 200)
	ids := make([]string, len(recs))
	for i := range recs {
		ids[i] = fmt.Sprintf("user-%03d", i)
		recs[i] = sinks.Record{Entity: ids[i], Partition: int32(i % 6), Version: uint64(1000 + i), Generation: "g", State: shopState(t, top, ids[i], t0, 1+i%7)}
	}
	// The first write also loads the script on each node.
	if err := s.Write(ctx, recs[:1]); err != nil {
		t.Fatal(err)
	}
	resetAll := func() {
		mu.Lock()
		defer mu.Unlock()
		for _, h := range hooks {
			h.reset()
		}
	}
	// perNode checks that each node saw cmd in at most one pipeline and in
	// none alone, and that all n went somewhere.
	perNode := func(what, cmd string, n int) {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		total, nodes := 0, 0
		for addr, h := range hooks {
			pp, alone := h.pipelinesWith(cmd)
			if len(pp) > 1 || alone > 0 {
				t.Errorf("%s: node %s: %s in pipelines %v and alone %d; want one round trip", what, addr, cmd, pp, alone)
			}
			for _, c := range pp {
				total += c
				nodes++
			}
		}
		if total != n || nodes != 3 {
			t.Errorf("%s: %d %s over %d nodes, want %d over 3", what, total, cmd, nodes, n)
		}
	}

	resetAll()
	if err := s.Write(ctx, recs); err != nil {
		t.Fatal(err)
	}
	perNode("write", "evalsha", len(recs))

	resetAll()
	got, err := s.Read(ctx, ids, allFeatures(top), nil)
	if err != nil {
		t.Fatal(err)
	}
	perNode("read", "get", len(ids))
	for i, e := range got {
		r := recs[i]
		if !e.Found || e.Version != r.Version || e.Partition != r.Partition || e.LastEventMs != r.State.LastEventMs {
			t.Fatalf("%s: header %+v", ids[i], e)
		}
		for fi := range top.Features {
			if !reflect.DeepEqual(e.Tiles[fi], nonNil(r.State.Features[fi])) {
				t.Fatalf("%s feature %s: %+v, want %+v", ids[i], top.Features[fi].Name, e.Tiles[fi], r.State.Features[fi])
			}
		}
	}

	// Stale writes are refused on every node too.
	older := make([]sinks.Record, len(recs))
	for i, r := range recs {
		r.Version--
		r.State = top.NewEntityState()
		older[i] = r
	}
	if err := s.Write(ctx, older); err != nil {
		t.Fatal(err)
	}
	again, err := s.Read(ctx, ids, allFeatures(top), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again, got) {
		t.Error("an older write changed stored entities")
	}
}
