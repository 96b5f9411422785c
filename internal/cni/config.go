package cni

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/utils"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/slimnet/slim/internal/api"
)

// PluginType is the network configuration "type" slim-cni answers to.
const PluginType = "slim-cni"

// Label keys slim-cni derives from CNI_ARGS, named as container runtimes
// label pods.
const (
	LabelPodName      = api.LabelPodName
	LabelPodNamespace = api.LabelPodNamespace
)

// supportedVersions are the spec versions slim-cni speaks: those of
// types/100, whose Result it returns.
var supportedVersions = []string{"1.0.0", "1.1.0"}

// NetConf is slim-cni's network configuration: the standard plugin fields
// plus Socket.
type NetConf struct {
	types.PluginConf
	// Socket is slimd's API socket; api.DefaultSocket when empty.
	Socket string `json:"socket,omitempty"`
	// Args follows the CNI "args" convention; only args.cni.labels and
	// args.cni.ports are used,
	// anything else in it is ignored as the spec asks.
	Args *Args `json:"args,omitempty"`
	// RuntimeConfig is accepted and ignored: slim-cni declares no
	// capabilities.
	RuntimeConfig json.RawMessage `json:"runtimeConfig,omitempty"`
	// IPMasq is a spec-defined field; slim-cni does no masquerading, so only
	// false is accepted.
	IPMasq bool `json:"ipMasq,omitempty"`
}

// Args is the "args" object of the network configuration.
type Args struct {
	CNI *CNIArgs `json:"cni,omitempty"`
}

// CNIArgs is "args.cni".
type CNIArgs struct {
	Labels Labels `json:"labels,omitempty"`
	// Ports are the container's named ports, for network policies that
	// name ports (Kubernetes takes them from the pod spec; a runtime
	// that knows them passes them here).
	Ports []api.NamedPort `json:"ports,omitempty"`
}

// Labels are endpoint labels. In JSON they are either the CNI convention's
// list of {"key": k, "value": v} objects or a plain object of k: v.
type Labels map[string]string

// UnmarshalJSON accepts both label forms.
func (l *Labels) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '[' {
		var m map[string]string
		if err := json.Unmarshal(b, &m); err != nil {
			return fmt.Errorf("labels: %w", err)
		}
		*l = m
		return nil
	}
	var list []struct {
		Key   string `json:"key"`
		Value string `json:"value"`
	}
	if err := json.Unmarshal(b, &list); err != nil {
		return fmt.Errorf("labels: %w", err)
	}
	m := make(map[string]string, len(list))
	for _, kv := range list {
		if _, dup := m[kv.Key]; dup {
			return fmt.Errorf("label %q given twice", kv.Key)
		}
		m[kv.Key] = kv.Value
	}
	*l = m
	return nil
}

// knownKeys are the top-level configuration keys slim-cni understands. Keys
// starting with "cni.dev/" are the runtime's and are let through, as the spec
// asks.
var knownKeys = map[string]bool{
	"cniVersion":    true,
	"name":          true,
	"type":          true,
	"capabilities":  true,
	"ipam":          true,
	"dns":           true,
	"args":          true,
	"ipMasq":        true,
	"runtimeConfig": true,
	"prevResult":    true,
	"socket":        true,
}

// gcAttachmentsFallback is the key libcni also injects for GC because an
// early spec text named it so (containernetworking/cni#1101).
const gcAttachmentsFallback = "cni.dev/attachments"

