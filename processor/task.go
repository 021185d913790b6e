package processor

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/featurestream/featurestream/sinks"
	"github.com/featurestream/featurestream/state"
	"github.com/featurestream/featurestream/topology"
)

// task owns one input partition between an assignment and its revocation.
// Only the processor's loop (or a group callback, serialized with it) calls
// its methods.
type task struct {
	p         *Processor
	partition int32

	// maxEventMs is the newest event time applied; the watermark is it
	// minus the spec's grace. committedMaxEventMs is its value at the last
	// commit, restored when a transaction aborts.
	maxEventMs, committedMaxEventMs int64
	// lastArrivalMs is the wall-clock time the last record arrived;
	// wmFloor is the watermark as last advanced, by events or by idleness.
	lastArrivalMs, wmFloor, committedWmFloor int64
	// inputNext is the next input offset to apply; committedNext the one
	// the group has; inputEpoch the leader epoch of the last record.
	inputNext, committedNext int64
	inputEpoch               int32
	// lag is how many records a read_committed consumer could still read
	// after the last poll that had the partition's records, measured at
	// lagAt. The task's goroutine in processLocked writes them; they are
	// read under p.mu after that poll's goroutines are done.
	lag   int64
	lagAt time.Time
	// changelogNext is past the last changelog record written; sinkNext is
	// where the online store is known complete; savedSinkNext is the value
	// last written to Pebble.
	changelogNext, sinkNext, savedSinkNext int64

	// dirty holds the entities changed since the last commit; expired the
	// ones to delete at it (their state, emptied, for the online store).
	dirty, expired map[string]*topology.EntityState
	// pendingSink holds committed states not yet in the online store,
	// those being written included. pushTaken is where the states no
	// write under way has taken begin: a state's version is its changelog
	// offset, and each write takes the pending states from pushTaken on
	// and moves it to changelogNext.
	pendingSink map[string]sinks.Record
	pushTaken   int64
	// cache holds committed states already in the online store, so the
	// next update of the entity skips Pebble's read and decode. A state
	// leaves it when an update takes it (state) and returns once that
	// update is committed and pushed (keep): no state changes while a push
	// reads it, and every cached state is what Pebble holds. An aborted
	// commit drops the states it changed with dirty. cacheBytes is the
	// estimated size of what it holds (EntityState.SizeBytes).
	cache      map[string]cachedState
	cacheBytes int
	// dlq holds the dead letters of records since the last commit.
	dlq []*kgo.Record
	// clearRestoring is set until the partition's restoring mark is
	// cleared, after the first successful push to the online store.
	clearRestoring bool
	// feeds is scratch for the features a late event would have fed.
	feeds []int
	// chunks hold decoded records between decode and apply (process).
	chunks [decodeDepth][]decoded
}

// restoreMarker is implemented by a Sink that can tell readers a partition
// is being restored.
type restoreMarker interface {
	SetPartitionRestoring(ctx context.Context, partition int32, restoring bool) error
}

// uncommitted reports whether the task has applied input, changed states
// or dead letters since its last commit: what flushLocked would commit.
func (t *task) uncommitted() bool {
	return len(t.dirty) > 0 || len(t.expired) > 0 || len(t.dlq) > 0 || t.inputNext > t.committedNext
}

// rollback forgets everything since the last commit, after an aborted
// transaction: consumption restarts at the committed offset.
func (t *task) rollback() {
	clear(t.dirty)
	clear(t.expired)
	t.dlq = t.dlq[:0]
	t.inputNext = t.committedNext
	t.maxEventMs = t.committedMaxEventMs
	t.wmFloor = t.committedWmFloor
}

func (p *Processor) newTask(partition int32, meta state.Meta) *task {
	return &task{
		p:                   p,
		partition:           partition,
		maxEventMs:          meta.MaxEventMs,
		committedMaxEventMs: meta.MaxEventMs,
		wmFloor:             math.MinInt64,
		committedWmFloor:    math.MinInt64,
		inputNext:           meta.InputNext,
		committedNext:       meta.InputNext,
		inputEpoch:          -1,
		changelogNext:       meta.ChangelogNext,
		sinkNext:            meta.SinkNext,
		savedSinkNext:       meta.SinkNext,
		dirty:               make(map[string]*topology.EntityState),
		expired:             make(map[string]*topology.EntityState),
		pendingSink:         make(map[string]sinks.Record),
		cache:               make(map[string]cachedState),
	}
}

