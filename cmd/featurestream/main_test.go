package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"
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

// TestOffIfZero: flags where 0 turns a feature off (--state-cache-mib,
// --catch-up-push-interval) reach processor.Config as a negative value,
// which is off there too; 0 in Config would mean the default.
func TestOffIfZero(t *testing.T) {
	if got := offIfZero(0); got != -1 {
		t.Errorf("offIfZero(0) = %d, want -1", got)
	}
	if got := offIfZero(-5 * time.Second); got != -1 {
		t.Errorf("offIfZero(-5s) = %v, want -1ns", got)
	}
	if got := offIfZero(128 << 20); got != 128<<20 {
		t.Errorf("offIfZero(128 MiB) = %d", got)
	}
	if got := offIfZero(time.Second); got != time.Second {
		t.Errorf("offIfZero(1s) = %v", got)
	}
}