// loadConfig parses and validates a network configuration, including a
// prevResult if there is one. Its errors are *types.Error with the code the
// spec gives for the problem.
func loadConfig(data []byte) (*NetConf, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("decode network config: %v", err), "")
	}
	if err := checkKeys(raw); err != nil {
		return nil, err
	}
	conf := &NetConf{}
	if err := json.Unmarshal(data, conf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("decode network config: %v", err), "")
	}
	if _, ok := raw["cni.dev/valid-attachments"]; !ok && raw[gcAttachmentsFallback] != nil {
		if err := json.Unmarshal(raw[gcAttachmentsFallback], &conf.ValidAttachments); err != nil {
			return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("decode %s: %v", gcAttachmentsFallback, err), "")
		}
	}
	if !slices.Contains(supportedVersions, conf.CNIVersion) {
		return nil, types.NewError(types.ErrIncompatibleCNIVersion,
			fmt.Sprintf("cniVersion %q is not supported", conf.CNIVersion),
			"supported: "+strings.Join(supportedVersions, ", "))
	}
	if e := utils.ValidateNetworkName(conf.Name); e != nil {
		return nil, e
	}
	if conf.Type != PluginType {
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("plugin type %q: this is %s", conf.Type, PluginType), "")
	}
	if conf.IPAM.Type != "" {
		return nil, types.NewError(types.ErrUnsupportedField,
			fmt.Sprintf("unsupported field ipam.type=%q: slimd assigns the addresses", conf.IPAM.Type), "")
	}
	if conf.IPMasq {
		return nil, types.NewError(types.ErrUnsupportedField, "unsupported field ipMasq=true: slim-cni does no masquerading", "")
	}
	if conf.Socket == "" {
		conf.Socket = api.DefaultSocket
	}
	if !filepath.IsAbs(conf.Socket) {
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("socket %q: want an absolute path", conf.Socket), "")
	}
	if err := api.ValidatePorts(conf.ports()); err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("args.cni.ports: %v", err), "")
	}
	if err := api.ValidateLabels(conf.labels()); err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("args.cni.labels: %v", err), "")
	}
	if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, err.Error(), "")
	}
	return conf, nil
}

// checkKeys rejects top-level keys slim-cni does not know, so that a typo
// ("sokcet") fails loudly instead of being ignored.
func checkKeys(raw map[string]json.RawMessage) error {
	var unknown []string
	for k, v := range raw {
		if knownKeys[k] || strings.HasPrefix(k, "cni.dev/") {
			continue
		}
		val := string(v)
		if len(val) > 64 {
			val = val[:61] + "..."
		}
		unknown = append(unknown, k+"="+val)
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	return types.NewError(types.ErrUnsupportedField,
		"unsupported field(s) in network config: "+strings.Join(unknown, ", "), "")
}

// ports returns the named ports from args.cni.ports.
func (c *NetConf) ports() []api.NamedPort {
	if c.Args == nil || c.Args.CNI == nil {
		return nil
	}
	return c.Args.CNI.Ports
}

// labels returns the labels from args.cni.labels.
func (c *NetConf) labels() map[string]string {
	if c.Args == nil || c.Args.CNI == nil {
		return nil
	}
	return c.Args.CNI.Labels
}

// podArgs are the CNI_ARGS keys runtimes pass for Kubernetes pods;
// types.LoadArgs matches keys to field names, hence the spelling.
type podArgs struct {
	types.CommonArgs
	K8S_POD_NAMESPACE          types.UnmarshallableString
	K8S_POD_NAME               types.UnmarshallableString
	K8S_POD_INFRA_CONTAINER_ID types.UnmarshallableString
	K8S_POD_UID                types.UnmarshallableString
}

// endpointLabels merges the configuration's labels with the pod identity
// from CNI_ARGS. The pod identity wins: it is the per-container fact, the
// configuration's labels are per network.
func endpointLabels(conf *NetConf, cniArgs string) (map[string]string, error) {
	var pa podArgs
	if err := types.LoadArgs(cniArgs, &pa); err != nil {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_ARGS: %v", err), "")
	}
	pod := map[string]string{}
	if pa.K8S_POD_NAME != "" {
		pod[LabelPodName] = string(pa.K8S_POD_NAME)
	}
	if pa.K8S_POD_NAMESPACE != "" {
		if err := api.ValidateNamespace(string(pa.K8S_POD_NAMESPACE)); err != nil {
			return nil, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_ARGS: K8S_POD_NAMESPACE: %v", err), "")
		}
		pod[LabelPodNamespace] = string(pa.K8S_POD_NAMESPACE)
	}
	if err := api.ValidateLabels(pod); err != nil {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_ARGS: %v", err), "")
	}
	labels := maps.Clone(conf.labels())
	if labels == nil && len(pod) > 0 {
		labels = make(map[string]string, len(pod))
	}
	maps.Copy(labels, pod)
	if err := api.ValidateLabels(labels); err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("labels: %v", err), "")
	}
	return labels, nil
}
