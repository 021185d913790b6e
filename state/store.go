package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/featurestream/featurestream/topology"
)

// Options configure a Store. The zero value, with Dir set, is a good default.
type Options struct {
	// Dir is the directory of the Pebble store. Required unless FS is an
	// in-memory filesystem.
	Dir string
	// CacheSize is Pebble's block cache in bytes. Default 128 MiB.
	CacheSize int64
	// MemTableSize is Pebble's memtable in bytes. Default 64 MiB: Pebble's
	// 4 MiB default flushes constantly under write bursts (see
	// BenchmarkStore and docs/performance.md).
	MemTableSize uint64
	// FlushInterval bounds how long a committed batch stays only in the
	// memtable: with no WAL (decision 0018) a crash loses what is not
	// flushed, and the restore replays it from the changelog. Default one
	// minute, so that replay stays short at any write rate and well within
	// the changelog's tombstone retention.
	FlushInterval time.Duration
	// FS overrides the filesystem, for crash tests on vfs.NewCrashableMem.
	FS vfs.FS
	// Logger receives Pebble's own logs. Default slog.Default().
	Logger *slog.Logger

	// pebbleDefaults leaves Pebble untuned, for the benchmark that shows
	// what the tuning buys.
	pebbleDefaults bool
}

func (o *Options) applyDefaults() {
	if o.CacheSize == 0 {
		o.CacheSize = 128 << 20
	}
	if o.MemTableSize == 0 {
		o.MemTableSize = 64 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.FlushInterval == 0 {
		o.FlushInterval = time.Minute
	}
}

// Validate reports every problem with o at once.
func (o *Options) Validate() error {
	var errs []error
	if o.Dir == "" && o.FS == nil {
		errs = append(errs, errors.New("state: Dir is required (--state-dir): the directory for local state"))
	}
	if o.FlushInterval < 0 {
		errs = append(errs, fmt.Errorf("state: FlushInterval %s: must not be negative", o.FlushInterval))
	}
	if o.CacheSize < 0 {
		errs = append(errs, fmt.Errorf("state: CacheSize %d: must not be negative", o.CacheSize))
	}
	return errors.Join(errs...)
}

// Store is the local state store. It is safe for concurrent use.
type Store struct {
	db  *pebble.DB
	top *topology.Topology
	// written says a batch was committed since the last periodic flush.
	written   atomic.Bool
	stopFlush chan struct{}
	flushDone chan struct{}
	logger    *slog.Logger
}

// Key layout. Entities: 's' + partition (4 bytes BE) + entity id.
// Partition metadata: 'm' + partition (4 bytes BE).
const (
	prefixState = 's'
	prefixMeta  = 'm'
)

// Open opens (or creates) the store.
func Open(opts Options, top *topology.Topology) (*Store, error) {
	opts.applyDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	cache := pebble.NewCache(opts.CacheSize)
	defer cache.Unref()
	po := &pebble.Options{
		Cache:        cache,
		MemTableSize: opts.MemTableSize,
		FS:           opts.FS,
		Logger:       pebbleLogger{opts.Logger},
		// The changelog is the state's log (decision 0018): a crash
		// loses the memtable's batches, whole, and the restore replays
		// them from the changelog.
		DisableWAL: true,
	}
	for i := range po.Levels {
		po.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	if opts.pebbleDefaults {
		po = &pebble.Options{FS: opts.FS, Logger: po.Logger}
	}
	db, err := pebble.Open(opts.Dir, po)
	if err != nil {
		return nil, fmt.Errorf("open state store %s: %w", opts.Dir, err)
	}
	s := &Store{db: db, top: top, stopFlush: make(chan struct{}), flushDone: make(chan struct{}), logger: opts.Logger}
	go s.flushEvery(opts.FlushInterval)
	return s, nil
}

// flushEvery starts a flush of the memtable every interval in which a
// batch was committed, until Close. Pebble flushes only when a memtable
// fills, which at a low write rate may be days.
func (s *Store) flushEvery(interval time.Duration) {
	defer close(s.flushDone)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-s.stopFlush:
			return
		case <-tick.C:
			if !s.written.Swap(false) {
				continue
			}
			if _, err := s.db.AsyncFlush(); err != nil {
				s.written.Store(true)
				s.logger.Warn("state store: periodic flush", "err", err)
			}
		}
	}
}

