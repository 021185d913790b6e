package sinks

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/featurestream/featurestream/topology"
)

// ErrInvalidOptions is wrapped by Options.Validate's error.
var ErrInvalidOptions = errors.New("sinks: invalid redis options")

// ErrCorrupt is wrapped by Read's error when a stored entity cannot be
// decoded. Retrying will not help; the entity's next write repairs it.
var ErrCorrupt = errors.New("sinks: corrupt redis record")

// ErrAuth is wrapped by Ping's error when Redis refuses the credentials
// (NOAUTH, WRONGPASS, NOPERM): retrying will not help, the options must
// change.
var ErrAuth = errors.New("sinks: redis refused authentication")

// Options says how to reach Redis. The zero value is not valid: Addrs is
// required.
type Options struct {
	// Addrs are host:port addresses. Without Cluster exactly one is allowed.
	// With Cluster they are seed nodes; the rest of the cluster is
	// discovered.
	Addrs []string
	// Cluster selects Redis Cluster (go-redis's cluster client), which routes
	// each key to the node owning its slot.
	Cluster bool
	// Username and Password authenticate (ACL user, or requirepass with an
	// empty Username).
	Username, Password string
	// DB is the database number. Must be 0 with Cluster, which has only one.
	DB int
	// TLS enables TLS with this config; nil means plain TCP.
	TLS *tls.Config
	// PoolSize is the number of connections per node. Default 10 per
	// GOMAXPROCS (go-redis's default).
	PoolSize int
	// DialTimeout bounds establishing a connection. Default 5s.
	DialTimeout time.Duration
	// ReadTimeout and WriteTimeout bound one socket read or write; a
	// context deadline, when earlier, wins (go-redis's
	// ContextTimeoutEnabled). Default 3s each.
	ReadTimeout, WriteTimeout time.Duration
	// MaxRetries is how often a command that failed on the network is
	// retried. Default 1, enough for a pooled connection that a Redis
	// restart closed; negative means never. Lower than go-redis's 3 so a
	// GetFeatures fails fast with Unavailable instead of holding its caller
	// for seconds; a processor retries whole batches itself.
	MaxRetries int
	// DialAttempts is how many times one new connection is dialed before
	// the command fails. Default 1 (go-redis's own default of 5, 100ms
	// apart, makes every call against a down Redis take seconds).
	DialAttempts int
}

// Option defaults.
const (
	DefaultDialTimeout  = 5 * time.Second
	DefaultReadTimeout  = 3 * time.Second
	DefaultWriteTimeout = 3 * time.Second
	DefaultMaxRetries   = 1
	DefaultDialAttempts = 1
)

// Validate reports every problem with o at once, naming the option, the
// value and what would be valid.
func (o Options) Validate() error {
	var probs []string
	if len(o.Addrs) == 0 {
		probs = append(probs, "addrs: at least one address is required, such as 127.0.0.1:6379")
	}
	for i, a := range o.Addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil || host == "" || port == "" {
			probs = append(probs, fmt.Sprintf("addrs[%d] %q: want host:port, such as 127.0.0.1:6379", i, a))
			continue
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			probs = append(probs, fmt.Sprintf("addrs[%d] %q: port must be 1-65535", i, a))
		}
	}
	if !o.Cluster && len(o.Addrs) > 1 {
		probs = append(probs, fmt.Sprintf("addrs: %d addresses without cluster: set cluster to use Redis Cluster, or give one address", len(o.Addrs)))
	}
	if o.Cluster && o.DB != 0 {
		probs = append(probs, fmt.Sprintf("db %d: Redis Cluster has only db 0", o.DB))
	}
	if o.DB < 0 {
		probs = append(probs, fmt.Sprintf("db %d: must not be negative", o.DB))
	}
	if o.DialAttempts < 0 {
		probs = append(probs, fmt.Sprintf("dial_attempts %d: must not be negative (0 means the default)", o.DialAttempts))
	}
	if o.PoolSize < 0 {
		probs = append(probs, fmt.Sprintf("pool_size %d: must not be negative (0 means the default)", o.PoolSize))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"dial_timeout", o.DialTimeout}, {"read_timeout", o.ReadTimeout}, {"write_timeout", o.WriteTimeout}} {
		if d.v < 0 {
			probs = append(probs, fmt.Sprintf("%s %s: must not be negative (0 means the default)", d.name, d.v))
		}
	}
	if len(probs) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalidOptions, strings.Join(probs, "; "))
	}
	return nil
}

