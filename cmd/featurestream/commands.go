package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/featurestream/featurestream/bench"
	"github.com/featurestream/featurestream/processor"
	"github.com/featurestream/featurestream/serving"
	"github.com/featurestream/featurestream/sinks"
	"github.com/featurestream/featurestream/sinks/redisserver"
	"github.com/featurestream/featurestream/state"
	"github.com/featurestream/featurestream/topology"
)

// The flags each subcommand shares, with the same names and defaults.
type specFlag struct {
	Spec string `help:"Feature spec file (YAML)." default:"examples/shop/spec.yaml"`
}

type redisFlags struct {
	RedisAddr    string `help:"Redis address host:port; with --redis-cluster, comma-separated seed nodes." default:"127.0.0.1:6379"`
	RedisCluster bool   `help:"Talk to a Redis Cluster."`
	redisAuthFlags
}

type devCmd struct {
	specFlag
	redisAuthFlags
	grpcServerFlags
	KafkaAddr  string `help:"Address the embedded Kafka broker listens on; any Kafka client (kcat, a Java producer) can use it." default:"127.0.0.1:9092"`
	GrpcAddr   string `help:"Address of the gRPC feature server." default:"127.0.0.1:9090"`
	AdminAddr  string `help:"Address of the admin HTTP server (/metrics, /healthz, /readyz, /debug/pprof/)." default:"127.0.0.1:9091"`
	RedisAddr  string `help:"Redis to use, host:port; empty starts a redis-server from PATH on a free port and stops it on exit."`
	StateDir   string `help:"Directory for local state; empty uses a new temporary directory, printed at start and removed on exit."`
	Partitions int    `help:"Partitions of the input topic the embedded broker creates." default:"4"`
	Demo       bool   `help:"Also produce synthetic shop traffic, so features move on their own."`
	Guarantee  string `help:"exactly-once or at-least-once; see featurestream process --help." enum:"exactly-once,at-least-once" default:"exactly-once"`
	DemoRate   int    `help:"Events per second produced by --demo." default:"200"`
}

type processCmd struct {
	specFlag
	redisFlags
	kafkaFlags
	StateDir            string        `help:"Directory for local state (Pebble); it is a cache of the changelog, rebuilt when empty." default:"featurestream-state"`
	AdminAddr           string        `help:"Address of the admin HTTP server (/metrics, /healthz, /readyz, /debug/pprof/)." default:"127.0.0.1:9091"`
	Group               string        `help:"Consumer group; default the spec's app."`
	InstanceID          string        `help:"Static group membership id (for example the pod name), so a restart keeps its partitions."`
	CommitInterval      time.Duration `help:"How often state is committed and pushed to Redis while events keep arriving; when they pause for a tenth of this, what was applied is committed then. Longer commits less often: more throughput, staler features." default:"50ms"`
	SessionTimeout      time.Duration `help:"Consumer group session timeout: how long a silent instance keeps its partitions." default:"10s"`
	ExpireInterval      time.Duration `help:"How often to delete entities whose every window has passed the watermark (a changelog tombstone each); 0 disables." default:"5m"`
	StateCacheMiB       int           `help:"Memory for decoded entity states kept between commits, in MiB, shared by the partitions this processor owns, so an entity updated again soon skips the local store's read and decode. 0 disables the cache." default:"128"`
	CatchUpPushInterval time.Duration `help:"While the processor is catching up, it writes to Redis once per its input lag (in time at its consume rate), at most this long apart, instead of at every commit, leaving Redis's and the processor's time to the backlog. 0 writes at every commit." default:"1s"`
	StandbyReplicas     int           `help:"How many other processors keep a warm copy of each partition's state (tailing its changelog), so a failover replays only the changelog's tail instead of all of it. Each copy costs the disk and the changelog reads of that partition." default:"0"`
	Replay              bool          `help:"Rebuild all state from the earliest retained input: deletes the changelog, the spec record, the group's offsets and local state first. Stop every other processor of the app before. Needed after a spec change that alters what a feature's state means."`
	Guarantee           string        `help:"exactly-once (Kafka transactions: every event counts once after any crash, rebalance or zombie) or at-least-once (no transactions: faster; a crash mid-commit or a zombie may count events twice)." enum:"exactly-once,at-least-once" default:"exactly-once"`
}

