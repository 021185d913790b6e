package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/featurestream/featurestream/bench"
	"github.com/featurestream/featurestream/processor"
	"github.com/featurestream/featurestream/sinks"
	"github.com/featurestream/featurestream/sinks/redisserver"
	"github.com/featurestream/featurestream/state"
	"github.com/featurestream/featurestream/topology"
)

// cluster is a kfake broker on TCP, a redis-server, and processor
// subprocesses (this test binary re-executed as `featurestream process`).
type cluster struct {
	t       *testing.T
	top     *topology.Topology
	kafka   *kfake.Cluster
	brokers string
	redis   *redisserver.Server
	dir     string

	mu      sync.Mutex
	workers []*worker
}

type worker struct {
	id       string
	stateDir string
	log      string
	cmd      *exec.Cmd
	done     chan struct{}
}

// newCluster is newClusterFor the shop spec.
func newCluster(t *testing.T, partitions int32) *cluster {
	top, err := loadTopology(shopSpec)
	if err != nil {
		t.Fatal(err)
	}
	return newClusterFor(t, top, partitions)
}

// inputCluster starts a kfake broker with top's input topic, closed when
// t ends.
func inputCluster(t *testing.T, top *topology.Topology, partitions int32) *kfake.Cluster {
	t.Helper()
	kafka, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, top.Spec.Source.Topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kafka.Close)
	return kafka
}

// newClusterFor starts a broker and a redis-server for worker processes
// of top; workers still running when t ends are killed.
func newClusterFor(t *testing.T, top *topology.Topology, partitions int32) *cluster {
	kafka := inputCluster(t, top, partitions)
	c := &cluster{t: t, top: top, kafka: kafka, brokers: strings.Join(kafka.ListenAddrs(), ","), redis: redisserver.StartForTest(t), dir: t.TempDir()}
	t.Cleanup(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, w := range c.workers {
			if w.cmd != nil && w.cmd.Process != nil {
				w.cmd.Process.Kill()
				<-w.done
			}
		}
		if t.Failed() {
			for _, w := range c.workers {
				b, _ := os.ReadFile(w.log)
				if len(b) > 4000 {
					b = b[len(b)-4000:]
				}
				t.Logf("log of %s (tail):\n%s", w.id, b)
			}
		}
	})
	return c
}

func (c *cluster) addWorker(extra ...string) *worker {
	c.mu.Lock()
	defer c.mu.Unlock()
	id := fmt.Sprintf("w%d", len(c.workers))
	w := &worker{id: id, stateDir: filepath.Join(c.dir, id), log: filepath.Join(c.dir, id+".log")}
	c.workers = append(c.workers, w)
	c.startLocked(w, extra...)
	return w
}

func (c *cluster) startLocked(w *worker, extra ...string) {
	args := append([]string{"process",
		"--brokers", c.brokers, "--redis-addr", c.redis.Addr(), "--spec", shopSpec,
		"--state-dir", w.stateDir, "--admin-addr", "127.0.0.1:0", "--instance-id", w.id,
		"--session-timeout", "6s", "--commit-interval", "100ms", "--log-level", "info"}, extra...)
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "FEATURESTREAM_TEST_MAIN=1")
	logf, err := os.OpenFile(w.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	w.cmd, w.done = cmd, make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(w.done)
	}()
}

// kill sends sig to w and, for SIGKILL, waits for it to die.
func (c *cluster) kill(w *worker) {
	w.cmd.Process.Signal(syscall.SIGKILL)
	<-w.done
}

func (c *cluster) restart(w *worker, wipe bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if wipe {
		os.RemoveAll(w.stateDir)
	}
	c.startLocked(w)
}

// stopAll stops every worker gracefully and checks they exit cleanly.
func (c *cluster) stopAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.workers {
		w.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, w := range c.workers {
		select {
		case <-w.done:
			if code := w.cmd.ProcessState.ExitCode(); code != 0 {
				c.t.Errorf("%s exited with %d", w.id, code)
			}
		case <-time.After(30 * time.Second):
			c.t.Errorf("%s did not stop within 30s", w.id)
			w.cmd.Process.Kill()
			<-w.done
		}
	}
}

