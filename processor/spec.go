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
// its state was built with (key "spec").
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
			"Give a changed feature a new name (it starts empty and fills from new events), or rebuild all state from the input: stop every processor of app %q and start one with --replay",
			ErrIncompatibleSpec, p.top.Spec.File, strings.Join(change.Changed, ", "), p.top.Spec.App)
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
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: 0, Key: []byte("spec"), Value: value}).FirstErr(); err != nil {
		return fmt.Errorf("record spec in %s: %w", topic, err)
	}
	return nil
}

// readSpecRecord returns the newest spec fingerprints in topic.
func (p *Processor) readSpecRecord(ctx context.Context, adm *kadm.Client, topic string) (map[string]string, bool, error) {
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, false, err
	}
	end, ok := ends.Lookup(topic, 0)
	if !ok || end.Err != nil || end.Offset == 0 {
		return nil, false, end.Err
	}
	rd, err := kgo.NewClient(append(p.base[:len(p.base):len(p.base)],
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))...)
	if err != nil {
		return nil, false, err
	}
	defer rd.Close()
	var last []byte
	for next := int64(0); next < end.Offset; {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		fetches := rd.PollFetches(pctx)
		cancel()
		if err := ctx.Err(); err != nil {
			return nil, false, err
		}
		if fetches.NumRecords() == 0 {
			break // compacted away up to the end
		}
		fetches.EachRecord(func(r *kgo.Record) {
			next = r.Offset + 1
			if string(r.Key) == "spec" && r.Value != nil {
				last = r.Value
			}
		})
	}
	if last == nil {
		return nil, false, nil
	}
	var fps map[string]string
	if err := json.Unmarshal(last, &fps); err != nil {
		return nil, false, fmt.Errorf("spec record: %w", err)
	}
	return fps, true, nil
}

// resetState deletes everything the app's state is: the changelog, the
// spec record, the group's committed offsets and the local state, so the
// processor rebuilds it from the earliest retained input.
func (p *Processor) resetState(ctx context.Context, adm *kadm.Client, partitions int32) error {
	groups, err := adm.DescribeGroups(ctx, p.cfg.Group)
	if err == nil {
		if g, ok := groups[p.cfg.Group]; ok && len(g.Members) > 0 {
			return fmt.Errorf("replay: group %s still has %d member(s): stop every processor of the app first", p.cfg.Group, len(g.Members))
		}
	}
	p.logger.Warn("replay: deleting the changelog, the spec record, the group's offsets and local state; state is rebuilt from the earliest retained input",
		"changelog", p.clTopic, "group", p.cfg.Group)
	resp, err := adm.DeleteTopics(ctx, p.clTopic, SpecTopic(p.top.Spec.App))
	if err != nil {
		return fmt.Errorf("replay: delete topics: %w", err)
	}
	for _, r := range resp {
		if r.Err != nil && !errors.Is(r.Err, kerr.UnknownTopicOrPartition) {
			return fmt.Errorf("replay: delete %s: %w", r.Topic, r.Err)
		}
	}
	if _, err := adm.DeleteGroups(ctx, p.cfg.Group); err != nil {
		return fmt.Errorf("replay: delete group %s: %w", p.cfg.Group, err)
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
