package policy

import (
	"errors"
	"strings"
	"testing"
)

const denyAllYAML = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny-all
  namespace: x
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
`

const allowDNSYAML = `# egress to DNS only
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-dns
spec:
  podSelector:
    matchLabels: {app: web}
  egress:
  - to:
    - namespaceSelector:
        matchLabels: {kubernetes.io/metadata.name: kube-system}
      podSelector:
        matchExpressions:
        - {key: k8s-app, operator: In, values: [kube-dns]}
    ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: dns-tcp}
    - {port: 8000, endPort: 8080}
  - to:
    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}
`

const jsonList = `{
  "apiVersion": "v1",
  "kind": "List",
  "items": [
    {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
     "metadata": {"name": "a", "namespace": "y"}, "spec": {"podSelector": {}}},
    {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
     "metadata": {"name": "b"}, "spec": {"podSelector": {"matchLabels": {"pod": "b"}}, "ingress": [{}]}}
  ]
}`

const policyListYAML = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicyList
metadata: {resourceVersion: "42"}
items:
- metadata: {name: a, namespace: z}
  spec: {podSelector: {}}
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: b, namespace: z}
  spec: {podSelector: {}, policyTypes: [Egress]}
`

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string // namespace/name of each policy, in order
	}{
		{"one YAML object", denyAllYAML, []string{"x/deny-all"}},
		{"namespace defaults", allowDNSYAML, []string{"default/allow-dns"}},
		{"multi-document stream", "---\n" + denyAllYAML + "---\n# nothing here\n---\n" + allowDNSYAML + "...\n", []string{"x/deny-all", "default/allow-dns"}},
		{"JSON object", `{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"j","namespace":"x"},"spec":{"podSelector":{}}}`, []string{"x/j"}},
		{"JSON v1 List", jsonList, []string{"y/a", "default/b"}},
		{"NetworkPolicyList", policyListYAML, []string{"z/a", "z/b"}},
		{"YAML v1 List", "apiVersion: v1\nkind: List\nitems:\n- " + strings.ReplaceAll(strings.TrimSpace(denyAllYAML), "\n", "\n  ") + "\n", []string{"x/deny-all"}},
		{"empty", "", nil},
		{"comments only", "# nothing\n---\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps, err := Parse([]byte(tt.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			var got []string
			for i := range ps {
				got = append(got, key(&ps[i]))
				if ps[i].APIVersion != apiVersion || ps[i].Kind != kindPolicy {
					t.Errorf("%s: TypeMeta %+v", key(&ps[i]), ps[i].TypeMeta)
				}
			}
			if strings.Join(got, " ") != strings.Join(tt.want, " ") {
				t.Errorf("got policies %q, want %q", got, tt.want)
			}
		})
	}
}

// TestParseFields checks that the decoded policy carries what the YAML
// says, down to ports and ipBlocks.
func TestParseFields(t *testing.T) {
	ps, err := Parse([]byte(allowDNSYAML))
	if err != nil {
		t.Fatal(err)
	}
	p := ps[0]
	if got := Types(&p); len(got) != 2 {
		t.Errorf("Types = %v, want [Ingress Egress] (egress rules, no policyTypes)", got)
	}
	if got := SelectorString(&p.Spec.PodSelector); got != "app=web" {
		t.Errorf("pod selector %q", got)
	}
	ports := p.Spec.Egress[0].Ports
	if len(ports) != 3 || ports[1].Port.StrVal != "dns-tcp" || *ports[2].EndPort != 8080 || string(*ports[0].Protocol) != "UDP" {
		t.Errorf("ports decoded as %+v", ports)
	}
	if b := p.Spec.Egress[1].To[0].IPBlock; b == nil || b.CIDR != "10.0.0.0/8" || len(b.Except) != 1 {
		t.Errorf("ipBlock decoded as %+v", b)
	}
}

