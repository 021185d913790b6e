package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"testing"
)

// TestMain lets tests run this package's binary as a subprocess (for kill -9
// tests) by re-executing the test binary with FEATURESTREAM_TEST_MAIN=1.
func TestMain(m *testing.M) {
	if os.Getenv("FEATURESTREAM_TEST_MAIN") == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := run(ctx, os.Args[1:])
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}
