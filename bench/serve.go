package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/featurestream/featurestream/client"
	pb "github.com/featurestream/featurestream/proto/featurestream/v1"
	"github.com/featurestream/featurestream/serving"
	"github.com/featurestream/featurestream/sinks"
	"github.com/featurestream/featurestream/sinks/redisserver"
	"github.com/featurestream/featurestream/topology"
)

// ServeConfig configures RunServe. Zero fields take their defaults.
type ServeConfig struct {
	// Spec is the feature spec file. Default examples/shop/spec.yaml.
	Spec string
	// RedisAddr is a Redis on loopback to use; its fs:<app>:e:u* keys are
	// overwritten. Empty starts a redis-server from PATH.
	RedisAddr string
	// Entities is how many entities are loaded. Default 100,000.
	Entities int
	// EventsPerEntity is how many shop events each entity's state is built
	// from, spread over the last day. Default 20.
	EventsPerEntity int
	// Duration is how long each cell is measured, after a warm-up of a
	// fifth of it. Default 3s.
	Duration time.Duration
	// Callers are the concurrency levels. Default 1, 16, 64, 256.
	Callers []int
	// Batches are the entities per call. Default 1, 100.
	Batches []int
	// Conns is how many gRPC connections the callers share. Default 1, as
	// a typical client has.
	Conns int
	// Verbose asks GetFeatures for verbose responses (each value with its
	// name and window) instead of compact ones, as package client sends.
	// It implies the generated client.
	Verbose bool
	// Generated calls GetFeatures with the generated gRPC client, decoding
	// responses into proto messages, instead of with package client.
	Generated bool
	// CPUProfile, if set, is where a CPU profile of the measured cells is
	// written.
	CPUProfile string
	// Seed makes the data and the entity choice reproducible.
	Seed uint64
	// Logger receives progress. Default discard.
	Logger *slog.Logger
}

func (c ServeConfig) withDefaults() ServeConfig {
	if c.Spec == "" {
		c.Spec = "examples/shop/spec.yaml"
	}
	if c.Entities == 0 {
		c.Entities = 100_000
	}
	if c.EventsPerEntity == 0 {
		c.EventsPerEntity = 20
	}
	if c.Duration == 0 {
		c.Duration = 3 * time.Second
	}
	if len(c.Callers) == 0 {
		c.Callers = []int{1, 16, 64, 256}
	}
	if len(c.Batches) == 0 {
		c.Batches = []int{1, 100}
	}
	if c.Conns == 0 {
		c.Conns = 1
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c ServeConfig) validate() error {
	var probs []string
	if c.Entities < 0 || c.EventsPerEntity < 0 || c.Duration < 0 || c.Conns < 0 {
		probs = append(probs, "entities, events per entity, duration and conns must not be negative")
	}
	for _, n := range c.Callers {
		if n < 1 {
			probs = append(probs, fmt.Sprintf("callers %d: want at least 1", n))
		}
	}
	for _, n := range c.Batches {
		if n < 1 || n > serving.DefaultMaxEntities {
			probs = append(probs, fmt.Sprintf("batch %d: want 1-%d", n, serving.DefaultMaxEntities))
		}
		if c.Entities > 0 && n > c.Entities {
			probs = append(probs, fmt.Sprintf("batch %d: more than the %d entities", n, c.Entities))
		}
	}
	if c.RedisAddr != "" {
		if err := checkLoopback(c.RedisAddr); err != nil {
			probs = append(probs, err.Error())
		}
	}
	if len(probs) > 0 {
		return fmt.Errorf("bench serve: %s", strings.Join(probs, "; "))
	}
	return nil
}

// checkLoopback refuses a Redis that is not on this machine: the benchmark
// floods its target.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("redis addr %q: want host:port", addr)
	}
	ips, err := net.LookupIP(host)
	if err != nil {
		return fmt.Errorf("redis addr %q: %w", addr, err)
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return fmt.Errorf("redis addr %q: not a loopback address; the benchmark only runs against this machine", addr)
		}
	}
	return nil
}

