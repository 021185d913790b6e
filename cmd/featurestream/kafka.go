package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
)

// kafkaCmd runs only the embedded broker: for trying process and serve as
// separate processes on one machine, and for benchmarks that keep the
// broker's CPU out of the processor's.
type kafkaCmd struct {
	KafkaAddr  string   `help:"Address to listen on." default:"127.0.0.1:9092"`
	Topics     []string `help:"Topics to create, comma-separated." default:"events" sep:","`
	Partitions int      `help:"Partitions of each topic." default:"4"`
}

// Run serves until ctx is done. It prints "kafka listening on ADDR" to
// stdout once ready, for scripts.
func (c *kafkaCmd) Run(ctx context.Context, logger *slog.Logger) error {
	cluster, err := startKafka(c.KafkaAddr, int32(c.Partitions), c.Topics...)
	if err != nil {
		return err
	}
	defer cluster.Close()
	fmt.Fprintf(os.Stdout, "kafka listening on %s\n", cluster.ListenAddrs()[0])
	logger.Info("embedded kafka running", "addr", cluster.ListenAddrs()[0], "topics", c.Topics, "partitions", c.Partitions)
	<-ctx.Done()
	return nil
}
