package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/featurestream/featurestream/bench"
)

// demoCmd produces synthetic shop traffic to a real Kafka, so a deployed
// stack (deploy/compose.yaml) has features that move on their own.
type demoCmd struct {
	specFlag
	kafkaFlags
	Rate int    `help:"Events per second." default:"50"`
	Seed uint64 `help:"Seed of the generator; 0 picks one from the clock."`
}

// Run produces until ctx is done.
func (c *demoCmd) Run(ctx context.Context, logger *slog.Logger) error {
	top, err := loadTopology(c.Spec)
	if err != nil {
		return err
	}
	if top.Spec.Source.Format != "json" {
		return fmt.Errorf("spec %s reads %s events; demo produces the JSON events of examples/shop/spec.yaml", c.Spec, top.Spec.Source.Format)
	}
	if c.Rate < 1 {
		return fmt.Errorf("--rate %d: want at least 1 event per second", c.Rate)
	}
	opts, err := c.kafkaFlags.opts()
	if err != nil {
		return err
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("demo producer: %w", err)
	}
	defer cl.Close()
	topic := top.Spec.Source.Topic
	if err := waitTopic(ctx, kadm.NewClient(cl), topic, logger); err != nil {
		return err
	}
	seed := c.Seed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	logger.Info("producing demo shop traffic", "topic", topic, "rate", c.Rate, "seed", seed)
	if err := bench.ProduceDemo(ctx, cl, topic, c.Rate, seed); err != nil {
		return err
	}
	// Deliver what is buffered before leaving.
	fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return cl.Flush(fctx)
}

// waitTopic waits until topic exists: producing to a missing topic would
// drop every record (or auto-create it with the broker's default partition
// count, which then bounds the processors' parallelism).
func waitTopic(ctx context.Context, adm *kadm.Client, topic string, logger *slog.Logger) error {
	for {
		details, err := adm.ListTopics(ctx, topic)
		if err == nil {
			if d, ok := details[topic]; ok && d.Err == nil && len(d.Partitions) > 0 {
				return nil
			}
			err = fmt.Errorf("topic %s does not exist yet", topic)
		}
		logger.Warn("waiting for the input topic", "topic", topic, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("demo: input topic %s: %w", topic, ctx.Err())
		case <-time.After(2 * time.Second):
		}
	}
}
