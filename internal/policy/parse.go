package policy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// The only kinds Parse reads.
const (
	apiVersion = "networking.k8s.io/v1"
	kindPolicy = "NetworkPolicy"
	kindList   = "NetworkPolicyList"
)

// Parse reads NetworkPolicy objects from YAML or JSON: one object, a
// multi-document YAML stream ("---"), a v1 List or a NetworkPolicyList.
// Every object must be a networking.k8s.io/v1 NetworkPolicy (items of a
// NetworkPolicyList may leave apiVersion and kind out). Decoding is strict,
// as the API server's: field names are case-sensitive, and unknown or
// duplicate fields are errors naming the field path. A policy without a
// namespace gets DefaultNamespace, then is Validated. Errors say which
// document and item they are about and name the policy. Empty documents
// are skipped; no policies at all is not an error.
func Parse(data []byte) ([]networkingv1.NetworkPolicy, error) {
	var docs [][]byte
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", len(docs)+1, err)
		}
		docs = append(docs, doc)
	}
	var out []networkingv1.NetworkPolicy
	for i, doc := range docs {
		ps, err := parseDocument(doc)
		if err != nil {
			if len(docs) > 1 {
				err = fmt.Errorf("document %d: %w", i+1, err)
			}
			return nil, err
		}
		out = append(out, ps...)
	}
	return out, nil
}

// parseDocument decodes one YAML or JSON document.
func parseDocument(doc []byte) ([]networkingv1.NetworkPolicy, error) {
	js, err := toJSON(doc)
	if err != nil {
		return nil, err
	}
	js = bytes.TrimSpace(js)
	if len(js) == 0 || string(js) == "null" {
		return nil, nil // only comments, or nothing
	}
	if js[0] != '{' {
		return nil, errors.New("not an object: want a NetworkPolicy, NetworkPolicyList or List")
	}
	tm, err := typeMeta(js)
	if err != nil {
		return nil, err
	}
	switch {
	case tm.APIVersion == apiVersion && tm.Kind == kindPolicy:
		p, err := decodePolicy(js)
		if err != nil {
			return nil, err
		}
		return []networkingv1.NetworkPolicy{p}, nil
	case tm.APIVersion == apiVersion && tm.Kind == kindList:
		var l networkingv1.NetworkPolicyList
		if err := strictUnmarshal(js, &l); err != nil {
			return nil, fmt.Errorf("%s: %w", kindList, err)
		}
		for i := range l.Items {
			p := &l.Items[i]
			if (p.APIVersion != "" || p.Kind != "") && (p.APIVersion != apiVersion || p.Kind != kindPolicy) {
				return nil, fmt.Errorf("items[%d]: %w", i, wrongType(p.TypeMeta))
			}
			p.APIVersion, p.Kind = apiVersion, kindPolicy
			if err := finish(p); err != nil {
				return nil, fmt.Errorf("items[%d]: %w", i, err)
			}
		}
		return l.Items, nil
	case tm.APIVersion == "v1" && tm.Kind == "List":
		var l metav1.List
		if err := strictUnmarshal(js, &l); err != nil {
			return nil, fmt.Errorf("v1 List: %w", err)
		}
		out := make([]networkingv1.NetworkPolicy, 0, len(l.Items))
		for i, item := range l.Items {
			p, err := decodePolicy(item.Raw)
			if err != nil {
				return nil, fmt.Errorf("items[%d]: %w", i, err)
			}
			out = append(out, p)
		}
		return out, nil
	}
	return nil, wrongType(tm)
}

// toJSON converts a YAML document to JSON; JSON passes through, so its
// syntax errors read as JSON ones. Duplicate YAML keys are errors.
func toJSON(doc []byte) ([]byte, error) {
	if utilyaml.IsJSONBuffer(doc) {
		return doc, nil
	}
	return yaml.YAMLToJSONStrict(doc)
}

func typeMeta(js []byte) (metav1.TypeMeta, error) {
	var tm metav1.TypeMeta
	if err := kjson.UnmarshalCaseSensitivePreserveInts(js, &tm); err != nil {
		return tm, fmt.Errorf("reading apiVersion and kind: %w", err)
	}
	return tm, nil
}

func wrongType(tm metav1.TypeMeta) error {
	return fmt.Errorf("apiVersion %q, kind %q: want apiVersion %s, kind %s (or %s, or a v1 List of them)",
		tm.APIVersion, tm.Kind, apiVersion, kindPolicy, kindList)
}

// decodePolicy decodes one NetworkPolicy object, checking its type first.
func decodePolicy(js []byte) (networkingv1.NetworkPolicy, error) {
	var p networkingv1.NetworkPolicy
	tm, err := typeMeta(js)
	if err != nil {
		return p, err
	}
	if tm.APIVersion != apiVersion || tm.Kind != kindPolicy {
		return p, wrongType(tm)
	}
	if err := strictUnmarshal(js, &p); err != nil {
		return p, fmt.Errorf("policy %s: %w", key(&p), err)
	}
	return p, finish(&p)
}

// finish defaults the namespace and validates.
func finish(p *networkingv1.NetworkPolicy) error {
	p.Namespace = namespaceOr(p.Namespace)
	return Validate(p)
}

// strictUnmarshal decodes like the API server with strict field
// validation: case-sensitive names; unknown and duplicate fields are
// errors carrying their full path (spec.ingress[0].fromm).
func strictUnmarshal(js []byte, v any) error {
	strict, err := kjson.UnmarshalStrict(js, v)
	if err != nil {
		return err
	}
	if len(strict) == 0 {
		return nil
	}
	msgs := make([]string, len(strict))
	for i, e := range strict {
		msgs[i] = e.Error()
	}
	return errors.New(strings.Join(msgs, "; "))
}
