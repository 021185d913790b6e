package state

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/featurestream/featurestream/topology"
)

// ChangelogTopic is the changelog topic of app's feature store.
func ChangelogTopic(app string) string { return app + "-features-changelog" }

// HeaderInputNext names the changelog record header that carries the first
// input offset not reflected in the record (an 8-byte big-endian int64), so
// a restore knows where input processing resumes.
const HeaderInputNext = "fs.in"

// InputNextHeader encodes the HeaderInputNext header.
func InputNextHeader(next int64) kgo.RecordHeader { return offsetHeader(HeaderInputNext, next) }

func inputNextOf(r *kgo.Record) (int64, bool) { return offsetHeaderOf(r, HeaderInputNext) }

// HeaderHorizon names the changelog record header that carries the horizon
// (epoch ms, an 8-byte big-endian int64) of the states its commit wrote:
// the earliest as_of they are whole for. A partition's last record of each
// commit carries it, for the records of the commit before it too.
const HeaderHorizon = "fs.h"

// HorizonHeader encodes the HeaderHorizon header.
func HorizonHeader(ms int64) kgo.RecordHeader { return offsetHeader(HeaderHorizon, ms) }

// Repush is a state of an entity that the online store may lack.
type Repush struct {
	Entity string
	// Value is that state as the changelog has it (topology.AppendState's
	// encoding), or nil where the entity was deleted. It is the caller's:
	// decoding it costs a third of reading the state back from the store.
	Value []byte
	// Offset is the changelog offset of that state: its version.
	Offset int64
	// HorizonMs is the horizon its commit recorded (HeaderHorizon), or
	// math.MinInt64 when the changelog does not say: written before the
	// header existed, or a commit cut short by a crash. Where compaction
	// removed a commit's last record, its other records take the next
	// commit's horizon, which is later: never earlier than the truth.
	HorizonMs int64
}

// offsetHeader and offsetHeaderOf encode and read a header holding an
// offset, an 8-byte big-endian int64.
func offsetHeader(key string, v int64) kgo.RecordHeader {
	return kgo.RecordHeader{Key: key, Value: binary.BigEndian.AppendUint64(nil, uint64(v))}
}

func offsetHeaderOf(r *kgo.Record, key string) (int64, bool) {
	for _, h := range r.Headers {
		if h.Key == key && len(h.Value) == 8 {
			return int64(binary.BigEndian.Uint64(h.Value)), true
		}
	}
	return 0, false
}

// EnsureTopic creates topic as a compacted topic with partitions partitions
// if it does not exist, and checks the partition count if it does. It
// returns the topic's id, which identifies this incarnation of the topic.
func EnsureTopic(ctx context.Context, adm *kadm.Client, topic string, partitions int32, compacted bool) (string, error) {
	var configs map[string]*string
	if compacted {
		configs = map[string]*string{"cleanup.policy": kadm.StringPtr("compact")}
	}
	resp, err := adm.CreateTopic(ctx, partitions, -1, configs, topic)
	switch {
	case err == nil:
		return resp.ID.String(), nil
	case !errors.Is(err, kerr.TopicAlreadyExists):
		return "", fmt.Errorf("create topic %s: %w", topic, err)
	}
	details, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return "", fmt.Errorf("describe topic %s: %w", topic, err)
	}
	d, ok := details[topic]
	if !ok || d.Err != nil {
		return "", fmt.Errorf("describe topic %s: %v", topic, d.Err)
	}
	if got := int32(len(d.Partitions)); got != partitions {
		return "", fmt.Errorf("topic %s has %d partitions but the input has %d: a changelog must have the input's partition count; delete it (state is rebuilt from input only by a replay) or fix the input", topic, got, partitions)
	}
	return d.ID.String(), nil
}