func (o Options) withDefaults() Options {
	if o.DialTimeout == 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.ReadTimeout == 0 {
		o.ReadTimeout = DefaultReadTimeout
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	switch {
	case o.MaxRetries == 0:
		o.MaxRetries = DefaultMaxRetries
	case o.MaxRetries < 0:
		o.MaxRetries = -1 // go-redis: -1 disables, 0 means its default
	}
	if o.DialAttempts == 0 {
		o.DialAttempts = DefaultDialAttempts
	}
	return o
}

// NewClient validates o and returns a client: a cluster client when
// o.Cluster is set, else a single-node client. It does not connect; the
// first command does (use Store.Ping to check). The caller closes it.
func NewClient(o Options) (redis.UniversalClient, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	o = o.withDefaults()
	if o.Cluster {
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs:         o.Addrs,
			Username:      o.Username,
			Password:      o.Password,
			TLSConfig:     o.TLS,
			PoolSize:      o.PoolSize,
			DialTimeout:   o.DialTimeout,
			ReadTimeout:   o.ReadTimeout,
			WriteTimeout:  o.WriteTimeout,
			MaxRetries:    o.MaxRetries,
			DialerRetries: o.DialAttempts,
			// A context's deadline bounds socket reads and writes too, so
			// a caller's deadline holds while Redis is slow.
			ContextTimeoutEnabled: true,
		}), nil
	}
	return redis.NewClient(&redis.Options{
		Addr:          o.Addrs[0],
		Username:      o.Username,
		Password:      o.Password,
		DB:            o.DB,
		TLSConfig:     o.TLS,
		PoolSize:      o.PoolSize,
		DialTimeout:   o.DialTimeout,
		ReadTimeout:   o.ReadTimeout,
		WriteTimeout:  o.WriteTimeout,
		MaxRetries:    o.MaxRetries,
		DialerRetries: o.DialAttempts,
		// A context's deadline bounds socket reads and writes too, so a
		// caller's deadline holds while Redis is slow.
		ContextTimeoutEnabled: true,
	}), nil
}

// RestoringKey is the Redis hash that lists the partitions being restored
// in app: field the partition (decimal), value the epoch ms (writer's
// clock) after which the entry no longer counts. See
// Store.SetPartitionRestoring.
func RestoringKey(app string) string { return "fs:" + app + ":restoring" }

// RestoringTTL is how long a SetPartitionRestoring(true) counts unless
// renewed: a processor that crashes mid-restore cannot mark its partition
// restoring forever.
const RestoringTTL = 10 * time.Minute

// EntityKey is the Redis key of entity id in app. In Redis Cluster an id
// containing {...} hashes on that part only, as any key would.
func EntityKey(app, id string) string { return "fs:" + app + ":e:" + id }

// writeScript writes entities' values (value.go), each only when it is
// newer: the stored value is of another generation (or layout, or missing,
// or not a string) or its version is lower. The big-endian version after
// the generation is compared as two 32-bit halves, so every uint64
// compares exactly (Lua numbers are doubles and lose offsets above 2^53),
// and whatever the server's locale (Lua compares strings with strcoll).
// A value is one version's whole state: a feature removed from the spec
// does not linger.
//
// One call writes many entities (Store.Write) with one MGET and one MSET:
// redis-server's cost of a write is mostly the calls a script makes and
// the arguments it carries, and a shop entity took about 5.9 µs of script
// time as a hash of ten fields written by three calls, against about
// 2.8 µs this way (decision 0023). An entity twice in one call is compared
// with the newest of its values before it, as if written one by one. Through anything but a plain *redis.Client (Redis
// Cluster, where a call's keys must share a slot, a Ring, a wrapper) each
// call writes one entity.
//
// KEYS are the entity keys. ARGV[1] is what every value of the call starts
// with (its layout and generation, genPrefix), then each key's value in
// turn. Returns how many entities were written; the others were skipped as
// stale.
var writeScript = redis.NewScript(`
local g = ARGV[1]
local gl, hl = #g, #g + 8
-- version returns the version in value s, after its generation, as two
-- 32-bit halves (exact as Lua's doubles). Not compared as strings: Lua's
-- < on strings collates by redis-server's locale, which need not be
-- byte order.
local function version(s)
  local b1, b2, b3, b4, b5, b6, b7, b8 = string.byte(s, gl + 1, hl)
  return ((b1 * 256 + b2) * 256 + b3) * 256 + b4, ((b5 * 256 + b6) * 256 + b7) * 256 + b8
end
local cur = redis.call('MGET', unpack(KEYS))
local newest, keys, written = {}, {}, 0
for i, key in ipairs(KEYS) do
  local nv = ARGV[i + 1]
  local c = newest[key] or cur[i]
  local newer = not c or #c < hl or string.sub(c, 1, gl) ~= g
  if not newer then
    local ch, cl = version(c)
    local nh, nl = version(nv)
    newer = ch < nh or (ch == nh and cl < nl)
  end
  if newer then
    if not newest[key] then
      keys[#keys + 1] = key
    end
    newest[key] = nv
    written = written + 1
  end
end
if #keys > 0 then
  local kv = {}
  for i, key in ipairs(keys) do
    kv[2 * i - 1], kv[2 * i] = key, newest[key]
  end
  redis.call('MSET', unpack(kv))
end
return written
`)

