// Command featurestream is the one binary of featurestream: dev runs the
// whole product in one process; process and serve run its two halves
// against a real Kafka and Redis; validate checks a spec.
//
// This package only wires components together; each lives in its own
// package with its own tests.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/alecthomas/kong"
)

type cli struct {
	LogFormat string `help:"Log format: text or json." enum:"text,json" default:"text"`
	LogLevel  string `help:"Log level: debug, info, warn or error." enum:"debug,info,warn,error" default:"info"`

	Dev      devCmd      `cmd:"" help:"Run everything in one process: an embedded Kafka broker, the processor, the gRPC server, an admin server and (unless --redis-addr is given) a redis-server."`
	Process  processCmd  `cmd:"" help:"Run a processor: consume events from Kafka, keep features in local state and the changelog, push them to Redis."`
	Serve    serveCmd    `cmd:"" help:"Run a gRPC feature server reading Redis."`
	Validate validateCmd `cmd:"" help:"Check a feature spec and print its features."`
	Kafka    kafkaCmd    `cmd:"" help:"Run only the embedded Kafka broker (kfake on a real TCP port), for running process and serve separately on one machine."`
	Demo     demoCmd     `cmd:"" help:"Produce synthetic shop traffic (JSON events of examples/shop/spec.yaml) to a Kafka topic until stopped."`
	Replay   replayCmd   `cmd:"" help:"Rebuild features from retained input (a backfill after a spec change or an incident) into a new state generation while the current one keeps serving; switch serving over when it has caught up."`
	Inspect  inspectCmd  `cmd:"" help:"Show entities' stored state (tiles, version, generation, last event) and values, from Redis or a stopped processor's --state-dir."`
	Bench    benchCmd    `cmd:"" help:"Benchmarks on this machine (loopback only)."`
}

// defaultGOGC is the collector's target (GOGC) when the environment does not
// set one: the processor allocates per event, and at Go's 100 the collector
// takes about a tenth of its CPU (decision 0016).
const defaultGOGC = 200

// setGC applies defaultGOGC unless the environment sets GOGC, and returns
// the target in force.
func setGC(getenv func(string) string) int {
	if getenv("GOGC") != "" {
		percent := debug.SetGCPercent(100)
		debug.SetGCPercent(percent)
		return percent
	}
	debug.SetGCPercent(defaultGOGC)
	return defaultGOGC
}

func main() {
	setGC(os.Getenv)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:]))
}

// run parses args, runs the command and returns the exit code.
func run(ctx context.Context, args []string) int {
	var c cli
	parser, err := kong.New(&c,
		kong.Name("featurestream"),
		kong.Description("Real-time user features: Kafka events in, windowed aggregates out over gRPC.\nEvery flag can also be set by an environment variable, shown in brackets."),
		kong.DefaultEnvars("FEATURESTREAM"),
		kong.UsageOnError(),
	)
	if err != nil {
		fmt.Fprintf(os.Stderr, "featurestream: %v\n", err)
		return 2
	}
	kctx, err := parser.Parse(args)
	if err != nil {
		parser.FatalIfErrorf(err)
		return 2
	}
	logger := newLogger(c.LogFormat, c.LogLevel)
	slog.SetDefault(logger)
	kctx.BindTo(ctx, (*context.Context)(nil))
	if err := kctx.Run(logger); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(os.Stderr, "featurestream %s: %v\n", kctx.Command(), err)
		return 1
	}
	return 0
}

func newLogger(format, level string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
