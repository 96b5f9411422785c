package lab

import (
	"encoding/json"
	"maps"

	"github.com/slimnet/slim/internal/api"
)

// Fixed parts of the network configuration the lab hands libcni.
const (
	cniVersion = "1.1.0"
	cniNetwork = "slim"
	cniPlugin  = "slim-cni"
)

// conflist is the CNI network configuration list for a container on the
// host whose slimd listens at socket. Labels travel as the conventional
// args.cni.labels of the plugin's configuration, named ports as
// args.cni.ports.
func conflist(socket string, labels map[string]string, ports []api.NamedPort) ([]byte, error) {
	l := map[string]string{}
	maps.Copy(l, labels)
	type cniArgs struct {
		Labels map[string]string `json:"labels"`
		Ports  []api.NamedPort   `json:"ports,omitempty"`
	}
	type pluginConf struct {
		Type   string `json:"type"`
		Socket string `json:"socket"`
		Args   struct {
			CNI cniArgs `json:"cni"`
		} `json:"args"`
	}
	pc := pluginConf{Type: cniPlugin, Socket: socket}
	pc.Args.CNI.Labels = l
	pc.Args.CNI.Ports = ports
	return json.Marshal(struct {
		CNIVersion string       `json:"cniVersion"`
		Name       string       `json:"name"`
		Plugins    []pluginConf `json:"plugins"`
	}{cniVersion, cniNetwork, []pluginConf{pc}})
}
