package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/policy"
)

func newPolicyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Manage network policies (Kubernetes NetworkPolicy)",
		Long: `Network policies are Kubernetes NetworkPolicy objects (networking.k8s.io/v1),
kept in the store and enforced by every slimd. An endpoint's namespace is
its io.kubernetes.pod.namespace label (default "default"); its other
labels are what pod selectors match. A connect that policy denies fails
at once with ECONNREFUSED.`,
	}
	cmd.AddCommand(newPolicyApplyCmd(g), newPolicyLsCmd(g), newPolicyRmCmd(g), newPolicyExplainCmd(g))
	return cmd
}

func newPolicyApplyCmd(g *globals) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Create or replace policies from YAML or JSON (one object, several, or a List)",
		Long: `Create or replace the NetworkPolicy objects in FILE ("-": standard input):
YAML or JSON, one object, a multi-document YAML stream, a List or a
NetworkPolicyList. Every object is checked first; one invalid object
changes nothing. Returns once the local slimd enforces them.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			data, err := readFileArg(file)
			if err != nil {
				return err
			}
			ps, err := policy.Parse(data)
			if err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			if err := api.NewClient(g.socket).ApplyPolicies(cmd.Context(), ps); err != nil {
				return err
			}
			for _, p := range ps {
				fmt.Fprintf(g.stdout, "networkpolicy %s/%s applied\n", p.Namespace, p.Name)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", `file to read ("-": standard input)`)
	cmd.MarkFlagRequired("filename")
	return cmd
}

// readFileArg reads a file, or standard input for "-".
func readFileArg(name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(io.LimitReader(os.Stdin, 4<<20))
	}
	return os.ReadFile(name)
}

func newPolicyLsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "ls",
		Short: "List the network policies",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ps, err := api.NewClient(g.socket).Policies(cmd.Context())
			if err != nil {
				return err
			}
			return printOut(g, ps, func(w io.Writer) {
				fmt.Fprintln(w, "NAMESPACE\tNAME\tPOD SELECTOR\tTYPES\tINGRESS RULES\tEGRESS RULES")
				for _, p := range ps {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%d\n", p.Namespace, p.Name, orDash(policy.SelectorString(&p.Spec.PodSelector)),
						policyTypes(p), len(p.Spec.Ingress), len(p.Spec.Egress))
				}
			})
		},
	}
}

// policyTypes names the directions a policy isolates.
func policyTypes(p networkingv1.NetworkPolicy) string {
	var ts []string
	for _, t := range policy.Types(&p) {
		ts = append(ts, string(t))
	}
	return strings.Join(ts, ",")
}

func newPolicyRmCmd(g *globals) *cobra.Command {
	return newRmCmd(g, "Remove network policies", "networkpolicy", (*api.Client).DeletePolicy)
}

// newRmCmd is `rm NAMESPACE/NAME...` for namespaced objects that del
// removes; kind names them in the output.
func newRmCmd(g *globals, short, kind string, del func(c *api.Client, ctx context.Context, namespace, name string) error) *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAMESPACE/NAME...",
		Short: short,
		Args:  usageArgs(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := api.NewClient(g.socket)
			for _, a := range args {
				ns, name, ok := strings.Cut(a, "/")
				if !ok || ns == "" || name == "" {
					return &usageError{fmt.Errorf("%q: want NAMESPACE/NAME", a)}
				}
				if err := del(c, cmd.Context(), ns, name); err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "%s %s removed\n", kind, a)
			}
			return nil
		},
	}
}

func newPolicyExplainCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "explain SRC DST PORT[/PROTO]",
		Short: "Say whether policy allows a connection, and which rules decide",
		Long: `Say whether network policy allows a connection from address SRC to address
DST at PORT (protocol TCP unless /UDP or /SCTP is given), and name the
policies that isolate each side and the rules that allow it. Exit code 0
when allowed, 1 when denied.`,
		Args: usageArgs(cobra.ExactArgs(3)),
		RunE: func(cmd *cobra.Command, args []string) error {
			src, err1 := netip.ParseAddr(args[0])
			dst, err2 := netip.ParseAddr(args[1])
			num, proto, _ := strings.Cut(args[2], "/")
			port, err3 := strconv.ParseUint(num, 10, 16)
			if err1 != nil || err2 != nil || err3 != nil || port == 0 {
				return &usageError{fmt.Errorf("want SRC and DST addresses and PORT[/PROTO], got %q", strings.Join(args, " "))}
			}
			ex, err := api.NewClient(g.socket).ExplainPolicy(cmd.Context(), src, dst, uint16(port), strings.ToUpper(cmp.Or(proto, "TCP")))
			if err != nil {
				return err
			}
			if err := printOut(g, ex, func(w io.Writer) { fmt.Fprint(w, ex.Explanation) }); err != nil {
				return err
			}
			if !ex.Allowed {
				return &exitError{code: exitFailed} // denied: the explanation says why
			}
			return nil
		},
	}
}
