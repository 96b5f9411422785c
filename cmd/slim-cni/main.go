// Command slim-cni is Slim's CNI plugin. Container runtimes run it with
// CNI_COMMAND and friends in the environment and the network configuration
// on stdin; see package internal/cni.
package main

import (
	"context"
	"os"
	"os/signal"

	"golang.org/x/sys/unix"

	"github.com/slimnet/slim/internal/cni"
)

// version is set at link time (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	// A runtime that gives up on us sends SIGTERM; cancelling lets a
	// half-done ADD roll back instead of leaking.
	ctx, stop := signal.NotifyContext(context.Background(), unix.SIGINT, unix.SIGTERM)
	err := cni.Run(ctx, cni.Config{Stderr: os.Stderr, Version: version})
	stop()
	if err != nil {
		os.Exit(1)
	}
}
