package state

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
)

// HeaderSinkNext names the changelog record header that carries the
// writer's SinkNext when it wrote the record (an 8-byte big-endian int64):
// every changelog record below it is in the online store. A standby copy
// takes it from there, so taking a partition over re-pushes only the tail.
const HeaderSinkNext = "fs.sink"

// SinkNextHeader encodes the HeaderSinkNext header.
func SinkNextHeader(next int64) kgo.RecordHeader { return offsetHeader(HeaderSinkNext, next) }

func sinkNextOf(r *kgo.Record) (int64, bool) { return offsetHeaderOf(r, HeaderSinkNext) }

// Follower keeps warm standby copies of changelog partitions in the local
// store: it tails them, read_committed, as a restore would, but without
// end. When the instance is given one of them, the restore finds local
// state at (or near) the changelog's end and replays only the tail.
//
// The partitions followed are set with Set and given up with Release,
// which returns only once the Follower will not write them again: a
// partition is either followed or owned, never both.
type Follower struct {
	store      *Store
	opts       []kgo.Opt
	topic      string
	generation string
	logger     *slog.Logger

	mu      sync.Mutex
	want    map[int32]bool
	changed chan struct{} // capacity 1: want changed
	// busy is held while the follower writes the store; Release takes it
	// to wait for a write in flight.
	busy sync.Mutex

	records    prometheus.Counter
	partitions prometheus.Gauge
	lag        prometheus.Gauge
}

// NewFollower returns a Follower of the changelog topic of the given
// generation (its topic id, as Restorer.Restore takes it).
func NewFollower(store *Store, clientOpts []kgo.Opt, topic, generation string, logger *slog.Logger, reg prometheus.Registerer) *Follower {
	f := &Follower{
		store: store, opts: clientOpts, topic: topic, generation: generation, logger: logger,
		want:    make(map[int32]bool),
		changed: make(chan struct{}, 1),
		records: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "featurestream_standby_records_total",
			Help: "Changelog records applied to warm standby copies of partitions this instance does not own.",
		}),
		partitions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "featurestream_standby_partitions",
			Help: "Partitions this instance keeps a warm standby copy of.",
		}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "featurestream_standby_lag_records",
			Help: "Changelog records the standby copies are behind, summed over their partitions, as of the last fetch.",
		}),
	}
	if reg != nil {
		reg.MustRegister(f.records, f.partitions, f.lag)
	}
	return f
}

// Set makes parts the partitions followed.
func (f *Follower) Set(parts []int32) {
	f.mu.Lock()
	want := make(map[int32]bool, len(parts))
	for _, p := range parts {
		want[p] = true
	}
	same := len(want) == len(f.want)
	for p := range want {
		same = same && f.want[p]
	}
	f.want = want
	f.mu.Unlock()
	if !same {
		f.signal()
	}
}

// Following returns the partitions followed, ascending.
func (f *Follower) Following() []int32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]int32, 0, len(f.want))
	for p := range f.want {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// Release stops following parts and returns when no write to them is in
// flight; the Follower does not write them again unless Set asks.
func (f *Follower) Release(parts []int32) {
	f.mu.Lock()
	n := len(f.want)
	for _, p := range parts {
		delete(f.want, p)
	}
	changed := len(f.want) != n
	f.mu.Unlock()
	if changed {
		f.signal()
	}
	f.busy.Lock() // waits for a write in flight; later ones skip parts
	f.busy.Unlock()
}

func (f *Follower) signal() {
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

func (f *Follower) wanted() map[int32]bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.want)
}

// Run follows the partitions set until ctx is done. A failure to read or
// write is logged and retried: standby copies are an optimisation, and a
// restore corrects whatever they lack.
func (f *Follower) Run(ctx context.Context) {
	for ctx.Err() == nil {
		want := f.wanted()
		f.partitions.Set(float64(len(want)))
		if len(want) == 0 {
			f.lag.Set(0)
			select {
			case <-ctx.Done():
				return
			case <-f.changed:
			}
			continue
		}
		if err := f.follow(ctx, want); err != nil && ctx.Err() == nil {
			f.logger.Warn("standby copies: retrying", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}
}

// follow tails want until the set changes, ctx is done or an error.
func (f *Follower) follow(ctx context.Context, want map[int32]bool) error {
	metas := make(map[int32]*Meta, len(want))
	offsets := make(map[int32]kgo.Offset, len(want))
	f.busy.Lock()
	cur := f.wanted()
	for p := range want {
		if !cur[p] {
			continue // released meanwhile
		}
		meta, ok, err := f.store.Meta(p)
		if err != nil || !ok || meta.Generation != f.generation {
			if err := f.store.DropPartition(p); err != nil {
				f.busy.Unlock()
				return err
			}
			meta = Meta{MaxEventMs: math.MinInt64, Generation: f.generation}
		}
		metas[p] = &meta
		offsets[p] = kgo.NewOffset().At(meta.ChangelogNext)
	}
	f.busy.Unlock()
	if len(offsets) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(append(f.opts[:len(f.opts):len(f.opts)],
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{f.topic: offsets}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
	)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	f.logger.Info("keeping standby copies", "partitions", slices.Sorted(maps.Keys(offsets)))
	lags := make(map[int32]int64, len(offsets))
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-f.changed:
			return nil
		default:
		}
		pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		fetches := cl.PollFetches(pctx)
		cancel()
		var fetchErr error
		fetches.EachError(func(_ string, _ int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				fetchErr = err
			}
		})
		if fetchErr != nil {
			return fmt.Errorf("fetch changelog: %w", fetchErr)
		}
		if err := f.apply(fetches, metas, lags); err != nil {
			return err
		}
	}
}

// apply writes one poll's records of the partitions still followed, each
// partition in one batch with its metadata, as a restore does.
func (f *Follower) apply(fetches kgo.Fetches, metas map[int32]*Meta, lags map[int32]int64) error {
	f.busy.Lock()
	defer f.busy.Unlock()
	cur := f.wanted()
	var err error
	fetches.EachPartition(func(ftp kgo.FetchTopicPartition) {
		meta := metas[ftp.Partition]
		if err != nil || meta == nil || !cur[ftp.Partition] {
			return
		}
		var recs []*kgo.Record
		for _, rec := range ftp.Records {
			if rec.Offset < meta.ChangelogNext {
				continue
			}
			if err = note(rec, meta); err != nil {
				err = fmt.Errorf("standby partition %d: %w", ftp.Partition, err)
				return
			}
			if rec.Attrs.IsControl() {
				continue
			}
			if next, ok := sinkNextOf(rec); ok && next > meta.SinkNext {
				meta.SinkNext = next
			}
			recs = append(recs, rec)
		}
		lags[ftp.Partition] = max(ftp.HighWatermark-meta.ChangelogNext, 0)
		if len(ftp.Records) == 0 {
			return
		}
		if err = commitRecords(f.store, ftp.Partition, recs, *meta, nil); err == nil {
			f.records.Add(float64(len(recs)))
		}
	})
	var lag int64
	for p, l := range lags {
		if cur[p] {
			lag += l
		}
	}
	f.lag.Set(float64(lag))
	return err
}