type serveCmd struct {
	specFlag
	redisFlags
	grpcServerFlags
	GrpcAddr    string `help:"Address of the gRPC feature server." default:"127.0.0.1:9090"`
	AdminAddr   string `help:"Address of the admin HTTP server (/metrics, /healthz, /readyz, /debug/pprof/)." default:"127.0.0.1:9091"`
	MaxEntities int    `help:"Most entity ids one GetFeatures call may ask for." default:"1000"`
}

type validateCmd struct {
	specFlag
}

func loadTopology(path string) (*topology.Topology, error) {
	spec, err := topology.LoadSpec(path)
	if err != nil {
		return nil, err
	}
	return topology.Compile(spec)
}

// Run checks the spec and lists its features.
func (c *validateCmd) Run(_ context.Context, _ *slog.Logger) error {
	top, err := loadTopology(c.Spec)
	if err != nil {
		return err
	}
	// The decoder reads the Avro schema files: a bad one fails here, not
	// at the first record.
	if _, err := processor.NewDecoder(top.Spec); err != nil {
		return err
	}
	fmt.Printf("%s: ok: app %s, topic %s (%s), %d features\n", c.Spec, top.Spec.App, top.Spec.Source.Topic, top.Spec.Source.Format, len(top.Features))
	for _, f := range top.Features {
		agg := f.Agg
		if f.Derived() {
			agg = "derived"
		}
		fmt.Printf("  %-20s %-16s %-12s %s\n", f.Name, agg, f.Type, f.WindowString())
	}
	return nil
}

func openStore(ctx context.Context, addrs string, cluster bool, top *topology.Topology, logger *slog.Logger, reg prometheus.Registerer) (*sinks.Store, redis.UniversalClient, error) {
	return openStoreWith(ctx, sinks.Options{Addrs: strings.Split(addrs, ","), Cluster: cluster}, top, logger, reg)
}

// Run runs a processor until ctx is done.
func (c *processCmd) Run(ctx context.Context, logger *slog.Logger) error {
	reg := newRegistry()
	top, err := loadTopology(c.Spec)
	if err != nil {
		return err
	}
	kafkaOpts, err := c.kafkaFlags.securityOpts()
	if err != nil {
		return err
	}
	sink, client, err := c.redisFlags.open(ctx, top, logger, reg)
	if err != nil {
		return err
	}
	defer client.Close()
	return runProcessor(ctx, processorParams{
		top: top, brokers: c.Brokers, stateDir: c.StateDir, sink: sink, reg: reg, logger: logger,
		cfg: processor.Config{ClientOpts: kafkaOpts, Group: c.Group, InstanceID: c.InstanceID, CommitInterval: c.CommitInterval,
			SessionTimeout: c.SessionTimeout, Guarantee: processor.Guarantee(c.Guarantee), Replay: c.Replay, StandbyReplicas: c.StandbyReplicas,
			StateCacheBytes: offIfZero(c.StateCacheMiB << 20), CatchUpPushInterval: offIfZero(c.CatchUpPushInterval),
			ExpireInterval: offIfZero(c.ExpireInterval)},
		adminAddr: c.AdminAddr,
	})
}

// offIfZero maps a flag where 0 turns a feature off (--state-cache-mib,
// --catch-up-push-interval, --expire-interval) to processor.Config, where 0
// means the default and a negative value turns it off.
func offIfZero[T int | time.Duration](v T) T {
	if v <= 0 {
		return -1
	}
	return v
}

type processorParams struct {
	top       *topology.Topology
	brokers   []string
	stateDir  string
	sink      processor.Sink
	reg       *prometheus.Registry
	logger    *slog.Logger
	cfg       processor.Config
	adminAddr string
	// extra are run alongside the processor (the dev command's server).
	extra  []func(context.Context) error
	checks []readiness
	// started, if set, is called with the admin address once listening.
	started func(adminAddr string)
}

