//go:build !linux

package redisserver

import (
	"log/slog"
	"os"
)

const helperEnv = "REDISSERVER_TEST_HELPER"

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func runHelper() { os.Exit(1) }