// watermark is max event time − grace, advanced further by the wall-clock
// time a partition has been idle beyond idle_timeout: event time is taken to
// pass as fast as wall time while nothing arrives, so windows close without
// new traffic. It never goes back.
func (t *task) watermark(nowMs int64) int64 {
	if t.maxEventMs == math.MinInt64 {
		return math.MinInt64
	}
	wm := t.maxEventMs - t.p.grace
	if idle := nowMs - t.lastArrivalMs - t.p.idle; t.lastArrivalMs > 0 && idle > 0 {
		wm += idle
	}
	t.wmFloor = max(t.wmFloor, wm)
	return t.wmFloor
}

// decodeChunk is how many records are decoded ahead of applying at a time,
// and decodeDepth how many such chunks a task keeps: decoding needs no
// partition state, so a long run of one partition's records (a hot user's
// partition, or the only partition with data) is decoded on a second
// goroutine while the first applies, using two cores instead of one.
const (
	decodeChunk = 256
	decodeDepth = 4
)

// decoded is one record's event, or why it has none.
type decoded struct {
	ev  topology.Event
	err error
}

// process applies a poll's records of the partition, in offset order.
func (t *task) process(recs []*kgo.Record) {
	for len(recs) > 0 && recs[0].Offset < t.inputNext {
		recs = recs[1:] // already in state: restored from the changelog
	}
	if len(recs) == 0 {
		return
	}
	nowMs := t.p.cfg.Now().UnixMilli()
	if t.chunks[0] == nil {
		for i := range t.chunks {
			t.chunks[i] = make([]decoded, decodeChunk)
		}
	}
	if len(recs) <= decodeChunk {
		evs := t.chunks[0][:len(recs)]
		t.decode(recs, evs)
		t.apply(recs, evs, nowMs)
		return
	}
	full := make(chan int, decodeDepth)
	free := make(chan int, decodeDepth)
	for i := range decodeDepth {
		free <- i
	}
	go func() {
		defer close(full)
		for off := 0; off < len(recs); off += decodeChunk {
			c := <-free
			part := recs[off:min(off+decodeChunk, len(recs))]
			t.decode(part, t.chunks[c][:len(part)])
			full <- c
		}
	}()
	off := 0
	for c := range full {
		n := min(decodeChunk, len(recs)-off)
		t.apply(recs[off:off+n], t.chunks[c][:n], nowMs)
		off += n
		free <- c
	}
}

// decode fills evs[i] from recs[i]. It touches no task state but the
// chunks it is given, so it runs beside apply.
func (t *task) decode(recs []*kgo.Record, evs []decoded) {
	for i, rec := range recs {
		evs[i].err = t.p.dec.Decode(rec, &evs[i].ev)
	}
}

// apply applies decoded records: checks their time against the clock and
// the watermark, then updates their entity's state. Apply keeps no
// reference to an event or its field map, so chunks are reused.
func (t *task) apply(recs []*kgo.Record, evs []decoded, nowMs int64) {
	p := t.p
	p.m.consumed.Add(float64(len(recs)))
	for i, rec := range recs {
		t.inputNext = rec.Offset + 1
		t.inputEpoch = rec.LeaderEpoch
		ev := &evs[i].ev
		if err := evs[i].err; err != nil {
			t.reject(rec, err)
			continue
		}
		if ev.TimeMs > nowMs+p.future {
			t.reject(rec, reject(ReasonFuture, "event time %d is more than max_future ahead of the clock %d", ev.TimeMs, nowMs))
			continue
		}
		wm := t.watermark(nowMs)
		t.lastArrivalMs = nowMs
		if ev.TimeMs < wm {
			t.feeds = p.top.Feeds(ev, t.feeds[:0])
			for _, fi := range t.feeds {
				p.m.lateByFeature[fi].Inc()
			}
			t.reject(rec, reject(ReasonLate, "event time %d is behind the watermark %d", ev.TimeMs, wm))
			continue
		}
		st, dirty, err := t.state(ev.Key)
		if err != nil {
			// The local store failed, not the input: this is not the
			// record's fault and must not drop it silently.
			t.reject(rec, fmt.Errorf("read state: %w", err))
			continue
		}
		maxEvent := max(t.maxEventMs, ev.TimeMs)
		if err := p.top.Apply(st, ev, maxEvent-p.grace); err != nil {
			t.reject(rec, &RejectError{Reason: ReasonBadValue, Err: err})
			continue
		}
		if !dirty {
			// The key may share the record's memory (Decode), which
			// the state must not pin.
			t.dirty[strings.Clone(ev.Key)] = st
		}
		delete(t.expired, ev.Key)
		t.maxEventMs = maxEvent
	}
}