func runProcessor(ctx context.Context, p processorParams) error {
	if err := os.MkdirAll(p.stateDir, 0o755); err != nil {
		return fmt.Errorf("state dir %s (--state-dir): %w", p.stateDir, err)
	}
	store, err := state.Open(state.Options{Dir: filepath.Join(p.stateDir, "pebble"), Logger: p.logger}, p.top)
	if err != nil {
		return err
	}
	defer store.Close()
	p.reg.MustRegister(state.NewCollector(store))
	p.cfg.Brokers = p.brokers
	proc := &followGenerations{top: p.top, cfg: p.cfg, store: store, sink: p.sink, reg: p.reg, logger: p.logger}
	checks := append([]readiness{{name: "processor", check: func(context.Context) error {
		if !proc.Ready() {
			return errors.New("not yet assigned and restored")
		}
		return nil
	}}}, p.checks...)
	admin, err := newAdminServer(p.adminAddr, p.reg, checks, p.logger)
	if err != nil {
		return err
	}
	if p.started != nil {
		p.started(admin.Addr())
	}
	return runGroup(ctx, append([]func(context.Context) error{proc.Run, admin.Run}, p.extra...)...)
}

// Run runs a feature server until ctx is done.
func (c *serveCmd) Run(ctx context.Context, logger *slog.Logger) error {
	reg := newRegistry()
	top, err := loadTopology(c.Spec)
	if err != nil {
		return err
	}
	cfg, err := c.grpcServerFlags.config(c.GrpcAddr, c.MaxEntities)
	if err != nil {
		return err
	}
	store, client, err := c.redisFlags.open(ctx, top, logger, reg)
	if err != nil {
		return err
	}
	defer client.Close()
	srv, ln, err := newServerWith(cfg, top, store, logger, reg)
	if err != nil {
		return err
	}
	admin, err := newAdminServer(c.AdminAddr, reg, []readiness{{name: "redis", check: store.Ping}}, logger)
	if err != nil {
		ln.Close()
		return err
	}
	logger.Info("serving", "grpc", ln.Addr().String(), "admin", admin.Addr())
	return runGroup(ctx, func(ctx context.Context) error { return srv.Serve(ctx, ln) }, admin.Run)
}

func newServer(addr string, maxEntities int, top *topology.Topology, store *sinks.Store, logger *slog.Logger, reg prometheus.Registerer) (*serving.Server, net.Listener, error) {
	return newServerWith(serving.Config{Addr: addr, MaxEntities: maxEntities}, top, store, logger, reg)
}

// Run runs the whole product in one process.
func (c *devCmd) Run(ctx context.Context, logger *slog.Logger) error {
	return c.run(ctx, logger, nil)
}

// devAddrs are where a running dev command listens.
type devAddrs struct {
	Kafka, GRPC, Admin, Redis, StateDir string
}

