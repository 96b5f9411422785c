package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/slimnet/slim/internal/bench/wire"
)

// hold opens conns connections to a slimprobe server (serve), one after
// another, keeps every one open until all are, checks each with the
// server's greeting, and prints one JSON line: how many worked and the
// local ports they had (what a port block test needs). With
// -until-closed it then waits, at most that long, for the network to
// close or reset the held connections, and counts those it did (what a
// revocation test needs).
func hold(args []string) error {
	fs := flag.NewFlagSet("hold", flag.ExitOnError)
	addr := fs.String("addr", "", "server address (slimprobe serve)")
	conns := fs.Int("conns", 1, "connections held open at once")
	pause := fs.Duration("pause", 0, "pause between connects")
	untilClosed := fs.Duration("until-closed", 0, "then wait this long at most for the held connections to be closed or reset")
	fs.Parse(args)
	ap, err := netip.ParseAddrPort(*addr)
	if err != nil {
		return err
	}
	var res wire.HoldResult
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for range *conns {
		c, err := net.DialTimeout("tcp", ap.String(), 10*time.Second)
		if err == nil {
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err = bufio.NewReader(c).ReadBytes('\n') // the server's greeting
		}
		if err != nil {
			res.Failed++
			if res.FirstError == "" {
				res.FirstError = err.Error()
			}
			continue
		}
		held = append(held, c)
		res.Conns++
		res.Ports = append(res.Ports, netip.MustParseAddrPort(c.LocalAddr().String()).Port())
		time.Sleep(*pause)
	}
	if *untilClosed > 0 {
		deadline := time.Now().Add(*untilClosed)
		for _, c := range held {
			c.SetReadDeadline(deadline)
			_, err := c.Read(make([]byte, 1))
			if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
				continue // still open: the server never writes again
			}
			res.Cut++
			if res.FirstCut == "" {
				res.FirstCut = err.Error()
			}
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		return err
	}
	if res.Failed > 0 {
		return fmt.Errorf("%d of %d connections failed", res.Failed, *conns)
	}
	return nil
}
