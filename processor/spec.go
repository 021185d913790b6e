package processor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/featurestream/featurestream/state"
	"github.com/featurestream/featurestream/topology"
)

// SpecTopic is app's compacted topic holding the fingerprints of the spec
// each state generation was built with (key "spec" for generation 0,
// "spec.g<N>" after) and the app's current state generation (key
// "generation").
func SpecTopic(app string) string { return app + "-spec" }

// ErrIncompatibleSpec is returned by Run when the spec changed the meaning
// of a feature whose state exists.
var ErrIncompatibleSpec = errors.New("processor: incompatible spec change")

// checkSpec compares the spec with the one the state was built with, refuses
// a change that would misread state, and records the current one.
func (p *Processor) checkSpec(ctx context.Context, cl *kgo.Client, adm *kadm.Client) error {
	topic := SpecTopic(p.top.Spec.App)
	if _, err := state.EnsureTopic(ctx, adm, topic, 1, true); err != nil {
		return fmt.Errorf("spec topic: %w", err)
	}
	prev, found, err := p.readSpecRecord(ctx, adm, topic)
	if err != nil {
		return fmt.Errorf("read spec topic %s: %w", topic, err)
	}
	cur := p.top.StateFingerprints()
	change := topology.CompareFingerprints(prev, cur)
	if found && !change.Compatible() {
		return fmt.Errorf("%w: %s: feature(s) %s changed what their state means (aggregation, field, filter, window, tile, k or the source's key or time), so their stored state would be read wrongly. "+
			"Give a changed feature a new name (it starts empty and fills from new events); or rebuild state from the input with this spec: `featurestream replay --from <time>` builds a new state generation while the current one keeps serving and switches over when it has caught up; "+
			"or stop every processor of app %q and start one with --replay (rebuilds in place). After a replay with a new spec, run that spec",
			ErrIncompatibleSpec, p.top.Spec.File, strings.Join(change.Changed, ", "), p.top.Spec.App)
	}
	if found && p.cfg.StateGeneration > 0 && len(change.Removed) > 0 {
		// A replay built this generation with these features, perhaps
		// backfilled: a processor without them would erase them from
		// every entity it writes.
		return fmt.Errorf("%w: %s: state generation %d holds feature(s) %s that this spec lacks: it was built by featurestream replay with another spec. "+
			"Run the spec the generation was built with; to drop a feature, replay without it",
			ErrIncompatibleSpec, p.top.Spec.File, p.cfg.StateGeneration, strings.Join(change.Removed, ", "))
	}
	if found && len(change.Added) > 0 {
		p.logger.Warn("new features start empty and reflect events from now on; --replay rebuilds them from the retained input", "features", change.Added)
	}
	if found && len(change.Removed) > 0 {
		p.logger.Info("features removed from the spec; their state is dropped as entities are next written", "features", change.Removed)
	}
	if found && len(change.Added) == 0 && len(change.Removed) == 0 {
		return nil
	}
	value, err := json.Marshal(cur)
	if err != nil {
		return err
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: 0, Key: []byte(specKey(p.cfg.StateGeneration)), Value: value}).FirstErr(); err != nil {
		return fmt.Errorf("record spec in %s: %w", topic, err)
	}
	return nil
}

// readSpecRecord returns the newest spec fingerprints of the processor's
// state generation.
func (p *Processor) readSpecRecord(ctx context.Context, adm *kadm.Client, topic string) (map[string]string, bool, error) {
	recs, err := readSpecTopic(ctx, p.base, adm, topic)
	if err != nil {
		return nil, false, err
	}
	last, ok := recs[specKey(p.cfg.StateGeneration)]
	if !ok {
		return nil, false, nil
	}
	var fps map[string]string
	if err := json.Unmarshal(last, &fps); err != nil {
		return nil, false, fmt.Errorf("spec record: %w", err)
	}
	return fps, true, nil
}

// readSpecTopic returns the newest value of each key in the one-partition
// topic (none when it does not exist); a tombstone removes its key.
func readSpecTopic(ctx context.Context, opts []kgo.Opt, adm *kadm.Client, topic string) (map[string][]byte, error) {
	out := make(map[string][]byte)
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, err
	}
	end, ok := ends.Lookup(topic, 0)
	if !ok || errors.Is(end.Err, kerr.UnknownTopicOrPartition) {
		return out, nil
	}
	if end.Err != nil || end.Offset == 0 {
		return out, end.Err
	}
	rd, err := kgo.NewClient(append(opts[:len(opts):len(opts)],
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))...)
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	for next := int64(0); next < end.Offset; {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		fetches := rd.PollFetches(pctx)
		cancel()
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var fetchErr error
		fetches.EachError(func(_ string, _ int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				fetchErr = err
			}
		})
		if fetchErr != nil {
			return nil, fmt.Errorf("read %s: %w", topic, fetchErr)
		}
		if fetches.NumRecords() == 0 {
			// The records left were compacted away (the topic is written
			// without transactions, so no marker ends it); a broker that
			// did not answer in 5 s is an error, not an empty topic.
			if pctx.Err() != nil && next == 0 {
				return nil, fmt.Errorf("read %s: no answer within 5s", topic)
			}
			break
		}
		fetches.EachRecord(func(r *kgo.Record) {
			next = r.Offset + 1
			if r.Value == nil {
				delete(out, string(r.Key))
			} else {
				out[string(r.Key)] = r.Value
			}
		})
	}
	return out, nil
}

// resetState deletes everything the app's state is: the changelog, the
// spec record, the group's committed offsets and the local state, so the
// processor rebuilds it from the earliest retained input.
func (p *Processor) resetState(ctx context.Context, cl *kgo.Client, adm *kadm.Client, partitions int32) error {
	p.logger.Warn("replay: deleting the changelog, the spec record, the group's offsets and local state; state is rebuilt from the earliest retained input",
		"changelog", p.clTopic, "group", p.cfg.Group)
	if err := dropStateGeneration(ctx, cl, adm, p.top.Spec.App, p.cfg.Group, p.cfg.StateGeneration); err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	for part := range partitions {
		if err := p.store.DropPartition(part); err != nil {
			return fmt.Errorf("replay: %w", err)
		}
	}
	// Topic deletion completes asynchronously on a real cluster: wait
	// until creating the changelog again succeeds.
	deadline := time.Now().Add(time.Minute)
	for {
		_, err := state.EnsureTopic(ctx, adm, p.clTopic, partitions, true)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("replay: recreate %s: %w", p.clTopic, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
