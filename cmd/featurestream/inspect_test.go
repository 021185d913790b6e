package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kong"
	"github.com/twmb/franz-go/pkg/kgo"
)

// inspectRun parses args as `featurestream inspect ARGS` and runs it.
func inspectRun(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var c cli
	parser, err := kong.New(&c, kong.Name("featurestream"), kong.DefaultEnvars("FEATURESTREAM"), kong.Exit(func(int) { t.Fatalf("inspect %v: kong exited", args) }))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parser.Parse(append([]string{"inspect"}, args...)); err != nil {
		t.Fatalf("inspect %v: %v", args, err)
	}
	var buf bytes.Buffer
	c.Inspect.out = &buf
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = c.Inspect.Run(ctx, discardLogger())
	return buf.String(), err
}

func inspectJSON(t *testing.T, args ...string) inspectReport {
	t.Helper()
	out, err := inspectRun(t, append(args, "--output", "json")...)
	if err != nil {
		t.Fatalf("inspect %v: %v", args, err)
	}
	var rep inspectReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("inspect %v: output is not JSON: %v\n%s", args, err, out)
	}
	return rep
}

// feature returns the named feature of e.
func (e inspectEntity) feature(t *testing.T, name string) inspectFeature {
	t.Helper()
	for _, f := range e.Features {
		if f.Name == name {
			return f
		}
	}
	t.Fatalf("%s: no feature %s in %+v", e.Entity, name, e.Features)
	return inspectFeature{}
}