// Record is one entity's state to store.
type Record struct {
	Entity string
	// Partition is the input partition that owns the entity.
	Partition int32
	// Version is the changelog offset of State: a write with a version not
	// above the stored one (in the same Generation) is skipped.
	Version uint64
	// Generation identifies the changelog topic instance Version counts in.
	Generation string
	// State must have one tile slice per feature of the Store's topology.
	State *topology.EntityState
	// Encoded is optionally State as topology.AppendState encoded it (the
	// changelog's value): its features and last event time are then
	// written as they are in it, not encoded again, and the write reads
	// nothing of State but its feature count, so State's owner may update
	// it meanwhile. An encoding under another spec is ignored, and State
	// written instead.
	Encoded []byte
	// HorizonMs is the partition's watermark the state was pruned at: the
	// state is whole for reads at or after it (topology's prune contract)
	// and may lack tiles for reads before. math.MinInt64 for none.
	HorizonMs int64
}

// Entry is what Read found for one entity.
type Entry struct {
	// Found is false when Redis has no value for the entity, or only one
	// that an earlier layout wrote (a hash: the entity's next write
	// replaces it); the other fields are then zero and every Tiles[j] is
	// nil.
	Found      bool
	Version    uint64
	Generation string
	Partition  int32
	// LastEventMs is the entity's newest event time, epoch ms.
	LastEventMs int64
	// WrittenMs is when the stored version was written, epoch ms by the
	// writer's clock.
	WrittenMs int64
	// HorizonMs is the earliest as_of the stored state is whole for
	// (Record.HorizonMs); math.MinInt64 when unknown.
	HorizonMs int64
	// Tiles holds the tiles of each requested feature, indexed like Read's
	// features argument. Tiles[j] is nil when the stored state lacks feature
	// j (it was written under a spec without it, or with another kind of
	// feature under that name); a stored feature with no tiles, and a
	// derived feature, is an empty, non-nil slice.
	Tiles [][]topology.Tile
}

// Store writes entity states to Redis and reads them back. It is safe for
// concurrent use. It does not own the client: the caller closes it after
// the Store's last use.
type Store struct {
	client redis.UniversalClient
	top    *topology.Topology
	logger *slog.Logger
	// keys are the key names of the state generation read and written,
	// swapped whole by SetStateGeneration.
	keys  atomic.Pointer[genKeys]
	names []string // feature names by feature index
	// encodedSize is about how many bytes one entity's value takes, as of
	// the last chunk written.
	encodedSize atomic.Int64
	// now stamps a value's write time; tests replace it.
	now func() time.Time
	// reads shares pipelines among concurrent reads.
	reads *readBatcher

	writeDur, readDur prometheus.Histogram
	errors            *prometheus.CounterVec
	written, stale    prometheus.Counter
	generation        prometheus.Gauge
}