// Restorer rebuilds partitions of a Store from the changelog. Restore may
// be called from many goroutines at once, for different partitions; at most
// MaxConcurrentRestores of them read the changelog at a time.
type Restorer struct {
	store  *Store
	topic  string
	logger *slog.Logger
	// slots bounds the restores under way: each has a Pebble batch and
	// up to a fetch or two of records in memory.
	slots chan struct{}
	// compactBytes is when a restore's re-push list drops older states:
	// repushCompactBytes, smaller in tests.
	compactBytes int
	// waves shares listings of the changelog's end, and clients reading
	// it, among restores that start together.
	waves waves

	records   prometheus.Counter
	remaining *prometheus.GaugeVec
	duration  prometheus.Histogram
}

// NewRestorer returns a Restorer reading topic with clients built from
// clientOpts (seed brokers, TLS, SASL).
func NewRestorer(store *Store, adm *kadm.Client, clientOpts []kgo.Opt, topic string, logger *slog.Logger, reg prometheus.Registerer) *Restorer {
	r := &Restorer{
		store: store, topic: topic, logger: logger,
		slots: make(chan struct{}, MaxConcurrentRestores), compactBytes: repushCompactBytes,
		waves: waves{
			topic: topic, pauseRecords: feedPauseRecords,
			list: func(ctx context.Context) (kadm.ListedOffsets, error) { return adm.ListCommittedOffsets(ctx, topic) },
			open: func(from map[int32]kgo.Offset) (*kgo.Client, error) {
				return kgo.NewClient(append(clientOpts[:len(clientOpts):len(clientOpts)],
					kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: from}),
					kgo.FetchIsolationLevel(kgo.ReadCommitted()),
					kgo.KeepControlRecords(),
					// A wave's partitions are read once to their ends,
					// which gains little from a fetch session; closing
					// one costs a round trip.
					kgo.DisableFetchSessions(),
					// Nor from client metrics (KIP-714): a client that
					// lives for a few fetches has nothing to report, and
					// its last push, sent as it closes, held each restore
					// another 2-13 ms on kfake when a restore closed its
					// own client.
					kgo.DisableClientMetrics(),
					// A partition resumed while the broker holds a fetch
					// of the others (for records beyond what was listed,
					// or a tail compacted away) waits for that fetch.
					kgo.FetchMaxWait(restoreFetchMaxWait),
				)...)
			},
		},
		records: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "featurestream_restore_records_total",
			Help: "Changelog records applied to local state while restoring.",
		}),
		remaining: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "featurestream_restore_remaining_records",
			Help: "Changelog records still to apply before a restoring partition is up to date.",
		}, []string{"partition"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "featurestream_restore_duration_seconds",
			Help:    "Time to restore one partition from the changelog.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}),
	}
	if reg != nil {
		reg.MustRegister(r.records, r.remaining, r.duration)
	}
	return r
}

// restoreBatchRecords bounds a restore's Pebble batch, so progress survives
// a crash during a long restore.
const restoreBatchRecords = 4096

// restoreFetchMaxWait bounds how long the broker holds a restore's fetch
// when it has nothing to return, well below the second a restore waits for
// records before it counts a wait as idle.
const restoreFetchMaxWait = 100 * time.Millisecond

// MaxConcurrentRestores is how many partitions a Restorer restores at once;
// more wait their turn. Restores overlap their round trips to the broker,
// so a few at once restore faster than one after another even on one
// core (see docs/performance.md).
const MaxConcurrentRestores = 8

