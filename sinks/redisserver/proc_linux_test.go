//go:build linux

package redisserver

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

const helperEnv = "REDISSERVER_TEST_HELPER"

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// runHelper is the child side of TestChildDiesWithParent: start a server,
// print its address and pid, then wait to be killed.
func runHelper() {
	// The parent supplies Dir: this process is SIGKILLed and cannot clean up.
	s, err := Start(context.Background(), Options{Dir: os.Getenv(helperEnv + "_DIR")})
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	fmt.Println("ADDR", s.Addr(), s.cmd.Process.Pid)
	time.Sleep(time.Minute)
	os.Exit(2)
}

// TestChildDiesWithParent SIGKILLs a process that started a redis-server and
// checks the redis-server dies too (Pdeathsig).
func TestChildDiesWithParent(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1", helperEnv+"_DIR="+t.TempDir())
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("helper: %v", err)
	}
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "ADDR" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("helper said %q", line)
	}
	addr := f[1]
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	waitRefused(t, addr) // redis-server (pid f[2]) must be gone
}

// TestSurvivesThreadExit: the parent-death signal fires when the forking OS
// thread exits, and the runtime destroys a thread whose goroutine exits while
// locked to it. Start from such goroutines and check that the servers survive
// their threads' death (forks happen on the dedicated spawner thread).
// Two rounds, because the main thread (m0) is parked rather than destroyed;
// once parked it cannot run the second round.
func TestSurvivesThreadExit(t *testing.T) {
	type result struct {
		s   *Server
		err error
	}
	for round := range 2 {
		ch := make(chan result, 1)
		go func() {
			runtime.LockOSThread()
			s, err := Start(context.Background(), Options{})
			ch <- result{s, err}
			// exit while locked: this OS thread is terminated
		}()
		r := <-ch
		if r.err != nil {
			t.Fatal(r.err)
		}
		s := r.s
		t.Cleanup(func() {
			if err := s.Stop(); err != nil {
				t.Error(err)
			}
		})
		time.Sleep(100 * time.Millisecond)
		if ready, _ := probe(context.Background(), s.Addr(), s.cmd.Process.Pid); !ready {
			t.Fatalf("round %d: redis-server on %s died with the thread that called Start; output:%s",
				round, s.Addr(), s.outputTail())
		}
	}
}
