package processor

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/featurestream/featurestream/sinks"
	"github.com/featurestream/featurestream/state"
	"github.com/featurestream/featurestream/topology"
)

// Sink receives the newest state of every entity a commit touched, after
// the commit. Writes must be idempotent and must never replace a newer
// version with an older one.
type Sink interface {
	Write(ctx context.Context, recs []sinks.Record) error
}

// Guarantee is how exactly state reflects input across failures.
type Guarantee string

// The guarantees.
const (
	// ExactlyOnce commits changelog records, dead letters and input
	// offsets in one Kafka transaction per commit interval: every valid
	// event counts once after any crash, rebalance or zombie.
	ExactlyOnce Guarantee = "exactly-once"
	// AtLeastOnce commits without transactions: faster, and exact across
	// most crashes (see docs/decisions/0002-commit-order.md), but a crash
	// mid-commit or a zombie can count events twice.
	AtLeastOnce Guarantee = "at-least-once"
)

// Config configures a Processor.
type Config struct {
	// Brokers are the Kafka seed brokers. Required.
	Brokers []string
	// ClientOpts are extra franz-go options for every client (TLS, SASL).
	ClientOpts []kgo.Opt
	// Group is the consumer group. Default: the spec's app.
	Group string
	// InstanceID enables static group membership, so a restarted instance
	// gets its partitions back without a rebalance.
	InstanceID string
	// CommitInterval is how often state is committed and pushed to the
	// online store while input keeps arriving; input that pauses for a
	// tenth of it is committed then (decision 0015). Default 50ms
	// (decision 0019).
	CommitInterval time.Duration
	// MaxPollRecords bounds the records processed between commits'
	// checks. Default 0: no bound, a poll takes everything buffered (one
	// fetch, at most FetchMaxBytes, franz-go's 50 MiB), so the client
	// fetches the next while these are processed: franz-go fetches again
	// only once the buffered fetch is drained, and a poll that left part
	// of it behind made the processor wait a whole fetch afterwards
	// (docs/decisions/0020).
	MaxPollRecords int
	// SessionTimeout is the group session timeout. Default 10s.
	SessionTimeout time.Duration
	// Guarantee is ExactlyOnce (default) or AtLeastOnce.
	Guarantee Guarantee
	// TransactionalID is the Kafka transactional id with ExactlyOnce.
	// Default "<group>-<instance id>", or a random suffix without an
	// instance id: a stable id lets a restarted instance fence its
	// predecessor's open transaction at once instead of after the
	// transaction timeout.
	TransactionalID string
	// TransactionTimeout bounds how long a crashed instance's open
	// transaction blocks read_committed readers. Default 10s.
	TransactionTimeout time.Duration
	// ExpireInterval is how often the processor looks for entities whose
	// every window has passed (nothing a read at or after the watermark
	// could use) and deletes them: a changelog tombstone, a Pebble delete,
	// an empty record in the online store. Default 5m; negative disables.
	ExpireInterval time.Duration
	// Replay rebuilds all state from the earliest retained input: it
	// deletes the changelog, the spec record, the group's committed offsets
	// and the local state before starting. Every other processor of the
	// app must be stopped. Needed after a spec change that alters what a
	// feature's state means.
	Replay bool
	// StateGeneration is the state generation the processor builds (see
	// ReadStateGeneration): it names the changelog, the group (GroupFor)
	// and the spec record. When a newer generation becomes current, Run
	// commits, leaves the group and returns a *GenerationSwitchError.
	StateGeneration int
	// GenerationCheckInterval is how often the processor looks for a newer
	// state generation. Default DefaultGenerationCheckInterval.
	GenerationCheckInterval time.Duration
	// StateCacheBytes bounds the memory of the decoded entity states the
	// processor keeps between commits (split evenly over the partitions
	// it owns),
	// so an entity updated again soon after skips Pebble's read and decode.
	// Default 128 MiB; negative disables the cache.
	StateCacheBytes int
	// CatchUpPushInterval bounds how far writes to the online store are
	// paced while the processor is catching up: instead of one write per
	// commit, it starts one per its input lag in time (records behind over
	// records per second), at most this long apart, each with every
	// entity's newest committed state. The states it skips were already
	// behind by the lag, and Redis spends the same time on an entity's
	// write whether the state is fresh or not, time the processor then has
	// for catching up (docs/decisions/0014). Default 1s; negative disables
	// pacing.
	CatchUpPushInterval time.Duration
	// StandbyReplicas is how many other instances keep a warm copy of each
	// partition's state, tailing its changelog, so a failover replays only
	// the tail. 0 (default) keeps none.
	StandbyReplicas int
	// Now is the clock, for tests. Default time.Now.
	Now func() time.Time
}

