package sinks_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/featurestream/featurestream/internal/testshop"
	"github.com/featurestream/featurestream/sinks"
)

// The benchmarks share one layout of data: n entities, each with a day of
// shop events (60 events, one a minute), as the processor would leave them.
func benchEntities(b *testing.B, s *sinks.Store, n int) []string {
	b.Helper()
	top := testshop.Topology(b)
	ids := make([]string, n)
	recs := make([]sinks.Record, n)
	for i := range n {
		ids[i] = fmt.Sprintf("user-%05d", i)
		recs[i] = sinks.Record{Entity: ids[i], Version: 1, Generation: "g", State: shopState(b, top, ids[i], t0, 60)}
	}
	if err := s.Write(context.Background(), recs); err != nil {
		b.Fatal(err)
	}
	return ids
}

func BenchmarkStoreRead(b *testing.B) {
	top := testshop.Topology(b)
	s, _, _, _ := startStore(b, top)
	features := allFeatures(top)
	for _, n := range []int{1, 100} {
		b.Run(fmt.Sprintf("entities=%d", n), func(b *testing.B) {
			ids := benchEntities(b, s, n)
			ctx := context.Background()
			var dst []sinks.Entry
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if dst, err = s.Read(ctx, ids, features, dst); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRawGet is the floor BenchmarkStoreRead is compared with:
// go-redis fetching the same values in one pipeline, with no decoding.
func BenchmarkRawGet(b *testing.B) {
	top := testshop.Topology(b)
	s, client, _, _ := startStore(b, top)
	for _, n := range []int{1, 100} {
		b.Run(fmt.Sprintf("entities=%d", n), func(b *testing.B) {
			ids := benchEntities(b, s, n)
			keys := make([]string, n)
			for i, id := range ids {
				keys[i] = s.Key(id)
			}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				cmds, err := client.Pipelined(ctx, func(p redis.Pipeliner) error {
					for _, k := range keys {
						p.Get(ctx, k)
					}
					return nil
				})
				if err != nil || len(cmds[0].(*redis.StringCmd).Val()) == 0 {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkStoreWrite(b *testing.B) {
	top := testshop.Topology(b)
	s, _, _, _ := startStore(b, top)
	ctx := context.Background()
	// 4000 is about what one commit pushes at bench e2e's live rate. A
	// processor's records carry their changelog encoding (from=encoded).
	for _, n := range []int{100, 4000} {
		for _, from := range []string{"state", "encoded"} {
			recs := make([]sinks.Record, n)
			for i := range recs {
				id := fmt.Sprintf("user-%05d", i)
				recs[i] = sinks.Record{Entity: id, Generation: "g", State: shopState(b, top, id, t0, 60)}
				if from == "encoded" {
					recs[i].Encoded = top.AppendState(nil, recs[i].State)
				}
			}
			b.Run(fmt.Sprintf("records=%d/from=%s", n, from), func(b *testing.B) {
				b.ReportAllocs()
				var v uint64
				for b.Loop() {
					v++ // every write is newer, so each replaces its hash
					for i := range recs {
						recs[i].Version = v
					}
					if err := s.Write(ctx, recs); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
