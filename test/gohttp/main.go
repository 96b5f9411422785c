// Command gohttp is a Go web server and client written the way users write
// them, with the standard library only: the compatibility test
// (internal/broker's TestCompat) runs it as one of its servers and
// clients.
//
//	gohttp serve -addr :8080 -dir DIR   http.ListenAndServe of DIR's files
//	gohttp get URL                      http.Get, the body to stdout
//
// Go 1.24 and later listen with IPPROTO_MPTCP by default (when the kernel
// allows it), so `serve` is also the test's MPTCP server: before it
// listens it says on stderr whether its listener will be MPTCP
// ("mptcp listener: true"), and the test checks that line.
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"
)

// ipprotoMPTCP is IPPROTO_MPTCP (the syscall package has no name for it).
const ipprotoMPTCP = 262

// getTimeout bounds a whole get: the test's exchanges take milliseconds.
const getTimeout = 20 * time.Second

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: gohttp serve -addr ADDR -dir DIR | gohttp get URL")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "get":
		err = get(os.Args[2:])
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gohttp:", err)
		os.Exit(1)
	}
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	addr := fs.String("addr", ":8080", "listen address")
	dir := fs.String("dir", ".", "directory to serve")
	fs.Parse(args)
	// What http.ListenAndServe's listener will be: MPTCP if the
	// ListenConfig default says so and this namespace's kernel makes
	// MPTCP sockets (Go falls back to TCP otherwise).
	var lc net.ListenConfig
	fmt.Fprintf(os.Stderr, "mptcp listener: %v\n", lc.MultipathTCP() && mptcpSockets())
	return http.ListenAndServe(*addr, http.FileServer(http.Dir(*dir)))
}

// mptcpSockets reports whether the kernel makes MPTCP sockets here.
func mptcpSockets() bool {
	fd, err := syscall.Socket(syscall.AF_INET6, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, ipprotoMPTCP)
	if err != nil {
		return false
	}
	syscall.Close(fd)
	return true
}

func get(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("get: want one URL, got %q", args)
	}
	c := &http.Client{Timeout: getTimeout}
	resp, err := c.Get(args[0])
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("get %s: %s", args[0], resp.Status)
	}
	if _, err := io.Copy(os.Stdout, resp.Body); err != nil {
		return fmt.Errorf("get %s: %w", args[0], err)
	}
	return nil
}