// Restore brings the partition's local state up to the end of its
// changelog and returns its metadata, and the states the online store may
// lack (those changed since Meta.SinkNext) with their changelog offsets and
// horizons. An entity may be in the list more than once, its states
// oldest first: its last is its newest. A list, not a map: the caller
// builds the one map it needs. Local state of another generation is wiped
// first.
//
// Canceling ctx stops the restore with an error wrapping ctx's; what it
// committed to the store stays, consistent with its metadata, and the next
// Restore of the partition continues from there.
func (r *Restorer) Restore(ctx context.Context, partition int32, generation string) (Meta, []Repush, error) {
	select {
	case r.slots <- struct{}{}:
		defer func() { <-r.slots }()
	case <-ctx.Done():
		return Meta{}, nil, fmt.Errorf("restore partition %d: %w", partition, ctx.Err())
	}
	start := time.Now()
	meta, ok, err := r.store.Meta(partition)
	if err != nil {
		r.logger.Warn("local state unreadable, rebuilding from changelog", "partition", partition, "err", err)
		ok = false
	}
	if ok && meta.Generation != generation {
		r.logger.Info("local state is of another changelog generation, rebuilding", "partition", partition, "local", meta.Generation, "changelog", generation)
		ok = false
	}
	if !ok {
		if err := r.store.DropPartition(partition); err != nil {
			return Meta{}, nil, err
		}
		meta = Meta{MaxEventMs: math.MinInt64, Generation: generation}
	}
	// Read from where the online store may be behind, apply from where
	// local state is behind.
	from := min(meta.ChangelogNext, meta.SinkNext)
	f, err := r.waves.join(partition, from)
	if err != nil {
		return Meta{}, nil, err
	}
	defer f.leave()
	end, err := f.ready(ctx)
	if err != nil {
		return Meta{}, nil, fmt.Errorf("restore partition %d: %w", partition, err)
	}
	gauge := r.remaining.WithLabelValues(fmt.Sprint(partition))
	defer r.remaining.DeleteLabelValues(fmt.Sprint(partition))
	if from >= end {
		return meta, nil, nil
	}
	// At most one entry per record from SinkNext on.
	repush := newRepushes(r.compactBytes, end-max(from, meta.SinkNext))
	gauge.Set(float64(end - from))
	r.logger.Info("restoring partition", "partition", partition, "from", from, "apply_from", meta.ChangelogNext, "to", end)

	// The records of the next batch, in changelog order; they refer into
	// the fetches, which stay alive until the batch is committed. Their
	// horizons are known from their commit's last record on; closed is
	// how many have one.
	pending := make([]*kgo.Record, 0, restoreBatchRecords)
	horizons := make([]int64, 0, restoreBatchRecords)
	closed := 0
	// commit writes pending and meta, and records the written (newest)
	// state of each entity that the online store may lack.
	commit := func() error {
		err := commitRecords(r.store, partition, pending, meta, func(i int) {
			if rec := pending[i]; rec.Offset >= meta.SinkNext {
				repush.add(rec.Key, rec.Value, rec.Offset, horizons[i])
			}
		})
		pending, horizons, closed = pending[:0], horizons[:0], 0
		return err
	}
	var applied, fetched int
	idle := 0
	next := from
	for next < end {
		parts, err := f.take(ctx, time.Second)
		if err != nil {
			if ctx.Err() != nil {
				return Meta{}, nil, fmt.Errorf("restore partition %d: %w", partition, ctx.Err())
			}
			return Meta{}, nil, fmt.Errorf("restore partition %d: fetch changelog: %w", partition, err)
		}
		if len(parts) == 0 {
			// Records at the end may have been compacted away or be
			// markers of aborted transactions; after a few idle waits
			// the changelog has nothing more for us.
			if idle++; idle >= 3 {
				r.logger.Warn("changelog ended before its listed end offset", "partition", partition, "at", next, "end", end)
				break
			}
			continue
		}
		idle = 0
		var applyErr error
		apply := func(rec *kgo.Record) {
			if applyErr != nil || rec.Offset < next {
				return
			}
			next = rec.Offset + 1
			if rec.Offset >= meta.ChangelogNext {
				applyErr = note(rec, &meta)
				if !rec.Attrs.IsControl() {
					pending = append(pending, rec)
					horizons = append(horizons, math.MinInt64)
					applied++
					fetched++
				}
			} else if rec.Offset >= meta.SinkNext && !rec.Attrs.IsControl() {
				repush.add(rec.Key, rec.Value, rec.Offset, math.MinInt64)
			}
			if h, ok := offsetHeaderOf(rec, HeaderHorizon); ok {
				for i := closed; i < len(horizons); i++ {
					horizons[i] = h
				}
				closed = len(horizons)
				repush.close(h)
			}
		}
		for _, fp := range parts {
			for _, rec := range fp.Records {
				apply(rec)
			}
		}
		// One add per fetch, not per record: restores run concurrently.
		r.records.Add(float64(fetched))
		fetched = 0
		if applyErr != nil {
			return Meta{}, nil, fmt.Errorf("restore partition %d: %w", partition, applyErr)
		}
		gauge.Set(float64(end - next))
		if len(pending) >= restoreBatchRecords {
			if err := commit(); err != nil {
				return Meta{}, nil, err
			}
		}
	}
	meta.ChangelogNext = max(meta.ChangelogNext, next)
	if err := commit(); err != nil {
		return Meta{}, nil, err
	}
	r.duration.Observe(time.Since(start).Seconds())
	r.logger.Info("restored partition", "partition", partition, "records", applied, "changelog_next", meta.ChangelogNext, "input_next", meta.InputNext, "took", time.Since(start).Round(time.Millisecond))
	return meta, repush.list, nil
}

