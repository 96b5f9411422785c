// Package manifest reads Kubernetes objects of one kind from the YAML or
// JSON a user would give kubectl: one object, a multi-document stream, a
// v1 List or the kind's own list. Decoding is strict, as the API server's
// with strict field validation: field names are case-sensitive, unknown
// and duplicate fields are errors naming their path. slimctl's policy and
// service commands take their files through it.
package manifest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// Kind says how to read objects T, whose list type is L.
type Kind[T, L any] struct {
	APIVersion, Kind, ListKind string
	// Noun names an object in errors ("policy x/web: ...").
	Noun string
	// Items are a list's objects; Meta an object's type.
	Items func(*L) []T
	Meta  func(*T) *metav1.TypeMeta
	// Name is how errors name an object (namespace/name).
	Name func(*T) string
	// Finish defaults and validates a decoded object.
	Finish func(*T) error
}

// Parse reads the objects of data. Every object must be of k (items of a
// ListKind may leave apiVersion and kind out). Errors say which document
// and item they are about and name the object. Empty documents are
// skipped; no objects at all is not an error.
func (k Kind[T, L]) Parse(data []byte) ([]T, error) {
	docs, err := Documents(data)
	if err != nil {
		return nil, err
	}
	var out []T
	for i, doc := range docs {
		objs, err := k.document(doc)
		if err != nil {
			if len(docs) > 1 {
				err = fmt.Errorf("document %d: %w", i+1, err)
			}
			return nil, err
		}
		out = append(out, objs...)
	}
	return out, nil
}

// Documents splits a YAML stream into its documents, as kubectl reads a
// file; errors say which document.
func Documents(data []byte) ([][]byte, error) {
	var docs [][]byte
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", len(docs)+1, err)
		}
		docs = append(docs, doc)
	}
}

// document decodes one YAML or JSON document.
func (k Kind[T, L]) document(doc []byte) ([]T, error) {
	js, err := toJSON(doc)
	if err != nil {
		return nil, err
	}
	js = bytes.TrimSpace(js)
	if len(js) == 0 || string(js) == "null" {
		return nil, nil // only comments, or nothing
	}
	if js[0] != '{' {
		return nil, fmt.Errorf("not an object: want a %s, %s or List", k.Kind, k.ListKind)
	}
	tm, err := typeMeta(js)
	if err != nil {
		return nil, err
	}
	switch {
	case tm.APIVersion == k.APIVersion && tm.Kind == k.Kind:
		o, err := k.decode(js)
		if err != nil {
			return nil, err
		}
		return []T{o}, nil
	case tm.APIVersion == k.APIVersion && tm.Kind == k.ListKind:
		var l L
		if err := strictUnmarshal(js, &l); err != nil {
			return nil, fmt.Errorf("%s: %w", k.ListKind, err)
		}
		items := k.Items(&l)
		for i := range items {
			o := &items[i]
			m := k.Meta(o)
			if (m.APIVersion != "" || m.Kind != "") && (m.APIVersion != k.APIVersion || m.Kind != k.Kind) {
				return nil, fmt.Errorf("items[%d]: %w", i, k.wrongType(*m))
			}
			m.APIVersion, m.Kind = k.APIVersion, k.Kind
			if err := k.Finish(o); err != nil {
				return nil, fmt.Errorf("items[%d]: %w", i, err)
			}
		}
		return items, nil
	case tm.APIVersion == "v1" && tm.Kind == "List":
		var l metav1.List
		if err := strictUnmarshal(js, &l); err != nil {
			return nil, fmt.Errorf("v1 List: %w", err)
		}
		out := make([]T, 0, len(l.Items))
		for i, item := range l.Items {
			o, err := k.decode(item.Raw)
			if err != nil {
				return nil, fmt.Errorf("items[%d]: %w", i, err)
			}
			out = append(out, o)
		}
		return out, nil
	}
	return nil, k.wrongType(tm)
}

// decode decodes one object, checking its type first.
func (k Kind[T, L]) decode(js []byte) (T, error) {
	var o T
	tm, err := typeMeta(js)
	if err != nil {
		return o, err
	}
	if tm.APIVersion != k.APIVersion || tm.Kind != k.Kind {
		return o, k.wrongType(tm)
	}
	if err := strictUnmarshal(js, &o); err != nil {
		return o, fmt.Errorf("%s %s: %w", k.Noun, k.Name(&o), err)
	}
	return o, k.Finish(&o)
}

func (k Kind[T, L]) wrongType(tm metav1.TypeMeta) error {
	return fmt.Errorf("apiVersion %q, kind %q: want apiVersion %s, kind %s (or %s, or a v1 List of them)",
		tm.APIVersion, tm.Kind, k.APIVersion, k.Kind, k.ListKind)
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