// Cell is one measured combination of path, callers and batch size.
type Cell struct {
	// Path is "grpc" (GetFeatures through the feature server), "raw"
	// (go-redis GET of the entity values, pipelined for batches) or "health" (the gRPC
	// health check on the same server over as many connections: a call
	// that does no work, measured with batch 1 as the floor any gRPC call
	// costs).
	Path           string
	Callers, Batch int
	Calls, Errors  int
	Elapsed        time.Duration
	P50, P99, P999 time.Duration
	FirstErr       error
	CallsPerSec    float64
	EntitiesPerSec float64
	// ProcCPU and RedisCPU are the CPU time this process (callers and,
	// for grpc, the feature server) and redis-server used while the cell
	// was measured. Per call, they say what a path costs even when other
	// work on the machine distorts throughput.
	ProcCPU, RedisCPU time.Duration
}

// CPUPerCall is the CPU time, this process's plus Redis's, one call cost.
func (c *Cell) CPUPerCall() time.Duration {
	if c.Calls == 0 {
		return 0
	}
	return (c.ProcCPU + c.RedisCPU) / time.Duration(c.Calls)
}

// ServeReport is what RunServe measured.
type ServeReport struct {
	Config ServeConfig
	// Cells alternate raw and grpc for each callers × batch.
	Cells []Cell
	// Machine describes where it ran.
	Machine string
	Redis   string
	Loaded  time.Duration
	// LoadAvg is /proc/loadavg before and after the cells: other work on
	// the machine shows here.
	LoadAvg [2]string
}

// Targets the issue sets, checked by Verdicts.
const (
	TargetThroughputRatio = 0.8
	TargetP99Ratio        = 1.5
	TargetSingleP99       = 500 * time.Microsecond
)

