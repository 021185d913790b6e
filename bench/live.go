package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/featurestream/featurestream/processor"
	featurestreamv1 "github.com/featurestream/featurestream/proto/featurestream/v1"
	"github.com/featurestream/featurestream/serving"
	"github.com/featurestream/featurestream/sinks"
	"github.com/featurestream/featurestream/state"
	"github.com/featurestream/featurestream/topology"
)

// LiveConfig configures RunLive: live traffic at a fixed rate through a
// processor and a gRPC server.
type LiveConfig struct {
	Brokers   []string
	RedisAddr string
	// Top is the spec; it must have a last_k feature, which the freshness
	// probes read.
	Top        *topology.Topology
	Partitions int
	Users      int
	// Rate is the background events/s. With Rate 0, RunLive first finds
	// the maximum sustained rate (SustainedRate) below MaxRate, the
	// backlog ingest rate, and runs at half of it.
	Rate    int
	MaxRate int
	// Duration of the measurement. Default 10s.
	Duration time.Duration
	// ServeRate is GetFeatures calls/s made while events flow. Default 200.
	ServeRate int
	// CommitInterval is the processor's; 0 is the processor's default.
	CommitInterval time.Duration
	// Warmup is how long the traffic runs at Rate before the measurement
	// starts, so it measures a steady state and not the processor
	// settling after the sustained-rate search. 0: none.
	Warmup time.Duration
	Dir    string
	Logger *slog.Logger
}

// Latencies summarizes a latency sample.
type Latencies struct {
	N              int
	P50, P99, P999 time.Duration
	Max            time.Duration
	// Sample is the raw sample, for histograms.
	Sample []time.Duration `json:"-"`
}

// LiveResult is what RunLive measured.
type LiveResult struct {
	Rate int
	// Sustained is the maximum sustained rate found, when it was searched
	// for (LiveConfig.Rate 0).
	Sustained int
	// Freshness is event produced → its effect visible through
	// GetFeatures.
	Freshness Latencies
	// Serving is GetFeatures latency (one entity, all features) while
	// events flow.
	Serving Latencies
	// Stages are where freshness goes, from the processor's histograms
	// over the live phase (estimates within their buckets).
	Stages []Stage
	// PerSecond is events produced and the freshness of the probes sent in
	// each second.
	PerSecond []SecondSample
}

// SecondSample is one second of a live run.
type SecondSample struct {
	Events int
	// Freshness is the median of the second's probes, FreshnessMax the
	// slowest: a stall shows as a second whose slowest probe stands out.
	Freshness, FreshnessMax time.Duration
}

func summarize(sample []time.Duration) Latencies {
	if len(sample) == 0 {
		return Latencies{}
	}
	s := slices.Clone(sample)
	slices.Sort(s)
	at := func(q float64) time.Duration { return s[min(len(s)-1, int(q*float64(len(s))))] }
	return Latencies{N: len(s), P50: at(0.5), P99: at(0.99), P999: at(0.999), Max: s[len(s)-1], Sample: s}
}