// repushes collects the states the online store may lack, each entity's
// oldest first: one per record read but not applied (below the local
// state's ChangelogNext), then one per restore batch that wrote it.
//
// An entry refers to its record's key and value where the fetch has them,
// without a copy: franz-go does not reuse a fetch's memory (unless given
// pools, which restores are not), and copying every state of a full
// restore, with an arena allocation zeroed for each megabyte, was a third
// of a restore's CPU. Compacting copies what it keeps into arenas, so
// that the fetches are freed: the list holds at most about compactAt of
// fetched records, and after a compaction only its entities' states.
type repushes struct {
	list []Repush
	// open are the entries added without a horizon: they learn the next
	// one read, their commit's (on its last record) or, where their commit
	// has none, a later commit's.
	open []int
	// arena holds the keys and values compacting kept, so that keeping
	// one is not an allocation.
	arena []byte
	// bytes is the size of the list, its entries' keys, values and
	// repushEntryBytes each. At compactAt the older states of each entity
	// are dropped, and compactAt becomes twice what is left, at least
	// minCompact.
	bytes, compactAt, minCompact int
}

// repushArenaBytes is the size of each of a re-push list's arenas.
const repushArenaBytes = 1 << 20

// newRepushes returns an empty list with room for up to sizeHint entries
// (repushPresize at most), so that a restore does not grow it step by
// step.
func newRepushes(minCompact int, sizeHint int64) *repushes {
	return &repushes{list: make([]Repush, 0, min(max(sizeHint, 0), repushPresize)), compactAt: minCompact, minCompact: minCompact}
}

// repushPresize bounds the entries a re-push list makes room for at once:
// 14 MiB of Repush.
const repushPresize = 1 << 18

// repushCompactBytes is when a re-push list drops older states. On a
// changelog compaction has fallen far behind on, the list could hold many
// states of one entity; a list of distinct entities is never worth
// compacting.
const repushCompactBytes = 256 << 20

// repushEntryBytes is what an entry takes besides its key and value: the
// Repush, its slot in open and the record's own fields.
const repushEntryBytes = 96

// add records key's state, value at offset, with its commit's horizon or,
// while that is unknown, math.MinInt64. The entry refers to key and value,
// which must not change afterwards (a fetched record's do not).
func (r *repushes) add(key, value []byte, offset, horizonMs int64) {
	if horizonMs == math.MinInt64 {
		r.open = append(r.open, len(r.list))
	}
	r.list = append(r.list, Repush{Entity: unsafe.String(unsafe.SliceData(key), len(key)), Value: value, Offset: offset, HorizonMs: horizonMs})
	if r.bytes += len(key) + len(value) + repushEntryBytes; r.bytes >= r.compactAt {
		r.compact()
	}
}

