package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/featurestream/featurestream/processor"
	"github.com/featurestream/featurestream/sinks"
	"github.com/featurestream/featurestream/state"
	"github.com/featurestream/featurestream/topology"
)

// replayCmd rebuilds features from retained input into a new state
// generation while the current one keeps serving, then switches.
type replayCmd struct {
	specFlag
	redisFlags
	kafkaFlags
	From           string        `help:"Where in the input to start: an RFC 3339 time (each partition's first record at or after it, by record timestamp), a duration back from now (72h, 7d), earliest, or an offset applied to every partition." required:""`
	StateDir       string        `help:"Directory for the replay's local state; empty uses a temporary directory, removed at the end (processors restore the new generation from its changelog)."`
	Group          string        `help:"Consumer group of the processors, as given to process --group; default the spec's app."`
	Guarantee      string        `help:"exactly-once or at-least-once; see featurestream process --help." enum:"exactly-once,at-least-once" default:"exactly-once"`
	CommitInterval time.Duration `help:"How often the replay commits and writes to Redis." default:"100ms"`
	CatchUp        time.Duration `help:"The replay has caught up when reaching the input's end offsets, taken anew each round, took less than this; then serving switches." default:"2s"`
	KeepOld        bool          `help:"Keep the previous generation's changelog, group offsets and Redis keys after the switch; by default they are deleted once its processors have moved to the new generation."`
	OldTimeout     time.Duration `help:"How long to wait for the previous generation's processors to move over before its data is deleted; if they have not, it is kept and a warning says what is left." default:"2m"`

	// maxPollRecords, for tests, makes the replay commit in small steps.
	maxPollRecords int
}

// Run replays into a new generation, switches to it and cleans up the old.
func (c *replayCmd) Run(ctx context.Context, logger *slog.Logger) error {
	top, err := loadTopology(c.Spec)
	if err != nil {
		return err
	}
	if _, err := processor.NewDecoder(top.Spec); err != nil {
		return err
	}
	secOpts, err := c.kafkaFlags.securityOpts()
	if err != nil {
		return err
	}
	opts := append([]kgo.Opt{kgo.SeedBrokers(c.Brokers...)}, secOpts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	app, group := top.Spec.App, c.Group
	if group == "" {
		group = app
	}
	cur, err := processor.ReadStateGeneration(ctx, opts, app)
	if err != nil {
		return err
	}
	next := cur + 1
	start, from, err := startOffsets(ctx, adm, top.Spec.Source.Topic, c.From, time.Now())
	if err != nil {
		return err
	}
	var total int64
	ends, err := adm.ListEndOffsets(ctx, top.Spec.Source.Topic)
	if err != nil {
		return fmt.Errorf("input offsets: %w", err)
	}
	ends.Each(func(o kadm.ListedOffset) { total += max(o.Offset-start[o.Partition], 0) })
	if w := top.MaxWindow(); !from.IsZero() && time.Since(from) < w {
		logger.Warn("the replayed history is shorter than the longest window: such windows start partly filled", "from", from, "longest_window", w)
	}

	sink, client, err := c.redisFlags.open(ctx, top, logger, nil)
	if err != nil {
		return err
	}
	defer client.Close()
	// One replay at a time: a second one would delete the first one's
	// generation while it is being built.
	release, err := takeReplayLease(ctx, client, app, logger)
	if err != nil {
		return err
	}
	defer release()

	// Leftovers of an earlier replay into the same generation that did not
	// finish are not trusted.
	if err := processor.DropStateGeneration(ctx, opts, app, group, next); err != nil {
		return fmt.Errorf("state generation %d: %w (is another replay running?)", next, err)
	}
	if _, err := sink.DeleteStateGeneration(ctx, next); err != nil {
		return err
	}
	sink.SetStateGeneration(next)
	nextGroup := processor.GroupFor(group, next)
	commit := kadm.Offsets{}
	for p, o := range start {
		commit.AddOffset(top.Spec.Source.Topic, p, o, -1)
	}
	if resp, err := adm.CommitOffsets(ctx, nextGroup, commit); err != nil || resp.Error() != nil {
		return fmt.Errorf("set start offsets of group %s: %w", nextGroup, errors.Join(err, resp.Error()))
	}
	logger.Info("replaying into a new state generation; the current one keeps serving",
		"from", c.From, "generation", next, "serving", cur, "records", total, "group", nextGroup, "changelog", state.ChangelogTopicFor(app, next))

	dir := c.StateDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "featurestream-replay-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	store, err := state.Open(state.Options{Dir: filepath.Join(dir, "pebble"), Logger: logger}, top)
	if err != nil {
		return err
	}
	defer store.Close()
	proc, err := processor.New(processor.Config{
		Brokers: c.Brokers, ClientOpts: secOpts, Group: c.Group, StateGeneration: next, Guarantee: processor.Guarantee(c.Guarantee),
		CommitInterval: c.CommitInterval, MaxPollRecords: c.maxPollRecords,
	}, top, store, sink, logger, newRegistry())
	if err != nil {
		return err
	}
	pctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- proc.Run(pctx) }()

	began := time.Now()
	if err := waitCaughtUp(ctx, opts, adm, top.Spec.Source.Topic, nextGroup, c.CatchUp, total, done, logger); err != nil {
		stop()
		<-done
		return err
	}
	// Stopping commits the last records and waits for their Redis writes:
	// everything the new generation has is in Redis before it serves.
	stop()
	if err := <-done; err != nil {
		return fmt.Errorf("replay processor: %w", err)
	}
	if err := processor.WriteStateGeneration(ctx, opts, app, next); err != nil {
		return err
	}
	if _, err := sink.PublishStateGeneration(ctx, next); err != nil {
		return fmt.Errorf("%w; generation %d is current in Kafka, and its processors publish it to Redis when they start", err, next)
	}
	fmt.Printf("state generation %d caught up in %s and is now served; processors of generation %d move to it\n", next, time.Since(began).Round(time.Millisecond), cur)
	if c.KeepOld {
		return nil
	}
	return c.dropOld(ctx, opts, adm, top, group, cur, sink, logger)
}