func (c *Config) applyDefaults(spec *topology.Spec) {
	if c.Group == "" {
		c.Group = spec.App
	}
	c.Group = GroupFor(c.Group, c.StateGeneration)
	if c.GenerationCheckInterval == 0 {
		c.GenerationCheckInterval = DefaultGenerationCheckInterval
	}
	if c.CommitInterval == 0 {
		c.CommitInterval = 50 * time.Millisecond
	}
	if c.StateCacheBytes == 0 {
		c.StateCacheBytes = 128 << 20
	}
	if c.CatchUpPushInterval == 0 {
		c.CatchUpPushInterval = time.Second
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = 10 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.ExpireInterval == 0 {
		c.ExpireInterval = 5 * time.Minute
	}
	if c.Guarantee == "" {
		c.Guarantee = ExactlyOnce
	}
	if c.TransactionTimeout == 0 {
		c.TransactionTimeout = 10 * time.Second
	}
	if c.TransactionalID == "" {
		suffix := c.InstanceID
		if suffix == "" {
			suffix = strconv.FormatUint(rand.Uint64(), 36)
		}
		c.TransactionalID = c.Group + "-" + suffix
	}
}

// Validate reports every problem with c at once.
func (c *Config) Validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("processor: no brokers: set --brokers to the Kafka seed brokers, such as 127.0.0.1:9092"))
	}
	if c.CommitInterval < 0 || c.CommitInterval > time.Minute {
		errs = append(errs, fmt.Errorf("processor: commit interval %s: want between 1ms and 1m", c.CommitInterval))
	}
	if c.Guarantee != ExactlyOnce && c.Guarantee != AtLeastOnce {
		errs = append(errs, fmt.Errorf("processor: guarantee %q: want %s or %s", c.Guarantee, ExactlyOnce, AtLeastOnce))
	}
	if c.StandbyReplicas < 0 {
		errs = append(errs, fmt.Errorf("processor: standby replicas %d: want 0 or more", c.StandbyReplicas))
	}
	if c.StateGeneration < 0 {
		errs = append(errs, fmt.Errorf("processor: state generation %d: must not be negative", c.StateGeneration))
	}
	if c.MaxPollRecords < 0 {
		errs = append(errs, fmt.Errorf("processor: max poll records %d: want 0 (no bound) or more", c.MaxPollRecords))
	}
	return errors.Join(errs...)
}

// Processor consumes the input topic as a member of a consumer group and
// keeps the features of the entities in its partitions.
type Processor struct {
	cfg      Config
	top      *topology.Topology
	dec      *Decoder
	store    *state.Store
	sink     Sink
	logger   *slog.Logger
	m        *metrics
	reg      prometheus.Registerer
	grace    int64
	future   int64
	idle     int64
	inTopic  string
	clTopic  string
	dlqTopic string

	ready atomic.Bool
	// newerGen is set by watchGeneration to a newer current state
	// generation; the poll loop then stops.
	newerGen atomic.Int64
	// follower keeps warm standby copies (it runs only with
	// StandbyReplicas); rebalanced tells its placement that the assignment
	// changed.
	follower   *state.Follower
	rebalanced chan struct{}

	// base are the options every client gets (brokers, TLS, SASL).
	base []kgo.Opt
	// Set by Run before the group is joined. With ExactlyOnce sess wraps
	// cl; with AtLeastOnce sess is nil.
	cl         *kgo.Client
	sess       *kgo.GroupTransactSession
	restorer   *state.Restorer
	generation string
	// restoreCtx is the parent of every restore; restoreWG waits for their
	// goroutines.
	restoreCtx context.Context
	restoreWG  sync.WaitGroup
	// A finished restore or online-store write wakes the loop's poll, so
	// its partition is processed, or the next write started, now rather
	// than when the poll times out: wake gets a token, and pollCancel,
	// while a poll waits, cancels it.
	wake       chan struct{}
	pollCancel atomic.Pointer[context.CancelFunc]

	// mu serializes processing and commits with the group's callbacks.
	mu struct {
		sync.Mutex
		tasks map[int32]*task
		// restores are the assigned partitions still restoring; a
		// partition is in tasks or in restores, never both.
		restores map[int32]*restore
		// joined is set by the first assignment.
		joined bool
	}
	rejectLogs sync.Map // reason -> *atomic.Int64, for logging one in N
	// failedCommits counts commits in a row that failed on broker errors.
	failedCommits int
	// pushes are the online-store writes under way, oldest first, at most
	// maxPushes; pushRetryAt is when a failed one may be retried. Guarded
	// by mu.
	pushes      []*pushJob
	pushRetryAt time.Time
	// lastPush is when the last write with states started; consumed
	// counts the records polled since the last commit, and rate is the
	// consume rate (records/s) over the last commit interval: with the
	// tasks' lag they pace writes while catching up (pacedLocked).
	// Guarded by mu.
	lastPush time.Time
	consumed int
	rate     float64

	// restoreHook, when set (by tests, before Run), runs at the start of
	// each partition's restore; an error fails the restore.
	restoreHook func(ctx context.Context, partition int32) error
	// renewEvery is how often a restoring partition's mark is renewed.
	// Default sinks.RestoringTTL/3; tests shorten it.
	renewEvery time.Duration
}

// New returns a processor for the compiled spec.
func New(cfg Config, top *topology.Topology, store *state.Store, sink Sink, logger *slog.Logger, reg prometheus.Registerer) (*Processor, error) {
	cfg.applyDefaults(top.Spec)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	dec, err := newDecoder(top.Spec, top)
	if err != nil {
		return nil, err
	}
	p := &Processor{
		cfg: cfg, top: top, dec: dec, store: store, sink: sink, logger: logger, reg: reg,
		m:        newMetrics(reg),
		grace:    time.Duration(top.Spec.Source.Grace).Milliseconds(),
		future:   time.Duration(top.Spec.Source.MaxFuture).Milliseconds(),
		idle:     time.Duration(top.Spec.Source.IdleTimeout).Milliseconds(),
		inTopic:  top.Spec.Source.Topic,
		clTopic:  state.ChangelogTopicFor(top.Spec.App, cfg.StateGeneration),
		dlqTopic: DLQTopic(top.Spec.App),
	}
	p.mu.tasks = make(map[int32]*task)
	p.mu.restores = make(map[int32]*restore)
	p.wake = make(chan struct{}, 1)
	p.rebalanced = make(chan struct{}, 1)
	p.m.lateByFeature = make([]prometheus.Counter, len(top.Features))
	for i, f := range top.Features {
		p.m.lateByFeature[i] = p.m.late.WithLabelValues(f.Name)
	}
	return p, nil
}

// Ready reports whether the processor has joined its group and restored
// the partitions it was given.
func (p *Processor) Ready() bool { return p.ready.Load() }

