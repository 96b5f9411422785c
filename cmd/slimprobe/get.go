package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// get fetches a URL and copies the body to stdout; a status other than
// 200 is an error. slimctl bench reads the client host's slimd metrics
// with it: they are served on loopback inside the lab host's namespace.
func get(args []string) error {
	fs := flag.NewFlagSet("get", flag.ExitOnError)
	url := fs.String("url", "", "URL to fetch")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after")
	fs.Parse(args)
	if *url == "" {
		return fmt.Errorf("get: set -url")
	}
	c := &http.Client{Timeout: *timeout}
	resp, err := c.Get(*url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("get %s: %s", *url, resp.Status)
	}
	if _, err := io.Copy(os.Stdout, resp.Body); err != nil {
		return fmt.Errorf("get %s: %w", *url, err)
	}
	return nil
}
