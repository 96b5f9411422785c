package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/slimnet/slim/internal/api"
)

func newNamespaceCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "namespace",
		Short: "List namespaces and change their labels (for network policies' namespace selectors)",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "ls",
		Short: "List the namespaces (labelled ones and those endpoints are in)",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			nss, err := api.NewClient(g.socket).Namespaces(cmd.Context())
			if err != nil {
				return err
			}
			return printOut(g, nss, func(w io.Writer) {
				fmt.Fprintln(w, "NAME\tLABELS")
				for _, ns := range nss {
					fmt.Fprintf(w, "%s\t%s\n", ns.Name, labelString(ns.Labels))
				}
			})
		},
	}, &cobra.Command{
		Use:   "label NAMESPACE KEY=VALUE... KEY-...",
		Short: "Set (KEY=VALUE) or remove (KEY-) labels of a namespace",
		Args:  usageArgs(cobra.MinimumNArgs(2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			change, err := parseLabelChange(args[1:])
			if err != nil {
				return &usageError{err}
			}
			ns, err := api.NewClient(g.socket).LabelNamespace(cmd.Context(), args[0], change)
			if err != nil {
				return err
			}
			return printOut(g, ns, func(w io.Writer) { fmt.Fprintf(w, "%s\t%s\n", ns.Name, labelString(ns.Labels)) })
		},
	})
	return cmd
}

// parseLabelChange reads KEY=VALUE (set) and KEY- (remove) arguments, as
// kubectl label takes them.
func parseLabelChange(args []string) (api.NamespaceLabels, error) {
	var c api.NamespaceLabels
	for _, a := range args {
		if k, ok := strings.CutSuffix(a, "-"); ok && !strings.Contains(a, "=") {
			c.Remove = append(c.Remove, k)
			continue
		}
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return c, fmt.Errorf("%q: want KEY=VALUE or KEY-", a)
		}
		if c.Set == nil {
			c.Set = map[string]string{}
		}
		c.Set[k] = v
	}
	if err := api.ValidateLabels(c.Set); err != nil {
		return c, err
	}
	return c, nil
}

// labelString prints labels sorted, k=v,k=v.
func labelString(l map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(l)) {
		parts = append(parts, k+"="+l[k])
	}
	return orDash(strings.Join(parts, ","))
}
