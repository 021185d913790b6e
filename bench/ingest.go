package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/featurestream/featurestream/processor"
	"github.com/featurestream/featurestream/sinks"
	"github.com/featurestream/featurestream/state"
	"github.com/featurestream/featurestream/topology"
)

// IngestConfig configures RunIngest.
type IngestConfig struct {
	// Brokers and RedisAddr are the Kafka and Redis to use. The broker
	// should run in its own process, so this process's CPU time is the
	// processor's alone.
	Brokers   []string
	RedisAddr string
	// Top is the compiled spec; each run uses it under its own app name.
	Top *topology.Topology
	// Events, Users and Partitions size the input. Defaults 200000, 10000, 8.
	Events, Users, Partitions int
	// OutOfOrder is the fraction of events up to a minute late. Default 0.05.
	OutOfOrder float64
	// Guarantees to measure. Default both.
	Guarantees []processor.Guarantee
	// Rounds is how many times the raw consume and the processor runs are
	// measured, alternating; the result keeps each one's median. Default 1.
	Rounds int
	// CommitInterval is the processors'; 0 is the processor's default.
	CommitInterval time.Duration
	// Dir holds the runs' state; default a temporary directory.
	Dir    string
	Logger *slog.Logger
}

// IngestResult is what RunIngest measured.
type IngestResult struct {
	Events int
	// RawConsume is a plain franz-go consume of the input, events/s (the
	// median of the rounds).
	RawConsume float64
	// Runs has one run per guarantee, with the medians of the rounds.
	Runs   []IngestRun
	Rounds int
	// RawRounds is each round's raw consume, events/s, with several
	// rounds.
	RawRounds []float64 `json:",omitempty"`
	// EOSOverALO is the median over the rounds of exactly-once's rate over
	// at-least-once's, when both ran.
	EOSOverALO float64
	// RestoreRate is records/s rebuilding all partitions' state from the
	// exactly-once run's changelog into an empty store, the median of
	// restoreRounds runs alternating with the raw read; RawChangelog is
	// the median of a plain read_committed consume of the same topic, and
	// RestoreRatio the median of each round's restore over its raw read.
	RestoreRecords   int64
	ChangelogRecords int64
	RestoreRate      float64
	RawChangelog     float64
	RestoreRatio     float64
}

// IngestRun is one processor run over the whole input.
type IngestRun struct {
	Guarantee processor.Guarantee
	// Rate is events/s from the processor being ready (joined, restored)
	// to every offset committed.
	Rate float64
	// RawRatio is Rate over the raw consume of the same round; with
	// several rounds, the median of the rounds' ratios, as are the other
	// figures, and RoundRates has each round's rate.
	RawRatio   float64
	RoundRates []float64 `json:",omitempty"`
	// CPUPerMillion is this process's CPU seconds per million events, over
	// the same span.
	CPUPerMillion float64
	Elapsed       time.Duration
	// Startup is from starting the processor to it being ready: topics,
	// spec check, group join and restore of its (empty) partitions.
	Startup time.Duration
}