func (c *cluster) adm() *kadm.Client {
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.kafka.ListenAddrs()...))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// waitCaughtUp waits until the group has committed the end of every input
// partition.
func (c *cluster) waitCaughtUp(timeout time.Duration) {
	adm := c.adm()
	topic := c.top.Spec.Source.Topic
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ends, err1 := adm.ListEndOffsets(ctx, topic)
		committed, err2 := adm.FetchOffsets(ctx, c.top.Spec.App)
		cancel()
		lag := int64(-1)
		if err1 == nil && err2 == nil {
			lag = 0
			ends.Each(func(o kadm.ListedOffset) {
				got, ok := committed.Lookup(topic, o.Partition)
				if !ok {
					lag += o.Offset
				} else {
					lag += o.Offset - got.At
				}
			})
		}
		if lag == 0 {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("consumer lag still %d after %s (%v, %v)", lag, timeout, err1, err2)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// checkNoOpenTransactions: on every transactional topic the last stable
// offset has reached the end.
func (c *cluster) checkNoOpenTransactions() {
	adm := c.adm()
	ctx := context.Background()
	for _, topic := range []string{state.ChangelogTopic(c.top.Spec.App), processor.DLQTopic(c.top.Spec.App)} {
		deadline := time.Now().Add(20 * time.Second)
		for {
			ends, err1 := adm.ListEndOffsets(ctx, topic)
			stable, err2 := adm.ListCommittedOffsets(ctx, topic)
			open := 0
			if err1 == nil && err2 == nil {
				ends.Each(func(o kadm.ListedOffset) {
					if s, ok := stable.Lookup(topic, o.Partition); !ok || s.Offset != o.Offset {
						open++
					}
				})
			}
			if err1 == nil && err2 == nil && open == 0 {
				break
			}
			if time.Now().After(deadline) {
				c.t.Errorf("%s: %d partitions with an open transaction (%v, %v)", topic, open, err1, err2)
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// checkChangelogOrder reads the committed changelog and checks that, per
// partition, the input offsets that commits say they reflect strictly
// increase: a commit that replayed input already committed would repeat or
// lower one.
func (c *cluster) checkChangelogOrder() {
	topic := state.ChangelogTopic(c.top.Spec.App)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.kafka.ListenAddrs()...), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		c.t.Fatal(err)
	}
	defer cl.Close()
	last := map[int32]int64{}
	var commits int
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		fetches := cl.PollFetches(ctx)
		cancel()
		if fetches.NumRecords() == 0 {
			break
		}
		fetches.EachRecord(func(r *kgo.Record) {
			for _, h := range r.Headers {
				if h.Key != state.HeaderInputNext {
					continue
				}
				in := int64(binary.BigEndian.Uint64(h.Value))
				if prev, ok := last[r.Partition]; ok && in <= prev {
					c.t.Errorf("changelog partition %d offset %d: commit reflects input up to %d after one up to %d: input applied twice", r.Partition, r.Offset, in, prev)
				}
				last[r.Partition] = in
				commits++
			}
		})
	}
	if commits == 0 {
		c.t.Error("no commits found in the changelog")
	}
}

// versionWatcher polls the Redis versions of some entities and records any
// that went backwards.
type versionWatcher struct {
	mu       sync.Mutex
	backward []string
	polls    int
}

func watchVersions(ctx context.Context, addr string, keys []string) *versionWatcher {
	w := &versionWatcher{}
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	go func() {
		defer rdb.Close()
		type ver struct {
			g string
			v uint64
		}
		seen := map[string]ver{}
		for ctx.Err() == nil {
			pipe := rdb.Pipeline()
			cmds := make([]*redis.StringCmd, len(keys))
			for i, k := range keys {
				cmds[i] = pipe.Get(ctx, k)
			}
			pipe.Exec(ctx)
			for i, cmd := range cmds {
				g, v, ok := sinks.ValueVersion(cmd.Val())
				if !ok {
					continue
				}
				if prev, ok := seen[keys[i]]; ok && prev.g == g && v < prev.v {
					w.mu.Lock()
					w.backward = append(w.backward, fmt.Sprintf("%s: %d after %d", keys[i], v, prev.v))
					w.mu.Unlock()
				}
				seen[keys[i]] = ver{g, v}
			}
			w.mu.Lock()
			w.polls++
			w.mu.Unlock()
			time.Sleep(10 * time.Millisecond)
		}
	}()
	return w
}

// chaosEvents makes n shop events for users u0..users-1 in mostly
// increasing time, with poisonEvery-th records replaced by poison. It
// returns the records, the model of the valid ones and the poison count by
// reason.
func chaosEvents(topic string, n, users, poisonEvery int) ([]*kgo.Record, *shopModel, map[string]int) {
	rng := rand.New(rand.NewPCG(42, 43))
	gen := bench.NewShopGenerator(9, uint64(users), 2000)
	t0 := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC).UnixMilli()
	model := &shopModel{byUser: map[string][]modelEvent{}}
	poison := map[string]int{}
	huge := strings.Repeat("y", 2<<20)
	var recs []*kgo.Record
	for i := range n {
		ts := t0 + int64(i)*200 + rng.Int64N(60_000) - 30_000
		ev := gen.Next(time.UnixMilli(ts))
		ev.UserID = "u" + strconv.Itoa(rng.IntN(users))
		if i > 1000 && i%poisonEvery == 0 {
			var value, reason string
			switch (i / poisonEvery) % 7 {
			case 0:
				value, reason = `{"user_id":`, "decode"
			case 1:
				value, reason = fmt.Sprintf(`{"user_id":null,"ts":%d,"type":"view"}`, ts), "no_key"
			case 2:
				value, reason = fmt.Sprintf(`{"user_id":%q,"ts":%d,"type":"purchase","item_id":"i1","price":"cheap"}`, ev.UserID, ts), "bad_value"
			case 3:
				value, reason = fmt.Sprintf(`{"user_id":%q,"ts":%d,"type":"view"}`, ev.UserID, time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()), "future"
			case 4:
				value, reason = fmt.Sprintf(`{"user_id":%q,"ts":%d,"type":"purchase","item_id":"i1","price":1e999}`, ev.UserID, ts), "decode"
			case 5:
				value, reason = fmt.Sprintf(`{"user_id":%q,"ts":%d,"type":"view"}`, ev.UserID, t0-48*3600_000), "late"
			case 6:
				if (i/poisonEvery)%21 == 6 {
					value, reason = fmt.Sprintf(`{"user_id":%q,"ts":%d,"type":"view","item_id":%q}`, ev.UserID, ts, huge), "bad_value"
				} else {
					value, reason = fmt.Sprintf(`{"user_id":%q,"ts":"not a time","type":"view"}`, ev.UserID), "no_time"
				}
			}
			recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(ev.UserID), Value: []byte(value)})
			poison[reason]++
			continue
		}
		model.add(i, ev)
		rec := ev.Record(topic)
		recs = append(recs, rec)
	}
	return recs, model, poison
}