// Run consumes until ctx is done, then commits what it has and leaves the
// group. It returns an error if Kafka cannot be reached or a commit fails;
// state stays consistent either way, and a restart resumes.
func (p *Processor) Run(ctx context.Context) error {
	base := append([]kgo.Opt{kgo.SeedBrokers(p.cfg.Brokers...)}, p.cfg.ClientOpts...)
	p.base = base
	admCl, err := kgo.NewClient(base...)
	if err != nil {
		return fmt.Errorf("processor: %w", err)
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	partitions, err := p.inputPartitions(ctx, adm)
	if err != nil {
		return err
	}
	if p.cfg.Replay {
		if err := p.resetState(ctx, admCl, adm, partitions); err != nil {
			return fmt.Errorf("processor: %w", err)
		}
	}
	if p.generation, err = state.EnsureTopic(ctx, adm, p.clTopic, partitions, true); err != nil {
		return fmt.Errorf("processor: changelog: %w", err)
	}
	if err := p.checkSpec(ctx, admCl, adm); err != nil {
		return err
	}
	if _, err := state.EnsureTopic(ctx, adm, p.dlqTopic, partitions, false); err != nil {
		return fmt.Errorf("processor: dead-letter topic: %w", err)
	}
	p.restorer = state.NewRestorer(p.store, adm, base, p.clTopic, p.logger, p.reg)
	// The follower exists (and its metrics are registered) without
	// standbys too; it only runs with them.
	p.follower = state.NewFollower(p.store, base, p.clTopic, p.generation, p.logger, p.reg)
	restoreCtx, stopRestores := context.WithCancel(ctx)
	defer stopRestores()
	p.restoreCtx = restoreCtx

	opts := append(base[:len(base):len(base)],
		kgo.ConsumerGroup(p.cfg.Group),
		kgo.ConsumeTopics(p.inTopic),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.SessionTimeout(p.cfg.SessionTimeout),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// A partition resumed after its restore joins the next fetch to its
		// broker, after the one in flight, which on quiet partitions waits
		// this long; 500ms is Kafka's own default (franz-go's is 5s).
		kgo.FetchMaxWait(500*time.Millisecond),
		// Up to 4 MiB per partition per fetch (franz-go's default is 1):
		// fewer, larger fetches cost the loop less waiting and the
		// process less CPU per event (docs/performance.md). A buffered
		// fetch, which a poll takes whole, is still bounded by
		// FetchMaxBytes (50 MiB).
		kgo.FetchMaxPartitionBytes(4<<20),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(0),
		kgo.OnPartitionsAssigned(p.assigned),
		kgo.OnPartitionsRevoked(p.revoked),
		kgo.OnPartitionsLost(p.lost),
		kgo.AdjustFetchOffsetsFn(p.adjustOffsets),
	)
	if p.cfg.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(p.cfg.InstanceID))
	}
	if p.cfg.Guarantee == ExactlyOnce {
		opts = append(opts, kgo.TransactionalID(p.cfg.TransactionalID), kgo.TransactionTimeout(p.cfg.TransactionTimeout))
		sess, err := kgo.NewGroupTransactSession(opts...)
		if err != nil {
			return fmt.Errorf("processor: %w", err)
		}
		p.sess, p.cl = sess, sess.Client()
	} else {
		cl, err := kgo.NewClient(opts...)
		if err != nil {
			return fmt.Errorf("processor: %w", err)
		}
		p.cl = cl
	}
	cl := p.cl
	p.logger.Info("processor started", "group", p.cfg.Group, "topic", p.inTopic, "partitions", partitions,
		"changelog", p.clTopic, "dlq", p.dlqTopic, "guarantee", p.cfg.Guarantee, "state_generation", p.cfg.StateGeneration)
	// The generation watch and the standby copies run beside the loop;
	// they stop before Run returns, so nothing writes the store after.
	wctx, stopWatch := context.WithCancel(ctx)
	var background sync.WaitGroup
	defer func() {
		stopWatch()
		background.Wait()
	}()
	background.Go(func() { p.watchGeneration(wctx, adm) })
	if p.cfg.StandbyReplicas > 0 {
		background.Go(func() { p.runStandbys(wctx, adm) })
	}

	// Commits and pushes in the loop run on cctx: a stop lets the one under
	// way end (what is left is committed below), not fail it halfway. A
	// push may outlive the loop, so cctx ends commitGrace after ctx, or
	// when Run returns.
	cctx, cancelCommits := context.WithCancel(context.WithoutCancel(ctx))
	stopGrace := context.AfterFunc(ctx, func() { time.AfterFunc(commitGrace, cancelCommits) })
	defer func() {
		stopGrace()
		cancelCommits()
	}()
	runErr := p.loop(ctx, cctx)
	// Standby copies stop before the last commit and the restores' end:
	// after a generation switch the next processor may wipe what they
	// write.
	stopWatch()
	background.Wait()

	// Commit what was processed before leaving, so the next owner does
	// not redo it.
	fctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	p.mu.Lock()
	if err := p.flushLocked(fctx, p.allTasksLocked()); err != nil && runErr == nil {
		runErr = err
	}
	if err := p.drainPushLocked(fctx, p.allTasksLocked()); err != nil && runErr == nil {
		// Redis lacks the last states; whoever restores the partitions
		// next re-pushes them from the changelog.
		runErr = fmt.Errorf("processor: last push to the online store: %w", err)
	}
	stopRestores()
	p.stopRestoresLocked()
	p.mu.joined = false
	p.ready.Store(false)
	p.mu.Unlock()
	cancel()
	cl.CloseAllowingRebalance()
	// A close revokes what is left; no restore is started after
	// stopRestores, but wait for any anyway: the caller closes the store.
	p.restoreWG.Wait()
	return runErr
}

