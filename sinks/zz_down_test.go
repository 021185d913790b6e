package sinks_test

import (
	"context"
	"testing"
	"time"

	"github.com/featurestream/featurestream/sinks"
)

func TestDownTiming(t *testing.T) {
	top := shopTopology(t)
	s, _, _, srv := startStore(t, top)
	ctx := context.Background()
	_ = s.Ping(ctx)
	_ = srv.Stop()
	for i := 0; i < 3; i++ {
		st := time.Now(); err := s.Ping(ctx); t.Log("ping", time.Since(st), err)
		st = time.Now(); _, err = s.Read(ctx, []string{"u"}, []int{0}, nil); t.Log("read", time.Since(st), err)
		st = time.Now(); err = s.Write(ctx, []sinks.Record{{Entity: "u", State: top.NewEntityState()}}); t.Log("write", time.Since(st), err)
	}
}
