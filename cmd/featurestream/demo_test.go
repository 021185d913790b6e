package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/featurestream/featurestream/bench"
)

// TestDemo runs `featurestream demo` against a broker whose input topic is
// created only after the demo started (as compose's kafka-init does), and
// reads back shop events the shop spec can process.
func TestDemo(t *testing.T) {
	kafka, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer kafka.Close()
	brokers := strings.Join(kafka.ListenAddrs(), ",")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"demo", "--brokers", brokers, "--spec", shopSpec, "--rate", "200", "--seed", "7", "--log-level", "error"})
	}()
	stopped := false
	stop := func() int {
		t.Helper()
		if stopped {
			return 0
		}
		stopped = true
		cancel()
		select {
		case code := <-done:
			return code
		case <-time.After(20 * time.Second):
			t.Fatal("demo did not stop within 20s of cancel")
			return -1
		}
	}
	defer stop()

	time.Sleep(500 * time.Millisecond)
	cl, err := kgo.NewClient(kgo.SeedBrokers(kafka.ListenAddrs()...), kgo.ConsumeTopics("events"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 3, 1, nil, "events"); err != nil {
		t.Fatal(err)
	}

	var got []bench.ShopEvent
	deadline := time.Now().Add(20 * time.Second)
	for len(got) < 50 && time.Now().Before(deadline) {
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		fetches := cl.PollFetches(pctx)
		pcancel()
		fetches.EachRecord(func(r *kgo.Record) {
			var ev bench.ShopEvent
			if err := json.Unmarshal(r.Value, &ev); err != nil {
				t.Errorf("record %s: %v", r.Value, err)
				return
			}
			if string(r.Key) != ev.UserID || ev.UserID == "" || ev.ItemID == "" {
				t.Errorf("record key %q value %s: want keyed by a user id with an item", r.Key, r.Value)
			}
			if age := time.Since(time.UnixMilli(ev.TS)); age < -time.Minute || age > time.Minute {
				t.Errorf("event time %d is %s from now: want live traffic", ev.TS, age)
			}
			got = append(got, ev)
		})
	}
	if len(got) < 50 {
		t.Fatalf("read %d demo events in 20s at 200/s, want at least 50", len(got))
	}
	if code := stop(); code != 0 {
		t.Errorf("demo exit code after cancel = %d, want 0", code)
	}
}

// TestDemoRefuses checks the demo fails fast on what it cannot do.
func TestDemoRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		cmd  demoCmd
	}{
		{"avro spec", demoCmd{specFlag: specFlag{Spec: "../../examples/shop/spec-avro.yaml"}, Rate: 50}},
		{"zero rate", demoCmd{specFlag: specFlag{Spec: shopSpec}, Rate: 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cmd.Brokers = []string{"127.0.0.1:1"}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := tc.cmd.Run(ctx, discardLogger()); err == nil || ctx.Err() != nil {
				t.Fatalf("Run = %v (ctx %v), want an immediate error", err, ctx.Err())
			}
		})
	}
}
