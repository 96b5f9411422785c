package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/service"
)

func newServiceCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "service",
		Short: "Manage services (Kubernetes Service, type ClusterIP)",
		Long: `Services are Kubernetes Service objects (v1, type ClusterIP) kept in the
store: a virtual IP (allocated from slimd's --service-cidr, or asked for in
spec.clusterIP) with ports, spread over the endpoints its selector
matches. A TCP connect to a service's IP and port from a container on the
fast path goes straight to one backend's host listener, picked at random
among those that listen; the application sees the service IP, the backend
the client's own. A service without a backend refuses connects at once.`,
	}
	cmd.AddCommand(newServiceApplyCmd(g), newServiceLsCmd(g), newServiceRmCmd(g))
	return cmd
}

func newServiceApplyCmd(g *globals) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Create or replace services from YAML or JSON (one object, several, or a List)",
		Long: `Create or replace the Service objects in FILE ("-": standard input): YAML
or JSON, one object, a multi-document YAML stream, a List or a
ServiceList. Every object is checked first (only type ClusterIP with a
selector and TCP or UDP ports; a cluster IP inside the service CIDR); an
invalid one changes nothing. Prints each service's cluster IP.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			data, err := readFileArg(file)
			if err != nil {
				return err
			}
			svcs, err := service.Parse(data)
			if err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			out, err := api.NewClient(g.socket).ApplyServices(cmd.Context(), svcs)
			if err != nil {
				return err
			}
			for _, s := range out.Services {
				fmt.Fprintf(g.stdout, "service %s/%s applied, cluster IP %s\n", s.Namespace, s.Name, s.Spec.ClusterIP)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", `file to read ("-": standard input)`)
	cmd.MarkFlagRequired("filename")
	return cmd
}

func newServiceLsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "ls",
		Short: "List the services: cluster IP, ports, backends (those listening on the fast path / all)",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ss, err := api.NewClient(g.socket).Services(cmd.Context())
			if err != nil {
				return err
			}
			return printOut(g, ss, func(w io.Writer) {
				fmt.Fprintln(w, "NAMESPACE\tNAME\tCLUSTER IP\tPORTS\tBACKENDS")
				for _, s := range ss {
					var ports, backends []string
					for _, p := range s.Ports {
						ports = append(ports, fmt.Sprintf("%d/%s->%s", p.Port, p.Protocol, p.TargetPort))
						backends = append(backends, fmt.Sprintf("%d/%d", p.Listening, p.Backends))
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", s.Namespace, s.Name, s.ClusterIP, strings.Join(ports, ","), strings.Join(backends, ","))
				}
			})
		},
	}
}

func newServiceRmCmd(g *globals) *cobra.Command {
	return newRmCmd(g, "Remove services (their cluster IPs are freed)", "service", (*api.Client).DeleteService)
}