// state returns entity's state to update, and whether it is dirty already.
func (t *task) state(entity string) (*topology.EntityState, bool, error) {
	if st, ok := t.dirty[entity]; ok {
		return st, true, nil
	}
	if c, ok := t.cache[entity]; ok {
		t.uncache(entity, c)
		t.p.m.cacheHits.Inc()
		return c.st, false, nil
	}
	if r, ok := t.pendingSink[entity]; ok && !r.State.Empty() {
		// Committed, so Pebble holds the same state. A push of a commit's
		// record writes the record's encoding and reads nothing of the
		// state, which is then updated in place; a push of a restore's
		// reads the state, so it is updated as a copy, still cheaper
		// than reading Pebble's. An empty state may be an expiry, which
		// Pebble no longer holds.
		t.p.m.cacheHits.Inc()
		if r.Encoded != nil {
			return r.State, false, nil
		}
		return t.p.top.CloneState(r.State), false, nil
	}
	t.p.m.cacheMisses.Inc()
	st, err := t.p.store.Get(t.partition, entity)
	if err != nil || st != nil {
		return st, false, err
	}
	return t.p.top.NewEntityState(), false, nil
}

// cachedState is a state in task.cache with its estimated size.
type cachedState struct {
	st   *topology.EntityState
	size int
}

// keep caches an entity's state once it is committed and in the online
// store, unless an update has taken the entity since (dirty, expired) or
// the state is empty (expired: Pebble holds none). Arbitrary states (map
// order is random) make room for it.
func (t *task) keep(entity string, st *topology.EntityState) {
	budget := t.p.cacheShareLocked()
	if st == nil || budget <= 0 || st.Empty() {
		return
	}
	if _, ok := t.dirty[entity]; ok {
		return
	}
	if _, ok := t.expired[entity]; ok {
		return
	}
	if old, ok := t.cache[entity]; ok {
		t.uncache(entity, old)
	}
	size := st.SizeBytes()
	if size > budget {
		return
	}
	for victim, c := range t.cache {
		if t.cacheBytes+size <= budget {
			break
		}
		t.uncache(victim, c)
	}
	t.cache[entity] = cachedState{st: st, size: size}
	t.cacheBytes += size
}

// cacheShareLocked is each task's share of the state cache: the partitions
// an instance owns split its budget, and a task's cache shrinks to a
// smaller share at its next keep.
func (p *Processor) cacheShareLocked() int {
	if p.cfg.StateCacheBytes <= 0 {
		return 0
	}
	return p.cfg.StateCacheBytes / max(1, len(p.mu.tasks))
}

// uncache drops entity's cached state c.
func (t *task) uncache(entity string, c cachedState) {
	delete(t.cache, entity)
	t.cacheBytes -= c.size
}