// TestKillNine runs three processor processes against one broker, SIGKILLs
// a random one at random moments (sometimes wiping its state dir) and
// restarts it, while events (1% poison) flow; then checks every feature of
// every user against the model, the dead letters against the poison, the
// committed changelog for replays, that Redis versions never went
// backwards, that no transaction is left open and that lag is 0.
func TestKillNine(t *testing.T) {
	if testing.Short() {
		t.Skip("kill -9 soak: skipped with -short")
	}
	const (
		partitions = 12
		users      = 5000
		events     = 200_000
		kills      = 10
	)
	c := newCluster(t, partitions)
	topic := c.top.Spec.Source.Topic
	recs, model, poison := chaosEvents(topic, events, users, 100)

	var keys []string
	for i := 0; i < users; i += 10 {
		keys = append(keys, sinks.EntityKey(c.top.Spec.App, "u"+strconv.Itoa(i)))
	}
	wctx, wcancel := context.WithCancel(context.Background())
	watcher := watchVersions(wctx, c.redis.Addr(), keys)

	for range 3 {
		c.addWorker()
	}

	// Produce in 40 slices over ~20s while killing.
	prod, err := kgo.NewClient(kgo.SeedBrokers(c.kafka.ListenAddrs()...), kgo.ProducerBatchMaxBytes(4<<20), kgo.MaxBufferedRecords(20_000))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	produced := produceOverTime(prod, recs, 40, 500*time.Millisecond)

	rng := rand.New(rand.NewPCG(5, 6))
	done := false
	for k := 0; k < kills || !done; k++ {
		time.Sleep(time.Duration(1000+rng.IntN(1500)) * time.Millisecond)
		select {
		case err := <-produced:
			if err != nil {
				t.Fatal(err)
			}
			done = true
		default:
		}
		w := c.workers[rng.IntN(len(c.workers))]
		c.kill(w)
		time.Sleep(time.Duration(100+rng.IntN(700)) * time.Millisecond)
		wipe := k%3 == 2
		t.Logf("kill -9 #%d: %s (wipe state: %v)", k+1, w.id, wipe)
		c.restart(w, wipe)
		if k > 40 {
			t.Fatal("producer did not finish")
		}
	}

	c.waitCaughtUp(3 * time.Minute)
	// Let the last commits reach Redis (through the restores of the last
	// killed worker's partitions), then stop everyone cleanly.
	c.waitValues(model, users, time.Minute)
	c.stopAll()
	wcancel()
	c.checkNoOpenTransactions()
	c.checkChangelogOrder()

	watcher.mu.Lock()
	if len(watcher.backward) > 0 {
		t.Errorf("Redis versions went backwards %d times: %v", len(watcher.backward), watcher.backward[:min(5, len(watcher.backward))])
	}
	if watcher.polls < 10 {
		t.Errorf("version watcher polled only %d times", watcher.polls)
	}
	watcher.mu.Unlock()

	c.checkValues(model, users)
	c.checkDeadLetters(poison)
}

