package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/featurestream/featurestream/processor"
	"github.com/featurestream/featurestream/topology"
)

// TestSpecChange: adding a feature is accepted; changing what an existing
// feature's state means (its window) is refused at start naming the
// feature; --replay then rebuilds every feature from the whole input.
func TestSpecChange(t *testing.T) {
	shop, err := os.ReadFile(shopSpec)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeSpec := func(name, src string) *topology.Topology {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		top, err := loadTopology(path)
		if err != nil {
			t.Fatal(err)
		}
		return top
	}
	base := writeSpec("a.yaml", string(shop))
	added := writeSpec("b.yaml", string(shop)+"  - name: clicks_1h\n    where: type == \"click\"\n    agg: count\n    window: 1h\n")
	changedSrc := strings.Replace(string(shop)+"  - name: clicks_1h\n    where: type == \"click\"\n    agg: count\n    window: 1h\n", "window: 1h        # sliding", "window: 2h        # sliding", 1)
	if changedSrc == string(shop) {
		t.Fatal("could not edit the views_1h window")
	}
	changed := writeSpec("c.yaml", changedSrc)

	c := newClusterFor(t, base, 2)
	kafka := c.kafka
	recs, model, _ := chaosEvents(base.Spec.Source.Topic, 3000, 50, 1_000_000)
	prod, err := kgo.NewClient(kgo.SeedBrokers(kafka.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	if err := prod.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	run := func(top *topology.Topology, replay bool, untilCaughtUp bool) error {
		store, client, err := openStore(t.Context(), c.redis.Addr(), false, top, discardLogger(), newRegistry())
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan error, 1)
		go func() {
			done <- runProcessor(ctx, processorParams{
				top: top, brokers: kafka.ListenAddrs(), stateDir: filepath.Join(c.dir, "state"), sink: store, reg: newRegistry(), logger: discardLogger(),
				cfg: processor.Config{CommitInterval: 50 * time.Millisecond, Replay: replay}, adminAddr: "127.0.0.1:0",
			})
		}()
		if !untilCaughtUp {
			select {
			case err := <-done:
				return err
			case <-time.After(20 * time.Second):
				t.Fatal("processor neither failed nor stopped")
			}
		}
		c.top = top
		c.waitCaughtUp(time.Minute)
		time.Sleep(300 * time.Millisecond)
		cancel()
		return <-done
	}

	if err := run(base, false, true); err != nil {
		t.Fatal(err)
	}
	c.checkValues(model, 50)
	if err := run(added, false, true); err != nil {
		t.Fatalf("adding a feature was refused: %v", err)
	}
	err = run(changed, false, false)
	if !errors.Is(err, processor.ErrIncompatibleSpec) || !strings.Contains(err.Error(), "views_1h") || strings.Contains(err.Error(), "clicks_1h") {
		t.Fatalf("changing views_1h's window: err = %v, want ErrIncompatibleSpec naming views_1h only", err)
	}
	if err := run(changed, true, true); err != nil {
		t.Fatalf("replay: %v", err)
	}
	// After the replay every feature, the changed one included, reflects
	// the whole input: views over 2 h now.
	c.top = changed
	c.checkValuesWith(model, 50, func(e modelEvent, asOf int64) bool {
		return e.Type == "view" && inWindow(e.TS, asOf, 2*time.Hour, 10*time.Minute)
	})
}