// keep returns a copy of b in the arena; nil for nil.
func (r *repushes) keep(b []byte) []byte {
	if b == nil {
		return nil
	}
	return arenaCopy(r, b)
}

// arenaCopy returns a copy of b in r's arena.
func arenaCopy[T string | []byte](r *repushes, b T) []byte {
	if len(b) == 0 {
		return []byte{}
	}
	if cap(r.arena)-len(r.arena) < len(b) {
		r.arena = make([]byte, 0, max(repushArenaBytes, len(b)))
	}
	at := len(r.arena)
	r.arena = append(r.arena, b...)
	return r.arena[at:len(r.arena):len(r.arena)]
}

// compact drops every entry an entry of the same entity follows, keeping
// the order of the rest, and copies the keys and values kept to new
// arenas, so that neither the fetches nor the old arenas stay referenced.
func (r *repushes) compact() {
	last := make(map[string]int, len(r.list)/2)
	for i := range r.list {
		last[r.list[i].Entity] = i
	}
	moved := make([]int, len(r.list)) // old index to new, or -1
	kept, size := 0, 0
	for i := range r.list {
		moved[i] = -1
		if last[r.list[i].Entity] == i {
			r.list[kept] = r.list[i]
			moved[i] = kept
			size += len(r.list[kept].Entity) + len(r.list[kept].Value) + repushEntryBytes
			kept++
		}
	}
	clear(r.list[kept:])
	r.list = r.list[:kept]
	r.arena = nil
	for i := range r.list {
		e := &r.list[i]
		key := arenaCopy(r, e.Entity)
		e.Entity = unsafe.String(unsafe.SliceData(key), len(key))
		e.Value = r.keep(e.Value)
	}
	open := r.open[:0]
	for _, i := range r.open {
		if moved[i] >= 0 {
			open = append(open, moved[i])
		}
	}
	r.open = open
	r.bytes, r.compactAt = size, max(2*size, r.minCompact)
}

// close gives the open entries the horizon of their commit.
func (r *repushes) close(horizonMs int64) {
	for _, i := range r.open {
		r.list[i].HorizonMs = horizonMs
	}
	r.open = r.open[:0]
}

// note folds a changelog record into the restore's metadata and checks
// that its value is a state.
func note(rec *kgo.Record, meta *Meta) error {
	meta.ChangelogNext = rec.Offset + 1
	if rec.Attrs.IsControl() {
		return nil
	}
	if next, ok := inputNextOf(rec); ok && next > meta.InputNext {
		meta.InputNext = next
	}
	if rec.Value == nil {
		return nil
	}
	// Only the event time is read here: the state is decoded when the
	// entity is next used, and a full decode would halve the restore rate.
	last, err := topology.PeekLastEventMs(rec.Value)
	if err != nil {
		return fmt.Errorf("changelog offset %d, entity %q: %w", rec.Offset, rec.Key, err)
	}
	meta.MaxEventMs = max(meta.MaxEventMs, last)
	return nil
}

// keyedRecord is a record of a restore batch, by its index, with its key's
// first 8 bytes (big-endian, zero-padded) and length. Two keys of at most 8
// bytes compare as their (prefix, length) do: where prefixes are equal the
// shorter key is a prefix of the longer. Only longer keys with equal
// prefixes need the keys themselves, which live in fetch buffers, a cache
// miss or two away.
type keyedRecord struct {
	prefix uint64
	index  int32
	length uint32
}

func keyOf(key []byte, index int) keyedRecord {
	var b [8]byte
	copy(b[:], key)
	return keyedRecord{prefix: binary.BigEndian.Uint64(b[:]), index: int32(index), length: uint32(len(key))}
}

// sameKey reports whether a and b, adjacent after sortByKey, have one key.
func sameKey(recs []*kgo.Record, a, b keyedRecord) bool {
	return a.prefix == b.prefix && a.length == b.length &&
		(a.length <= 8 || bytes.Equal(recs[a.index].Key, recs[b.index].Key))
}