// checkValues compares every user's features in Redis with the model.
func (c *cluster) checkValues(model *shopModel, users int) {
	c.t.Helper()
	c.checkValuesWith(model, users, nil)
}

// checkValuesWith is checkValues with another definition of the first
// feature.
func (c *cluster) checkValuesWith(model *shopModel, users int, views func(modelEvent, int64) bool) {
	c.t.Helper()
	bad, diffs := c.diffValues(model, users, views)
	for _, d := range diffs {
		c.t.Error(d)
	}
	if bad > 0 {
		c.t.Errorf("%d users differ from the model", bad)
	}
}

// waitValues waits, up to timeout, until Redis holds the model's values.
// Redis lags the changelog by design: the states a processor committed
// just before a kill -9 reach Redis when the partition's next owner has
// restored it, which can come after the input is caught up (a restarted
// instance rejoining the group). The check after it is the strict one.
func (c *cluster) waitValues(model *shopModel, users int, timeout time.Duration) {
	c.t.Helper()
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		if bad, _ := c.diffValues(model, users, nil); bad == 0 {
			return
		}
	}
}

// diffValues compares every user's features in Redis with the model and
// returns how many differ and the first few differences.
func (c *cluster) diffValues(model *shopModel, users int, views func(modelEvent, int64) bool) (int, []string) {
	c.t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: c.redis.Addr()})
	defer rdb.Close()
	store, err := sinks.NewStore(rdb, c.top, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		c.t.Fatal(err)
	}
	var maxTS int64
	for _, evs := range model.byUser {
		for _, e := range evs {
			maxTS = max(maxTS, e.TS)
		}
	}
	all := []int{0, 1, 2, 3}
	var ids []string
	for i := range users {
		ids = append(ids, "u"+strconv.Itoa(i))
	}
	bad := 0
	var diffs []string
	for _, asOf := range []int64{maxTS, maxTS + 61*60_000} {
		entries, err := store.Read(context.Background(), ids, all, nil)
		if err != nil {
			c.t.Fatal(err)
		}
		for i, id := range ids {
			want := model.valuesWith(id, asOf, views)
			e := entries[i]
			if e.Found != want.found {
				diffs = append(diffs, fmt.Sprintf("%s: found %v, want %v", id, e.Found, want.found))
				bad++
				continue
			}
			if !e.Found {
				continue
			}
			got := shopValues{
				found:        true,
				views1h:      c.top.Evaluate(0, e.Tiles[0], asOf).Int,
				purchases24h: c.top.Evaluate(1, e.Tiles[1], asOf).Int,
				spend24h:     c.top.Evaluate(2, e.Tiles[2], asOf).Float,
				lastItems:    c.top.Evaluate(3, e.Tiles[3], asOf).List,
			}
			if got.views1h != want.views1h || got.purchases24h != want.purchases24h ||
				math.Abs(got.spend24h-want.spend24h) > 1e-9*math.Max(1, math.Abs(want.spend24h)) ||
				!slices.Equal(got.lastItems, want.lastItems) {
				if len(diffs) < 5 {
					diffs = append(diffs, fmt.Sprintf("%s at %d: got %+v, want %+v", id, asOf, got, want))
				}
				bad++
			}
		}
	}
	return bad, diffs
}

