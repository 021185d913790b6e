//go:build !linux

package redisserver

import "os/exec"

// startProcess starts cmd. Outside Linux there is no parent-death signal: a
// redis-server outlives a parent killed with SIGKILL (Stop, or a normal exit
// that runs Stop, still cleans it up).
func startProcess(cmd *exec.Cmd) (release func(), err error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return func() {}, nil
}
