package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/slimnet/slim/internal/api"
	"github.com/spf13/cobra"
)

func newCheckCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "check",
		Short: "Check which Slim protections and components are on here",
		Long: `Ask the local slimd which protections and components work: the store,
the overlay, the BPF address rewrite and guard, the fd keeper, the
journal, the reserved port range and the DNAT table.

Exits 3 if a check found a problem; degraded but safe modes (for example
no BPF LSM) are reported without failing.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			checks, err := api.NewClient(g.socket).Check(cmd.Context())
			if err != nil {
				return err
			}
			problems := 0
			for _, c := range checks {
				if c.Problem {
					problems++
				}
			}
			err = printOut(g, checks, func(w io.Writer) {
				fmt.Fprintln(w, "CHECK\tRESULT\tDETAIL")
				for _, c := range checks {
					res := "ok"
					switch {
					case c.Problem:
						res = "PROBLEM"
					case !c.OK:
						res = "off"
					}
					fmt.Fprintf(w, "%s\t%s\t%s\n", c.Name, res, c.Detail)
				}
			})
			if err != nil {
				return err
			}
			if problems > 0 {
				return &exitError{code: exitProblem, err: errors.New(fmt.Sprint(problems, " check(s) found a problem"))}
			}
			return nil
		},
	}
}
