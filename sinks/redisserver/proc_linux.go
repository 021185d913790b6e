//go:build linux

package redisserver

import (
	"os/exec"
	"runtime"
	"sync"
	"syscall"
)

// On Linux the child gets PR_SET_PDEATHSIG=SIGKILL so it dies with us.
//
// The parent-death signal fires when the *thread* that forked the child
// exits, not only when the process does. The Go runtime terminates an OS
// thread when a goroutine exits while locked to it (runtime.LockOSThread), so
// forking from an arbitrary thread could get a healthy redis-server killed at
// a random moment. Therefore all forks happen on one dedicated goroutine that
// stays locked to its thread for as long as any child started from it is
// alive; when the last child has been reaped it unlocks and exits, so no
// goroutine is left behind (goleak-friendly).

type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

var spawner struct {
	mu   sync.Mutex
	live int           // children started (or starting) and not yet reaped
	reqs chan spawnReq // nil when no spawner goroutine runs
}

// startProcess starts cmd with a parent-death signal. release must be called
// once the process has been waited for.
func startProcess(cmd *exec.Cmd) (release func(), err error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL

	spawner.mu.Lock()
	if spawner.live == 0 {
		spawner.reqs = make(chan spawnReq)
		go spawnLoop(spawner.reqs)
	}
	spawner.live++
	reqs := spawner.reqs
	spawner.mu.Unlock()

	release = sync.OnceFunc(func() {
		spawner.mu.Lock()
		defer spawner.mu.Unlock()
		spawner.live--
		if spawner.live == 0 {
			close(spawner.reqs)
			spawner.reqs = nil
		}
	})

	done := make(chan error, 1)
	reqs <- spawnReq{cmd: cmd, done: done}
	if err := <-done; err != nil {
		release()
		return nil, err
	}
	return release, nil
}

func spawnLoop(reqs <-chan spawnReq) {
	runtime.LockOSThread()
	for r := range reqs {
		r.done <- r.cmd.Start()
	}
	// Every child forked from this thread has been reaped: hand the thread
	// back to the scheduler instead of letting the runtime destroy it.
	runtime.UnlockOSThread()
}