// NewStore returns a Store for top's features on client, registering its
// metrics on reg (nil: not registered).
func NewStore(client redis.UniversalClient, top *topology.Topology, logger *slog.Logger, reg prometheus.Registerer) (*Store, error) {
	if client == nil {
		return nil, errors.New("sinks: new store: nil redis client")
	}
	if top == nil || top.Spec == nil {
		return nil, errors.New("sinks: new store: nil topology")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Store{
		client: client,
		top:    top,
		logger: logger,
		now:    time.Now,
		reads:  &readBatcher{client: client, max: DefaultReadPipelines},
		names:  make([]string, len(top.Features)),
		writeDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "featurestream_redis_write_duration_seconds",
			Help:    "Time to write one batch of entity states to Redis (pipelined round trips of up to 512 states, up to 4 at once, per node).",
			Buckets: latencyBuckets,
		}),
		readDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "featurestream_redis_read_duration_seconds",
			Help:    "Time to read the features of one request's entities from Redis (one pipelined round trip per node).",
			Buckets: latencyBuckets,
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "featurestream_redis_errors_total",
			Help: "Failed Redis operations by op (write, read, ping, script_load, restoring, generation).",
		}, []string{"op"}),
		written: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "featurestream_redis_records_written_total",
			Help: "Entity records written to Redis.",
		}),
		stale: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "featurestream_redis_stale_writes_skipped_total",
			Help: "Entity records not written because Redis already held the same or a newer version (replays, zombies).",
		}),
		generation: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "featurestream_state_generation",
			Help: "The state generation this process reads and writes in Redis; featurestream replay builds a new one and switches to it.",
		}),
	}
	s.SetStateGeneration(0)
	for i := range top.Features {
		s.names[i] = top.Features[i].Name
	}
	for _, op := range []string{"write", "read", "ping", "script_load", "restoring", "generation"} {
		s.errors.WithLabelValues(op)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{s.writeDur, s.readDur, s.errors, s.written, s.stale, s.generation} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("sinks: new store: register metrics: %w", err)
			}
		}
	}
	return s, nil
}

// latencyBuckets span 100µs to ~3s: a healthy local Redis answers a
// pipeline in well under a millisecond.
var latencyBuckets = prometheus.ExponentialBuckets(0.0001, 2, 16)

// Key returns the Redis key of entity id.
func (s *Store) Key(id string) string { return s.keys.Load().entity + id }

// Write stores recs in pipelined round trips (per cluster node) of up to
// 512 records, up to four at once. Each
// record replaces its entity's value only if it is newer than what Redis
// holds (see Record.Version), so a replay or a zombie writer cannot move a
// value backwards; such records are skipped, not failed. If Redis lost the
// write script (restart, SCRIPT FLUSH) it is loaded and the affected script
// calls retried once. On error some records may have been written, even
// some of one script call (a script that fails midway keeps what it wrote);
// each record is whole, and writing them again is harmless.
func (s *Store) Write(ctx context.Context, recs []Record) error {
	if len(recs) == 0 {
		return nil
	}
	start := time.Now()
	err := s.write(ctx, recs)
	s.writeDur.Observe(time.Since(start).Seconds())
	if err != nil {
		s.errors.WithLabelValues("write").Inc()
		return fmt.Errorf("redis write %d records: %w", len(recs), err)
	}
	return nil
}

// A Write of more than writeChunk records runs them as pipelines of
// writeChunk, up to writeConcurrency at once on their own connections:
// the client encodes and decodes one while Redis runs another, and each
// chunk's states are readable as soon as Redis has run it.
const (
	writeChunk       = 512
	writeConcurrency = 4
)

func (s *Store) write(ctx context.Context, recs []Record) error {
	if len(recs) <= writeChunk {
		return s.writeChunk(ctx, recs, 0)
	}
	var g errgroup.Group
	g.SetLimit(writeConcurrency)
	for from := 0; from < len(recs); from += writeChunk {
		chunk := recs[from:min(from+writeChunk, len(recs))]
		g.Go(func() error { return s.writeChunk(ctx, chunk, from) })
	}
	return g.Wait()
}

