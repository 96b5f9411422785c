package main

import (
	"fmt"
	"io"
	"time"

	"github.com/slimnet/slim/internal/api"
	"github.com/spf13/cobra"
)

func newConnectionsCmd(g *globals) *cobra.Command {
	var denied bool
	cmd := &cobra.Command{
		Use:   "connections",
		Short: "List this host's fast-path connections",
		Long: `List the TCP connections this host carries on the fast path: the 4-tuple
the applications see (virtual) and the one on the wire (host), the
container, and how long ago the broker swapped the socket in. With
--denied: the latest connects network policy refused on this host (the
fast path's; the overlay's are drops, counted in the packet filter).`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if denied {
				return printDenials(cmd, g)
			}
			conns, err := api.NewClient(g.socket).Connections(cmd.Context())
			if err != nil {
				return err
			}
			return printOut(g, conns, func(w io.Writer) {
				fmt.Fprintln(w, "CONTAINER\tROLE\tVIRTUAL LOCAL\tVIRTUAL REMOTE\tSERVICE\tHOST LOCAL\tHOST REMOTE\tSTATE\tAGE")
				for _, c := range conns {
					age := "-"
					if !c.Since.IsZero() {
						age = time.Since(c.Since).Truncate(time.Second).String()
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", shortID(c.Container), c.Role, c.VirtualLocal,
						orDash(c.VirtualRemote.String()), orDash(c.Service), c.HostLocal, c.HostRemote, c.State, age)
				}
			})
		},
	}
	cmd.Flags().BoolVar(&denied, "denied", false, "list the latest connects network policy denied instead")
	return cmd
}

func printDenials(cmd *cobra.Command, g *globals) error {
	ds, err := api.NewClient(g.socket).Denials(cmd.Context())
	if err != nil {
		return err
	}
	return printOut(g, ds, func(w io.Writer) {
		fmt.Fprintln(w, "AGE\tSOURCE\tDESTINATION\tDENIED BY\tPOLICY")
		for _, d := range ds {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", time.Since(d.Time).Truncate(time.Second), d.Source, d.Destination, d.Direction, orDash(d.Policy))
		}
	})
}
