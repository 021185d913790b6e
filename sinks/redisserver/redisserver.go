// Package redisserver starts and stops a real redis-server process on a free
// loopback port, for `featurestream dev` and for tests. It is not a client.
//
// On Linux the child is started with a parent-death signal (SIGKILL), so a
// redis-server never outlives the process that started it, even when that
// process is killed with SIGKILL.
package redisserver

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrNotInstalled is returned (wrapped) by Start when the redis-server binary
// cannot be found. Test with errors.Is.
var ErrNotInstalled = errors.New("redisserver: redis-server not found in PATH; " +
	"install it with: apt-get install redis-server (Debian/Ubuntu) or brew install redis (macOS)")

const (
	// StartTimeout bounds how long Start waits for redis-server to answer PING.
	StartTimeout = 10 * time.Second
	// StopTimeout is how long Stop waits after SIGTERM before sending SIGKILL.
	StopTimeout = 5 * time.Second

	maxAttempts  = 5                     // ports tried before giving up
	pollInterval = 20 * time.Millisecond // readiness probe interval
	tailSize     = 8 << 10               // bytes of redis-server output kept for errors
)

// Options configures Start. The zero value is valid.
type Options struct {
	// Path is the redis-server binary. Default: "redis-server" looked up in PATH.
	Path string
	// Dir is the working directory (also passed as --dir). Default: a fresh
	// temporary directory that Stop removes. A caller-supplied Dir is never removed.
	Dir string
	// Args are extra command-line arguments appended after the defaults,
	// e.g. "--requirepass", "secret".
	Args []string
	// Logger receives lifecycle events (Info) and redis-server output lines
	// (Debug). Default: discard.
	Logger *slog.Logger
}

// Server is a running redis-server child process.
type Server struct {
	addr    string
	port    int
	dir     string
	tempDir bool // dir was created by Start and is removed by Stop
	cmd     *exec.Cmd
	out     *tailWriter
	logger  *slog.Logger

	exited  chan struct{} // closed when cmd.Wait returns
	waitErr error         // valid after exited is closed

	stopOnce sync.Once
	stopErr  error
}

// errPortInUse marks an attempt that failed because the chosen port was taken.
var errPortInUse = errors.New("port already in use")

// pickPort returns a currently free TCP port on 127.0.0.1. It is a variable so
// tests can force a port collision.
var pickPort = func() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Start runs redis-server on a free port of 127.0.0.1 and waits until it
// answers PING. ctx bounds only the startup (together with StartTimeout); the
// server runs until Stop is called or the parent process exits.
func Start(ctx context.Context, opts Options) (*Server, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}

	path, err := findBinary(opts.Path)
	if err != nil {
		return nil, err
	}

	dir, tempDir := opts.Dir, false
	if dir == "" {
		if dir, err = os.MkdirTemp("", "redisserver-"); err != nil {
			return nil, fmt.Errorf("redisserver: create temp dir: %w", err)
		}
		tempDir = true
	} else if dir, err = filepath.Abs(dir); err != nil {
		return nil, fmt.Errorf("redisserver: %w", err)
	}
	cleanupDir := func() {
		if tempDir {
			_ = os.RemoveAll(dir)
		}
	}

	ctx, cancel := context.WithTimeoutCause(ctx, StartTimeout,
		fmt.Errorf("redis-server did not answer PING within %s", StartTimeout))
	defer cancel()

	var lastErr error
	for attempt := 1; attempt <= maxAttempts; attempt++ {
		port, err := pickPort()
		if err != nil {
			cleanupDir()
			return nil, fmt.Errorf("redisserver: pick free port: %w", err)
		}
		s, err := launch(ctx, path, port, dir, opts.Args, logger)
		if err == nil {
			s.tempDir = tempDir
			logger.Info("redis-server started", "addr", s.addr, "pid", s.cmd.Process.Pid, "dir", dir)
			return s, nil
		}
		if !errors.Is(err, errPortInUse) {
			cleanupDir()
			return nil, err
		}
		logger.Info("redis-server port taken, retrying", "port", port, "attempt", attempt)
		lastErr = err
	}
	cleanupDir()
	return nil, fmt.Errorf("redisserver: no free port after %d attempts: %w", maxAttempts, lastErr)
}

// findBinary resolves path (default "redis-server") to an executable,
// wrapping ErrNotInstalled when it does not exist.
func findBinary(path string) (string, error) {
	if path == "" {
		path = "redis-server"
	}
	resolved, err := exec.LookPath(path)
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("%w (looked for %q: %v)", ErrNotInstalled, path, err)
		}
		return "", fmt.Errorf("redisserver: %w", err)
	}
	return resolved, nil
}

