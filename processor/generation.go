package processor

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/featurestream/featurestream/state"
)

// State generations. An app's state (changelog, consumer group offsets,
// spec record, Redis keys) belongs to one numbered generation. `featurestream
// replay` builds generation N+1 from retained input while N keeps serving,
// then records N+1 as current: serving switches to it at once, and
// processors of N see the record, commit, and restart in N+1. Generation 0
// keeps the names of a featurestream without replays (the group is the
// app, the changelog "<app>-features-changelog").

// generationKey is the spec topic's key for the current state generation,
// its value the generation in decimal.
const generationKey = "generation"

// specKey is the spec topic's key for the fingerprints of generation gen.
func specKey(gen int) string {
	if gen == 0 {
		return "spec"
	}
	return "spec.g" + strconv.Itoa(gen)
}

// GroupFor is the consumer group of state generation gen, for the group
// generation 0 uses.
func GroupFor(group string, gen int) string {
	if gen == 0 {
		return group
	}
	return group + "-g" + strconv.Itoa(gen)
}

// GenerationSwitchError is returned by Run when a newer state generation
// became current: the processor committed its work and left its group; the
// caller starts a processor of generation To.
type GenerationSwitchError struct{ From, To int }

func (e *GenerationSwitchError) Error() string {
	return fmt.Sprintf("processor: state generation %d is now current (this processor ran %d)", e.To, e.From)
}

// DefaultGenerationCheckInterval is how often a processor looks for a newer
// state generation.
const DefaultGenerationCheckInterval = 2 * time.Second

// ReadStateGeneration returns app's current state generation as recorded in
// its spec topic: 0 when none was recorded. opts are the client options
// (seed brokers, TLS, SASL).
func ReadStateGeneration(ctx context.Context, opts []kgo.Opt, app string) (int, error) {
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	return readStateGeneration(ctx, opts, kadm.NewClient(cl), app)
}

func readStateGeneration(ctx context.Context, opts []kgo.Opt, adm *kadm.Client, app string) (int, error) {
	recs, err := readSpecTopic(ctx, opts, adm, SpecTopic(app))
	if err != nil {
		return 0, fmt.Errorf("read state generation from %s: %w", SpecTopic(app), err)
	}
	v, ok := recs[generationKey]
	if !ok {
		return 0, nil
	}
	gen, err := strconv.Atoi(string(v))
	if err != nil || gen < 0 {
		return 0, fmt.Errorf("read state generation from %s: bad value %q", SpecTopic(app), v)
	}
	return gen, nil
}

// WriteStateGeneration records gen as app's current state generation, which
// processors of older generations follow within
// DefaultGenerationCheckInterval.
func WriteStateGeneration(ctx context.Context, opts []kgo.Opt, app string, gen int) error {
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	topic := SpecTopic(app)
	if _, err := state.EnsureTopic(ctx, kadm.NewClient(cl), topic, 1, true); err != nil {
		return fmt.Errorf("spec topic: %w", err)
	}
	rec := &kgo.Record{Topic: topic, Partition: 0, Key: []byte(generationKey), Value: []byte(strconv.Itoa(gen))}
	if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		return fmt.Errorf("record state generation %d in %s: %w", gen, topic, err)
	}
	return nil
}

// watchGeneration polls the spec topic and stores a newer current
// generation in p.newerGen, which the poll loop turns into a
// GenerationSwitchError. It reads the topic only when its end moved.
func (p *Processor) watchGeneration(ctx context.Context, adm *kadm.Client) {
	topic := SpecTopic(p.top.Spec.App)
	lastEnd := int64(-1)
	t := time.NewTicker(p.cfg.GenerationCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ends, err := adm.ListEndOffsets(ctx, topic)
		if err != nil {
			continue
		}
		end, ok := ends.Lookup(topic, 0)
		if !ok || end.Err != nil || end.Offset == lastEnd {
			continue
		}
		gen, err := readStateGeneration(ctx, p.base, adm, p.top.Spec.App)
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				p.logger.Warn("check state generation", "err", err)
			}
			continue
		}
		lastEnd = end.Offset
		if gen > p.cfg.StateGeneration {
			p.logger.Info("a newer state generation is current; committing and switching", "from", p.cfg.StateGeneration, "to", gen)
			p.newerGen.Store(int64(gen))
			return
		}
	}
}

// DropStateGeneration deletes state generation gen's Kafka side: its
// changelog topic, its consumer group (group is generation 0's, as in
// Config.Group; empty means the app) and its spec record. It refuses while
// the group has members. Topic deletion may complete asynchronously on a
// real cluster.
func DropStateGeneration(ctx context.Context, opts []kgo.Opt, app, group string, gen int) error {
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	if group == "" {
		group = app
	}
	return dropStateGeneration(ctx, cl, kadm.NewClient(cl), app, GroupFor(group, gen), gen)
}

// dropStateGeneration is DropStateGeneration with the generation's own
// group name.
func dropStateGeneration(ctx context.Context, cl *kgo.Client, adm *kadm.Client, app, group string, gen int) error {
	groups, err := adm.DescribeGroups(ctx, group)
	if err == nil {
		if g, ok := groups[group]; ok && len(g.Members) > 0 {
			return fmt.Errorf("group %s still has %d member(s): stop the processors of state generation %d first", group, len(g.Members), gen)
		}
	}
	changelog := state.ChangelogTopicFor(app, gen)
	resp, err := adm.DeleteTopics(ctx, changelog)
	if err != nil {
		return fmt.Errorf("delete %s: %w", changelog, err)
	}
	for _, r := range resp {
		if r.Err != nil && !errors.Is(r.Err, kerr.UnknownTopicOrPartition) {
			return fmt.Errorf("delete %s: %w", r.Topic, r.Err)
		}
	}
	dresp, err := adm.DeleteGroups(ctx, group)
	if err != nil {
		return fmt.Errorf("delete group %s: %w", group, err)
	}
	for _, r := range dresp {
		if r.Err != nil && !errors.Is(r.Err, kerr.GroupIDNotFound) {
			return fmt.Errorf("delete group %s: %w", r.Group, r.Err)
		}
	}
	// The spec topic also records the current generation: drop only this
	// generation's spec record.
	topic := SpecTopic(app)
	if _, err := state.EnsureTopic(ctx, adm, topic, 1, true); err != nil {
		return fmt.Errorf("spec topic: %w", err)
	}
	tomb := &kgo.Record{Topic: topic, Partition: 0, Key: []byte(specKey(gen))}
	if err := cl.ProduceSync(ctx, tomb).FirstErr(); err != nil {
		return fmt.Errorf("drop the spec record of state generation %d: %w", gen, err)
	}
	return nil
}
