// Command testsummary reads `go test -json` on stdin, prints the tests'
// output as `go test` would, and fails (exit 1) if any test failed or was
// skipped: the project's test run has every dependency installed and runs
// as root, so a skip is a test that did not run, and CI must notice it.
//
//	go test -json ./... | go run ./scripts/testsummary
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// event is one line of test2json's output.
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

func main() {
	os.Exit(run(os.Stdin, os.Stdout))
}

func run(in io.Reader, out io.Writer) int {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	w := bufio.NewWriter(out)
	defer w.Flush()
	var skipped, failed []string
	// A test's output is held until it ends: printed if it failed or was
	// skipped (its reason), dropped if it passed, as go test does
	// without -v.
	held := map[string][]string{}
	flush := func(key string) {
		for _, l := range held[key] {
			fmt.Fprint(w, l)
		}
		delete(held, key)
	}
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			// Not an event (a build error printed as is): pass it on.
			fmt.Fprintln(w, sc.Text())
			continue
		}
		key := e.Package + " " + e.Test
		switch e.Action {
		case "output":
			if e.Test == "" {
				fmt.Fprint(w, e.Output)
			} else {
				held[key] = append(held[key], e.Output)
			}
		case "pass":
			delete(held, key)
		case "skip":
			if e.Test != "" {
				skipped = append(skipped, key)
				flush(key)
			}
		case "fail":
			// A package fails without a failed test when its test
			// binary does not build, panics in init or times out.
			failed = append(failed, key)
			flush(key)
		}
		w.Flush()
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintln(w, "testsummary:", err)
		return 1
	}
	// A package that fails because a test failed is not news.
	all := slices.Clone(failed)
	failed = slices.DeleteFunc(failed, func(key string) bool {
		pkg, test, _ := strings.Cut(key, " ")
		return test == "" && slices.ContainsFunc(all, func(k string) bool { return strings.HasPrefix(k, pkg+" ") && k != key })
	})
	for i, key := range failed {
		if pkg, ok := strings.CutSuffix(key, " "); ok {
			failed[i] = pkg + " (the package: build, init, panic or timeout)"
		}
	}
	for _, list := range []struct {
		what  string
		names []string
	}{{"failed", failed}, {"skipped", skipped}} {
		if len(list.names) == 0 {
			continue
		}
		slices.Sort(list.names)
		fmt.Fprintf(w, "\n%d tests %s:\n", len(list.names), list.what)
		for _, n := range list.names {
			fmt.Fprintln(w, "  "+n)
		}
	}
	if len(failed)+len(skipped) > 0 {
		return 1
	}
	fmt.Fprintln(w, "\nno test failed or skipped")
	return 0
}