// writeChunk writes recs, from index base of the Write's, in one pipeline
// of script calls. A call writes up to writeScriptKeys entities and closes
// early once its values reach writeScriptBytes, so one call of large
// states (distinct-count sketches) does not hold Redis for long. Through
// anything but a plain *redis.Client (Cluster, Ring, a wrapper) each call
// writes one entity: the client routes a call by its first key, and the
// keys of one call may belong to different nodes.
func (s *Store) writeChunk(ctx context.Context, recs []Record, base int) error {
	nf := len(s.top.Features)
	perCall := 1
	if _, ok := s.client.(*redis.Client); ok {
		perCall = writeScriptKeys
	}
	prefix := s.keys.Load().entity
	// One buffer holds every value of the chunk: args point into it, and a
	// reallocation leaves earlier slices pointing at intact data. It starts
	// at the size the last chunk's values took, so it rarely grows.
	buf := make([]byte, 0, len(recs)*int(s.encodedSize.Load())*9/8)
	calls := make([]*scriptCall, 0, (len(recs)+perCall-1)/perCall)
	writtenMs := s.now().UnixMilli()
	// scratch is for checking that a record's encoding is of this spec.
	var scratch [16][]byte
	for from := 0; from < len(recs); {
		// A call's entities share a generation (writeScript): one of
		// another starts the next call.
		gen := recs[from].Generation
		if len(gen) > maxGenerationLen {
			return fmt.Errorf("record %d (entity %q): generation %q is longer than %d bytes", base+from, recs[from].Entity, gen, maxGenerationLen)
		}
		c := &scriptCall{from: from}
		size := min(perCall, len(recs)-from)
		c.keys = make([]string, 0, size)
		c.args = make([]any, 0, 1+size)
		c.args = append(c.args, genPrefix(gen))
		callStart := len(buf)
		for c.to = from; c.to < len(recs) && c.to-from < perCall && len(buf)-callStart < writeScriptBytes; c.to++ {
			r := &recs[c.to]
			switch {
			case r.Entity == "":
				return fmt.Errorf("record %d: empty entity id", base+c.to)
			case r.State == nil:
				return fmt.Errorf("record %d (entity %q): nil state", base+c.to, r.Entity)
			case len(r.State.Features) != nf:
				return fmt.Errorf("record %d (entity %q): state has %d features, spec has %d", base+c.to, r.Entity, len(r.State.Features), nf)
			case r.Partition < 0:
				return fmt.Errorf("record %d (entity %q): partition %d is negative", base+c.to, r.Entity, r.Partition)
			}
			if r.Generation != gen {
				break
			}
			c.keys = append(c.keys, prefix+r.Entity)
			at := len(buf)
			// With this spec's encoding, State is not read: its owner may
			// be updating it already.
			if _, _, ok := s.top.EncodedFeatures(r.Encoded, scratch[:0]); ok {
				buf = AppendValue(buf, r, writtenMs)
			} else {
				buf = s.top.AppendState(appendValueHead(buf, r, writtenMs), r.State)
			}
			c.args = append(c.args, buf[at:len(buf):len(buf)])
		}
		calls = append(calls, c)
		from = c.to
	}
	s.encodedSize.Store(int64(len(buf)/len(recs) + 1))

	retry, err := s.evalCalls(ctx, recs, calls)
	if err != nil {
		return err
	}
	if len(retry) > 0 {
		s.logger.Info("redis write script not loaded, loading it", "calls", len(retry))
		if err := writeScript.Load(ctx, s.client).Err(); err != nil {
			s.errors.WithLabelValues("script_load").Inc()
			return fmt.Errorf("load write script: %w", err)
		}
		if retry, err = s.evalCalls(ctx, recs, retry); err != nil {
			return err
		}
		if len(retry) > 0 {
			return fmt.Errorf("%s: write script missing right after loading it: %w", retry[0].entities(recs), retry[0].cmd.Err())
		}
	}

	var written, stale int
	for _, c := range calls {
		n, err := c.cmd.Int64()
		if err != nil {
			return fmt.Errorf("%s: write script result: %w", c.entities(recs), err)
		}
		if n < 0 || n > int64(c.to-c.from) {
			return fmt.Errorf("%s: write script says it wrote %d of %d", c.entities(recs), n, c.to-c.from)
		}
		written += int(n)
		stale += c.to - c.from - int(n)
	}
	s.written.Add(float64(written))
	s.stale.Add(float64(stale))
	return nil
}

// Redis serves nothing else while a script runs, so one call of
// writeScript writes at most writeScriptKeys entities (64 shop entities
// take it about 0.2 ms) and stops adding entities once their features take
// writeScriptBytes.
const (
	writeScriptKeys  = 64
	writeScriptBytes = 256 << 10
)

// scriptCall is one call of writeScript, for recs[from:to] of a chunk.
type scriptCall struct {
	keys     []string
	args     []any
	from, to int
	cmd      *redis.Cmd
}

// entities names the entities of c for an error.
func (c *scriptCall) entities(recs []Record) string {
	if c.to-c.from == 1 {
		return fmt.Sprintf("entity %q", recs[c.from].Entity)
	}
	return fmt.Sprintf("entities %q to %q", recs[c.from].Entity, recs[c.to-1].Entity)
}