func TestParseErrors(t *testing.T) {
	// policy wraps a spec in a valid NetworkPolicy named x/p.
	policy := func(spec string) string {
		return "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec:\n" + spec
	}
	tests := []struct {
		name string
		in   string
		want []string // substrings of the error, in order
	}{
		{"unknown field", policy("  podSelector: {}\n  ingress:\n  - fromm: []\n"),
			[]string{"x/p", `unknown field "spec.ingress[0].fromm"`}},
		{"field case matters", policy("  PodSelector: {}\n"),
			[]string{"x/p", `unknown field "spec.PodSelector"`}},
		{"unknown metadata field", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, nmespace: x}\nspec: {podSelector: {}}\n",
			[]string{`unknown field "metadata.nmespace"`}},
		{"duplicate field in JSON", `{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"p","name":"q"},"spec":{"podSelector":{}}}`,
			[]string{`duplicate field "metadata.name"`}},
		{"duplicate key in YAML", policy("  podSelector: {}\n  podSelector: {}\n"),
			[]string{`"podSelector" already set`}},
		{"endPort with named port", policy("  podSelector: {}\n  ingress:\n  - ports:\n    - port: 80\n    - {port: http, endPort: 90}\n"),
			[]string{"invalid policy x/p", "spec.ingress[0].ports[1].endPort", "named port"}},
		{"endPort below port", policy("  podSelector: {}\n  egress:\n  - ports:\n    - {port: 80, endPort: 79}\n"),
			[]string{"x/p", "spec.egress[0].ports[0].endPort: Invalid value: 79: must be greater than or equal to port 80"}},
		{"endPort without port", policy("  podSelector: {}\n  egress:\n  - ports:\n    - {endPort: 79}\n"),
			[]string{"spec.egress[0].ports[0].endPort", "without port"}},
		{"endPort too big", policy("  podSelector: {}\n  egress:\n  - ports:\n    - {port: 80, endPort: 65536}\n"),
			[]string{"spec.egress[0].ports[0].endPort: Invalid value: 65536: must be between 1 and 65535"}},
		{"port zero", policy("  podSelector: {}\n  egress:\n  - ports:\n    - {port: 0}\n"),
			[]string{"spec.egress[0].ports[0].port: Invalid value: 0"}},
		{"bad port name", policy("  podSelector: {}\n  egress:\n  - ports:\n    - {port: Not_A_Name}\n"),
			[]string{`spec.egress[0].ports[0].port: Invalid value: "Not_A_Name"`}},
		{"bad protocol", policy("  podSelector: {}\n  ingress:\n  - ports:\n    - {protocol: ICMP}\n"),
			[]string{`spec.ingress[0].ports[0].protocol: Unsupported value: "ICMP"`, `"TCP", "UDP", "SCTP"`}},
		{"bad CIDR", policy("  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/33}\n"),
			[]string{`spec.ingress[0].from[0].ipBlock.cidr: Invalid value: "10.0.0.0/33"`}},
		{"CIDR with octal-looking octet", policy("  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 010.0.0.0/8}\n"),
			[]string{`ipBlock.cidr: Invalid value: "010.0.0.0/8"`}},
		{"missing CIDR", policy("  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {except: [10.0.0.0/8]}\n"),
			[]string{"spec.ingress[0].from[0].ipBlock.cidr: Required value"}},
		{"except outside cidr", policy("  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/16, except: [10.0.1.0/24, 10.1.0.0/24]}\n"),
			[]string{`spec.ingress[0].from[0].ipBlock.except[1]: Invalid value: "10.1.0.0/24": must be strictly inside cidr 10.0.0.0/16`}},
		{"except equal to cidr", policy("  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/16, except: [10.0.0.0/16]}\n"),
			[]string{"ipBlock.except[0]", "strictly inside"}},
		{"except of the other family", policy("  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/8, except: ['fd00::/64']}\n"),
			[]string{"ipBlock.except[0]", "same IP family"}},
		{"ipBlock and podSelector in one peer", policy("  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/8}\n      podSelector: {}\n"),
			[]string{"spec.ingress[0].from[0]: Forbidden: may not specify both ipBlock and another peer"}},
		{"empty peer", policy("  podSelector: {}\n  egress:\n  - to:\n    - {}\n"),
			[]string{"spec.egress[0].to[0]: Required value: must specify a peer"}},
		{"bad selector operator", policy("  podSelector:\n    matchExpressions:\n    - {key: pod, operator: Equals, values: [a]}\n"),
			[]string{"spec.podSelector.matchExpressions[0]", `"Equals" is not a valid label selector operator`}},
		{"In without values", policy("  podSelector: {}\n  ingress:\n  - from:\n    - namespaceSelector:\n        matchExpressions:\n        - {key: a, operator: Exists}\n        - {key: b, operator: In}\n"),
			[]string{"spec.ingress[0].from[0].namespaceSelector.matchExpressions[1].values: Invalid value", "values set can't be empty"}},
		{"bad label key", policy("  podSelector: {}\n  ingress:\n  - from:\n    - podSelector:\n        matchLabels: {'a/b/c': x}\n"),
			[]string{`spec.ingress[0].from[0].podSelector.matchLabels[a/b/c]: Invalid value: "a/b/c"`}},
		{"bad label value", policy("  podSelector:\n    matchLabels: {pod: 'not ok'}\n"),
			[]string{`spec.podSelector.matchLabels[pod]: Invalid value: "not ok"`}},
		{"bad policy type", policy("  podSelector: {}\n  policyTypes: [Ingress, ingress]\n"),
			[]string{`spec.policyTypes[1]: Unsupported value: "ingress"`}},
		{"duplicate policy type", policy("  podSelector: {}\n  policyTypes: [Egress, Egress]\n"),
			[]string{`spec.policyTypes[1]: Duplicate value: "Egress"`}},
		{"bad name", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: Bad_Name, namespace: x}\nspec: {podSelector: {}}\n",
			[]string{`metadata.name: Invalid value: "Bad_Name"`}},
		{"missing name", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {namespace: x}\nspec: {podSelector: {}}\n",
			[]string{"metadata.name: Required value"}},
		{"bad namespace", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x.y}\nspec: {podSelector: {}}\n",
			[]string{`metadata.namespace: Invalid value: "x.y"`}},
		{"wrong apiVersion", strings.Replace(denyAllYAML, "networking.k8s.io/v1", "networking.k8s.io/v1beta1", 1),
			[]string{`apiVersion "networking.k8s.io/v1beta1", kind "NetworkPolicy": want apiVersion networking.k8s.io/v1, kind NetworkPolicy`}},
		{"wrong kind", strings.Replace(denyAllYAML, "kind: NetworkPolicy", "kind: Pod", 1),
			[]string{`kind "Pod"`}},
		{"no type at all", "metadata: {name: p}\nspec: {podSelector: {}}\n",
			[]string{`apiVersion "", kind ""`}},
		{"second document", denyAllYAML + "---\n" + strings.Replace(denyAllYAML, "Egress]", "Egres]", 1),
			[]string{"document 2: ", "spec.policyTypes[1]"}},
		{"list item of the wrong kind", strings.Replace(jsonList, `"kind": "NetworkPolicy",
     "metadata": {"name": "b"}`, `"kind": "Service",
     "metadata": {"name": "b"}`, 1),
			[]string{"items[1]: ", `kind "Service"`}},
		{"invalid list item", strings.Replace(policyListYAML, "[Egress]", "[Egress, Both]", 1),
			[]string{"items[1]: ", "invalid policy z/b", "spec.policyTypes[1]"}},
		{"unknown field in a list item", strings.Replace(policyListYAML, "metadata: {name: a, namespace: z}", "metadata: {name: a, namespace: z}\n  status: {}", 1),
			[]string{`unknown field "items[0].status"`}},
		// YAML 1.1 reads y, yes, on (and n, no, off) as booleans; kubectl
		// and the API server reject them in string fields just the same.
		{"unquoted y", strings.Replace(denyAllYAML, "namespace: x", "namespace: y", 1),
			[]string{"cannot unmarshal bool", "metadata.namespace"}},
		{"not an object", "- a\n- b\n", []string{"not an object"}},
		{"bad YAML", "apiVersion: [\n", []string{"yaml"}},
		{"bad JSON", `{"apiVersion": }`, []string{"invalid character"}},
		{"wrong type of value", policy("  podSelector: {}\n  ingress:\n  - ports:\n    - {port: 80, endPort: eighty}\n"),
			[]string{"endPort"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps, err := Parse([]byte(tt.in))
			if err == nil {
				t.Fatalf("Parse succeeded with %d policies, want an error", len(ps))
			}
			msg := err.Error()
			rest := msg
			for _, w := range tt.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("error %q\nlacks %q (after the earlier parts)", msg, w)
				}
				rest = rest[i+len(w):]
			}
		})
	}
}

