package redisserver

import (
	"context"
	"errors"
	"testing"
	"time"
)

// StartForTest starts a redis-server with the given extra arguments and stops
// it (removing its temp dir) in t.Cleanup. If redis-server is not installed it
// fails the test with the install hint: it never skips, because a skipped
// test must not count as a pass.
func StartForTest(t testing.TB, args ...string) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Start(ctx, Options{Args: args})
	if err != nil {
		if errors.Is(err, ErrNotInstalled) {
			t.Fatalf("redis-server is required for this test and was not found in PATH: "+
				"install it with: apt-get install redis-server (Debian/Ubuntu) or brew install redis (macOS), "+
				"or run `make deps-redis` (%v)", err)
		}
		t.Fatalf("redisserver: start redis-server: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("redisserver: stop %s: %v", s.Addr(), err)
		}
	})
	return s
}