func (c *devCmd) run(ctx context.Context, logger *slog.Logger, started func(devAddrs)) error {
	top, err := loadTopology(c.Spec)
	if err != nil {
		return err
	}
	stateDir := c.StateDir
	if stateDir == "" {
		if stateDir, err = os.MkdirTemp("", "featurestream-dev-"); err != nil {
			return fmt.Errorf("state dir: %w", err)
		}
		defer os.RemoveAll(stateDir)
	}

	grpcCfg, err := c.grpcServerFlags.config(c.GrpcAddr, 1000)
	if err != nil {
		return err
	}
	redisAddr := c.RedisAddr
	if redisAddr == "" {
		var args []string
		switch {
		case c.RedisUsername != "" || c.RedisTLS || c.RedisTLSCA != "":
			return errors.New("--redis-username, --redis-tls and --redis-tls-ca need --redis-addr: the redis-server dev starts has no ACL users or TLS")
		case c.RedisPassword != "":
			args = []string{"--requirepass", c.RedisPassword}
		}
		rs, err := redisserver.Start(ctx, redisserver.Options{Logger: logger, Args: args})
		if err != nil {
			if errors.Is(err, redisserver.ErrNotInstalled) {
				return fmt.Errorf("dev needs a redis-server: %w; or pass --redis-addr host:port of a running Redis", err)
			}
			return fmt.Errorf("start redis-server: %w", err)
		}
		defer rs.Stop()
		redisAddr = rs.Addr()
	}

	cluster, err := startKafka(c.KafkaAddr, int32(c.Partitions), top.Spec.Source.Topic)
	if err != nil {
		return err
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()

	reg := newRegistry()
	redisOpts, err := c.redisAuthFlags.options(redisAddr, false)
	if err != nil {
		return err
	}
	store, client, err := openStoreWith(ctx, redisOpts, top, logger, reg)
	if err != nil {
		return err
	}
	defer client.Close()
	srv, ln, err := newServerWith(grpcCfg, top, store, logger, reg)
	if err != nil {
		return err
	}
	extra := []func(context.Context) error{func(ctx context.Context) error { return srv.Serve(ctx, ln) }}
	if c.Demo {
		extra = append(extra, func(ctx context.Context) error {
			pcl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
			if err != nil {
				return fmt.Errorf("demo producer: %w", err)
			}
			defer pcl.Close()
			return bench.ProduceDemo(ctx, pcl, top.Spec.Source.Topic, c.DemoRate, uint64(time.Now().UnixNano()))
		})
	}
	return runProcessor(ctx, processorParams{
		top: top, brokers: brokers, stateDir: stateDir, sink: store, reg: reg, logger: logger,
		adminAddr: c.AdminAddr, extra: extra,
		cfg:    processor.Config{Guarantee: processor.Guarantee(c.Guarantee)},
		checks: []readiness{{name: "redis", check: store.Ping}},
		started: func(adminAddr string) {
			addrs := devAddrs{Kafka: brokers[0], GRPC: ln.Addr().String(), Admin: adminAddr, Redis: redisAddr, StateDir: stateDir}
			printDevBanner(addrs, top, c.Demo)
			if started != nil {
				started(addrs)
			}
		},
	})
}

// startKafka starts the embedded broker on addr with the given topics.
func startKafka(addr string, partitions int32, topics ...string) (*kfake.Cluster, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("--kafka-addr %q: want host:port such as 127.0.0.1:9092", addr)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("--kafka-addr %q: bad port", addr)
	}
	if partitions < 1 {
		return nil, fmt.Errorf("--partitions %d: want at least 1", partitions)
	}
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.Ports(port),
		kfake.ListenFn(func(network, a string) (net.Listener, error) {
			_, p, _ := net.SplitHostPort(a)
			return net.Listen(network, net.JoinHostPort(host, p))
		}),
		kfake.SeedTopics(partitions, topics...),
	)
	if err != nil {
		return nil, fmt.Errorf("start embedded kafka on %s (--kafka-addr): %w", addr, err)
	}
	return c, nil
}

func printDevBanner(a devAddrs, top *topology.Topology, demo bool) {
	var names []string
	for _, f := range top.Features {
		names = append(names, f.Name)
	}
	fmt.Fprintf(os.Stderr, `
featurestream dev is running (Ctrl-C stops it)
  kafka   %s   (embedded; input topic %q)
  grpc    %s   (featurestream.v1.FeatureService; health and reflection on)
  admin   http://%s/metrics  /healthz  /readyz  /debug/pprof/
  redis   %s
  state   %s
  features: %s
`, a.Kafka, top.Spec.Source.Topic, a.GRPC, a.Admin, a.Redis, a.StateDir, strings.Join(names, ", "))
	if demo {
		fmt.Fprintln(os.Stderr, "  demo traffic is flowing for users u1, u2, ...")
	}
	fmt.Fprintf(os.Stderr, `
Send an event, then read its features:
  echo "u1:{\"user_id\":\"u1\",\"ts\":$(date +%%s000),\"type\":\"view\",\"item_id\":\"i9\",\"category\":\"shoes\",\"price\":19.99}" | kcat -b %s -t %s -K: -P
  grpcurl -plaintext -d '{"entity_ids":["u1"]}' %s featurestream.v1.FeatureService/GetFeatures

`, a.Kafka, top.Spec.Source.Topic, a.GRPC)
}

// runGroup runs fns until the first returns, then cancels the rest and
// waits for them. It returns the first error.
func runGroup(ctx context.Context, fns ...func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
	)
	for _, fn := range fns {
		wg.Go(func() {
			err := fn(ctx)
			once.Do(func() { firstErr = err })
			cancel()
		})
	}
	wg.Wait()
	return firstErr
}