// reject counts a record that cannot be applied and logs the first and then
// one in every 1000 per reason.
func (t *task) reject(rec *kgo.Record, err error) {
	p := t.p
	reason := "internal"
	var re *RejectError
	if errors.As(err, &re) {
		reason = re.Reason
	}
	t.dlq = append(t.dlq, p.deadLetter(rec, reason, err))
	p.m.rejected.WithLabelValues(reason).Inc()
	if reason == ReasonDecode {
		p.m.decodeErrors.Inc()
	}
	c, _ := p.rejectLogs.LoadOrStore(reason, new(atomic.Int64))
	if n := c.(*atomic.Int64).Add(1); n == 1 || n%1000 == 0 {
		p.logger.Warn("record rejected", "reason", reason, "topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "err", err, "count", n)
	}
}

// assigned pauses fetching of newly assigned partitions and restores each in
// the background (see restore.go); the loop creates its task and resumes it
// once restored. franz-go calls this before it fetches the partitions'
// offsets, so no record of theirs is fetched before the pause.
func (p *Processor) assigned(_ context.Context, cl *kgo.Client, assigned map[string][]int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.m.rebalances.WithLabelValues("assigned").Inc()
	p.logger.Info("partitions assigned", "partitions", assigned[p.inTopic])
	p.mu.joined = true
	defer p.signalRebalance()
	if parts := assigned[p.inTopic]; len(parts) > 0 {
		if p.follower != nil {
			// Standby copies of these partitions stop before their
			// restore, which then starts where the copies are.
			p.follower.Release(parts)
		}
		cl.PauseFetchPartitions(map[string][]int32{p.inTopic: parts})
		for _, part := range parts {
			p.startRestoreLocked(part)
		}
	}
	p.updateRestoringLocked()
}

// adjustOffsets starts each partition after the last input offset its local
// state reflects, when that is past the group's committed offset (with
// AtLeastOnce, a crash between the Pebble batch and the offset commit). It
// runs while the partition restores, so it reads the local checkpoint, and
// only one the restore will keep (this changelog's generation): the restore
// only moves InputNext forward from it, and task.process skips the rest.
func (p *Processor) adjustOffsets(_ context.Context, offsets map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	for part, off := range offsets[p.inTopic] {
		meta, ok, err := p.store.Meta(part)
		if err != nil || !ok || meta.Generation != p.generation || meta.InputNext <= 0 {
			continue
		}
		if eo := off.EpochOffset(); eo.Offset < meta.InputNext {
			offsets[p.inTopic][part] = kgo.NewOffset().At(meta.InputNext).WithEpoch(-1)
		}
	}
	return offsets, nil
}

// revoked commits the revoked partitions' work before they move, and
// cancels the restore of any still restoring.
func (p *Processor) revoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.m.rebalances.WithLabelValues("revoked").Inc()
	defer p.signalRebalance()
	p.logger.Info("partitions revoked", "partitions", revoked[p.inTopic])
	var ts []*task
	for _, part := range revoked[p.inTopic] {
		p.cancelRestoreLocked(part)
		if t := p.mu.tasks[part]; t != nil {
			ts = append(ts, t)
		}
	}
	// Rebalances are let through only at commit boundaries, so with
	// transactions there is nothing to commit here (and End must not be
	// called from this callback). Without them, commit what is pending.
	if p.sess == nil {
		if err := p.flushLocked(ctx, ts); err != nil {
			p.logger.Warn("commit of revoked partitions failed; the next owner replays them", "err", err)
		}
	}
	// Their committed states still waiting for a push go now, not with
	// the next owner's restore: a push under way would otherwise leave
	// them behind, and Redis would serve older values meanwhile.
	if err := p.drainPushLocked(ctx, ts); err != nil {
		p.logger.Warn("push of revoked partitions failed; the next owner re-pushes them", "err", err)
	}
	for _, t := range ts {
		delete(p.mu.tasks, t.partition)
		p.m.lag.DeleteLabelValues(strconv.Itoa(int(t.partition)))
	}
	p.resumeLocked(cl, revoked[p.inTopic])
	p.updateRestoringLocked()
}

// lost drops partitions whose ownership is already gone: their uncommitted
// work is dropped, and Pebble stays at its last commit; a restore of one is
// canceled.
func (p *Processor) lost(_ context.Context, cl *kgo.Client, lost map[string][]int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.m.rebalances.WithLabelValues("lost").Inc()
	p.logger.Warn("partitions lost; their uncommitted work is dropped", "partitions", lost[p.inTopic])
	for _, part := range lost[p.inTopic] {
		p.cancelRestoreLocked(part)
		delete(p.mu.tasks, part)
		p.m.lag.DeleteLabelValues(strconv.Itoa(int(part)))
	}
	p.resumeLocked(cl, lost[p.inTopic])
	p.updateRestoringLocked()
}

// resumeLocked unpauses partitions that are gone: a pause outlives the
// assignment, and a later assignment pauses them again while they restore.
func (p *Processor) resumeLocked(cl *kgo.Client, parts []int32) {
	if len(parts) > 0 {
		cl.ResumeFetchPartitions(map[string][]int32{p.inTopic: parts})
	}
}

// ownedLocked reports whether the partition is this instance's: processed
// or being restored.
func (p *Processor) ownedLocked(part int32) bool {
	_, ok := p.mu.tasks[part]
	_, restoring := p.mu.restores[part]
	return ok || restoring
}

// signalRebalance tells standby placement the assignment changed.
func (p *Processor) signalRebalance() {
	select {
	case p.rebalanced <- struct{}{}:
	default:
	}
}