// TestInspect runs a real processor (a subprocess, as in production) on a
// real broker and redis-server, then inspects an entity in Redis while it
// runs, is refused its locked state dir, and inspects the state dir once
// it has stopped: both must show the same state.
func TestInspect(t *testing.T) {
	c := newCluster(t, 2)
	w := c.addWorker()

	t0 := time.Now().Add(-30 * time.Minute).Truncate(time.Minute).UnixMilli()
	events := []struct {
		user, typ, item string
		at              int64
		price           float64
	}{
		{"u1", "view", "i1", t0, 0},
		{"u1", "view", "i2", t0 + 60_000, 0},
		{"u1", "purchase", "i9", t0 + 120_000, 10.5},
		{"u1", "view", "i3", t0 + 600_000, 0},
		{"u2", "view", "i1", t0 + 540_000, 0}, // within grace of u1's newest in any partition
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.kafka.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for _, e := range events {
		v := fmt.Sprintf(`{"user_id":%q,"ts":%d,"type":%q,"item_id":%q,"category":"shoes","price":%g}`, e.user, e.at, e.typ, e.item, e.price)
		if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: "events", Key: []byte(e.user), Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	asOf := time.UnixMilli(t0 + 15*60_000).UTC().Format(time.RFC3339)
	redisArgs := []string{"--spec", shopSpec, "--redis-addr", c.redis.Addr(), "--as-of", asOf}

	// Redis, while the processor runs. FEATURESTREAM_STATE_DIR (set in a
	// processor's container) must not divert inspect to the state dir.
	t.Setenv("FEATURESTREAM_STATE_DIR", w.stateDir)
	var fromRedis inspectEntity
	deadline := time.Now().Add(30 * time.Second)
	for {
		rep := inspectJSON(t, append(redisArgs, "u1", "nobody")...)
		if !strings.HasPrefix(rep.Source, "redis ") || len(rep.Entities) != 2 {
			t.Fatalf("report %+v: want two entities from redis", rep)
		}
		if rep.Entities[1].Found || rep.Entities[1].Entity != "nobody" {
			t.Errorf("nobody: %+v, want not found", rep.Entities[1])
		}
		fromRedis = rep.Entities[0]
		if fromRedis.Found && fromRedis.feature(t, "views_1h").Value == float64(3) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("u1 not in Redis with 3 views after 30s: %+v", fromRedis)
		}
		time.Sleep(100 * time.Millisecond)
	}
	checkU1 := func(where string, e inspectEntity) {
		t.Helper()
		if e.Partition == nil || e.Generation == "" || e.LastEvent == nil || !e.LastEvent.Equal(time.UnixMilli(t0+600_000)) {
			t.Errorf("%s: u1 header %+v: want a partition, a generation and last event %s", where, e, time.UnixMilli(t0+600_000).UTC())
		}
		views := e.feature(t, "views_1h")
		var counted int64
		for _, tile := range views.Tiles {
			counted += tile.Count
			if tile.Start == nil || tile.Start.UnixMilli()%(5*60_000) != 0 {
				t.Errorf("%s: views_1h tile %+v: want a start on a 5m boundary", where, tile)
			}
		}
		if counted != 3 || views.Window != "1h" || views.Tile != "5m" || views.WindowStart == nil {
			t.Errorf("%s: views_1h %+v: want 3 views in 5m tiles of a 1h window", where, views)
		}
		if v := e.feature(t, "purchases_24h").Value; v != float64(1) {
			t.Errorf("%s: purchases_24h = %v, want 1", where, v)
		}
		if v := e.feature(t, "spend_24h").Value; v != 10.5 {
			t.Errorf("%s: spend_24h = %v, want 10.5", where, v)
		}
		items := e.feature(t, "last_items")
		var got []string
		for _, v := range items.Value.([]any) {
			got = append(got, v.(string))
		}
		if want := []string{"i3", "i9", "i2", "i1"}; !slices.Equal(got, want) || items.Window != "lifetime" || len(items.Tiles) != 1 || items.Tiles[0].Start != nil || len(items.Tiles[0].Items) != 4 {
			t.Errorf("%s: last_items %+v: want %v in one lifetime tile", where, items, want)
		}
	}
	checkU1("redis", fromRedis)
	if fromRedis.Version == nil || fromRedis.Written == nil || fromRedis.Restoring == nil || *fromRedis.Restoring || fromRedis.Key != "fs:shop:e:u1" {
		t.Errorf("redis: u1 %+v: want version, written time, key fs:shop:e:u1, partition not restoring", fromRedis)
	}
	text, err := inspectRun(t, append(redisArgs, "u1", "nobody")...)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"u1  (key fs:shop:e:u1)", fmt.Sprintf("version %d", *fromRedis.Version), "views_1h", "= 3", `= ["i3","i9","i2","i1"]`, "items i3@", "nobody: not found"} {
		if !strings.Contains(text, want) {
			t.Errorf("text output lacks %q:\n%s", want, text)
		}
	}

	// The state dir of a running processor is locked.
	_, err = inspectRun(t, "--spec", shopSpec, "--state-dir", w.stateDir, "u1")
	if !errors.Is(err, errStateLocked) || !strings.Contains(err.Error(), "one process at a time") {
		t.Fatalf("inspect of a running processor's state dir: %v, want %v", err, errStateLocked)
	}

	// Stopped: the state dir shows what Redis shows.
	c.stopAll()
	start := time.Now()
	rep := inspectJSON(t, "--spec", shopSpec, "--state-dir", w.stateDir, "--as-of", asOf, "u1", "u2", "nobody")
	t.Logf("inspect of the state dir (all partitions probed) took %s", time.Since(start).Round(time.Millisecond))
	if len(rep.Entities) != 3 {
		t.Fatalf("state report %+v: want 3 entities", rep)
	}
	fromState := rep.Entities[0]
	checkU1("state", fromState)
	if fromState.Partition == nil || fromRedis.Partition == nil || *fromState.Partition != *fromRedis.Partition || fromState.Generation != fromRedis.Generation {
		t.Errorf("state says partition %v generation %q, redis %v %q", fromState.Partition, fromState.Generation, fromRedis.Partition, fromRedis.Generation)
	}
	if m := fromState.Meta; m == nil || m.InputNext < 1 || m.ChangelogNext < 1 || fromState.EncodedBytes == 0 {
		t.Errorf("state: u1 meta %+v, %d bytes: want offsets past the events and a size", m, fromState.EncodedBytes)
	}
	if !rep.Entities[1].Found || rep.Entities[1].feature(t, "views_1h").Value != float64(1) || rep.Entities[2].Found {
		t.Errorf("state: u2 %+v, nobody %+v: want u2 with one view, nobody not found", rep.Entities[1], rep.Entities[2])
	}
	other := fmt.Sprint(1 - *fromState.Partition)
	if rep := inspectJSON(t, "--spec", shopSpec, "--state-dir", w.stateDir, "--partition", other, "u1"); rep.Entities[0].Found {
		t.Errorf("u1 found in partition %s too: %+v", other, rep.Entities[0])
	}

	// Mistakes are errors, and create nothing.
	missing := filepath.Join(t.TempDir(), "nope")
	if _, err := inspectRun(t, "--spec", shopSpec, "--state-dir", missing, "u1"); err == nil || !strings.Contains(err.Error(), "no state there") {
		t.Errorf("inspect of a missing state dir: %v, want 'no state there'", err)
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("inspect created %s: %v", missing, err)
	}
	if _, err := inspectRun(t, "--spec", shopSpec, "--redis-addr", c.redis.Addr(), "--as-of", "yesterday", "u1"); err == nil || !strings.Contains(err.Error(), "RFC 3339") {
		t.Errorf("--as-of yesterday: %v, want an RFC 3339 hint", err)
	}
	if _, err := inspectRun(t, "--spec", shopSpec, "--redis-addr", "127.0.0.1:1", "u1"); err == nil || !strings.Contains(err.Error(), "--redis-addr") {
		t.Errorf("inspect of an unreachable Redis: %v, want an error naming --redis-addr", err)
	}
}
