package main

import (
	"context"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"testing"
	"time"
)

// TestMain lets tests run this package's binary as a subprocess (for kill -9
// tests) by re-executing the test binary with FEATURESTREAM_TEST_MAIN=1.
func TestMain(m *testing.M) {
	if os.Getenv("FEATURESTREAM_TEST_MAIN") == "1" {
		setGC(os.Getenv)
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := run(ctx, os.Args[1:])
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// TestOffIfZero: flags where 0 turns a feature off reach processor.Config
// as a negative value, which is off there too; 0 in Config would mean the
// default.
func TestOffIfZero(t *testing.T) {
	for _, tc := range []struct{ in, want time.Duration }{
		{0, -1},
		{-5 * time.Second, -1},
		{time.Nanosecond, time.Nanosecond},
		{5 * time.Minute, 5 * time.Minute},
	} {
		if got := offIfZero(tc.in); got != tc.want {
			t.Errorf("offIfZero(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	for _, tc := range []struct{ in, want int }{{0, -1}, {-1, -1}, {128 << 20, 128 << 20}} {
		if got := offIfZero(tc.in); got != tc.want {
			t.Errorf("offIfZero(%d) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

// TestSetGC: the binary's GC target is defaultGOGC unless GOGC is set,
// which then stays in force.
func TestSetGC(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	if got := setGC(func(string) string { return "" }); got != defaultGOGC || debug.SetGCPercent(defaultGOGC) != defaultGOGC {
		t.Errorf("without GOGC: setGC = %d, want %d in force", got, defaultGOGC)
	}
	debug.SetGCPercent(150)
	if got := setGC(func(k string) string { return map[string]string{"GOGC": "150"}[k] }); got != 150 || debug.SetGCPercent(150) != 150 {
		t.Errorf("with GOGC=150: setGC = %d, want 150 left in force", got)
	}
}