func (p *Processor) inputPartitions(ctx context.Context, adm *kadm.Client) (int32, error) {
	for {
		details, err := adm.ListTopics(ctx, p.inTopic)
		if err == nil {
			if d, ok := details[p.inTopic]; ok && d.Err == nil && len(d.Partitions) > 0 {
				return int32(len(d.Partitions)), nil
			}
			err = fmt.Errorf("topic %s does not exist: create it (its partition count bounds the processors' parallelism)", p.inTopic)
		}
		p.logger.Warn("waiting for input topic", "topic", p.inTopic, "err", err)
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("processor: input topic %s: %w", p.inTopic, err)
		case <-time.After(2 * time.Second):
		}
	}
}

// quietFraction is the part of the commit interval after which input that
// stopped counts as quiet: a processor commits then, rather than holding
// the last events back for the rest of the interval (decision 0015).
const quietFraction = 10

// commitGrace is how long a commit or push under way when the processor is
// stopped may still take before it is canceled.
const commitGrace = 10 * time.Second

// loop polls, processes and commits until ctx is done; commits and pushes
// run on cctx.
func (p *Processor) loop(ctx, cctx context.Context) error {
	lastFlush, lastExpire, rateFrom := time.Now(), time.Now(), time.Now()
	// input says the last poll brought records: if the next brings none
	// within quietAfter, the input has gone quiet and what was applied is
	// committed then, not at the end of the interval.
	input := false
	quietAfter := max(p.cfg.CommitInterval/quietFraction, time.Millisecond)
	for {
		wait := max(p.cfg.CommitInterval-time.Since(lastFlush), time.Millisecond)
		waitQuiet := input && quietAfter < wait
		if waitQuiet {
			wait = quietAfter
		}
		pctx, cancel := context.WithTimeout(ctx, wait)
		p.pollCancel.Store(&cancel)
		select {
		case <-p.wake:
			cancel()
		default:
		}
		fetches := p.cl.PollRecords(pctx, p.cfg.MaxPollRecords)
		p.pollCancel.Store(nil)
		// A poll woken early says nothing of whether input went quiet.
		woken := errors.Is(pctx.Err(), context.Canceled)
		cancel()
		if woken {
			// This pass handles what woke it; a token left by the same
			// wake would only make the next poll an empty pass.
			select {
			case <-p.wake:
			default:
			}
		}
		if n := fetches.NumRecords(); n > 0 || !woken {
			input = n > 0
		}
		if fetches.IsClientClosed() {
			return nil
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				p.logger.Warn("fetch error", "topic", topic, "partition", partition, "err", err)
			}
		})
		p.mu.Lock()
		p.finishRestoresLocked()
		// What was polled is applied even when stopping: with exactly-once
		// the final commit takes the offset of every polled record, so a
		// record dropped here would be lost.
		p.processLocked(fetches)
		p.pumpPushLocked(cctx)
		if ctx.Err() != nil || p.newerGen.Load() > 0 {
			p.mu.Unlock()
			if gen := p.newerGen.Load(); gen > 0 && ctx.Err() == nil {
				return &GenerationSwitchError{From: p.cfg.StateGeneration, To: int(gen)}
			}
			return nil // Run commits what was applied
		}
		var err error
		flushed := false
		if p.cfg.ExpireInterval > 0 && time.Since(lastExpire) >= p.cfg.ExpireInterval {
			p.expireLocked()
			lastExpire = time.Now()
		}
		if time.Since(lastFlush) >= p.cfg.CommitInterval || (waitQuiet && !input) {
			// The consume rate over a whole cycle, the last commit's
			// time included. A cycle that consumed nothing and ended
			// with a poll woken before the broker answered measures
			// nothing (it saw no fetch, not an input at rate 0), so it
			// does not end the rate's window: while catching up with
			// short intervals such cycles are common, and a rate of 0
			// turns pacing off.
			if p.consumed > 0 || !woken {
				p.rate = float64(p.consumed) / time.Since(rateFrom).Seconds()
				p.consumed, rateFrom = 0, time.Now()
			}
			err = p.flushLocked(cctx, p.allTasksLocked())
			lastFlush, flushed = time.Now(), true
		}
		// Rebalances wait for commit boundaries, so a revocation never
		// finds uncommitted work (and a transaction is never aborted by
		// one). With nothing uncommitted this is one: an idle processor
		// does not hold a rebalance back for the rest of its interval.
		allow := flushed || !p.uncommittedLocked()
		p.mu.Unlock()
		if err != nil {
			return err
		}
		if allow {
			p.cl.AllowRebalance()
		}
	}
}

// uncommittedLocked reports whether a task has applied input, state
// changes or dead letters that are not committed yet.
func (p *Processor) uncommittedLocked() bool {
	for _, t := range p.mu.tasks {
		if t.uncommitted() {
			return true
		}
	}
	return false
}

func (p *Processor) allTasksLocked() []*task {
	ts := make([]*task, 0, len(p.mu.tasks))
	for _, t := range p.mu.tasks {
		ts = append(ts, t)
	}
	return ts
}

// processLocked applies a poll's records, each partition on its own
// goroutine: partitions share nothing but the store and the metrics.
func (p *Processor) processLocked(fetches kgo.Fetches) {
	var wg sync.WaitGroup
	fetches.EachPartition(func(ftp kgo.FetchTopicPartition) {
		t := p.mu.tasks[ftp.Partition]
		if t == nil || len(ftp.Records) == 0 {
			return
		}
		p.consumed += len(ftp.Records)
		wg.Go(func() {
			t.process(ftp.Records)
			lag := max(ftp.HighWatermark-t.inputNext, 0)
			p.m.lag.WithLabelValues(strconv.Itoa(int(t.partition))).Set(float64(lag))
			// What a read_committed consumer can still read: records of
			// open transactions (past the last stable offset) are not.
			if lso := ftp.LastStableOffset; lso >= 0 {
				lag = max(min(ftp.HighWatermark, lso)-t.inputNext, 0)
			}
			t.lag, t.lagAt = lag, time.Now()
			p.m.delay.Observe(time.Since(ftp.Records[len(ftp.Records)-1].Timestamp).Seconds())
		})
	})
	wg.Wait()
}

