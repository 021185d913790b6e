package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	featurestreamv1 "github.com/featurestream/featurestream/proto/featurestream/v1"
)

// TestDevWalkthrough does what the README tells a newcomer: start dev, send
// one event with a Kafka client, read its features over gRPC within a
// second, and find /readyz and /metrics on the admin port.
func TestDevWalkthrough(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan devAddrs, 1)
	done := make(chan error, 1)
	dev := &devCmd{
		specFlag:   specFlag{Spec: shopSpec},
		KafkaAddr:  "127.0.0.1:0",
		GrpcAddr:   "127.0.0.1:0",
		AdminAddr:  "127.0.0.1:0",
		Partitions: 2,
	}
	go func() {
		done <- dev.run(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)), func(a devAddrs) { started <- a })
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("dev: %v", err)
		}
	}()
	var addrs devAddrs
	select {
	case addrs = <-started:
	case err := <-done:
		t.Fatalf("dev exited: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("dev did not start within 30s")
	}

	waitReady(t, "http://"+addrs.Admin+"/readyz")

	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs.Kafka))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	now := time.Now().UnixMilli()
	value := fmt.Sprintf(`{"user_id":"u1","ts":%d,"type":"view","item_id":"i9","category":"shoes","price":19.99}`, now)
	sent := time.Now()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "events", Key: []byte("u1"), Value: []byte(value)}).FirstErr(); err != nil {
		t.Fatal(err)
	}

	conn, err := grpc.NewClient(addrs.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := featurestreamv1.NewFeatureServiceClient(conn)
	for {
		resp, err := client.GetFeatures(ctx, &featurestreamv1.GetFeaturesRequest{EntityIds: []string{"u1"}})
		if err != nil {
			t.Fatal(err)
		}
		v := resp.Results[0].Values
		if v[0].GetInt64Value() == 1 {
			if got := v[3].GetStringListValue().GetValues(); len(got) != 1 || got[0] != "i9" {
				t.Fatalf("last_items = %v, want [i9]", got)
			}
			if got := resp.Results[0].LastEventTime.AsTime().UnixMilli(); got != now {
				t.Fatalf("last_event_time = %d, want %d", got, now)
			}
			t.Logf("visible over gRPC %s after produce", time.Since(sent).Round(time.Millisecond))
			break
		}
		if time.Since(sent) > 10*time.Second {
			t.Fatalf("event not visible after 10s: %v", resp)
		}
		time.Sleep(20 * time.Millisecond)
	}

	resp, err := http.Get("http://" + addrs.Admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, name := range []string{"featurestream_events_consumed_total 1", "featurestream_changelog_records_total", "go_goroutines",
		`featurestream_consumer_lag_records{partition="`, "featurestream_processing_delay_seconds_count 1", "featurestream_pebble_l0_files", "featurestream_transactions_total"} {
		if !strings.Contains(string(body), name) {
			t.Errorf("/metrics lacks %q", name)
		}
	}
}

func waitReady(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after 30s (last: %v)", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
