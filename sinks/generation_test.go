package sinks_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/featurestream/featurestream/internal/testshop"
	"github.com/featurestream/featurestream/sinks"
	"github.com/featurestream/featurestream/sinks/redisserver"
)

// TestStateGenerations: each state generation has its own entity keys and
// restoring marks; a store reads and writes the generation it is set to;
// the published generation only moves forward; deleting a generation
// removes its keys, on every master of a cluster, and nothing else.
func TestStateGenerations(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts func(t *testing.T) sinks.Options
	}{
		{"single", func(t *testing.T) sinks.Options {
			return sinks.Options{Addrs: []string{redisserver.StartForTest(t).Addr()}}
		}},
		{"cluster", func(t *testing.T) sinks.Options {
			return sinks.Options{Addrs: startCluster(t, 3)[:1], Cluster: true}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.opts(t)
			top := testshop.Topology(t)
			old, client, _ := newStore(t, top, o)
			next, _, _ := newStore(t, top, o)
			next.SetStateGeneration(1)
			ctx := context.Background()
			if next.StateGeneration() != 1 || old.StateGeneration() != 0 {
				t.Fatalf("generations %d and %d, want 0 and 1", old.StateGeneration(), next.StateGeneration())
			}

			const n = 60
			ids := make([]string, n)
			var oldRecs, newRecs []sinks.Record
			for i := range ids {
				ids[i] = fmt.Sprintf("user-%02d", i)
				oldRecs = append(oldRecs, sinks.Record{Entity: ids[i], Version: 5, Generation: "a", State: shopState(t, top, ids[i], t0, 1)})
				newRecs = append(newRecs, sinks.Record{Entity: ids[i], Version: 1, Generation: "b", State: shopState(t, top, ids[i], t0, 3)})
			}
			if err := old.Write(ctx, oldRecs); err != nil {
				t.Fatal(err)
			}
			// A lower version in another generation's keys does not touch
			// generation 0's.
			if err := next.Write(ctx, newRecs[:n/2]); err != nil {
				t.Fatal(err)
			}
			if err := next.SetPartitionRestoring(ctx, 4, true); err != nil {
				t.Fatal(err)
			}
			if err := old.SetPartitionRestoring(ctx, 2, true); err != nil {
				t.Fatal(err)
			}
			readGen := func(s *sinks.Store, wantGen string, wantFound int) {
				t.Helper()
				entries, err := s.Read(ctx, ids, allFeatures(top), nil)
				if err != nil {
					t.Fatal(err)
				}
				found := 0
				for _, e := range entries {
					if e.Found {
						found++
						if e.Generation != wantGen {
							t.Fatalf("generation %q, want %q", e.Generation, wantGen)
						}
					}
				}
				if found != wantFound {
					t.Fatalf("found %d entities, want %d", found, wantFound)
				}
			}
			readGen(old, "a", n)
			readGen(next, "b", n/2)
			for s, want := range map[*sinks.Store]int32{old: 2, next: 4} {
				parts, err := s.RestoringPartitions(ctx)
				if err != nil || len(parts) != 1 || parts[0] != want {
					t.Fatalf("generation %d restoring %v (%v), want [%d]", s.StateGeneration(), parts, err, want)
				}
			}

			// Publishing moves forward only.
			if g, err := old.ReadStateGeneration(ctx); err != nil || g != 0 {
				t.Fatalf("nothing published: %d %v, want 0", g, err)
			}
			for _, step := range []struct{ publish, want int }{{1, 1}, {3, 3}, {2, 3}} {
				if g, err := next.PublishStateGeneration(ctx, step.publish); err != nil || g != step.want {
					t.Fatalf("publish %d: %d %v, want %d", step.publish, g, err, step.want)
				}
			}
			if g, err := old.ReadStateGeneration(ctx); err != nil || g != 3 {
				t.Fatalf("published %d %v, want 3", g, err)
			}

			// A reader switched to generation 1 sees only generation 1.
			old.SetStateGeneration(1)
			readGen(old, "b", n/2)
			old.SetStateGeneration(0)

			if _, err := old.DeleteStateGeneration(ctx, 0); err == nil {
				t.Fatal("a store deleted its own generation")
			}
			deleted, err := next.DeleteStateGeneration(ctx, 0)
			if err != nil {
				t.Fatal(err)
			}
			if deleted != n+1 { // the entities and the restoring marks
				t.Fatalf("deleted %d keys, want %d", deleted, n+1)
			}
			readGen(old, "", 0)
			readGen(next, "b", n/2)
			if k := countKeys(t, client, sinks.EntityKeyFor(top.Spec.App, 0, "*")); k != 0 {
				t.Fatalf("%d generation 0 keys left", k)
			}
		})
	}
}

// countKeys counts the keys matching pattern on every master.
func countKeys(t *testing.T, client redis.UniversalClient, pattern string) int {
	t.Helper()
	ctx := context.Background()
	count := func(ctx context.Context, c *redis.Client) (int, error) {
		keys, err := c.Keys(ctx, pattern).Result()
		return len(keys), err
	}
	switch c := client.(type) {
	case *redis.ClusterClient:
		var total atomic.Int64 // ForEachMaster runs nodes concurrently
		err := c.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			n, err := count(ctx, node)
			total.Add(int64(n))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return int(total.Load())
	default:
		n, err := count(ctx, c.(*redis.Client))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
}
