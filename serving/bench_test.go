package serving

import (
	"context"
	"fmt"
	"testing"

	pb "github.com/featurestream/featurestream/proto/featurestream/v1"
	"github.com/featurestream/featurestream/sinks"
)

// benchEnv starts a server holding n entities with an hour of shop events
// each (views, every third a purchase).
func benchEnv(b *testing.B, n int) (*env, []string) {
	e := start(b, Config{})
	ids := make([]string, n)
	recs := make([]sinks.Record, n)
	for i := range n {
		ids[i] = fmt.Sprintf("user-%05d", i)
		evs := make([]testEvent, 60)
		for j := range evs {
			evs[j] = testEvent{int64(j), "view", fmt.Sprintf("i%d", j%17), 0}
			if j%3 == 2 {
				evs[j] = testEvent{int64(j), "purchase", fmt.Sprintf("i%d", j%17), float64(j) + 0.5}
			}
		}
		recs[i] = sinks.Record{Entity: ids[i], Version: 1, State: state(b, e.top, evs...)}
	}
	e.write(b, recs...)
	return e, ids
}

// BenchmarkHandler measures GetFeatures without gRPC: the Redis read,
// decoding, window evaluation and response building.
func BenchmarkHandler(b *testing.B) {
	e, ids := benchEnv(b, 100)
	ctx := context.Background()
	for _, k := range []int{1, len(ids)} {
		b.Run(fmt.Sprintf("entities=%d", k), func(b *testing.B) {
			req := &pb.GetFeaturesRequest{EntityIds: ids[:k], AsOf: ts(t0 + 60*minute)}
			b.ReportAllocs()
			for b.Loop() {
				resp, err := e.srv.GetFeatures(ctx, req)
				if err != nil {
					b.Fatal(err)
				}
				if len(resp.GetResults()) != k {
					b.Fatalf("%d results", len(resp.GetResults()))
				}
			}
		})
	}
}

// BenchmarkRespond measures evaluating and building the response of
// entities already read: the part of a call that is this package's own.
func BenchmarkRespond(b *testing.B) {
	e, ids := benchEnv(b, 100)
	read := e.srv.top.Needs(e.srv.allFeatures)
	entries, err := e.store.Read(context.Background(), ids, read, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if resp := e.srv.respond(entries, ids, e.srv.allFeatures, read, t0+60*minute, t0+60*minute, false); len(resp.GetResults()) != len(ids) {
			b.Fatal("short response")
		}
	}
}

// BenchmarkGetFeatures measures a whole call over a loopback gRPC connection
// against a real redis-server: entities with a day of shop events each, all
// features, evaluated as of the last event.
func BenchmarkGetFeatures(b *testing.B) {
	e := start(b, Config{})
	const n = 100
	ids := make([]string, n)
	recs := make([]sinks.Record, n)
	for i := range n {
		ids[i] = fmt.Sprintf("user-%05d", i)
		evs := make([]testEvent, 60)
		for j := range evs {
			evs[j] = testEvent{int64(j), "view", fmt.Sprintf("i%d", j%17), 0}
			if j%3 == 2 {
				evs[j] = testEvent{int64(j), "purchase", fmt.Sprintf("i%d", j%17), float64(j) + 0.5}
			}
		}
		recs[i] = sinks.Record{Entity: ids[i], Version: 1, State: state(b, e.top, evs...)}
	}
	e.write(b, recs...)
	for _, k := range []int{1, n} {
		b.Run(fmt.Sprintf("entities=%d", k), func(b *testing.B) {
			benchCall(b, e, &pb.GetFeaturesRequest{EntityIds: ids[:k], AsOf: ts(t0 + 60*minute)})
		})
	}
	// What package client asks for.
	b.Run(fmt.Sprintf("entities=%d/compact", n), func(b *testing.B) {
		benchCall(b, e, &pb.GetFeaturesRequest{EntityIds: ids, AsOf: ts(t0 + 60*minute), Compact: true})
	})
}

func benchCall(b *testing.B, e *env, req *pb.GetFeaturesRequest) {
	ctx := context.Background()
	k := len(req.GetEntityIds())
	b.ReportAllocs()
	for b.Loop() {
		resp, err := e.client.GetFeatures(ctx, req)
		if err != nil {
			b.Fatal(err)
		}
		if len(resp.GetResults()) != k {
			b.Fatalf("%d results", len(resp.GetResults()))
		}
	}
}
