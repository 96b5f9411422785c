package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

// netServe is the server of a network policy truth table, as the upstream
// e2e tests' agnhost porter: TCP and UDP on the given ports, answering
// "ok" (or -say) to every connection and datagram. It serves until killed.
func netServe(args []string) error {
	fs := flag.NewFlagSet("netserve", flag.ExitOnError)
	tcp := fs.String("tcp", "80,81", "TCP ports")
	udp := fs.String("udp", "80,81", "UDP ports")
	say := fs.String("say", "ok", "the answer (a backend's name, to tell backends apart)")
	fs.Parse(args)
	errc := make(chan error, 1)
	for _, p := range strings.Split(*tcp, ",") {
		ln, err := net.Listen("tcp", ":"+p)
		if err != nil {
			return err
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					errc <- err
					return
				}
				c.Write([]byte(*say))
				c.Close()
			}
		}()
	}
	for _, p := range strings.Split(*udp, ",") {
		pc, err := net.ListenPacket("udp", ":"+p)
		if err != nil {
			return err
		}
		go func() {
			b := make([]byte, 64)
			for {
				_, a, err := pc.ReadFrom(b)
				if err != nil {
					errc <- err
					return
				}
				pc.WriteTo([]byte(*say), a)
			}
		}()
	}
	fmt.Println("serving")
	return <-errc
}

// reach tries every target (tcp:ADDR:PORT or udp:ADDR:PORT) at once and
// prints a JSON object: target -> whether "ok" came back in time.
func reach(args []string) error {
	fs := flag.NewFlagSet("reach", flag.ExitOnError)
	timeout := fs.Duration("timeout", time.Second, "per target")
	fs.Parse(args)
	out := make(map[string]bool, fs.NArg())
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, t := range fs.Args() {
		network, addr, ok := strings.Cut(t, ":")
		if !ok || (network != "tcp" && network != "udp") {
			return fmt.Errorf("target %q: want tcp:ADDR:PORT or udp:ADDR:PORT", t)
		}
		wg.Go(func() {
			ok := try(network, addr, *timeout)
			mu.Lock()
			out[t] = ok
			mu.Unlock()
		})
	}
	wg.Wait()
	return json.NewEncoder(os.Stdout).Encode(out)
}

func try(network, addr string, timeout time.Duration) bool {
	return exchangeOnce(network, addr, timeout) == "ok"
}

// ask makes -n exchanges with one target (tcp:ADDR:PORT or udp:ADDR:PORT;
// a datagram "hi" for UDP), one after another, and prints a JSON object:
// each answer (netserve -say) -> how many times it came back; failures
// count under "error: ..." or "" (no answer in time).
func ask(args []string) error {
	fs := flag.NewFlagSet("ask", flag.ExitOnError)
	n := fs.Int("n", 10, "exchanges")
	timeout := fs.Duration("timeout", time.Second, "per exchange")
	fs.Parse(args)
	if fs.NArg() != 1 {
		return fmt.Errorf("ask: want one target")
	}
	network, addr, ok := strings.Cut(fs.Arg(0), ":")
	if !ok || (network != "tcp" && network != "udp") {
		return fmt.Errorf("target %q: want tcp:ADDR:PORT or udp:ADDR:PORT", fs.Arg(0))
	}
	out := map[string]int{}
	for range *n {
		out[exchangeOnce(network, addr, *timeout)]++
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}

// exchangeOnce dials addr, sends "hi" over UDP, and returns the answer.
func exchangeOnce(network, addr string, timeout time.Duration) string {
	c, err := net.DialTimeout(network, addr, timeout)
	if err != nil {
		return "error: " + err.Error()
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if network == "udp" {
		if _, err := c.Write([]byte("hi")); err != nil {
			return "error: " + err.Error()
		}
	}
	b := make([]byte, 64)
	n, _ := c.Read(b)
	return string(b[:n])
}