// flushLocked commits the given tasks: changelog records and dead letters
// (acknowledged; with ExactlyOnce in one transaction with the input
// offsets), then a Pebble batch per partition with the changelog and input
// offsets it reflects, then (AtLeastOnce) the input offsets to the group,
// then the online store.
func (p *Processor) flushLocked(ctx context.Context, tasks []*task) error {
	if len(tasks) == 0 || p.cl == nil {
		return nil
	}
	start := time.Now()
	// Each partition's records are encoded, and after the commit written
	// to Pebble, on a goroutine of its own: the loop processes nothing
	// while it commits, and the tasks share nothing here but the store,
	// which takes batches from many goroutines at once.
	changes := make([][]change, len(tasks))
	eachTask(tasks, func(i int, t *task) { changes[i] = p.encodeChanges(t) })
	n := 0
	for _, cs := range changes {
		n += len(cs)
	}
	var (
		recs    = make([]*kgo.Record, 0, n)
		letters []*kgo.Record
		moved   bool
	)
	for i, t := range tasks {
		for _, c := range changes[i] {
			recs = append(recs, c.rec)
		}
		letters = append(letters, t.dlq...)
		moved = moved || t.inputNext > t.committedNext
	}
	if len(recs) == 0 && len(letters) == 0 && !moved {
		p.pushLocked(ctx, tasks)
		return nil
	}
	all := append(recs, letters...)
	if p.sess != nil {
		committed, err := p.commitTxn(ctx, all)
		if err != nil {
			var te *transientError
			if !errors.As(err, &te) || p.failedCommits >= maxFailedCommits {
				return fmt.Errorf("commit: %w", err)
			}
			// The transaction was aborted cleanly: redo the work.
			p.failedCommits++
			p.m.txns.WithLabelValues("aborted").Inc()
			p.logger.Warn("commit failed; transaction aborted, reprocessing", "err", err, "failures", p.failedCommits)
			for _, t := range tasks {
				t.rollback()
			}
			return nil
		}
		if !committed {
			// A rebalance or fencing aborted the transaction: nothing of
			// it is visible, and the session rewound consumption to the
			// committed offsets, so the work is redone from there.
			p.m.txns.WithLabelValues("aborted").Inc()
			p.logger.Info("transaction aborted; reprocessing from the committed offsets", "partitions", len(tasks))
			for _, t := range tasks {
				t.rollback()
			}
			return nil
		}
		p.m.txns.WithLabelValues("committed").Inc()
		p.failedCommits = 0
	} else if err := p.cl.ProduceSync(ctx, all...).FirstErr(); err != nil {
		if p.failedCommits >= maxFailedCommits || ctx.Err() != nil {
			return fmt.Errorf("commit: write changelog and dead letters: %w", err)
		}
		// Keep the dirty states and try again next interval: a state
		// record written twice is harmless, it is the entity's latest.
		p.failedCommits++
		p.logger.Warn("commit failed; retrying at the next interval", "err", err, "failures", p.failedCommits)
		return nil
	}
	p.failedCommits = 0
	p.m.changelog.Add(float64(len(recs)))
	for _, l := range letters {
		p.m.dlq.WithLabelValues(headerValue(l, HeaderReason)).Inc()
	}

	errs := make([]error, len(tasks))
	eachTask(tasks, func(i int, t *task) { errs[i] = p.writeLocal(t, changes[i]) })
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	offsets := make(map[int32]kgo.EpochOffset)
	for _, t := range tasks {
		if t.inputNext > t.committedNext {
			offsets[t.partition] = kgo.EpochOffset{Epoch: t.inputEpoch, Offset: t.inputNext}
		}
	}

	if p.sess == nil && len(offsets) > 0 {
		if err := p.commitOffsets(ctx, offsets); err != nil {
			// The state is committed locally and in the changelog; the
			// input offset is in Pebble too, so a restart resumes exactly.
			p.logger.Warn("commit input offsets failed", "err", err)
			for part := range offsets {
				delete(offsets, part)
			}
		}
	}
	for _, t := range tasks {
		if _, ok := offsets[t.partition]; ok {
			t.committedNext = t.inputNext
		}
		t.committedMaxEventMs = t.maxEventMs
		t.committedWmFloor = t.wmFloor
		t.dlq = t.dlq[:0]
	}

	// The online store last: it may lag but never lead the changelog. Its
	// write takes each state's features from the changelog record rather
	// than encoding them again.
	for i, t := range tasks {
		for _, c := range changes[i] {
			t.pendingSink[c.entity] = sinks.Record{
				Entity: c.entity, Partition: t.partition,
				Version: uint64(c.rec.Offset), Generation: p.generation, State: c.st,
				Encoded: c.rec.Value, HorizonMs: p.horizon(t.maxEventMs),
			}
		}
	}
	cached := 0
	for _, t := range p.mu.tasks {
		cached += t.cacheBytes
	}
	p.m.cacheBytes.Set(float64(cached))
	for _, t := range tasks {
		p.m.expired.Add(float64(len(t.expired)))
		clear(t.dirty)
		clear(t.expired)
	}
	p.pushLocked(ctx, tasks)
	nowMs := p.cfg.Now().UnixMilli()
	for _, t := range tasks {
		if wm := t.watermark(nowMs); wm != math.MinInt64 {
			p.m.watermark.WithLabelValues(strconv.Itoa(int(t.partition))).Set(float64(wm) / 1000)
		}
	}
	p.m.flushDuration.Observe(time.Since(start).Seconds())
	return nil
}

// change is a commit's changelog record of one entity: its state, or a
// tombstone (nil Value and st the expired state).
type change struct {
	entity string
	rec    *kgo.Record
	st     *topology.EntityState
}

