package processor

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/featurestream/featurestream/sinks"
	"github.com/featurestream/featurestream/state"
)

// A partition is restored off the group's callbacks, so that a long restore
// delays neither the instance's other partitions nor the group:
//
//   - assigned pauses fetching of the new partitions (before franz-go has
//     even fetched their offsets, so nothing of them is ever buffered) and
//     starts one goroutine per partition;
//   - the goroutine marks the partition restoring in the online store and
//     renews the mark, restores from Pebble plus the changelog tail, and
//     decodes the states to re-push (the changelog's newest of each);
//   - the loop, under mu, turns each finished restore into a task and
//     resumes fetching; fetching then starts at the offset franz-go set at
//     assignment (a paused partition's buffered records are dropped without
//     moving it), and task.process skips what the state already reflects;
//   - revoked and lost cancel the partition's restore and wait for its
//     goroutine, so a later assignment never races a stale restore.
//
// A restoring partition has no task, so a commit never includes its input
// offsets or changelog: with AtLeastOnce offsets come from tasks, and with
// ExactlyOnce the GroupTransactSession commits only the offsets of polled
// records, and a paused partition has none.

// restore is one partition's restore under way. The fields below done are
// written by its goroutine and read only after done is closed.
type restore struct {
	partition int32
	cancel    context.CancelFunc
	done      chan struct{}

	meta state.Meta
	// pending are the restored states the online store may lack.
	pending map[string]sinks.Record
	err     error
}

// startRestoreLocked restores part on its own goroutine.
func (p *Processor) startRestoreLocked(part int32) {
	if old := p.mu.restores[part]; old != nil {
		// Cooperative rebalancing revokes before it reassigns, so this
		// is defensive: never run two restores of one partition.
		old.cancel()
		<-old.done
	}
	ctx, cancel := context.WithCancel(p.restoreCtx)
	r := &restore{partition: part, cancel: cancel, done: make(chan struct{})}
	p.mu.restores[part] = r
	p.restoreWG.Go(func() {
		defer p.wakePoll()
		defer close(r.done)
		defer cancel()
		r.meta, r.pending, r.err = p.restorePartition(ctx, part)
	})
}

// wakePoll ends the loop's poll, or its next one, early.
func (p *Processor) wakePoll() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
	if cancel := p.pollCancel.Load(); cancel != nil {
		(*cancel)()
	}
}

// restorePartition marks part restoring, keeps the mark alive while it
// brings the local state up to the changelog's end, and returns the state's
// metadata and the entities to push to the online store again.
func (p *Processor) restorePartition(ctx context.Context, part int32) (state.Meta, map[string]sinks.Record, error) {
	if marker, ok := p.sink.(restoreMarker); ok {
		// Serving marks this partition's values STALE until the restore
		// and the re-push of what Redis may lack are done (the task's
		// first push clears the mark).
		if err := marker.SetPartitionRestoring(ctx, part, true); err != nil {
			p.logger.Warn("mark partition restoring", "partition", part, "err", err)
		}
		renewCtx, stop := context.WithCancel(ctx)
		renewed := make(chan struct{})
		go func() {
			defer close(renewed)
			p.renewRestoring(renewCtx, marker, part)
		}()
		defer func() { stop(); <-renewed }()
	}
	if p.restoreHook != nil {
		if err := p.restoreHook(ctx, part); err != nil {
			return state.Meta{}, nil, err
		}
	}
	meta, repush, err := p.restorer.Restore(ctx, part, p.generation)
	if err != nil {
		return state.Meta{}, nil, err
	}
	pending := p.repushRecords(ctx, part, meta, repush)
	if err := ctx.Err(); err != nil {
		return state.Meta{}, nil, fmt.Errorf("restore partition %d: decode states to re-push: %w", part, err)
	}
	return meta, pending, nil
}

