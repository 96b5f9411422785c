package main

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/slimnet/slim/internal/api"
	"github.com/spf13/cobra"
)

func newStatusCmd(g *globals) *cobra.Command {
	var ready bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the local slimd's status",
		Long: `Show the local slimd's status. With --ready, print nothing and exit 0 if
slimd can attach containers (it answers and has synced its store: what
slim-cni's STATUS checks), 3 if not: a readiness probe.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := api.NewClient(g.socket).Status(cmd.Context())
			if ready {
				switch {
				case err != nil:
					return &exitError{code: exitProblem, err: err}
				case !st.StoreSynced:
					return &exitError{code: exitProblem, err: errors.New("not ready: slimd has not synced its store yet")}
				}
				return nil
			}
			if err != nil {
				return err
			}
			return printOut(g, st, func(w io.Writer) {
				fmt.Fprintf(w, "host:\t%s\n", st.Host.Name)
				fmt.Fprintf(w, "version:\t%s\n", st.Version)
				fmt.Fprintf(w, "underlay:\t%s\n", st.Host.UnderlayIP)
				fmt.Fprintf(w, "subnets:\t%s %s\n", st.Host.Subnet4, orDash(st.Host.Subnet6.String()))
				fmt.Fprintf(w, "vxlan:\t%s vni %d port %d mtu %d vtep %s\n", st.VXLANDevice, st.VNI, st.VXLANPort, st.Host.MTU, st.Host.VTEPMAC)
				etcd := strings.Join(st.EtcdEndpoints, ",")
				if st.EmbeddedEtcd {
					etcd += " (embedded)"
				}
				fmt.Fprintf(w, "etcd:\t%s\n", etcd)
				fmt.Fprintf(w, "store synced:\t%t\n", st.StoreSynced)
				fmt.Fprintf(w, "store contact:\t%s\n", storeContact(st, time.Now()))
				fmt.Fprintf(w, "hosts:\t%d known, %d peers programmed\n", st.KnownHosts, st.Peers)
				fmt.Fprintf(w, "started:\t%s (%s ago)\n", st.Host.Started.Format(time.RFC3339), time.Since(st.Host.Started).Truncate(time.Second))
			})
		},
	}
	cmd.Flags().BoolVar(&ready, "ready", false, "exit 0 if slimd can attach containers, 3 if not (a readiness probe)")
	return cmd
}

// storeContact says when the store last answered, and whether that is
// late: keepalives come every third of the lease TTL.
func storeContact(st api.Status, now time.Time) string {
	if st.StoreContact.IsZero() {
		return "never"
	}
	ago := now.Sub(st.StoreContact).Truncate(time.Second)
	if st.LeaseTTL > 0 && ago > time.Duration(st.LeaseTTL)*time.Second*2/3 {
		return fmt.Sprintf("%s ago: UNREACHABLE (keepalives every %ds)", ago, max(1, st.LeaseTTL/3))
	}
	return fmt.Sprintf("%s ago", ago)
}

func newHostsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "hosts",
		Short: "List the cluster's hosts",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			hosts, err := api.NewClient(g.socket).Hosts(cmd.Context())
			if err != nil {
				return err
			}
			return printOut(g, hosts, func(w io.Writer) {
				fmt.Fprintln(w, "NAME\tUNDERLAY\tSUBNET4\tSUBNET6\tVTEP MAC\tMTU\tSTARTED")
				for _, h := range hosts {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", h.Name, h.UnderlayIP, h.Subnet4,
						orDash(h.Subnet6.String()), h.VTEPMAC, h.MTU, h.Started.Format(time.RFC3339))
				}
			})
		},
	}
}

func newEndpointsCmd(g *globals) *cobra.Command {
	var host string
	cmd := &cobra.Command{
		Use:   "endpoints",
		Short: "List container endpoints",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			eps, err := api.NewClient(g.socket).Endpoints(cmd.Context(), host)
			if err != nil {
				return err
			}
			return printOut(g, eps, func(w io.Writer) {
				fmt.Fprintln(w, "HOST\tCONTAINER\tIF\tIPV4\tIPV6\tLABELS\tCREATED")
				for _, e := range eps {
					var labels []string
					for _, k := range slices.Sorted(maps.Keys(e.Labels)) {
						labels = append(labels, k+"="+e.Labels[k])
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Host, shortID(e.ContainerID), e.IfName, e.IPv4,
						orDash(e.IPv6.String()), orDash(strings.Join(labels, ",")), e.Created.Format(time.RFC3339))
				}
			})
		},
	}
	cmd.Flags().StringVar(&host, "host", "", "only endpoints of this host")
	return cmd
}

// shortID shortens long hex container IDs the way runtimes print them.
func shortID(id string) string {
	if len(id) == 64 {
		return id[:12]
	}
	return id
}