// sortByKey sorts ks, keyedRecords of recs, by key, records of one key in
// the order ks has them, and returns the sorted slice: ks or scratch, which
// must be as long.
//
// It is a least-significant-digit radix sort: a pass on min(length, 9),
// then one per byte of the prefix, skipping the bytes every prefix shares
// (a short key's padding, a common first letter). Keys longer than 8 bytes
// with one prefix are then ordered by whole key. A comparison sort of the
// same records was two fifths of a restore's time (BenchmarkRestore): a
// comparison per level of the recursion, each a mispredicted branch.
func sortByKey(recs []*kgo.Record, ks, scratch []keyedRecord) []keyedRecord {
	if len(ks) < 2 {
		return ks
	}
	// digit(k, 0) is the length digit; digit(k, d) for d in 1..8 is the
	// prefix's byte d-1 from the right.
	digit := func(k keyedRecord, d int) byte {
		if d == 0 {
			return byte(min(k.length, 9))
		}
		return byte(k.prefix >> (8 * (d - 1)))
	}
	var counts [9][256]int
	for _, k := range ks {
		for d := range 9 {
			counts[d][digit(k, d)]++
		}
	}
	src, dst := ks, scratch[:len(ks)]
	for d := range 9 {
		c := &counts[d]
		if c[digit(src[0], d)] == len(src) {
			continue // every record has this digit
		}
		var next [256]int
		sum := 0
		for b, n := range c {
			next[b] = sum
			sum += n
		}
		for _, k := range src {
			b := digit(k, d)
			dst[next[b]] = k
			next[b]++
		}
		src, dst = dst, src
	}
	// The longer keys of one prefix are together, at the end of their
	// prefix's run.
	for i := 0; i < len(src); {
		if src[i].length <= 8 {
			i++
			continue
		}
		j := i + 1
		for j < len(src) && src[j].prefix == src[i].prefix {
			j++
		}
		if j-i > 1 {
			slices.SortStableFunc(src[i:j], func(a, b keyedRecord) int { return bytes.Compare(recs[a.index].Key, recs[b.index].Key) })
		}
		i = j
	}
	return src
}

// commitRecords writes recs, a partition's changelog records in changelog
// order, and meta in one batch. It writes them in key order, and only the
// newest record of each key: the batch is atomic, so an older one would
// never be seen, and Pebble inserts keys in order into its memtable several
// times faster than in the changelog's random order (docs/performance.md).
// written, if not nil, is called with the index of each record written as
// it joins the batch, so also when the commit then fails. Restores and
// standby copies write this way.
func commitRecords(store *Store, partition int32, recs []*kgo.Record, meta Meta, written func(index int)) error {
	buf := make([]keyedRecord, 2*len(recs))
	ks := buf[:len(recs)]
	size := 0
	for i, rec := range recs {
		ks[i] = keyOf(rec.Key, i)
		size += len(rec.Key) + len(rec.Value) + 16
	}
	ks = sortByKey(recs, ks, buf[len(recs):])
	batch := store.newBatchWithSize(size)
	defer batch.Close()
	for i, k := range ks {
		if i+1 < len(ks) && sameKey(recs, k, ks[i+1]) {
			continue // superseded within the batch
		}
		rec := recs[k.index]
		if written != nil {
			written(int(k.index))
		}
		var err error
		if rec.Value == nil {
			err = batch.deleteBytes(partition, rec.Key)
		} else {
			err = batch.setBytes(partition, rec.Key, rec.Value)
		}
		if err != nil {
			return fmt.Errorf("restore partition %d: %w", partition, err)
		}
	}
	if err := batch.SetMeta(partition, meta); err != nil {
		return fmt.Errorf("restore partition %d: %w", partition, err)
	}
	if err := batch.Commit(); err != nil {
		return fmt.Errorf("restore partition %d: %w", partition, err)
	}
	return nil
}