func (c *IngestConfig) defaults() {
	if c.Events == 0 {
		c.Events = 200_000
	}
	if c.Users == 0 {
		c.Users = 10_000
	}
	if c.Partitions == 0 {
		c.Partitions = 8
	}
	if c.OutOfOrder == 0 {
		c.OutOfOrder = 0.05
	}
	if len(c.Guarantees) == 0 {
		c.Guarantees = []processor.Guarantee{processor.AtLeastOnce, processor.ExactlyOnce}
	}
	if c.Rounds <= 0 {
		c.Rounds = 1
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// RunIngest produces the input once, then measures in one run: a raw
// consume of it, the processor over it once per guarantee, and a restore of
// the exactly-once changelog beside a raw consume of that topic. progress
// receives a line per step.
func RunIngest(ctx context.Context, cfg IngestConfig, progress io.Writer) (*IngestResult, error) {
	cfg.defaults()
	if len(cfg.Brokers) == 0 || cfg.RedisAddr == "" || cfg.Top == nil {
		return nil, errors.New("bench ingest: brokers, redis address and spec are required")
	}
	dir := cfg.Dir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "featurestream-bench-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...), kgo.ProducerLinger(5*time.Millisecond), kgo.MaxBufferedRecords(100_000))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	topic := fmt.Sprintf("bench-events-%d", time.Now().UnixNano())
	if _, err := state.EnsureTopic(ctx, adm, topic, int32(cfg.Partitions), false); err != nil {
		return nil, err
	}
	fmt.Fprintf(progress, "producing %d events for %d users to %s (%d partitions)...\n", cfg.Events, cfg.Users, topic, cfg.Partitions)
	if err := produceShop(ctx, cl, topic, cfg); err != nil {
		return nil, err
	}
	res := &IngestResult{Events: cfg.Events}

	// A machine shared with other work runs faster and slower from one
	// second to the next: each round measures the raw consume right
	// before the processor runs it is compared with.
	res.Rounds = cfg.Rounds
	var (
		raws     []float64
		runs     = make([][]IngestRun, len(cfg.Guarantees))
		ratios   = make([][]float64, len(cfg.Guarantees))
		eosOverA []float64
		eosApp   string
	)
	for round := range cfg.Rounds {
		n, elapsed, err := consumeAll(ctx, cfg.Brokers, topic, false)
		if err != nil {
			return nil, err
		}
		raw := float64(n) / elapsed.Seconds()
		raws = append(raws, raw)
		fmt.Fprintf(progress, "round %d/%d: raw consume: %.0f events/s\n", round+1, cfg.Rounds, raw)
		rates := map[processor.Guarantee]float64{}
		// Every other round runs the guarantees in reverse, so neither
		// always runs second on a machine that warms up or slows down.
		order := make([]int, len(cfg.Guarantees))
		for i := range order {
			order[i] = i
		}
		if round%2 == 1 {
			slices.Reverse(order)
		}
		for _, i := range order {
			g := cfg.Guarantees[i]
			app := fmt.Sprintf("bench_%d_%s", time.Now().UnixNano(), map[processor.Guarantee]string{processor.ExactlyOnce: "eos", processor.AtLeastOnce: "alo"}[g])
			run, err := runProcessor(ctx, cfg, topic, app, g, filepath.Join(dir, app))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", g, err)
			}
			runs[i] = append(runs[i], run)
			ratios[i] = append(ratios[i], run.Rate/raw)
			rates[g] = run.Rate
			fmt.Fprintf(progress, "round %d/%d: processor %s: %.0f events/s (%.2f× raw), %.1f CPU s per million events; ready after %s\n",
				round+1, cfg.Rounds, g, run.Rate, run.Rate/raw, run.CPUPerMillion, run.Startup.Round(time.Millisecond))
			if g == processor.ExactlyOnce {
				eosApp = app
			}
		}
		if a, e := rates[processor.AtLeastOnce], rates[processor.ExactlyOnce]; a > 0 && e > 0 {
			eosOverA = append(eosOverA, e/a)
		}
	}
	res.RawConsume = median(raws)
	if cfg.Rounds > 1 {
		res.RawRounds = raws
	}
	for i, g := range cfg.Guarantees {
		field := func(f func(IngestRun) float64) float64 {
			var v []float64
			for _, r := range runs[i] {
				v = append(v, f(r))
			}
			return median(v)
		}
		run := IngestRun{
			Guarantee:     g,
			Rate:          field(func(r IngestRun) float64 { return r.Rate }),
			RawRatio:      median(ratios[i]),
			CPUPerMillion: field(func(r IngestRun) float64 { return r.CPUPerMillion }),
			Elapsed:       time.Duration(field(func(r IngestRun) float64 { return float64(r.Elapsed) })),
			Startup:       time.Duration(field(func(r IngestRun) float64 { return float64(r.Startup) })),
		}
		if cfg.Rounds > 1 {
			for _, r := range runs[i] {
				run.RoundRates = append(run.RoundRates, r.Rate)
			}
		}
		res.Runs = append(res.Runs, run)
	}
	if len(eosOverA) > 0 {
		res.EOSOverALO = median(eosOverA)
	}
	if eosApp == "" {
		return res, nil
	}

	// A restore takes a fraction of a second, where one scheduling hiccup
	// on a shared machine moves the figure by half: alternate the raw read
	// and the restore restoreRounds times and keep each one's median, and
	// the median of the rounds' ratios.
	changelog := state.ChangelogTopic(eosApp)
	var rawReads, restores, restoreRatios []float64
	for round := range restoreRounds {
		nc, elapsed, err := consumeAll(ctx, cfg.Brokers, changelog, true)
		if err != nil {
			return nil, err
		}
		rawReads = append(rawReads, float64(nc)/elapsed.Seconds())
		res.ChangelogRecords = nc
		restored, elapsed, err := restoreAll(ctx, cfg, adm, changelog, filepath.Join(dir, fmt.Sprintf("%s-restore-%d", eosApp, round)))
		if err != nil {
			return nil, err
		}
		res.RestoreRecords = restored
		restores = append(restores, float64(restored)/elapsed.Seconds())
		restoreRatios = append(restoreRatios, restores[round]/rawReads[round])
	}
	res.RawChangelog, res.RestoreRate, res.RestoreRatio = median(rawReads), median(restores), median(restoreRatios)
	fmt.Fprintf(progress, "restore: %d records at %.0f records/s; raw read_committed consume of the changelog %.0f records/s (%.2f×; medians of %d rounds)\n",
		res.RestoreRecords, res.RestoreRate, res.RawChangelog, res.RestoreRatio, restoreRounds)
	return res, nil
}

// produceShop writes cfg.Events shop events, a fraction of them out of
// order, with times ending now.
func produceShop(ctx context.Context, cl *kgo.Client, topic string, cfg IngestConfig) error {
	gen := NewShopGenerator(1, uint64(cfg.Users), 50_000)
	rng := rand.New(rand.NewPCG(2, 3))
	end := time.Now().Add(-time.Minute)
	step := 10 * time.Millisecond
	t0 := end.Add(-time.Duration(cfg.Events) * step)
	var firstErr error
	for i := range cfg.Events {
		ts := t0.Add(time.Duration(i) * step)
		if rng.Float64() < cfg.OutOfOrder {
			ts = ts.Add(-time.Duration(rng.IntN(60_000)) * time.Millisecond)
		}
		rec := gen.NextRecord(ts, topic)
		cl.Produce(ctx, rec, func(_ *kgo.Record, err error) {
			if err != nil && firstErr == nil {
				firstErr = err
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		return err
	}
	return firstErr
}

// consumeAll reads topic from the start to its end and returns the count of
// data records and the time from creating its client to reading the last
// one: closing the client is not reading (it sends a last client-metrics
// push, a few milliseconds on kfake), and the processor's rate excludes
// its shutdown too.
func consumeAll(ctx context.Context, brokers []string, topic string, committed bool) (int64, time.Duration, error) {
	start := time.Now()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	if err != nil {
		return 0, 0, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	var ends kadm.ListedOffsets
	if committed {
		ends, err = adm.ListCommittedOffsets(ctx, topic)
	} else {
		ends, err = adm.ListEndOffsets(ctx, topic)
	}
	if err != nil {
		return 0, 0, err
	}
	remaining := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			remaining[o.Partition] = o.Offset
		}
	})
	var n int64
	for len(remaining) > 0 {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return n, 0, err
		}
		fetches.EachRecord(func(r *kgo.Record) {
			if !r.Attrs.IsControl() {
				n++
			}
			if end, ok := remaining[r.Partition]; ok && r.Offset+1 >= end {
				delete(remaining, r.Partition)
			}
		})
	}
	return n, time.Since(start), nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func runProcessor(ctx context.Context, cfg IngestConfig, topic, app string, g processor.Guarantee, dir string) (IngestRun, error) {
	spec := *cfg.Top.Spec
	spec.App, spec.Source.Topic = app, topic
	top, err := topology.Compile(&spec)
	if err != nil {
		return IngestRun{}, err
	}
	store, err := state.Open(state.Options{Dir: dir, Logger: cfg.Logger}, top)
	if err != nil {
		return IngestRun{}, err
	}
	defer store.Close()
	rdb := redis.NewClient(&redis.Options{Addr: cfg.RedisAddr})
	defer rdb.Close()
	sink, err := sinks.NewStore(rdb, top, cfg.Logger, prometheus.NewRegistry())
	if err != nil {
		return IngestRun{}, err
	}
	proc, err := processor.New(processor.Config{Brokers: cfg.Brokers, Guarantee: g, CommitInterval: cfg.CommitInterval}, top, store, sink, cfg.Logger, prometheus.NewRegistry())
	if err != nil {
		return IngestRun{}, err
	}
	watch, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...))
	if err != nil {
		return IngestRun{}, err
	}
	defer watch.Close()
	adm := kadm.NewClient(watch)
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return IngestRun{}, err
	}

	pctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	launched := time.Now()
	// The label tells the guarantees apart in a --cpuprofile of the run;
	// every goroutine the processor starts inherits it.
	go pprof.Do(pctx, pprof.Labels("guarantee", string(g)), func(pctx context.Context) { done <- proc.Run(pctx) })
	// Throughput is measured from when the processor is ready (it has
	// created its topics, joined the group and restored its empty
	// partitions): a fixed startup cost says nothing about ingest rate,
	// and the raw consume it is compared with has none of it.
	for !proc.Ready() {
		select {
		case err := <-done:
			cancel()
			return IngestRun{}, fmt.Errorf("processor stopped: %v", err)
		case <-time.After(time.Millisecond):
		}
	}
	cpu0, start := cpuTime(), time.Now()
	startup := start.Sub(launched)
	for {
		select {
		case err := <-done:
			cancel()
			return IngestRun{}, fmt.Errorf("processor stopped: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		committed, err := adm.FetchOffsets(ctx, app)
		if err != nil {
			continue
		}
		caughtUp := true
		ends.Each(func(o kadm.ListedOffset) {
			if c, ok := committed.Lookup(topic, o.Partition); !ok || c.At < o.Offset {
				caughtUp = false
			}
		})
		if caughtUp {
			break
		}
	}
	run := IngestRun{Guarantee: g, Elapsed: time.Since(start), Startup: startup}
	cpu := cpuTime() - cpu0
	cancel()
	if err := <-done; err != nil {
		return IngestRun{}, err
	}
	run.Rate = float64(cfg.Events) / run.Elapsed.Seconds()
	run.CPUPerMillion = cpu.Seconds() / float64(cfg.Events) * 1e6
	return run, nil
}

// restoreRounds is how many times the restore and its raw baseline run.
// A round takes a fraction of a second; with three, the median ratio of
// one binary still moved between 0.5 and 1.0 from run to run.
const restoreRounds = 7

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

func restoreAll(ctx context.Context, cfg IngestConfig, adm *kadm.Client, changelog, dir string) (int64, time.Duration, error) {
	store, err := state.Open(state.Options{Dir: dir, Logger: cfg.Logger}, cfg.Top)
	if err != nil {
		return 0, 0, err
	}
	defer store.Close()
	gen, err := state.EnsureTopic(ctx, adm, changelog, int32(cfg.Partitions), true)
	if err != nil {
		return 0, 0, err
	}
	reg := prometheus.NewRegistry()
	r := state.NewRestorer(store, adm, []kgo.Opt{kgo.SeedBrokers(cfg.Brokers...)}, changelog, cfg.Logger, reg)
	// All partitions at once, as a processor restores an assignment; the
	// Restorer bounds how many read at a time.
	start := time.Now()
	errs := make([]error, cfg.Partitions)
	var wg sync.WaitGroup
	for p := range int32(cfg.Partitions) {
		wg.Go(func() {
			pprof.Do(ctx, pprof.Labels("phase", "restore"), func(ctx context.Context) { _, _, errs[p] = r.Restore(ctx, p, gen) })
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return 0, 0, err
	}
	mfs, err := reg.Gather()
	if err != nil {
		return 0, 0, err
	}
	var n int64
	for _, mf := range mfs {
		if mf.GetName() == "featurestream_restore_records_total" {
			n = int64(mf.GetMetric()[0].GetCounter().GetValue())
		}
	}
	return n, elapsed, nil
}
