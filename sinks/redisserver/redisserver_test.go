package redisserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		runHelper() // never returns
	}
	goleak.VerifyTestMain(m)
}

func newClient(t *testing.T, s *Server, password string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), Password: password})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// waitRefused polls until nothing accepts connections on addr.
func waitRefused(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("%s still accepts connections", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestStartSetGetStop(t *testing.T) {
	s := StartForTest(t)
	if !strings.HasPrefix(s.Addr(), "127.0.0.1:") || s.Port() == 0 {
		t.Fatalf("Addr=%q Port=%d", s.Addr(), s.Port())
	}
	dir := s.dir
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("temp dir: %v", err)
	}

	ctx := context.Background()
	c := newClient(t, s, "")
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	got, err := c.Get(ctx, "k").Result()
	if err != nil || got != "v" {
		t.Fatalf("GET = %q, %v; want v", got, err)
	}
	// The defaults we pass are in effect.
	cfg, err := c.ConfigGet(ctx, "*").Result()
	if err != nil {
		t.Fatalf("CONFIG GET: %v", err)
	}
	for k, want := range map[string]string{"save": "", "appendonly": "no", "bind": "127.0.0.1", "daemonize": "no", "dir": dir} {
		if cfg[k] != want {
			t.Errorf("config %s = %q, want %q", k, cfg[k], want)
		}
	}
	_ = c.Close()

	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if c, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		c.Close()
		t.Fatalf("%s still answers after Stop", s.Addr())
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temp dir %s not removed: %v", dir, err)
	}
	// Idempotent (t.Cleanup calls it once more).
	if err := s.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}

func TestTwoServersDifferentPorts(t *testing.T) {
	a, b := StartForTest(t), StartForTest(t)
	if a.Addr() == b.Addr() {
		t.Fatalf("both servers on %s", a.Addr())
	}
	ctx := context.Background()
	ca, cb := newClient(t, a, ""), newClient(t, b, "")
	if err := ca.Set(ctx, "only-a", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := cb.Get(ctx, "only-a").Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("server b sees a's key: err=%v", err)
	}
	if err := cb.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentStart(t *testing.T) {
	const n = 4
	var wg sync.WaitGroup
	servers := make([]*Server, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { servers[i], errs[i] = Start(context.Background(), Options{}) })
	}
	wg.Wait()
	seen := map[string]bool{}
	for i, s := range servers {
		if errs[i] != nil {
			t.Fatalf("Start %d: %v", i, errs[i])
		}
		t.Cleanup(func() { _ = s.Stop() })
		if seen[s.Addr()] {
			t.Fatalf("duplicate addr %s", s.Addr())
		}
		seen[s.Addr()] = true
	}
}

func TestMissingBinary(t *testing.T) {
	_, err := Start(context.Background(), Options{Path: "/nonexistent/redis-server"})
	if !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("err = %v, want ErrNotInstalled", err)
	}
	if !strings.Contains(err.Error(), "apt-get install redis-server") || !strings.Contains(err.Error(), "brew install redis") {
		t.Fatalf("error lacks install hint: %v", err)
	}

	t.Setenv("PATH", t.TempDir())
	if _, err := Start(context.Background(), Options{}); !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("empty PATH: err = %v, want ErrNotInstalled", err)
	}
}

func TestRequirePass(t *testing.T) {
	s := StartForTest(t, "--requirepass", "secret")
	ctx := context.Background()
	if err := newClient(t, s, "").Ping(ctx).Err(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Fatalf("PING without password: err = %v, want NOAUTH", err)
	}
	if err := newClient(t, s, "secret").Ping(ctx).Err(); err != nil {
		t.Fatalf("PING with password: %v", err)
	}
}

func TestStartupFailureIncludesOutput(t *testing.T) {
	dir := t.TempDir()
	_, err := Start(context.Background(), Options{Dir: dir, Args: []string{"--no-such-directive", "x"}})
	if err == nil {
		t.Fatal("Start succeeded with a bad directive")
	}
	if errors.Is(err, ErrNotInstalled) || !strings.Contains(err.Error(), "no-such-directive") {
		t.Fatalf("error lacks redis-server output: %v", err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("caller-supplied Dir removed: %v", err)
	}
}

func TestCallerDirKept(t *testing.T) {
	dir := t.TempDir()
	s, err := Start(context.Background(), Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("caller-supplied Dir removed: %v", err)
	}
}

func TestContextCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Start(ctx, Options{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

// TestPortTakenRetries makes the first chosen port busy and checks that
// Start moves on to another one.
func TestPortTakenRetries(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port

	orig := pickPort
	t.Cleanup(func() { pickPort = orig })
	calls := 0
	pickPort = func() (int, error) {
		calls++
		if calls == 1 {
			return busyPort, nil
		}
		return orig()
	}

	s := StartForTest(t)
	if s.Port() == busyPort || calls < 2 {
		t.Fatalf("port %d (busy %d), pickPort calls %d", s.Port(), busyPort, calls)
	}
	if err := newClient(t, s, "").Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
}

// TestPortTakenByOtherRedis occupies the first port with another redis-server
// (which answers PING) and checks that Start does not mistake it for its own.
func TestPortTakenByOtherRedis(t *testing.T) {
	other := StartForTest(t)

	orig := pickPort
	t.Cleanup(func() { pickPort = orig })
	calls := 0
	pickPort = func() (int, error) {
		calls++
		if calls == 1 {
			return other.Port(), nil
		}
		return orig()
	}
	s := StartForTest(t)
	if s.Addr() == other.Addr() {
		t.Fatalf("Start returned the other server's address %s", s.Addr())
	}
	ctx := context.Background()
	if err := newClient(t, other, "").Set(ctx, "x", "other", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := newClient(t, s, "").Get(ctx, "x").Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("new server shares data with the other: %v", err)
	}
}

func TestStopAfterCrashReportsError(t *testing.T) {
	s, err := Start(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-s.exited
	if err := s.Stop(); err == nil || !strings.Contains(err.Error(), "exited before Stop") {
		t.Fatalf("Stop after crash: err = %v", err)
	}
}

func TestTailWriter(t *testing.T) {
	w := &tailWriter{max: 10, logger: discardLogger()}
	fmt.Fprint(w, "0123456789abcdef\nline")
	if got := w.String(); got != "bcdef\nline" {
		t.Fatalf("tail = %q", got)
	}
}