// repushRecords turns a restore's re-push list into the newest state of
// each entity to push, decoded. Newest first: an entity's older states are
// skipped, not decoded. A deleted entity, or one whose newest state is
// unreadable, keeps a record without a state until the end, so its older
// states are skipped too. It stops early, returning what it has, if ctx
// is done.
func (p *Processor) repushRecords(ctx context.Context, part int32, meta state.Meta, repush []state.Repush) map[string]sinks.Record {
	pending := make(map[string]sinks.Record, len(repush))
	for i := len(repush) - 1; i >= 0 && ctx.Err() == nil; i-- {
		rp := &repush[i]
		if _, ok := pending[rp.Entity]; ok {
			continue
		}
		r := sinks.Record{Entity: rp.Entity, Partition: part, Version: uint64(rp.Offset), Generation: p.generation}
		if rp.Value != nil {
			st, err := p.top.DecodeState(rp.Value)
			if err == nil {
				r.State = st
			} else {
				// The store holds the same bytes, so the entity's events
				// go to the dead-letter queue ("read state"): there is
				// no state to push.
				p.logger.Warn("changelog state unreadable; not re-pushed", "partition", part, "entity", rp.Entity, "offset", rp.Offset, "err", err)
			}
		}
		// The horizon the state was committed with; without one, the
		// partition's now, which is later: reads before it are refused,
		// never served incomplete.
		r.HorizonMs = rp.HorizonMs
		if r.HorizonMs == math.MinInt64 {
			r.HorizonMs = p.horizon(meta.MaxEventMs)
		}
		pending[rp.Entity] = r
	}
	for entity, r := range pending {
		if r.State == nil {
			delete(pending, entity)
		}
	}
	return pending
}

// renewRestoring renews part's restoring mark every renewEvery until ctx is
// done, so a restore longer than sinks.RestoringTTL keeps reading STALE.
func (p *Processor) renewRestoring(ctx context.Context, marker restoreMarker, part int32) {
	every := p.renewEvery
	if every <= 0 {
		every = sinks.RestoringTTL / 3
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if err := marker.SetPartitionRestoring(ctx, part, true); err != nil && ctx.Err() == nil {
				p.logger.Warn("renew partition restoring mark", "partition", part, "err", err)
			}
		}
	}
}

// finishRestoresLocked turns every finished restore into a task and resumes
// fetching its partition. A failed restore makes the instance leave the
// group: without its state the partition cannot be processed correctly, and
// another instance (or a restart of this one) takes it.
func (p *Processor) finishRestoresLocked() {
	var resume []int32
	for part, r := range p.mu.restores {
		select {
		case <-r.done:
		default:
			continue
		}
		delete(p.mu.restores, part)
		if r.err != nil {
			if errors.Is(r.err, context.Canceled) && p.restoreCtx.Err() != nil {
				continue // stopping
			}
			p.logger.Error("restore failed; leaving the group", "partition", part, "err", r.err)
			go p.cl.LeaveGroup()
			continue
		}
		t := p.newTask(part, r.meta)
		t.pendingSink = r.pending
		_, t.clearRestoring = p.sink.(restoreMarker)
		p.mu.tasks[part] = t
		resume = append(resume, part)
	}
	if len(resume) > 0 {
		p.cl.ResumeFetchPartitions(map[string][]int32{p.inTopic: resume})
		p.logger.Info("partitions restored; processing", "partitions", resume)
	}
	p.updateRestoringLocked()
}

// cancelRestoreLocked stops part's restore, if one runs, and waits for its
// goroutine. What it wrote to Pebble stays: every batch it committed is
// consistent, with the changelog offset it reached.
func (p *Processor) cancelRestoreLocked(part int32) {
	r := p.mu.restores[part]
	if r == nil {
		return
	}
	r.cancel()
	<-r.done
	delete(p.mu.restores, part)
	p.logger.Info("restore canceled", "partition", part)
}

// stopRestoresLocked cancels every restore and waits for them, when the
// processor stops.
func (p *Processor) stopRestoresLocked() {
	for part := range p.mu.restores {
		p.cancelRestoreLocked(part)
	}
	p.updateRestoringLocked()
}

// updateRestoringLocked sets readiness (the processor is ready once it has
// joined the group and every partition it was assigned is restored) and
// the assigned-partitions gauge, restoring ones included.
func (p *Processor) updateRestoringLocked() {
	p.ready.Store(p.mu.joined && len(p.mu.restores) == 0)
	p.m.assigned.Set(float64(len(p.mu.tasks) + len(p.mu.restores)))
}