// encodeChanges returns t's changelog records of this commit, expired
// entities' tombstones first. Only the last carries the headers of the
// partition's commit: produce keeps order within a partition, so if it is
// in the changelog, so is every record before it. It says how far input is
// reflected and, for standby copies, how far the online store is known
// complete: as of the writes that ended, each with every write before it,
// so never more than it is.
func (p *Processor) encodeChanges(t *task) []change {
	n := len(t.expired) + len(t.dirty)
	if n == 0 {
		return nil
	}
	// The records, keys and values are carved from a few large
	// allocations rather than one or more each: a commit writes
	// thousands. A slice of buf stays valid when buf grows (append
	// copies, it does not move what was sliced).
	slab := make([]kgo.Record, n)
	buf := make([]byte, 0, n*256)
	carve := func(from int) []byte { return buf[from:len(buf):len(buf)] }
	changes := make([]change, 0, n)
	for entity, st := range t.expired {
		if c, ok := t.cache[entity]; ok {
			t.uncache(entity, c)
		}
		// A tombstone: compaction drops the entity's records.
		rec := &slab[len(changes)]
		from := len(buf)
		buf = append(buf, entity...)
		*rec = kgo.Record{Topic: p.clTopic, Partition: t.partition, Key: carve(from)}
		changes = append(changes, change{entity: entity, rec: rec, st: st})
	}
	for entity, st := range t.dirty {
		rec := &slab[len(changes)]
		from := len(buf)
		buf = append(buf, entity...)
		key := carve(from)
		from = len(buf)
		buf = p.top.AppendState(buf, st)
		*rec = kgo.Record{Topic: p.clTopic, Partition: t.partition, Key: key, Value: carve(from)}
		changes = append(changes, change{entity: entity, rec: rec, st: st})
	}
	changes[n-1].rec.Headers = []kgo.RecordHeader{state.InputNextHeader(t.inputNext), state.SinkNextHeader(t.sinkNext), state.HorizonHeader(p.horizon(t.maxEventMs))}
	return changes
}

// writeLocal writes t's committed changes to Pebble, in one batch with the
// partition's metadata: the changelog and input offsets they reflect.
func (p *Processor) writeLocal(t *task, changes []change) error {
	if len(changes) == 0 && t.inputNext == t.committedNext && t.sinkNext == t.savedSinkNext {
		return nil
	}
	batch := p.store.NewBatch()
	defer batch.Close()
	for _, c := range changes {
		var err error
		if c.rec.Value == nil {
			err = batch.Delete(t.partition, c.entity)
		} else {
			err = batch.Set(t.partition, c.entity, c.rec.Value)
		}
		if err != nil {
			return err
		}
		t.changelogNext = max(t.changelogNext, c.rec.Offset+1)
	}
	meta := state.Meta{
		ChangelogNext: t.changelogNext,
		InputNext:     t.inputNext,
		SinkNext:      t.sinkNext,
		MaxEventMs:    t.maxEventMs,
		Generation:    p.generation,
	}
	if err := batch.SetMeta(t.partition, meta); err != nil {
		return err
	}
	if err := batch.Commit(); err != nil {
		return err
	}
	t.savedSinkNext = t.sinkNext
	return nil
}

// eachTask calls f for each task, each on a goroutine of its own, and
// returns when all have returned.
func eachTask(tasks []*task, f func(i int, t *task)) {
	if len(tasks) == 1 {
		f(0, tasks[0])
		return
	}
	var wg sync.WaitGroup
	for i, t := range tasks {
		wg.Go(func() { f(i, t) })
	}
	wg.Wait()
}

// maxFailedCommits is how many commits in a row may fail on broker errors
// before the processor gives up (and a restart takes over).
const maxFailedCommits = 50

// transientError is a failed commit that left nothing behind: retrying is
// safe.
type transientError struct{ err error }

func (e *transientError) Error() string { return e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

// commitTxn writes recs and commits them with the consumed offsets in one
// transaction. It returns false if the transaction was aborted.
func (p *Processor) commitTxn(ctx context.Context, recs []*kgo.Record) (bool, error) {
	if err := p.sess.Begin(); err != nil {
		return false, fmt.Errorf("begin transaction: %w", err)
	}
	var (
		mu         sync.Mutex
		produceErr error
	)
	for _, r := range recs {
		p.sess.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil {
				mu.Lock()
				produceErr = cmp.Or(produceErr, err)
				mu.Unlock()
			}
		})
	}
	if err := p.cl.Flush(ctx); err != nil {
		return false, fmt.Errorf("write changelog and dead letters: %w", err)
	}
	if produceErr != nil {
		if _, err := p.sess.End(ctx, kgo.TryAbort); err != nil {
			return false, fmt.Errorf("write changelog and dead letters: %w; then abort: %w", produceErr, err)
		}
		return false, &transientError{fmt.Errorf("write changelog and dead letters: %w", produceErr)}
	}
	start := time.Now()
	committed, err := p.sess.End(ctx, kgo.TryCommit)
	p.m.txnDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		return false, fmt.Errorf("end transaction: %w", err)
	}
	return committed, nil
}

func (p *Processor) commitOffsets(ctx context.Context, offsets map[int32]kgo.EpochOffset) error {
	var commitErr error
	p.cl.CommitOffsetsSync(ctx, map[string]map[int32]kgo.EpochOffset{p.inTopic: offsets},
		func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
			if err != nil {
				commitErr = err
				return
			}
			for _, t := range resp.Topics {
				for _, pt := range t.Partitions {
					if err := kerr.ErrorForCode(pt.ErrorCode); err != nil && commitErr == nil {
						commitErr = fmt.Errorf("partition %d: %w", pt.Partition, err)
					}
				}
			}
		})
	return commitErr
}