// dropOld deletes generation gen once its processors have left its group.
func (c *replayCmd) dropOld(ctx context.Context, opts []kgo.Opt, adm *kadm.Client, top *topology.Topology, group string, gen int, sink *sinks.Store, logger *slog.Logger) error {
	oldGroup := processor.GroupFor(group, gen)
	deadline := time.Now().Add(c.OldTimeout)
	for {
		groups, err := adm.DescribeGroups(ctx, oldGroup)
		if err == nil {
			if g, ok := groups[oldGroup]; !ok || len(g.Members) == 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			logger.Warn("processors of the previous state generation are still running; its data is kept",
				"generation", gen, "group", oldGroup, "changelog", state.ChangelogTopicFor(top.Spec.App, gen),
				"redis_keys", sinks.EntityKeyFor(top.Spec.App, gen, "*"))
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	if err := processor.DropStateGeneration(ctx, opts, top.Spec.App, group, gen); err != nil {
		return fmt.Errorf("delete state generation %d: %w", gen, err)
	}
	n, err := sink.DeleteStateGeneration(ctx, gen)
	if err != nil {
		return err
	}
	fmt.Printf("state generation %d deleted: changelog, group offsets and %d Redis keys\n", gen, n)
	return nil
}

// waitCaughtUp waits until group has committed the input up to its end
// offsets in a round that took less than catchUp, logging progress.
func waitCaughtUp(ctx context.Context, opts []kgo.Opt, adm *kadm.Client, topic, group string, catchUp time.Duration, total int64, done <-chan error, logger *slog.Logger) error {
	lastLog := time.Now()
	for {
		round := time.Now()
		ends, err := adm.ListEndOffsets(ctx, topic)
		if err == nil {
			err = ends.Error()
		}
		if err != nil {
			return fmt.Errorf("input end offsets: %w", err)
		}
		var stalled map[int32]int64 // committed offsets seen unchanged
		stalledSince := time.Now()
		for {
			committed, err := adm.FetchOffsets(ctx, group)
			if err == nil {
				err = committed.Error()
			}
			if err != nil {
				return fmt.Errorf("offsets of %s: %w", group, err)
			}
			behind := make(map[int32]int64) // partition -> committed offset
			var lag int64
			ends.Each(func(o kadm.ListedOffset) {
				at := int64(0)
				if c, ok := committed.Lookup(topic, o.Partition); ok {
					at = c.At
				}
				if at < o.Offset {
					behind[o.Partition] = at
					lag += o.Offset - at
				}
			})
			if lag == 0 {
				break
			}
			// Transactional producers end each partition with a commit
			// marker that no consumer commits past: when the committed
			// offsets stop moving, see whether only markers are left.
			if !maps.Equal(behind, stalled) {
				stalled, stalledSince = behind, time.Now()
			} else if time.Since(stalledSince) > time.Second {
				only, err := onlyControlRecords(ctx, opts, topic, behind, ends)
				if err != nil {
					return err
				}
				if only {
					break
				}
				stalledSince = time.Now()
			}
			if time.Since(lastLog) >= 5*time.Second {
				logger.Info("replaying", "remaining_records", lag, "of", total)
				lastLog = time.Now()
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case err := <-done:
				return fmt.Errorf("replay processor stopped: %w", err)
			case <-time.After(100 * time.Millisecond):
			}
		}
		if time.Since(round) < catchUp {
			return nil
		}
	}
}

// onlyControlRecords reports whether the records of each partition from
// the given offset to its end offset are all transaction markers (or
// aborted, which read_committed skips).
func onlyControlRecords(ctx context.Context, opts []kgo.Opt, topic string, from map[int32]int64, ends kadm.ListedOffsets) (bool, error) {
	offsets := make(map[int32]kgo.Offset, len(from))
	for p, o := range from {
		offsets[p] = kgo.NewOffset().At(o)
	}
	cl, err := kgo.NewClient(append(opts[:len(opts):len(opts)],
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())...)
	if err != nil {
		return false, err
	}
	defer cl.Close()
	left := maps.Clone(from)
	for len(left) > 0 {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		fetches := cl.PollFetches(pctx)
		cancel()
		if err := ctx.Err(); err != nil {
			return false, err
		}
		if fetches.NumRecords() == 0 {
			// Nothing readable before the end: aborted data or markers.
			return true, nil
		}
		data := false
		fetches.EachRecord(func(r *kgo.Record) {
			end, _ := ends.Lookup(topic, r.Partition)
			if _, ok := left[r.Partition]; !ok || r.Offset >= end.Offset {
				return
			}
			if !r.Attrs.IsControl() {
				data = true
			}
			if r.Offset+1 >= end.Offset {
				delete(left, r.Partition)
			}
		})
		if data {
			return false, nil
		}
	}
	return true, nil
}

// startOffsets resolves --from to an offset per partition of topic, and
// the time it names (zero for earliest or an offset).
func startOffsets(ctx context.Context, adm *kadm.Client, topic, from string, now time.Time) (out map[int32]int64, at time.Time, err error) {
	bad := func(err error) error {
		return fmt.Errorf("--from %q: %w; want an RFC 3339 time (2026-11-20T00:00:00Z), a duration back from now (72h, 7d), earliest, or an offset", from, err)
	}
	var listed kadm.ListedOffsets
	var offset int64 = -1
	switch {
	case from == "earliest":
		listed, err = adm.ListStartOffsets(ctx, topic)
	case isDigits(from):
		if offset, err = strconv.ParseInt(from, 10, 64); err != nil {
			return nil, at, bad(err)
		}
		listed, err = adm.ListStartOffsets(ctx, topic)
	default:
		var perr error
		if at, perr = time.Parse(time.RFC3339Nano, from); perr != nil {
			d, derr := topology.ParseDuration(from)
			if derr != nil {
				return nil, at, bad(errors.New("not a time, duration or offset"))
			}
			if d <= 0 {
				return nil, at, bad(errors.New("the duration must be positive"))
			}
			at = now.Add(-d)
		}
		listed, err = adm.ListOffsetsAfterMilli(ctx, at.UnixMilli(), topic)
	}
	if err == nil {
		err = listed.Error()
	}
	if err != nil {
		return nil, at, fmt.Errorf("input topic %s offsets: %w", topic, err)
	}
	var ends kadm.ListedOffsets
	if offset >= 0 {
		if ends, err = adm.ListEndOffsets(ctx, topic); err != nil {
			return nil, at, fmt.Errorf("input topic %s offsets: %w", topic, err)
		}
	}
	out = make(map[int32]int64)
	listed.Each(func(o kadm.ListedOffset) {
		out[o.Partition] = o.Offset
		if offset >= 0 {
			// An offset below the log start starts at the log start.
			end, _ := ends.Lookup(topic, o.Partition)
			out[o.Partition] = min(max(offset, o.Offset), end.Offset)
		}
	})
	if len(out) == 0 {
		return nil, at, fmt.Errorf("input topic %s does not exist", topic)
	}
	return out, at, nil
}

func isDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}

// replayLeaseTTL is how long a replay's lease lasts unless renewed, so a
// replay that dies frees it.
const replayLeaseTTL = time.Minute

// renewLease and releaseLease act only while the lease holds the token.
var (
	renewLease   = redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0`)
	releaseLease = redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`)
)

