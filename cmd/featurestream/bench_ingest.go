package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/featurestream/featurestream/bench"
	"github.com/featurestream/featurestream/processor"
	"github.com/featurestream/featurestream/sinks/redisserver"
)

type benchIngestCmd struct {
	specFlag
	Brokers        []string      `help:"Kafka to use, comma-separated; empty starts the embedded broker in its own process." sep:","`
	RedisAddr      string        `help:"Redis to use; empty starts a redis-server."`
	Events         int           `help:"Events to produce." default:"200000"`
	Users          int           `help:"Distinct users (Zipf-distributed)." default:"10000"`
	Partitions     int           `help:"Partitions of the input topic." default:"8"`
	OutOfOrder     float64       `help:"Fraction of events up to a minute out of order." default:"0.05"`
	Rounds         int           `help:"How many times to measure the raw consume and each guarantee's processor run, alternating; the report keeps the medians, and each ratio to raw is taken within its round." default:"5"`
	LiveDuration   time.Duration `help:"How long to run live traffic (at half the maximum sustained rate) to measure freshness and serving under load; 0 skips it." default:"10s"`
	LiveWarmup     time.Duration `help:"How long the live traffic runs before --live-duration is measured, so the measurement starts in a steady state rather than right after the sustained-rate search." default:"5s"`
	ServeRate      int           `help:"GetFeatures calls per second while live traffic flows." default:"200"`
	CommitInterval time.Duration `help:"The processors' --commit-interval, for ingest and live runs; 0 is the processor's default."`
	LiveRate       int           `help:"Events per second of the live traffic; 0 means half the maximum sustained rate, which the bench finds first (below the exactly-once backlog rate) by producing and consuming at once."`
	JSON           string        `name:"json" help:"Also write the result as JSON to this file." type:"path"`
	HTML           string        `name:"html" help:"Also write an HTML report with charts to this file." type:"path"`
	CPUProfile     string        `name:"cpuprofile" help:"Write a CPU profile of the run to this file." type:"path"`
}

// Run measures ingest and restore against a raw consume on the same broker.
func (c *benchIngestCmd) Run(ctx context.Context, logger *slog.Logger) error {
	top, err := loadTopology(c.Spec)
	if err != nil {
		return err
	}
	brokers := c.Brokers
	if len(brokers) == 0 {
		addr, stop, err := startKafkaProcess(ctx, c.Partitions)
		if err != nil {
			return err
		}
		defer stop()
		brokers = []string{addr}
	}
	redisAddr := c.RedisAddr
	if redisAddr == "" {
		rs, err := redisserver.Start(ctx, redisserver.Options{Logger: logger})
		if err != nil {
			return fmt.Errorf("start redis-server: %w", err)
		}
		defer rs.Stop()
		redisAddr = rs.Addr()
	}
	if c.CPUProfile != "" {
		f, err := os.Create(c.CPUProfile)
		if err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	rep := &bench.Report{Command: "featurestream " + strings.Join(os.Args[1:], " "), Machine: bench.MachineString(), Started: time.Now()}
	rep.Ingest, err = bench.RunIngest(ctx, bench.IngestConfig{
		Brokers: brokers, RedisAddr: redisAddr, Top: top,
		Events: c.Events, Users: c.Users, Partitions: c.Partitions, OutOfOrder: c.OutOfOrder, Rounds: c.Rounds, CommitInterval: c.CommitInterval, Logger: quiet,
	}, os.Stderr)
	if err != nil {
		return err
	}
	if c.LiveDuration > 0 {
		maxRate := 0.0
		for _, r := range rep.Ingest.Runs {
			if r.Guarantee == processor.ExactlyOnce {
				maxRate = r.Rate
			}
		}
		if maxRate > 0 || c.LiveRate > 0 {
			rep.Live, err = bench.RunLive(ctx, bench.LiveConfig{
				Brokers: brokers, RedisAddr: redisAddr, Top: top, Partitions: c.Partitions, Users: c.Users,
				Rate: c.LiveRate, MaxRate: int(maxRate), Duration: c.LiveDuration, Warmup: c.LiveWarmup, ServeRate: c.ServeRate, CommitInterval: c.CommitInterval, Logger: quiet,
			}, os.Stderr)
			if err != nil {
				return err
			}
		}
	}
	rep.WriteText(os.Stdout)
	if c.JSON != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(c.JSON, b, 0o644); err != nil {
			return fmt.Errorf("--json: %w", err)
		}
	}
	if c.HTML != "" {
		f, err := os.Create(c.HTML)
		if err != nil {
			return fmt.Errorf("--html: %w", err)
		}
		if err := rep.WriteHTML(f); err != nil {
			f.Close()
			return fmt.Errorf("--html: %w", err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("--html: %w", err)
		}
	}
	return nil
}

// startKafkaProcess runs `featurestream kafka` on a free port in a child
// process and returns its address.
func startKafkaProcess(ctx context.Context, partitions int) (string, func(), error) {
	exe, err := os.Executable()
	if err != nil {
		return "", nil, err
	}
	cmd := exec.CommandContext(ctx, exe, "kafka", "--kafka-addr", "127.0.0.1:0", "--topics", "events", "--partitions", fmt.Sprint(partitions), "--log-level", "warn")
	cmd.Env = os.Environ()
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("start embedded kafka process: %w", err)
	}
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "kafka listening on ")
	if err != nil || !ok {
		stop()
		return "", nil, errors.Join(errors.New("embedded kafka process did not start"), err)
	}
	return addr, stop, nil
}