// pushLocked starts writing the tasks' committed states to the online store
// in the background, so the next records are processed meanwhile. Up to
// maxPushes writes run at once, each with the states committed since the
// one before it took its own; with that many under way, states stay
// pending: pumpPushLocked, called after every poll, starts the next write
// as soon as one ends, with every state committed meanwhile. A state
// committed again before it is written replaces the pending one, so when
// Redis is slower than commits, writes coalesce instead of holding up
// processing. On failure the states stay pending and are written again
// after a commit interval. Only committed states are pushed, so Redis
// never leads the changelog; writes that overlap cannot move it backwards
// either, since Redis keeps the newest version of each entity.
func (p *Processor) pushLocked(ctx context.Context, tasks []*task) {
	if !p.canPushLocked(tasks) {
		return
	}
	// Pacing holds back states only: a write that just clears restoring
	// marks goes at once.
	if untakenStates(tasks) && p.pacedLocked() {
		return
	}
	p.startPushLocked(ctx, tasks)
}

// maxPushes is how many writes to the online store may run at once. A
// second one lets the states of a commit start for Redis while the last
// commit's are still being written, instead of waiting up to a whole write
// (the freshness of bench e2e's live traffic, docs/performance.md).
const maxPushes = 2

// canPushLocked collects the writes that ended and reports whether one for
// tasks may start now: when none is under way, or, with room for another,
// when tasks have committed states no write has taken. Writes run one at a
// time
//   - while a partition's restoring mark is to be cleared: the write that
//     clears it must be the one holding every re-pushed state;
//   - after a failed write, until the writes under way have ended: the
//     next write takes the failed one's states again, which those may hold
//     too, and two writes must never read one state while an update
//     takes it from the cache (task.state copies only pending states).
func (p *Processor) canPushLocked(tasks []*task) bool {
	p.collectPushesLocked(false)
	switch {
	case time.Now().Before(p.pushRetryAt):
		return false // a write failed: not before a commit interval has passed
	case len(p.pushes) == 0:
		return true
	case len(p.pushes) >= maxPushes || !untakenStates(tasks) || p.pushes[len(p.pushes)-1].afterFailure:
		return false
	}
	for _, t := range p.mu.tasks {
		if t.clearRestoring {
			return false
		}
	}
	return true
}

// pacedLocked reports whether a write to the online store waits because the
// processor is catching up. While at least catchUpMinLag records are
// behind, writes start no more often than the lag takes at the consume rate
// (records behind over records per second in the last commit interval),
// and at least every Config.CatchUpPushInterval: Redis then trails the input
// by at most about twice the lag it has anyway, and a processor that has
// caught up writes at every commit again.
//
// Only a partition's recent lag of at least catchUpPartitionMinLag counts:
// a partition with a backlog returns records at every fetch, while one read
// up to a transaction marker, or up to an aborted transaction's records,
// keeps a lag it will never read. Nothing consumed in the last interval
// means nothing to catch up with.
func (p *Processor) pacedLocked() bool {
	every := p.cfg.CatchUpPushInterval
	if every <= 0 {
		p.m.pushPacing.Set(0)
		return false
	}
	now := time.Now()
	var lag int64
	for _, t := range p.mu.tasks {
		if t.lag >= catchUpPartitionMinLag && now.Sub(t.lagAt) < catchUpLagTTL {
			lag += t.lag
		}
	}
	var wait time.Duration
	if lag >= catchUpMinLag && p.rate > 0 {
		wait = every
		if behind := float64(lag) / p.rate; behind < every.Seconds() {
			wait = time.Duration(behind * float64(time.Second))
		}
	}
	p.m.pushPacing.Set(wait.Seconds())
	return now.Sub(p.lastPush) < wait
}

// Pacing thresholds (pacedLocked): a processor catches up while at least
// catchUpMinLag records are behind, counting partitions at least
// catchUpPartitionMinLag behind whose lag was measured within
// catchUpLagTTL.
const (
	catchUpMinLag          = 1000
	catchUpPartitionMinLag = 100
	catchUpLagTTL          = 2 * time.Second
)

// pendingStates reports whether any of tasks has committed states not yet
// in the online store.
func pendingStates(tasks []*task) bool {
	for _, t := range tasks {
		if len(t.pendingSink) > 0 {
			return true
		}
	}
	return false
}

// untakenStates reports whether any of tasks has committed states no write
// under way has taken: a commit since the last write started, or a failed
// write.
func untakenStates(tasks []*task) bool {
	for _, t := range tasks {
		if len(t.pendingSink) > 0 && t.pushTaken < t.changelogNext {
			return true
		}
	}
	return false
}

// startPushLocked starts writing the tasks' pending states that no write
// under way has taken.
func (p *Processor) startPushLocked(ctx context.Context, tasks []*task) {
	job := &pushJob{
		done:     make(chan error, 1),
		from:     make(map[int32]int64, len(tasks)),
		sinkNext: make(map[int32]int64, len(tasks)),
		tasks:    make(map[int32]*task, len(tasks)),
	}
	for _, t := range tasks {
		for _, r := range t.pendingSink {
			// A state's version is its changelog offset: the ones
			// below pushTaken are in a write under way.
			if int64(r.Version) >= t.pushTaken {
				job.recs = append(job.recs, r)
			}
		}
		// Once this write and every one before it succeed, the store
		// holds every state committed before changelogNext.
		job.from[t.partition] = t.pushTaken
		job.sinkNext[t.partition] = t.changelogNext
		job.tasks[t.partition] = t
		t.pushTaken = t.changelogNext
		if t.clearRestoring {
			job.clear = append(job.clear, t)
		}
	}
	write := func() error {
		if len(job.recs) > 0 {
			if err := p.sink.Write(ctx, job.recs); err != nil {
				return err
			}
		}
		// Right after the re-pushed states are in, not a commit later:
		// readers see the partition as restoring no longer than needed.
		for _, t := range job.clear {
			if err := p.sink.(restoreMarker).SetPartitionRestoring(context.WithoutCancel(ctx), t.partition, false); err != nil {
				p.logger.Warn("clear partition restoring mark", "partition", t.partition, "err", err)
				continue
			}
			job.cleared = append(job.cleared, t)
		}
		return nil
	}
	p.pushes = append(p.pushes, job)
	if len(job.recs) == 0 {
		job.done <- write()
		p.waitPushesLocked()
		return
	}
	p.lastPush = time.Now()
	go func() {
		job.done <- write()
		p.wakePoll()
	}()
}