func (c *cluster) checkDeadLetters(want map[string]int) {
	c.t.Helper()
	got := map[string]int{}
	where := map[string]bool{}
	for _, r := range readCommitted(c.t, c.kafka.ListenAddrs(), processor.DLQTopic(c.top.Spec.App)) {
		var reason, src string
		for _, h := range r.Headers {
			switch h.Key {
			case processor.HeaderReason:
				reason = string(h.Value)
			case processor.HeaderPartition, processor.HeaderOffset:
				src += "/" + string(h.Value)
			}
		}
		if where[src] {
			c.t.Errorf("record %s dead-lettered twice", src)
		}
		where[src] = true
		got[reason]++
	}
	for reason, n := range want {
		if got[reason] != n {
			c.t.Errorf("dead letters with reason %s: %d, want %d", reason, got[reason], n)
		}
	}
	if len(got) != len(want) {
		c.t.Errorf("dead letters by reason %v, want %v", got, want)
	}
}

// readCommitted returns a topic's committed data records, read up to the
// end offset of every partition as listed before reading (transaction
// markers are read too, so the end is reached exactly, not guessed from a
// quiet poll).
func readCommitted(t *testing.T, brokers []string, topic string) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.KeepControlRecords(),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListCommittedOffsets(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	remaining := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			remaining[o.Partition] = o.Offset
		}
	})
	var recs []*kgo.Record
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for len(remaining) > 0 {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %s: partitions %v not read to their end in 30s", topic, remaining)
		}
		fetches.EachRecord(func(r *kgo.Record) {
			if !r.Attrs.IsControl() {
				recs = append(recs, r)
			}
			if end, ok := remaining[r.Partition]; ok && r.Offset+1 >= end {
				delete(remaining, r.Partition)
			}
		})
	}
	return recs
}

// TestZombie pauses a processor (SIGSTOP) for longer than its session
// timeout while events flow, so the group moves its partitions to the
// others, then resumes it (SIGCONT): whatever it was doing must not become
// visible, and every value must still equal the model.
func TestZombie(t *testing.T) {
	if testing.Short() {
		t.Skip("zombie soak: skipped with -short")
	}
	const users = 1000
	c := newCluster(t, 6)
	topic := c.top.Spec.Source.Topic
	recs, model, poison := chaosEvents(topic, 40_000, users, 100)
	var keys []string
	for i := 0; i < users; i += 5 {
		keys = append(keys, sinks.EntityKey(c.top.Spec.App, "u"+strconv.Itoa(i)))
	}
	wctx, wcancel := context.WithCancel(context.Background())
	watcher := watchVersions(wctx, c.redis.Addr(), keys)
	for range 3 {
		c.addWorker()
	}
	prod, err := kgo.NewClient(kgo.SeedBrokers(c.kafka.ListenAddrs()...), kgo.ProducerBatchMaxBytes(4<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	produced := produceOverTime(prod, recs, 30, 500*time.Millisecond)

	time.Sleep(3 * time.Second)
	zombie := c.workers[0]
	zombie.cmd.Process.Signal(syscall.SIGSTOP)
	t.Logf("SIGSTOP %s for 9s (session timeout 6s)", zombie.id)
	time.Sleep(9 * time.Second)
	zombie.cmd.Process.Signal(syscall.SIGCONT)
	t.Logf("SIGCONT %s", zombie.id)
	if err := <-produced; err != nil {
		t.Fatal(err)
	}
	c.waitCaughtUp(2 * time.Minute)
	c.waitValues(model, users, time.Minute)
	c.stopAll()
	wcancel()
	c.checkNoOpenTransactions()
	c.checkChangelogOrder()
	watcher.mu.Lock()
	if len(watcher.backward) > 0 {
		t.Errorf("Redis versions went backwards %d times: %v", len(watcher.backward), watcher.backward[:min(5, len(watcher.backward))])
	}
	watcher.mu.Unlock()
	c.checkValues(model, users)
	c.checkDeadLetters(poison)
	log, _ := os.ReadFile(zombie.log)
	for _, line := range strings.Split(string(log), "\n") {
		if strings.Contains(line, "aborted") || strings.Contains(line, "lost") || strings.Contains(line, "restor") || strings.Contains(line, "partitions") {
			t.Logf("%s: %s", zombie.id, line)
		}
	}
}

// produceOverTime sends recs in slices with a pause after each, in the
// background; the channel receives the outcome.
func produceOverTime(prod *kgo.Client, recs []*kgo.Record, slices int, pause time.Duration) <-chan error {
	produced := make(chan error, 1)
	go func() {
		for i := range slices {
			lo, hi := i*len(recs)/slices, (i+1)*len(recs)/slices
			if err := prod.ProduceSync(context.Background(), recs[lo:hi]...).FirstErr(); err != nil {
				produced <- err
				return
			}
			time.Sleep(pause)
		}
		produced <- nil
	}()
	return produced
}