// TestParseInvalidErrorType checks that validation failures can be told
// apart with errors.As and carry every field error.
func TestParseInvalidErrorType(t *testing.T) {
	in := strings.Replace(denyAllYAML, "podSelector: {}", "podSelector: {}\n  ingress:\n  - ports:\n    - {protocol: ICMP, port: 0}", 1)
	_, err := Parse([]byte(in))
	var inv *InvalidError
	if !errors.As(err, &inv) {
		t.Fatalf("error %v is not an *InvalidError", err)
	}
	if inv.Policy != "x/deny-all" || len(inv.Errs) != 2 {
		t.Errorf("InvalidError{Policy: %q, Errs: %v}, want x/deny-all and 2 errors", inv.Policy, inv.Errs)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{denyAllYAML, allowDNSYAML, jsonList, policyListYAML, denyAllYAML + "---\n" + allowDNSYAML, ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ps, err := Parse(data)
		if err != nil {
			return
		}
		for i := range ps {
			if err := Validate(&ps[i]); err != nil {
				t.Fatalf("Parse returned a policy Validate rejects: %v", err)
			}
			if ps[i].Namespace == "" {
				t.Fatalf("policy %s has no namespace", ps[i].Name)
			}
		}
		// Duplicate names are the only thing Compile checks beyond Validate.
		seen := map[string]bool{}
		for i := range ps {
			if seen[key(&ps[i])] {
				return
			}
			seen[key(&ps[i])] = true
		}
		if _, err := Compile(ps, nil); err != nil {
			t.Fatalf("Compile of parsed policies: %v", err)
		}
	})
}