// evalCalls runs calls in one pipeline, leaving each command in its call.
// It returns the calls that failed with NOSCRIPT, or the first other
// error.
func (s *Store) evalCalls(ctx context.Context, recs []Record, calls []*scriptCall) ([]*scriptCall, error) {
	sha := writeScript.Hash()
	// Pipelined's error is the first failed command's; each is checked below.
	_, _ = s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, c := range calls {
			c.cmd = p.EvalSha(ctx, sha, c.keys, c.args...)
		}
		return nil
	})
	var noScript []*scriptCall
	for _, c := range calls {
		err := c.cmd.Err()
		switch {
		case err == nil:
		case redis.HasErrorPrefix(err, "NOSCRIPT"):
			noScript = append(noScript, c)
		default:
			return nil, fmt.Errorf("%s: %w", c.entities(recs), err)
		}
	}
	return noScript, nil
}

// Read returns the stored state of each entity, in one pipelined round trip
// (per cluster node), decoding only the features listed (indexes into the
// topology's features). It appends to dst[:0], reusing its entries' Tiles
// slices, and returns it; the returned tiles are the caller's. An entity
// Redis has no value for has Found false. An entity whose stored value
// does not decode makes Read fail with an error wrapping ErrCorrupt that
// names the entity and what did not decode.
func (s *Store) Read(ctx context.Context, entities []string, features []int, dst []Entry) ([]Entry, error) {
	start := time.Now()
	dst, err := s.read(ctx, entities, features, dst)
	s.readDur.Observe(time.Since(start).Seconds())
	if err != nil {
		s.errors.WithLabelValues("read").Inc()
		return dst, fmt.Errorf("redis read %d entities: %w", len(entities), err)
	}
	return dst, nil
}

func (s *Store) read(ctx context.Context, entities []string, features []int, dst []Entry) ([]Entry, error) {
	dst = dst[:0]
	for j, fi := range features {
		if fi < 0 || fi >= len(s.names) {
			return dst, fmt.Errorf("features[%d]: index %d out of range [0, %d)", j, fi, len(s.names))
		}
	}
	if len(entities) == 0 {
		return dst, nil
	}

	prefix := s.keys.Load().entity // one generation for the whole request
	cmds := make([]*redis.StringCmd, len(entities))
	args := make([]any, 2*len(entities))
	for i, e := range entities {
		a := args[2*i : 2*i+2 : 2*i+2]
		a[0], a[1] = "get", prefix+e
		cmds[i] = redis.NewStringCmd(ctx, a...)
	}
	if err := s.reads.do(ctx, cmds); err != nil {
		return dst, err
	}

	for i, c := range cmds {
		if len(dst) < cap(dst) {
			// Keep the slot's old entry: decodeValue reuses its Tiles slice.
			dst = dst[:len(dst)+1]
		} else {
			dst = append(dst, Entry{})
		}
		e := &dst[len(dst)-1]
		v, err := c.Result()
		switch {
		case err == nil:
			err = s.decodeValue(e, entities[i], features, v)
		case err == redis.Nil || redis.HasErrorPrefix(err, "WRONGTYPE"):
			// Nothing stored, or a hash of the layout before this one.
			err = nil
			tiles := e.Tiles[:0]
			*e = Entry{Tiles: tiles}
			for range features {
				e.Tiles = append(e.Tiles, nil)
			}
		default:
			err = fmt.Errorf("entity %q: %w", entities[i], err)
		}
		if err != nil {
			return dst, err
		}
	}
	return dst, nil
}

// Ping checks that Redis answers: every node of a cluster, or the one
// server.
func (s *Store) Ping(ctx context.Context) error {
	var err error
	if cc, ok := s.client.(*redis.ClusterClient); ok {
		err = cc.ForEachShard(ctx, func(ctx context.Context, c *redis.Client) error {
			return c.Ping(ctx).Err()
		})
	} else {
		err = s.client.Ping(ctx).Err()
	}
	if err != nil {
		s.errors.WithLabelValues("ping").Inc()
		if isAuthError(err) {
			return fmt.Errorf("redis ping: %w (check the username and password): %w", ErrAuth, err)
		}
		return fmt.Errorf("redis ping: %w", err)
	}
	return nil
}

func isAuthError(err error) bool {
	for _, p := range []string{"NOAUTH", "WRONGPASS", "NOPERM"} {
		if redis.HasErrorPrefix(err, p) {
			return true
		}
	}
	return false
}