// Close flushes and closes the store: without a WAL, what is not flushed
// would be replayed from the changelog at the next start.
func (s *Store) Close() error {
	close(s.stopFlush)
	<-s.flushDone
	if err := s.db.Flush(); err != nil {
		s.db.Close()
		return fmt.Errorf("close state store: flush: %w", err)
	}
	return s.db.Close()
}

// DB exposes the Pebble database for metrics.
func (s *Store) DB() *pebble.DB { return s.db }

func stateKey[E string | []byte](dst []byte, partition int32, entity E) []byte {
	dst = append(dst, prefixState)
	dst = binary.BigEndian.AppendUint32(dst, uint32(partition))
	return append(dst, entity...)
}

func metaKey(partition int32) []byte {
	return binary.BigEndian.AppendUint32([]byte{prefixMeta}, uint32(partition))
}

// Get returns the state of entity in partition, or nil if there is none.
func (s *Store) Get(partition int32, entity string) (*topology.EntityState, error) {
	var kb [64]byte
	v, closer, err := s.db.Get(stateKey(kb[:0], partition, entity))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get state of %q in partition %d: %w", entity, partition, err)
	}
	defer closer.Close()
	st, err := s.top.DecodeState(v)
	if err != nil {
		return nil, fmt.Errorf("get state of %q in partition %d: %w", entity, partition, err)
	}
	return st, nil
}

// Meta is what the store knows about one input partition, written in the
// same batch as the state it describes.
type Meta struct {
	// ChangelogNext is the changelog offset to restore from: every
	// changelog record before it is in the store.
	ChangelogNext int64
	// InputNext is the first input offset not yet reflected in the state.
	InputNext int64
	// SinkNext is the changelog offset up to which the online store is
	// known to have every state: a restore pushes the states from it on.
	SinkNext int64
	// MaxEventMs is the newest event time applied (the watermark's base).
	MaxEventMs int64
	// Generation identifies the changelog topic the state came from; state
	// of another generation is not trusted.
	Generation string
}

func (m Meta) append(dst []byte) []byte {
	dst = append(dst, 1) // version
	dst = binary.AppendVarint(dst, m.ChangelogNext)
	dst = binary.AppendVarint(dst, m.InputNext)
	dst = binary.AppendVarint(dst, m.SinkNext)
	dst = binary.AppendVarint(dst, m.MaxEventMs)
	dst = binary.AppendUvarint(dst, uint64(len(m.Generation)))
	return append(dst, m.Generation...)
}

func decodeMeta(b []byte) (Meta, error) {
	var m Meta
	if len(b) < 1 || b[0] != 1 {
		return m, errors.New("state: corrupt partition meta: bad version")
	}
	b = b[1:]
	for _, p := range []*int64{&m.ChangelogNext, &m.InputNext, &m.SinkNext, &m.MaxEventMs} {
		v, n := binary.Varint(b)
		if n <= 0 {
			return m, errors.New("state: corrupt partition meta")
		}
		*p, b = v, b[n:]
	}
	l, n := binary.Uvarint(b)
	if n <= 0 || l != uint64(len(b)-n) {
		return m, errors.New("state: corrupt partition meta: generation")
	}
	m.Generation = string(b[n:])
	return m, nil
}

// Meta returns the partition's metadata; ok is false if the store has none.
func (s *Store) Meta(partition int32) (m Meta, ok bool, err error) {
	v, closer, err := s.db.Get(metaKey(partition))
	if errors.Is(err, pebble.ErrNotFound) {
		return Meta{MaxEventMs: math.MinInt64}, false, nil
	}
	if err != nil {
		return m, false, fmt.Errorf("read meta of partition %d: %w", partition, err)
	}
	defer closer.Close()
	m, err = decodeMeta(v)
	if err != nil {
		return m, false, fmt.Errorf("read meta of partition %d: %w", partition, err)
	}
	return m, true, nil
}

