package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/featurestream/featurestream/bench"
)

// benchCmd groups the benchmarks; each lives in package bench.
type benchCmd struct {
	E2E   benchIngestCmd `cmd:"" name:"e2e" default:"withargs" help:"End to end (the default): ingest with both guarantees and restore beside a raw franz-go consume on the same broker, then freshness and GetFeatures latency under live traffic."`
	Serve benchServeCmd  `cmd:"" help:"Measure GetFeatures beside a raw go-redis loop on the same Redis and data, at several concurrency levels and batch sizes."`
}

type benchServeCmd struct {
	specFlag
	RedisAddr       string        `help:"Redis on loopback to load and read (its fs:<app>:e:u* keys are overwritten); empty starts a redis-server."`
	Entities        int           `help:"Entities to load." default:"100000"`
	EventsPerEntity int           `help:"Generated events each entity's state is built from." default:"20"`
	Duration        time.Duration `help:"How long each cell is measured (after a warm-up of a fifth of it)." default:"3s"`
	Callers         []int         `help:"Concurrent callers, comma-separated." default:"1,16,64,256" sep:","`
	Batch           []int         `help:"Entities per call, comma-separated." default:"1,100" sep:","`
	Conns           int           `help:"gRPC connections the callers share." default:"1"`
	Verbose         bool          `help:"Ask for verbose GetFeatures responses (name and window on every value) instead of compact ones; implies --generated."`
	Generated       bool          `help:"Call GetFeatures with the generated gRPC client instead of package client."`
	Out             string        `help:"Also write the report as Markdown to this file." type:"path"`
	CPUProfile      string        `name:"cpuprofile" help:"Write a CPU profile of the measured cells to this file." type:"path"`
}

// Run runs the benchmark and prints its table.
func (c *benchServeCmd) Run(ctx context.Context, logger *slog.Logger) error {
	rep, err := bench.RunServe(ctx, bench.ServeConfig{
		Spec: c.Spec, RedisAddr: c.RedisAddr, Entities: c.Entities, EventsPerEntity: c.EventsPerEntity,
		Duration: c.Duration, Callers: c.Callers, Batches: c.Batch, Conns: c.Conns, Verbose: c.Verbose, Generated: c.Generated, CPUProfile: c.CPUProfile, Logger: logger,
	}, os.Stderr)
	if err != nil {
		return err
	}
	fmt.Println()
	if err := rep.WriteTable(os.Stdout); err != nil {
		return err
	}
	if c.Out == "" {
		return nil
	}
	f, err := os.Create(c.Out)
	if err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	if err := rep.WriteMarkdown(f, "featurestream "+strings.Join(os.Args[1:], " ")); err != nil {
		f.Close()
		return fmt.Errorf("--out: %w", err)
	}
	return f.Close()
}