// RunServe loads cfg.Entities shop entities into Redis, starts a feature
// server on loopback and measures GetFeatures beside the raw go-redis
// baseline for every callers × batch cell, writing progress to progress.
func RunServe(ctx context.Context, cfg ServeConfig, progress io.Writer) (*ServeReport, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	spec, err := topology.LoadSpec(cfg.Spec)
	if err != nil {
		return nil, err
	}
	top, err := topology.Compile(spec)
	if err != nil {
		return nil, err
	}
	rep := &ServeReport{Config: cfg, Machine: machine()}

	addr := cfg.RedisAddr
	if addr == "" {
		rs, err := redisserver.Start(ctx, redisserver.Options{Logger: cfg.Logger})
		if err != nil {
			return nil, fmt.Errorf("bench serve: %w", err)
		}
		defer rs.Stop()
		addr = rs.Addr()
	}
	rdb, err := sinks.NewClient(sinks.Options{Addrs: []string{addr}})
	if err != nil {
		return nil, err
	}
	defer rdb.Close()
	store, err := sinks.NewStore(rdb, top, cfg.Logger, nil)
	if err != nil {
		return nil, err
	}
	if err := store.Ping(ctx); err != nil {
		return nil, fmt.Errorf("bench serve: %w", err)
	}
	if info, err := rdb.Info(ctx, "server").Result(); err == nil {
		rep.Redis = infoField(info, "redis_version")
	}

	start := time.Now()
	fmt.Fprintf(progress, "loading %d entities (%d events each) into redis %s\n", cfg.Entities, cfg.EventsPerEntity, addr)
	ids, err := loadShop(ctx, top, store, cfg)
	if err != nil {
		return nil, err
	}
	rep.Loaded = time.Since(start)
	fmt.Fprintf(progress, "loaded in %s\n", rep.Loaded.Round(time.Millisecond))

	srv, err := serving.New(serving.Config{Addr: "127.0.0.1:0"}, top, store, cfg.Logger, nil)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sctx, ln) }()
	defer func() {
		stop()
		<-served
	}()

	conns := make([]pb.FeatureServiceClient, cfg.Conns)
	healths := make([]healthpb.HealthClient, cfg.Conns)
	clients := make([]*client.Client, cfg.Conns)
	for i := range conns {
		conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		conns[i], healths[i] = pb.NewFeatureServiceClient(conn), healthpb.NewHealthClient(conn)
		if clients[i], err = client.New(ln.Addr().String(), client.Insecure()); err != nil {
			return nil, err
		}
		defer clients[i].Close()
	}
	// The raw baseline gets its own client with the same pool settings, so
	// neither path waits for the other's connections.
	raw, err := sinks.NewClient(sinks.Options{Addrs: []string{addr}})
	if err != nil {
		return nil, err
	}
	defer raw.Close()
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = store.Key(id)
	}

	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err != nil {
			return nil, fmt.Errorf("bench serve: cpu profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, fmt.Errorf("bench serve: cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}

	rep.LoadAvg[0] = loadAvg()
	defer func() { rep.LoadAvg[1] = loadAvg() }()
	for _, callers := range cfg.Callers {
		for _, batch := range cfg.Batches {
			rawCall := func(ctx context.Context, rng *rand.Rand) error {
				if batch == 1 {
					return raw.Get(ctx, keys[rng.IntN(len(keys))]).Err()
				}
				cmds, err := raw.Pipelined(ctx, func(p redis.Pipeliner) error {
					for range batch {
						p.Get(ctx, keys[rng.IntN(len(keys))])
					}
					return nil
				})
				if err == nil && len(cmds) != batch {
					err = fmt.Errorf("%d replies for %d commands", len(cmds), batch)
				}
				return err
			}
			clientCall := func(ctx context.Context, rng *rand.Rand, req *client.Request, c *client.Client) error {
				for i := range req.EntityIDs {
					req.EntityIDs[i] = ids[rng.IntN(len(ids))]
				}
				fs, err := c.GetFeatures(ctx, *req)
				if err == nil && fs.Len() != batch {
					err = fmt.Errorf("%d results for %d entities", fs.Len(), batch)
				}
				return err
			}
			grpcCall := func(ctx context.Context, rng *rand.Rand, req *pb.GetFeaturesRequest, c pb.FeatureServiceClient) error {
				for i := range req.EntityIds {
					req.EntityIds[i] = ids[rng.IntN(len(ids))]
				}
				resp, err := c.GetFeatures(ctx, req)
				if err == nil && len(resp.GetResults()) != batch {
					err = fmt.Errorf("%d results for %d entities", len(resp.GetResults()), batch)
				}
				return err
			}
			paths := []string{"raw", "grpc"}
			if batch == 1 {
				paths = append(paths, "health")
			}
			for _, path := range paths {
				cell := measure(ctx, cfg, path, callers, batch, cpuMeter{raw}, func(worker int) func(context.Context, *rand.Rand) error {
					switch path {
					case "raw":
						return rawCall
					case "health":
						c := healths[worker%len(healths)]
						req := &healthpb.HealthCheckRequest{}
						return func(ctx context.Context, _ *rand.Rand) error {
							resp, err := c.Check(ctx, req)
							if err == nil && resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
								err = fmt.Errorf("health: %v", resp.GetStatus())
							}
							return err
						}
					}
					if cfg.Verbose || cfg.Generated {
						req := &pb.GetFeaturesRequest{EntityIds: make([]string, batch), Compact: !cfg.Verbose}
						c := conns[worker%len(conns)]
						return func(ctx context.Context, rng *rand.Rand) error { return grpcCall(ctx, rng, req, c) }
					}
					req := &client.Request{EntityIDs: make([]string, batch)}
					c := clients[worker%len(clients)]
					return func(ctx context.Context, rng *rand.Rand) error { return clientCall(ctx, rng, req, c) }
				})
				if err := ctx.Err(); err != nil {
					return rep, err
				}
				rep.Cells = append(rep.Cells, cell)
				fmt.Fprintf(progress, "%-4s callers=%-3d batch=%-3d %9.0f calls/s  p50 %-9s p99 %-9s p999 %-9s cpu/call %-9s (redis %s) errors %d\n",
					path, callers, batch, cell.CallsPerSec, round(cell.P50), round(cell.P99), round(cell.P999), round(cell.CPUPerCall()),
					round(cell.RedisCPU/time.Duration(max(cell.Calls, 1))), cell.Errors)
				if cell.FirstErr != nil {
					fmt.Fprintf(progress, "  first error: %v\n", cell.FirstErr)
				}
			}
		}
	}
	return rep, nil
}