// DropPartition deletes all state and metadata of a partition, for a store
// whose state cannot be trusted.
func (s *Store) DropPartition(partition int32) error {
	lo := stateKey(nil, partition, "")
	hi := stateKey(nil, partition+1, "")
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.DeleteRange(lo, hi, nil); err != nil {
		return fmt.Errorf("drop partition %d: %w", partition, err)
	}
	if err := b.Delete(metaKey(partition), nil); err != nil {
		return fmt.Errorf("drop partition %d: %w", partition, err)
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("drop partition %d: %w", partition, err)
	}
	s.written.Store(true)
	return nil
}

// Entities calls fn for each entity of the partition in key order, stopping
// at the first error. The state passed to fn is fn's to keep.
func (s *Store) Entities(partition int32, fn func(entity string, st *topology.EntityState) error) error {
	lo := stateKey(nil, partition, "")
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: stateKey(nil, partition+1, "")})
	if err != nil {
		return fmt.Errorf("scan partition %d: %w", partition, err)
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		st, err := s.top.DecodeState(it.Value())
		if err != nil {
			return fmt.Errorf("scan partition %d: entity %q: %w", partition, it.Key()[len(lo):], err)
		}
		if err := fn(string(it.Key()[len(lo):]), st); err != nil {
			return err
		}
	}
	return it.Error()
}

// Batch collects state changes and metadata to apply atomically. It is not
// safe for concurrent use.
type Batch struct {
	s    *Store
	b    *pebble.Batch
	key  []byte
	done bool
}

// NewBatch starts a batch.
func (s *Store) NewBatch() *Batch { return &Batch{s: s, b: s.db.NewBatch()} }

// newBatchWithSize starts a batch with room for about size bytes of keys
// and values, so it does not grow step by step.
func (s *Store) newBatchWithSize(size int) *Batch {
	return &Batch{s: s, b: s.db.NewBatchWithSize(size)}
}

// Set records the encoded state of an entity (as written by
// topology.AppendState, the same bytes the changelog carries).
func (b *Batch) Set(partition int32, entity string, encoded []byte) error {
	b.key = stateKey(b.key[:0], partition, entity)
	return b.b.Set(b.key, encoded, nil)
}

// Delete removes an entity's state.
func (b *Batch) Delete(partition int32, entity string) error {
	b.key = stateKey(b.key[:0], partition, entity)
	return b.b.Delete(b.key, nil)
}

// setBytes and deleteBytes are Set and Delete of an entity id given as
// bytes (a changelog record's key), without converting it to a string.
func (b *Batch) setBytes(partition int32, entity, encoded []byte) error {
	b.key = stateKey(b.key[:0], partition, entity)
	return b.b.Set(b.key, encoded, nil)
}

func (b *Batch) deleteBytes(partition int32, entity []byte) error {
	b.key = stateKey(b.key[:0], partition, entity)
	return b.b.Delete(b.key, nil)
}

// SetMeta records the partition's metadata.
func (b *Batch) SetMeta(partition int32, m Meta) error {
	return b.b.Set(metaKey(partition), m.append(nil), nil)
}

// Commit applies the batch atomically. It is durable once its memtable is
// flushed: a crash may lose the newest batches, never part of one, and the
// changelog replays them.
func (b *Batch) Commit() error {
	defer b.Close()
	if err := b.b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("commit state batch: %w", err)
	}
	b.s.written.Store(true)
	return nil
}

// Len is the number of state changes in the batch.
func (b *Batch) Len() int { return int(b.b.Count()) }

// Close discards an uncommitted batch; after Commit it does nothing.
func (b *Batch) Close() {
	if !b.done {
		b.done = true
		b.b.Close()
	}
}

type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Debug(fmt.Sprintf(format, args...), "component", "pebble")
}
func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...), "component", "pebble")
}
func (p pebbleLogger) Fatalf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...), "component", "pebble")
	panic(fmt.Sprintf(format, args...))
}