// launch makes one attempt on one port. It returns an error wrapping
// errPortInUse if the port turned out to be taken.
func launch(ctx context.Context, path string, port int, dir string, extra []string, logger *slog.Logger) (*Server, error) {
	args := []string{
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--dir", dir,
	}
	args = append(args, extra...)

	out := &tailWriter{max: tailSize, logger: logger.With("redis_port", port)}
	cmd := exec.Command(path, args...)
	cmd.Dir = dir
	cmd.Stdout = out
	cmd.Stderr = out
	// If redis-server forks (BGSAVE) the child inherits the output pipe; do
	// not let Wait block on it forever.
	cmd.WaitDelay = 2 * time.Second

	release, err := startProcess(cmd)
	if err != nil {
		return nil, fmt.Errorf("redisserver: start %s: %w", path, err)
	}
	s := &Server{
		addr:   net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		port:   port,
		dir:    dir,
		cmd:    cmd,
		out:    out,
		logger: logger,
		exited: make(chan struct{}),
	}
	go func() {
		s.waitErr = cmd.Wait()
		close(s.exited)
		release()
	}()

	// abort kills this attempt's process and waits for it.
	abort := func() {
		_ = cmd.Process.Kill()
		<-s.exited
	}

	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			abort()
			return nil, fmt.Errorf("redisserver: waiting for redis-server on %s: %w (cause: %v)%s",
				s.addr, ctx.Err(), context.Cause(ctx), s.outputTail())
		case <-s.exited:
			if portInUse(out.String()) {
				return nil, fmt.Errorf("redisserver: %s: %w", s.addr, errPortInUse)
			}
			return nil, fmt.Errorf("redisserver: redis-server exited during startup (%v)%s",
				s.waitErr, s.outputTail())
		case <-ticker.C:
			ready, foreign := probe(ctx, s.addr, cmd.Process.Pid)
			if foreign {
				// Another redis answered on "our" port.
				abort()
				return nil, fmt.Errorf("redisserver: %s answered by another process: %w", s.addr, errPortInUse)
			}
			if ready {
				return s, nil
			}
		}
	}
}

func portInUse(output string) bool {
	return strings.Contains(output, "Address already in use") ||
		strings.Contains(output, "Could not create server TCP listening socket")
}

// probe sends a raw RESP PING. ready reports that redis answered; foreign
// reports that a redis with a different process id answered.
func probe(ctx context.Context, addr string, pid int) (ready, foreign bool) {
	d := net.Dialer{Timeout: 250 * time.Millisecond}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false, false
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	r := bufio.NewReader(conn)

	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return false, false
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return false, false
	}
	line = strings.TrimRight(line, "\r\n")
	switch {
	case line == "+PONG":
		// Verify that it is our process answering, not a server that grabbed
		// the port between pickPort and redis-server's bind.
		if got, ok := infoPID(conn, r); ok && got != pid {
			return false, true
		}
		return true, false
	case strings.HasPrefix(line, "-NOAUTH"), strings.HasPrefix(line, "-WRONGPASS"):
		// Password-protected (--requirepass / ACL): it is up. The pid cannot
		// be checked without credentials; a bind failure of our own process
		// is still caught by the exit check.
		return true, false
	default: // e.g. -LOADING
		return false, false
	}
}

// infoPID asks INFO server for process_id.
func infoPID(conn net.Conn, r *bufio.Reader) (int, bool) {
	if _, err := conn.Write([]byte("INFO server\r\n")); err != nil {
		return 0, false
	}
	hdr, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(hdr, "$") {
		return 0, false
	}
	n, err := strconv.Atoi(strings.TrimRight(hdr[1:], "\r\n"))
	if err != nil || n < 0 || n > 1<<20 {
		return 0, false
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, false
	}
	for _, l := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "process_id:"); ok {
			pid, err := strconv.Atoi(v)
			return pid, err == nil
		}
	}
	return 0, false
}

// Addr returns "127.0.0.1:N".
func (s *Server) Addr() string { return s.addr }

// Port returns the TCP port redis-server listens on.
func (s *Server) Port() int { return s.port }

// Stop sends SIGTERM, waits up to StopTimeout, then sends SIGKILL. It removes
// the temporary directory created by Start. It is idempotent and safe for
// concurrent use; every call returns the result of the first. It returns an
// error if redis-server had already died with a failure before Stop.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() { s.stopErr = s.stop() })
	return s.stopErr
}

func (s *Server) stop() error {
	var errs []error

	select {
	case <-s.exited:
		// Died before Stop: a clean exit (e.g. SHUTDOWN) is fine.
		if s.waitErr != nil {
			errs = append(errs, fmt.Errorf("redisserver: redis-server on %s had exited before Stop: %v%s",
				s.addr, s.waitErr, s.outputTail()))
		}
	default:
		if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			_ = s.cmd.Process.Kill() // no SIGTERM on this platform
		}
		t := time.NewTimer(StopTimeout)
		select {
		case <-s.exited:
			t.Stop()
		case <-t.C:
			s.logger.Warn("redis-server ignored SIGTERM, sending SIGKILL", "addr", s.addr, "timeout", StopTimeout)
			_ = s.cmd.Process.Kill()
			<-s.exited
		}
	}

	if s.tempDir {
		if err := os.RemoveAll(s.dir); err != nil {
			errs = append(errs, fmt.Errorf("redisserver: remove %s: %w", s.dir, err))
		}
	}
	s.logger.Info("redis-server stopped", "addr", s.addr)
	return errors.Join(errs...)
}

func (s *Server) outputTail() string {
	t := strings.TrimSpace(s.out.String())
	if t == "" {
		return "; redis-server printed nothing"
	}
	return "; redis-server output (tail):\n" + t
}

// tailWriter keeps the last max bytes written and logs complete lines.
type tailWriter struct {
	mu      sync.Mutex
	max     int
	buf     []byte
	partial []byte
	logger  *slog.Logger
}

func (w *tailWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	if over := len(w.buf) - w.max; over > 0 {
		w.buf = append(w.buf[:0], w.buf[over:]...)
	}
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		if line := strings.TrimSpace(string(w.partial[:i])); line != "" {
			w.logger.Debug(line)
		}
		w.partial = w.partial[i+1:]
	}
	if len(w.partial) > w.max { // pathological line without newline
		w.partial = w.partial[:0]
	}
	return len(p), nil
}

func (w *tailWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.buf)
}