// takeReplayLease takes app's replay lease in Redis (key
// fs:<app>:replay), renews it while the replay runs, and returns its
// release.
func takeReplayLease(ctx context.Context, client redis.UniversalClient, app string, logger *slog.Logger) (func(), error) {
	key := "fs:" + app + ":replay"
	host, _ := os.Hostname()
	token := fmt.Sprintf("%s pid %d since %s", host, os.Getpid(), time.Now().UTC().Format(time.RFC3339))
	ok, err := client.SetNX(ctx, key, token, replayLeaseTTL).Result()
	if err != nil {
		return nil, fmt.Errorf("replay lease %s: %w", key, err)
	}
	if !ok {
		holder, _ := client.Get(ctx, key).Result()
		return nil, fmt.Errorf("another replay of app %s is running (%s holds %s); wait for it to finish. If it died, its lease expires within %s", app, holder, key, replayLeaseTTL)
	}
	rctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		t := time.NewTicker(replayLeaseTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-rctx.Done():
				return
			case <-t.C:
				if err := renewLease.Run(rctx, client, []string{key}, token, replayLeaseTTL.Milliseconds()).Err(); err != nil && rctx.Err() == nil {
					logger.Warn("renew replay lease", "key", key, "err", err)
				}
			}
		}
	}()
	return func() {
		stop()
		<-renewed
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := releaseLease.Run(rctx, client, []string{key}, token).Err(); err != nil {
			logger.Warn("release replay lease; it expires by itself", "key", key, "err", err)
		}
	}, nil
}
