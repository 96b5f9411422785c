// Command slimprobe is a test program for the fast path and the client and
// server of slimctl bench: a TCP server and client that report the
// addresses the application sees (getsockname, getpeername, accept's
// address) and move bytes. Built with CGO_ENABLED=0 it is a static binary,
// which is one of the cases the fast path must cover (no LD_PRELOAD would
// reach it); the lab runs it inside its containers.
//
// Modes, one file each:
//
//	serve, connect        address reports and bulk bytes (tests)
//	hold                  connections held open at once (port blocks)
//	attack                what a hostile tenant tries with host sockets
//	rrserve, rr           request/response ping-pong on one connection
//	crrserve, crr         connect, 1-byte request, 1-byte response, close
//	wait                  connect until a server answers (readiness)
//	memcached             memcached load generator (text protocol)
//	get                   fetch a URL and print the body (a lab slimd's
//	                      metrics, from inside its host's namespace)
//	netserve, reach, ask  network policy truth tables, services: TCP and UDP
//	                      servers, and a client trying many targets
//
// connect, hold, rr, crr and memcached print JSON reports, the types of
// package wire (internal/bench/wire), which slimctl bench and the lab
// tests read; serve greets each client with a wire.ConnReport.
package main

import (
	"fmt"
	"os"
	"strings"
)

// modes maps each mode to its function, which parses the mode's flags.
var modes = map[string]func(args []string) error{
	"serve":   serve,
	"connect": connect,
	"hold":    hold,
	"attack":  attack,
	// attack-passed is attack's child, not for users.
	"attack-passed": attackPassedChild,
	"rrserve":       rrServe,
	"rr":            rr,
	"crrserve":      crrServe,
	"crr":           crr,
	"wait":          waitFor,
	"memcached":     memcached,
	"get":           get,
	"netserve":      netServe,
	"reach":         reach,
	"ask":           ask,
}

// modeNames lists the modes for the usage line.
const modeNames = "serve|connect|hold|attack|rrserve|rr|crrserve|crr|wait|memcached|get|netserve|reach|ask"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: slimprobe "+modeNames+" [flags]")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2:]); err != nil {
		fmt.Fprintln(os.Stderr, "slimprobe:", err)
		os.Exit(1)
	}
}

// run runs mode with its arguments.
func run(mode string, args []string) error {
	f, ok := modes[mode]
	if !ok {
		return fmt.Errorf("unknown mode %q: want one of %s", mode, strings.ReplaceAll(modeNames, "|", ", "))
	}
	return f(args)
}
