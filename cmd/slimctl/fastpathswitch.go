package main

import (
	"fmt"
	"io"

	"github.com/slimnet/slim/internal/api"
	"github.com/spf13/cobra"
)

func newFastPathCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "fastpath [on|off]",
		Short: "Show or set the cluster-wide fast-path switch",
		Long: `Without an argument, show whether the fast path is on (cluster-wide) and
active on this host. With on or off, set the cluster-wide switch: off sends
every new connection over the overlay; connections already on the fast
path keep going.`,
		Args:      usageArgs(cobra.MaximumNArgs(1)),
		ValidArgs: []string{"on", "off"},
		RunE: func(cmd *cobra.Command, args []string) error {
			c := api.NewClient(g.socket)
			var st api.FastPathStatus
			var err error
			switch {
			case len(args) == 0:
				st, err = c.FastPath(cmd.Context())
			case args[0] == "on" || args[0] == "off":
				st, err = c.SetFastPath(cmd.Context(), args[0] == "on")
			default:
				return &usageError{fmt.Errorf("fastpath: want on or off, not %q", args[0])}
			}
			if err != nil {
				return err
			}
			return printOut(g, st, func(w io.Writer) {
				fmt.Fprintf(w, "cluster switch:\t%s\n", onOff(st.Enabled))
				fmt.Fprintf(w, "active here:\t%s\n", onOff(st.Active))
				fmt.Fprintf(w, "bpf programs:\t%s\n", map[bool]string{true: "loaded", false: "not loaded"}[st.BPF])
				fmt.Fprintf(w, "supervised:\t%d process trees\n", st.Sessions)
			})
		},
	}
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}
