package main

import (
	"flag"
	"fmt"
	"net"
	"time"
)

// waitFor connects to a server until one answers (readiness), then closes.
func waitFor(args []string) error {
	fs := flag.NewFlagSet("wait", flag.ExitOnError)
	addr := fs.String("addr", "", "server address")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after")
	fs.Parse(args)
	deadline := time.Now().Add(*timeout)
	for {
		c, err := net.DialTimeout("tcp", *addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("wait %s: %w", *addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