// pumpPushLocked collects the writes to the online store that ended and
// starts the next when there is room for one and states are waiting,
// unless the last write failed less than a commit interval ago.
func (p *Processor) pumpPushLocked(ctx context.Context) {
	p.collectPushesLocked(false)
	if tasks := p.allTasksLocked(); untakenStates(tasks) {
		p.pushLocked(ctx, tasks)
	}
}

// drainPushLocked writes every pending state of tasks to the online store
// with ctx and waits for it, or for the first failed write. A write already
// under way may have been started with a context now canceled: its failure
// only leaves its states pending for the writes made here.
func (p *Processor) drainPushLocked(ctx context.Context, tasks []*task) error {
	_ = p.waitPushesLocked()
	for pendingStates(tasks) {
		p.startPushLocked(ctx, tasks)
		if err := p.waitPushesLocked(); err != nil {
			return err
		}
	}
	return nil
}

// pushJob is a write to the online store under way.
type pushJob struct {
	done chan error
	recs []sinks.Record
	// tasks are the tasks whose pending states the write took, by
	// partition. Per partition, from is where the states it took begin
	// (the task's pushTaken before it) and sinkNext the changelog offset
	// the online store is complete up to once it and every write before
	// it succeed. afterFailure marks a write that was under way when an
	// earlier one failed: it does not advance sinkNext (the failed
	// states are not in the store yet), and no write starts while it
	// runs.
	tasks          map[int32]*task
	from, sinkNext map[int32]int64
	afterFailure   bool
	// clear are the tasks whose restoring mark the write clears once done;
	// cleared the ones it did (read after done).
	clear, cleared []*task
}

// waitPushesLocked waits for every online-store write under way and records
// their outcomes, returning the first failure.
func (p *Processor) waitPushesLocked() error {
	return p.collectPushesLocked(true)
}

// collectPushesLocked records the outcomes of the writes under way that
// have ended, oldest first, stopping at the first still running; with wait
// set it waits for all. It returns the first failure it collected.
//
// Outcomes are taken in the order the writes started, so a partition's
// sinkNext only advances past states that are in the store: a failed write
// gives its states back (the next write takes them again) and keeps the
// writes already under way from advancing sinkNext.
func (p *Processor) collectPushesLocked(wait bool) error {
	var first error
	for len(p.pushes) > 0 {
		job := p.pushes[0]
		var err error
		if wait {
			err = <-job.done
		} else {
			select {
			case err = <-job.done:
			default:
				return first
			}
		}
		p.pushes[0] = nil
		p.pushes = p.pushes[1:]
		if err != nil {
			first = cmp.Or(first, err)
			p.failPushLocked(job, err)
			continue
		}
		p.finishPushLocked(job)
	}
	return first
}

// failPushLocked gives a failed write's states back to be written again
// after a commit interval.
func (p *Processor) failPushLocked(job *pushJob, err error) {
	for part, t := range job.tasks {
		t.pushTaken = min(t.pushTaken, job.from[part])
	}
	for _, later := range p.pushes {
		later.afterFailure = true
	}
	p.pushRetryAt = time.Now().Add(p.cfg.CommitInterval)
	if errors.Is(err, context.Canceled) {
		// Stopping: the final commit writes these states again.
		p.logger.Debug("write online store canceled", "records", len(job.recs))
		return
	}
	p.m.sinkErrors.Inc()
	p.logger.Warn("write online store failed; retrying after a commit interval", "records", len(job.recs), "err", err)
}

// finishPushLocked records a successful write: its states leave
// pendingSink unless a newer one was committed meanwhile, and go to the
// cache.
func (p *Processor) finishPushLocked(job *pushJob) {
	now := p.cfg.Now()
	for _, r := range job.recs {
		if r.State != nil {
			p.m.freshness.Observe(now.Sub(time.UnixMilli(r.State.LastEventMs)).Seconds())
		}
		t := job.tasks[r.Partition]
		// A newer state committed meanwhile stays pending.
		if pr, ok := t.pendingSink[r.Entity]; ok && pr.Version == r.Version {
			delete(t.pendingSink, r.Entity)
			t.keep(r.Entity, r.State)
		}
	}
	if !job.afterFailure {
		for part, next := range job.sinkNext {
			t := job.tasks[part]
			t.sinkNext = max(t.sinkNext, next)
		}
	}
	for _, t := range job.cleared {
		t.clearRestoring = false
	}
}

// expireLocked marks the entities of every task whose windows have all
// passed the watermark, for the next commit to delete.
func (p *Processor) expireLocked() {
	nowMs := p.cfg.Now().UnixMilli()
	for _, t := range p.mu.tasks {
		wm := t.watermark(nowMs)
		if wm == math.MinInt64 {
			continue
		}
		err := p.store.Entities(t.partition, func(entity string, st *topology.EntityState) error {
			if _, dirty := t.dirty[entity]; !dirty && p.top.Expire(st, wm) {
				t.expired[entity] = st
			}
			return nil
		})
		if err != nil {
			p.logger.Warn("look for expired entities", "partition", t.partition, "err", err)
		}
	}
}

// horizon is the earliest as_of an entity state written now is whole for:
// the partition's event-time watermark (max event time − grace), at or
// after every watermark its tiles were pruned at. math.MinInt64 when the
// partition has no event yet.
func (p *Processor) horizon(maxEventMs int64) int64 {
	if maxEventMs == math.MinInt64 {
		return math.MinInt64
	}
	return maxEventMs - p.grace
}