// measure runs callers workers doing calls for cfg.Duration (after a
// warm-up) and returns their throughput and latency quantiles.
func measure(ctx context.Context, cfg ServeConfig, path string, callers, batch int, cpu cpuMeter, newCall func(worker int) func(context.Context, *rand.Rand) error) Cell {
	warm := cfg.Duration / 5
	lat := make([][]time.Duration, callers)
	errs := make([]int, callers)
	var (
		firstErr error
		errOnce  sync.Once
		wg       sync.WaitGroup
	)
	begin := time.Now()
	measureFrom, until := begin.Add(warm), begin.Add(warm+cfg.Duration)
	var cpu0 [2]time.Duration
	cpuRead := make(chan struct{})
	cpuTimer := time.AfterFunc(warm, func() { cpu0 = cpu.read(ctx); close(cpuRead) })
	for w := range callers {
		call := newCall(w)
		rng := rand.New(rand.NewPCG(cfg.Seed, uint64(w)+uint64(callers)<<32+uint64(batch)<<48))
		lat[w] = make([]time.Duration, 0, 1024)
		wg.Go(func() {
			for ctx.Err() == nil {
				t0 := time.Now()
				if t0.After(until) {
					return
				}
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				err := call(cctx, rng)
				cancel()
				d := time.Since(t0)
				if t0.Before(measureFrom) {
					continue
				}
				if err != nil {
					errs[w]++
					errOnce.Do(func() { firstErr = err })
					continue
				}
				lat[w] = append(lat[w], d)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(measureFrom)
	cpu1 := cpu.read(ctx)
	if !cpuTimer.Stop() {
		<-cpuRead
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	c := Cell{Path: path, Callers: callers, Batch: batch, Calls: len(all), Elapsed: elapsed, FirstErr: firstErr}
	for _, e := range errs {
		c.Errors += e
	}
	if len(all) > 0 {
		c.P50, c.P99, c.P999 = quantile(all, 0.5), quantile(all, 0.99), quantile(all, 0.999)
	}
	if cpu0[0] > 0 {
		c.ProcCPU, c.RedisCPU = cpu1[0]-cpu0[0], cpu1[1]-cpu0[1]
	}
	c.CallsPerSec = float64(c.Calls) / elapsed.Seconds()
	c.EntitiesPerSec = c.CallsPerSec * float64(batch)
	return c
}

// cpuMeter reads the CPU time used so far by this process and by Redis.
type cpuMeter struct{ redis redis.UniversalClient }

func (m cpuMeter) read(ctx context.Context) [2]time.Duration {
	var out [2]time.Duration
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		out[0] = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if info, err := m.redis.Info(ctx, "cpu").Result(); err == nil {
		for _, f := range []string{"used_cpu_sys", "used_cpu_user"} {
			if v, err := strconv.ParseFloat(infoField(info, f), 64); err == nil {
				out[1] += time.Duration(v * float64(time.Second))
			}
		}
	}
	return out
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// loadShop writes cfg.Entities entities, u0..uN-1, each built by applying
// cfg.EventsPerEntity generated shop events spread over the last day, the
// newest a minute ago, so every window of the shop spec has data now.
func loadShop(ctx context.Context, top *topology.Topology, store *sinks.Store, cfg ServeConfig) ([]string, error) {
	gen := NewShopGenerator(cfg.Seed, uint64(max(cfg.Entities, 2)), 5000)
	now := time.Now()
	span := 24 * time.Hour
	grace := time.Duration(top.Spec.Source.Grace)
	ids := make([]string, cfg.Entities)
	version := uint64(now.UnixNano()) // newer than any earlier run's
	const batch = 1000
	recs := make([]sinks.Record, 0, batch)
	fields := map[string]any{}
	for i := range cfg.Entities {
		ids[i] = "u" + strconv.Itoa(i)
		st := top.NewEntityState()
		for k := range cfg.EventsPerEntity {
			// Oldest first, as a partition sees them.
			ts := now.Add(-time.Minute - span*time.Duration(cfg.EventsPerEntity-1-k)/time.Duration(cfg.EventsPerEntity))
			ev := gen.Next(ts)
			fields["type"], fields["item_id"], fields["category"], fields["price"] = ev.Type, ev.ItemID, ev.Category, ev.Price
			e := topology.Event{Key: ids[i], TimeMs: ev.TS, Fields: fields}
			if err := top.Apply(st, &e, ev.TS-grace.Milliseconds()); err != nil {
				return nil, fmt.Errorf("bench serve: build entity %s: %w", ids[i], err)
			}
		}
		recs = append(recs, sinks.Record{Entity: ids[i], Partition: int32(i % 8), Version: version, Generation: "bench", State: st})
		if len(recs) == batch || i == cfg.Entities-1 {
			if err := store.Write(ctx, recs); err != nil {
				return nil, fmt.Errorf("bench serve: load: %w", err)
			}
			recs = recs[:0]
		}
	}
	return ids, nil
}

func round(d time.Duration) string {
	switch {
	case d >= 10*time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	case d >= 100*time.Microsecond:
		return d.Round(time.Microsecond).String()
	}
	return d.Round(100 * time.Nanosecond).String()
}

func infoField(info, name string) string {
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), name+":"); ok {
			return v
		}
	}
	return ""
}

// machine describes the CPU the benchmark ran on.
func machine() string {
	model := "unknown CPU"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	return fmt.Sprintf("%d CPUs (nproc), %s, GOMAXPROCS %d, %s %s/%s", runtime.NumCPU(), model, runtime.GOMAXPROCS(0), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func (c ServeConfig) callerText() string {
	switch {
	case c.Verbose:
		return "verbose responses decoded by the generated client"
	case c.Generated:
		return "compact responses decoded by the generated client"
	}
	return "called through package client (compact responses, its flat decoder)"
}

// pair returns the raw and grpc cells of callers × batch.
func (r *ServeReport) pair(callers, batch int) (raw, grpc *Cell) {
	for i := range r.Cells {
		c := &r.Cells[i]
		if c.Callers != callers || c.Batch != batch {
			continue
		}
		switch c.Path {
		case "raw":
			raw = c
		case "grpc":
			grpc = c
		}
	}
	return raw, grpc
}

// Verdicts checks the targets against the cells that were
// measured: one line each, starting with PASS or MISS.
func (r *ServeReport) Verdicts() []string {
	var out []string
	for _, b := range r.Config.Batches {
		raw, g := r.pair(64, b)
		if raw == nil || g == nil || raw.Calls == 0 || g.Calls == 0 {
			continue
		}
		tr, pr := g.CallsPerSec/raw.CallsPerSec, float64(g.P99)/float64(raw.P99)
		out = append(out,
			verdict(tr >= TargetThroughputRatio, fmt.Sprintf("64 callers × %d entities: GetFeatures throughput %.2f× raw (target ≥ %.1f×)", b, tr, TargetThroughputRatio)),
			verdict(pr <= TargetP99Ratio, fmt.Sprintf("64 callers × %d entities: GetFeatures p99 %.2f× raw (target ≤ %.1f×)", b, pr, TargetP99Ratio)))
	}
	if _, g := r.pair(1, 1); g != nil && g.Calls > 0 {
		out = append(out, verdict(g.P99 <= TargetSingleP99, fmt.Sprintf("1 caller × 1 entity × all features: GetFeatures p99 %s (target ≤ %s)", round(g.P99), TargetSingleP99)))
	}
	return out
}

func verdict(ok bool, s string) string {
	if ok {
		return "PASS " + s
	}
	return "MISS " + s
}

// WriteTable writes the cells as a Markdown table, one row per callers ×
// batch with GetFeatures beside the raw baseline, then the verdicts.
func (r *ServeReport) WriteTable(w io.Writer) error {
	var b strings.Builder
	b.WriteString("| callers | entities/call | GetFeatures calls/s | p50 | p99 | p99.9 | CPU/call | raw calls/s | p50 | p99 | p99.9 | CPU/call | throughput ×raw | p99 ×raw |\n")
	b.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, c := range r.Config.Callers {
		for _, bt := range r.Config.Batches {
			raw, g := r.pair(c, bt)
			if raw == nil || g == nil {
				continue
			}
			tr, pr := "-", "-"
			if raw.Calls > 0 && g.Calls > 0 {
				tr = fmt.Sprintf("%.2f", g.CallsPerSec/raw.CallsPerSec)
				pr = fmt.Sprintf("%.2f", float64(g.P99)/float64(raw.P99))
			}
			fmt.Fprintf(&b, "| %d | %d | %.0f | %s | %s | %s | %s | %.0f | %s | %s | %s | %s | %s | %s |\n", c, bt,
				g.CallsPerSec, round(g.P50), round(g.P99), round(g.P999), round(g.CPUPerCall()),
				raw.CallsPerSec, round(raw.P50), round(raw.P99), round(raw.P999), round(raw.CPUPerCall()), tr, pr)
		}
	}
	if floor := r.floorLines(); len(floor) > 0 {
		b.WriteString("\nThe gRPC floor: a health check, which does no work, on the same server (its metrics and recovery interceptors included) over the same number of connections, beside GetFeatures of one entity:\n\n")
		for _, l := range floor {
			b.WriteString("- " + l + "\n")
		}
	}
	if errs := r.errors(); errs != "" {
		b.WriteString("\nErrors: " + errs + "\n")
	}
	b.WriteString("\n")
	for _, v := range r.Verdicts() {
		b.WriteString("- " + v + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// floorLines compares the health-check cells with GetFeatures and the raw
// loop at the same callers.
func (r *ServeReport) floorLines() []string {
	var out []string
	for _, h := range r.Cells {
		if h.Path != "health" || h.Calls == 0 {
			continue
		}
		raw, g := r.pair(h.Callers, 1)
		if raw == nil || g == nil || raw.Calls == 0 || g.Calls == 0 {
			continue
		}
		out = append(out, fmt.Sprintf("%d callers: health check %.0f calls/s (%.2f× raw), p99 %s, CPU/call %s; GetFeatures %.0f calls/s, %.2f× the health check",
			h.Callers, h.CallsPerSec, h.CallsPerSec/raw.CallsPerSec, round(h.P99), round(h.CPUPerCall()), g.CallsPerSec, g.CallsPerSec/h.CallsPerSec))
	}
	return out
}

func (r *ServeReport) errors() string {
	var parts []string
	for _, c := range r.Cells {
		if c.Errors > 0 {
			parts = append(parts, fmt.Sprintf("%s callers=%d batch=%d: %d (%v)", c.Path, c.Callers, c.Batch, c.Errors, c.FirstErr))
		}
	}
	return strings.Join(parts, "; ")
}

// WriteMarkdown writes a report section: the command, the machine and the
// table.
func (r *ServeReport) WriteMarkdown(w io.Writer, command string) error {
	cfg := r.Config
	_, err := fmt.Fprintf(w, "Command: `%s`\n\nMachine: %s; redis-server %s on loopback, on the same machine; load average %s before the cells, %s after (other work shares the machine).\n\n"+
		"Data: %d shop entities, each from %d generated events over the last day (loaded in %s). Each cell runs %s after a %s warm-up; "+
		"callers pick entities uniformly at random; `raw` is go-redis GET (a pipeline of GETs for a batch) of the same keys, "+
		"`GetFeatures` is a gRPC call over %d loopback connection(s) to the feature server, reading every feature of the spec, %s. "+
		"CPU/call is this process's CPU time (callers, and for GetFeatures the server) plus redis-server's, per call.\n\n",
		command, r.Machine, r.Redis, r.LoadAvg[0], r.LoadAvg[1], cfg.Entities, cfg.EventsPerEntity, r.Loaded.Round(time.Second), cfg.Duration, cfg.Duration/5, cfg.Conns, cfg.callerText())
	if err != nil {
		return err
	}
	return r.WriteTable(w)
}
