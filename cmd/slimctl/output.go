package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
)

// printOut writes v as JSON, or calls table with a tabwriter.
func printOut(g *globals, v any, table func(w io.Writer)) error {
	switch g.output {
	case "json":
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "table", "":
		tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
		table(tw)
		return tw.Flush()
	}
	return &usageError{fmt.Errorf("unknown output format %q: want table or json", g.output)}
}

// orDash prints "-" for empty cells.
func orDash(s string) string {
	if s == "" || s == "invalid IP" || s == "invalid Prefix" {
		return "-"
	}
	return s
}