// RunLive runs a processor (exactly-once) and a gRPC server, sends
// cfg.Rate events/s of shop traffic stamped with the current time, and
// after cfg.Warmup measures freshness with probe events (one at a time:
// produce, then poll GetFeatures until the probe's item is the newest of
// its user) and GetFeatures latency at cfg.ServeRate.
func RunLive(ctx context.Context, cfg LiveConfig, progress io.Writer) (*LiveResult, error) {
	if cfg.Duration == 0 {
		cfg.Duration = 10 * time.Second
	}
	if cfg.ServeRate == 0 {
		cfg.ServeRate = 200
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Partitions == 0 {
		cfg.Partitions = 8
	}
	if cfg.Users == 0 {
		cfg.Users = 10_000
	}
	if cfg.Rate < 0 || cfg.Rate == 0 && cfg.MaxRate <= 0 {
		return nil, errors.New("bench live: rate must be positive, or a maximum rate given to search below")
	}
	probe := -1
	for i, f := range cfg.Top.Features {
		if f.Kind == topology.AggLastK && f.Lifetime() {
			probe = i
			break
		}
	}
	if probe < 0 {
		return nil, errors.New("bench live: the spec needs a lifetime last_k feature for the freshness probes")
	}
	probeFeature := cfg.Top.Features[probe]
	if probeFeature.Field != "item_id" {
		return nil, fmt.Errorf("bench live: the probes write item_id, but last_k feature %s reads %s", probeFeature.Name, probeFeature.Field)
	}
	dir := cfg.Dir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "featurestream-live-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...), kgo.ProducerLinger(time.Millisecond))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	id := strconv.FormatInt(time.Now().UnixNano(), 36)
	topic := "bench-live-" + id
	if _, err := state.EnsureTopic(ctx, kadm.NewClient(cl), topic, int32(cfg.Partitions), false); err != nil {
		return nil, err
	}
	spec := *cfg.Top.Spec
	spec.App, spec.Source.Topic = "bench_live_"+id, topic
	top, err := topology.Compile(&spec)
	if err != nil {
		return nil, err
	}
	store, err := state.Open(state.Options{Dir: filepath.Join(dir, "state"), Logger: cfg.Logger}, top)
	if err != nil {
		return nil, err
	}
	defer store.Close()
	rdb := redis.NewClient(&redis.Options{Addr: cfg.RedisAddr})
	defer rdb.Close()
	// The processor's and the sink's metrics, for where freshness goes.
	reg := prometheus.NewRegistry()
	sink, err := sinks.NewStore(rdb, top, cfg.Logger, reg)
	if err != nil {
		return nil, err
	}
	proc, err := processor.New(processor.Config{Brokers: cfg.Brokers, CommitInterval: cfg.CommitInterval}, top, store, sink, cfg.Logger, reg)
	if err != nil {
		return nil, err
	}
	srv, err := serving.New(serving.Config{Addr: "127.0.0.1:0"}, top, sink, cfg.Logger, prometheus.NewRegistry())
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	rctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wg.Go(func() { errs <- proc.Run(rctx) })
	wg.Go(func() { errs <- srv.Serve(rctx, ln) })
	defer func() {
		stop()
		wg.Wait()
	}()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	client := featurestreamv1.NewFeatureServiceClient(conn)
	for !proc.Ready() {
		select {
		case err := <-errs:
			return nil, fmt.Errorf("bench live: %v", err)
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	gen := NewShopGenerator(11, uint64(cfg.Users), 50_000)
	res := &LiveResult{}
	if cfg.Rate == 0 {
		group := processor.GroupFor(spec.App, 0)
		sustained, err := sustainedRate(ctx, cl, topic, group, gen, cfg.MaxRate, progress)
		if err != nil {
			return nil, err
		}
		res.Sustained, cfg.Rate = sustained, sustained/2
	}
	res.Rate = cfg.Rate
	warmup := max(cfg.Warmup, 0)
	fmt.Fprintf(progress, "live: %d events/s for %s after a %s warm-up, probing freshness, GetFeatures at %d/s...\n", cfg.Rate, cfg.Duration, warmup, cfg.ServeRate)

	secs := int(cfg.Duration / time.Second)
	res.PerSecond = make([]SecondSample, max(secs, 1))
	var mu sync.Mutex
	perSecondProbe := make([][]time.Duration, len(res.PerSecond))
	// The measurement starts at start and ends with mctx; the traffic
	// starts warmup before it.
	start := time.Now().Add(warmup)
	mctx, mstop := context.WithDeadline(ctx, start.Add(cfg.Duration))
	var load sync.WaitGroup
	defer func() {
		mstop()
		load.Wait()
	}()

	// Background traffic.
	load.Go(func() {
		produceAtRate(ctx, mctx, cl, gen, topic, cfg.Rate, nil, func(now time.Time, n int) {
			if s := int(now.Sub(start) / time.Second); now.After(start) && s < len(res.PerSecond) {
				mu.Lock()
				res.PerSecond[s].Events += n
				mu.Unlock()
			}
		})
	})
	select {
	case <-time.After(time.Until(start)):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	before, err := snapshotHists(reg)
	if err != nil {
		return nil, err
	}

	// Freshness probes, one at a time.
	var fresh []time.Duration
	load.Go(func() {
		for i := 0; mctx.Err() == nil; i++ {
			user := "probe-" + strconv.Itoa(i%64)
			item := "p" + strconv.Itoa(i)
			sent := time.Now()
			rec := &kgo.Record{Topic: topic, Key: []byte(user)}
			rec.Value = fmt.Appendf(nil, `{"user_id":%q,"ts":%d,"type":"view","item_id":%q,"category":"probe","price":1}`, user, sent.UnixMilli(), item)
			cl.Produce(ctx, rec, nil)
			for mctx.Err() == nil {
				resp, err := client.GetFeatures(mctx, &featurestreamv1.GetFeaturesRequest{EntityIds: []string{user}, Features: []string{probeFeature.Name}})
				if err == nil {
					if v := resp.Results[0].Values[0].GetStringListValue().GetValues(); len(v) > 0 && v[0] == item {
						d := time.Since(sent)
						fresh = append(fresh, d)
						if s := int(sent.Sub(start) / time.Second); s < len(perSecondProbe) {
							perSecondProbe[s] = append(perSecondProbe[s], d)
						}
						break
					}
				}
				time.Sleep(time.Millisecond)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})

	// GetFeatures under load, at a fixed rate.
	var served []time.Duration
	load.Go(func() {
		rng := rand.New(rand.NewPCG(1, 1))
		tick := time.NewTicker(time.Second / time.Duration(cfg.ServeRate))
		defer tick.Stop()
		var inner sync.WaitGroup
		var smu sync.Mutex
		for {
			select {
			case <-mctx.Done():
				inner.Wait()
				return
			case <-tick.C:
				user := "u" + strconv.Itoa(rng.IntN(cfg.Users))
				inner.Go(func() {
					t0 := time.Now()
					_, err := client.GetFeatures(mctx, &featurestreamv1.GetFeaturesRequest{EntityIds: []string{user}})
					if err == nil {
						smu.Lock()
						served = append(served, time.Since(t0))
						smu.Unlock()
					}
				})
			}
		}
	})
	load.Wait()
	if err := cl.Flush(ctx); err != nil {
		return nil, err
	}
	after, err := snapshotHists(reg)
	if err != nil {
		return nil, err
	}
	res.Stages = stagesBetween(before, after)
	res.Freshness = summarize(fresh)
	res.Serving = summarize(served)
	for s := range res.PerSecond {
		l := summarize(perSecondProbe[s])
		res.PerSecond[s].Freshness, res.PerSecond[s].FreshnessMax = l.P50, l.Max
	}
	fmt.Fprintf(progress, "freshness: p50 %s p99 %s p999 %s (%d probes); GetFeatures under load: p50 %s p99 %s (%d calls)\n",
		res.Freshness.P50, res.Freshness.P99, res.Freshness.P999, res.Freshness.N, res.Serving.P50, res.Serving.P99, res.Serving.N)
	for _, st := range res.Stages {
		fmt.Fprintf(progress, "  stage: %s (%d)\n", st, st.N)
	}
	return res, nil
}

// Sustained-rate search: each step produces for sustainStep; a rate is
// sustained if the broker acknowledged at least 95% of it within the step
// and the processor's group was never more than sustainLag behind at any
// of sustainChecks reads of its lag. Over 4 s, a processor 7% slower than
// the rate ends more than 250 ms behind.
const (
	sustainStep   = 4 * time.Second
	sustainChecks = 4
	sustainLag    = 250 * time.Millisecond
	sustainSteps  = 5
)

// sustainedRate finds, by bisection below hi, the highest event rate the
// running processor keeps up with while the load is produced on the same
// machine: the maximum sustained rate. The backlog ingest rate (hi) is
// higher, because there the producer had finished before the processor
// started.
func sustainedRate(ctx context.Context, cl *kgo.Client, topic, group string, gen *ShopGenerator, hi int, progress io.Writer) (int, error) {
	adm := kadm.NewClient(cl)
	lag := func() (int64, error) {
		ends, err := adm.ListEndOffsets(ctx, topic)
		if err != nil {
			return 0, err
		}
		committed, err := adm.FetchOffsets(ctx, group)
		if err != nil {
			return 0, err
		}
		var total int64
		ends.Each(func(o kadm.ListedOffset) {
			at := int64(0)
			if c, ok := committed.Lookup(topic, o.Partition); ok {
				at = c.At
			}
			total += max(o.Offset-at, 0)
		})
		return total, nil
	}
	// drain waits for the group to catch up between steps.
	drain := func() error {
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
			n, err := lag()
			if err != nil {
				return err
			}
			if n == 0 {
				return nil
			}
			time.Sleep(50 * time.Millisecond)
		}
		return errors.New("bench live: the processor did not catch up within 30s between search steps")
	}
	lo := 0
	for range sustainSteps {
		rate := (lo + hi) / 2
		if err := drain(); err != nil {
			return 0, err
		}
		// Records count as sent once the broker has them, during the
		// step; the group's lag is read at each third of it, so a
		// processor that falls behind slowly shows it by the end.
		var acked atomic.Int64
		stop, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			produceAtRate(ctx, stop, cl, gen, topic, rate, &acked, nil)
		}()
		var behind int64
		for i := range sustainChecks {
			time.Sleep(sustainStep / sustainChecks)
			if i == sustainChecks-1 {
				cancel()
			}
			n, err := lag()
			if err != nil {
				cancel()
				<-done
				return 0, err
			}
			behind = max(behind, n)
		}
		cancel()
		sent := acked.Load()
		<-done
		if err := cl.Flush(ctx); err != nil {
			return 0, err
		}
		ok := float64(sent) >= 0.95*float64(rate)*sustainStep.Seconds() && behind <= int64(float64(rate)*sustainLag.Seconds())
		fmt.Fprintf(progress, "sustained-rate search: %d events/s: %d acknowledged in %s, at most %d behind: %s\n",
			rate, sent, sustainStep, behind, map[bool]string{true: "kept up", false: "fell behind"}[ok])
		if ok {
			lo = rate
		} else {
			hi = rate
		}
	}
	if lo == 0 {
		return 0, fmt.Errorf("bench live: no rate was sustained; the lowest tried was %d events/s", hi)
	}
	if err := drain(); err != nil {
		return 0, err
	}
	return lo, nil
}
