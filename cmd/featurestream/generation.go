package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/featurestream/featurestream/processor"
	"github.com/featurestream/featurestream/state"
	"github.com/featurestream/featurestream/topology"
)

// generationSink is the part of sinks.Store that follows state
// generations.
type generationSink interface {
	SetStateGeneration(gen int)
	PublishStateGeneration(ctx context.Context, gen int) (int, error)
}

// followGenerations runs processors of the app's current state generation,
// one after the other: when a replay makes a newer generation current, the
// running processor commits and leaves its group, and the next one starts
// in the new generation (restoring its state from the new changelog).
type followGenerations struct {
	top    *topology.Topology
	cfg    processor.Config // Brokers and ClientOpts set
	store  *state.Store
	sink   processor.Sink
	reg    prometheus.Registerer
	logger *slog.Logger
	// cur is the running processor, for readiness.
	cur atomic.Pointer[processor.Processor]
}

// Ready reports whether the running processor is assigned and restored.
func (f *followGenerations) Ready() bool {
	p := f.cur.Load()
	return p != nil && p.Ready()
}

func (f *followGenerations) Run(ctx context.Context) error {
	opts := append([]kgo.Opt{kgo.SeedBrokers(f.cfg.Brokers...)}, f.cfg.ClientOpts...)
	gen, err := processor.ReadStateGeneration(ctx, opts, f.top.Spec.App)
	if err != nil {
		return fmt.Errorf("kafka %s: %w (check --brokers, and the --kafka-tls-* and --kafka-sasl-* flags if the brokers need TLS or SASL)", strings.Join(f.cfg.Brokers, ","), err)
	}
	for {
		cfg := f.cfg
		cfg.StateGeneration = gen
		if gs, ok := f.sink.(generationSink); ok {
			gs.SetStateGeneration(gen)
			// Servers read the generation the processors build. A replay
			// publishes it after recording it in Kafka; publishing here
			// too mends a replay that stopped between the two.
			if _, err := gs.PublishStateGeneration(ctx, gen); err != nil {
				f.logger.Warn("publish state generation to Redis", "generation", gen, "err", err)
			}
		}
		// Each processor registers its metrics anew; the previous one's
		// are unregistered when it ends.
		reg := &trackingRegisterer{Registerer: f.reg}
		proc, err := processor.New(cfg, f.top, f.store, f.sink, f.logger, reg)
		if err != nil {
			return err
		}
		f.cur.Store(proc)
		err = proc.Run(ctx)
		reg.unregisterAll()
		var sw *processor.GenerationSwitchError
		if !errors.As(err, &sw) {
			return err
		}
		f.logger.Info("switching state generation", "from", sw.From, "to", sw.To)
		gen = sw.To
		// --replay rebuilt the generation this process started in; the
		// next one was just built by a replay and must be kept.
		f.cfg.Replay = false
	}
}

// trackingRegisterer registers on a registry and remembers what, so a
// component's metrics can be removed when it is replaced.
type trackingRegisterer struct {
	prometheus.Registerer
	mu         sync.Mutex
	registered []prometheus.Collector
}

func (t *trackingRegisterer) Register(c prometheus.Collector) error {
	if err := t.Registerer.Register(c); err != nil {
		return err
	}
	t.mu.Lock()
	t.registered = append(t.registered, c)
	t.mu.Unlock()
	return nil
}

func (t *trackingRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := t.Register(c); err != nil {
			panic(err)
		}
	}
}

func (t *trackingRegisterer) unregisterAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range t.registered {
		t.Registerer.Unregister(c)
	}
	t.registered = nil
}
