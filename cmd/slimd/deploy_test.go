package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/slimnet/slim/internal/kube"
	"github.com/slimnet/slim/internal/manifest"
	"github.com/slimnet/slim/internal/seccomp"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// deployment is deploy/kubernetes/slim.yaml, decoded.
type deployment struct {
	ns      *corev1.Namespace
	sa      *corev1.ServiceAccount
	role    *rbacv1.ClusterRole
	binding *rbacv1.ClusterRoleBinding
	config  *corev1.ConfigMap
	ds      *appsv1.DaemonSet
}

// readDeployment decodes every document strictly, as the API server with
// strict field validation would: an unknown or misspelt field fails.
func readDeployment(t *testing.T, path string) deployment {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	docs, err := manifest.Documents(b)
	if err != nil {
		t.Fatal(err)
	}
	var d deployment
	for _, doc := range docs {
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			t.Fatal(err)
		}
		switch tm.APIVersion + "/" + tm.Kind {
		case "v1/Namespace":
			d.ns = strictAs[corev1.Namespace](t, doc)
		case "v1/ServiceAccount":
			d.sa = strictAs[corev1.ServiceAccount](t, doc)
		case "rbac.authorization.k8s.io/v1/ClusterRole":
			d.role = strictAs[rbacv1.ClusterRole](t, doc)
		case "rbac.authorization.k8s.io/v1/ClusterRoleBinding":
			d.binding = strictAs[rbacv1.ClusterRoleBinding](t, doc)
		case "v1/ConfigMap":
			d.config = strictAs[corev1.ConfigMap](t, doc)
		case "apps/v1/DaemonSet":
			d.ds = strictAs[appsv1.DaemonSet](t, doc)
		default:
			t.Fatalf("unexpected object %s %s", tm.APIVersion, tm.Kind)
		}
	}
	if d.ns == nil || d.sa == nil || d.role == nil || d.binding == nil || d.config == nil || d.ds == nil {
		t.Fatalf("objects missing: %+v", d)
	}
	return d
}

// The Kubernetes manifests decode strictly and hold together: one image
// everywhere, the profile in the ConfigMap is the generated one, slimd's
// flags parse and every path they name is mounted, the init container
// installs into the kubelet's and the runtime's directories, and slimd
// gets exactly the capabilities the manifest justifies.
func TestManifests(t *testing.T) {
	d := readDeployment(t, "../../deploy/kubernetes/slim.yaml")
	ns := d.ns.Name
	if d.ns.Labels["pod-security.kubernetes.io/enforce"] != "privileged" {
		t.Errorf("namespace %s is not labelled for privileged pods", ns)
	}
	for _, m := range []metav1.ObjectMeta{d.sa.ObjectMeta, d.config.ObjectMeta, d.ds.ObjectMeta} {
		if m.Namespace != ns {
			t.Errorf("%s is in namespace %q, not %s", m.Name, m.Namespace, ns)
		}
	}
	pod := d.ds.Spec.Template.Spec
	if !pod.HostNetwork || !pod.HostPID || pod.PriorityClassName != "system-node-critical" {
		t.Errorf("pod: hostNetwork %v hostPID %v priority %q", pod.HostNetwork, pod.HostPID, pod.PriorityClassName)
	}
	if !slices.ContainsFunc(pod.Tolerations, func(t corev1.Toleration) bool {
		return t.Key == "" && t.Operator == corev1.TolerationOpExists && t.Effect == ""
	}) {
		t.Errorf("tolerations %v: want tolerate-all", pod.Tolerations)
	}
	if pod.ServiceAccountName != d.sa.Name || d.binding.RoleRef.Name != d.role.Name ||
		!slices.ContainsFunc(d.binding.Subjects, func(s rbacv1.Subject) bool {
			return s.Kind == "ServiceAccount" && s.Name == d.sa.Name && s.Namespace == ns
		}) {
		t.Errorf("RBAC does not bind the pod's service account %q to %q", pod.ServiceAccountName, d.role.Name)
	}
	// The role grants what the Kubernetes syncer watches.
	for _, w := range kube.Watched {
		for _, verb := range []string{"get", "list", "watch"} {
			if !slices.ContainsFunc(d.role.Rules, func(r rbacv1.PolicyRule) bool {
				return slices.Contains(r.APIGroups, w.Group) && slices.Contains(r.Resources, w.Resource) && slices.Contains(r.Verbs, verb)
			}) {
				t.Errorf("ClusterRole %s does not grant %s on %s (group %q)", d.role.Name, verb, w.Resource, w.Group)
			}
		}
	}
	if sel := d.ds.Spec.Selector.MatchLabels; len(sel) == 0 || !mapSubset(sel, d.ds.Spec.Template.Labels) {
		t.Errorf("selector %v does not select the template's labels %v", sel, d.ds.Spec.Template.Labels)
	}

	// One image, with a release tag.
	all := append(slices.Clone(pod.InitContainers), pod.Containers...)
	image := all[0].Image
	if i := strings.LastIndex(image, ":"); i < 0 || image[i+1:] == "latest" || strings.Contains(image[i+1:], "/") {
		t.Errorf("image %q: want a release tag", image)
	}
	for _, c := range all {
		if c.Image != image {
			t.Errorf("container %s runs %s, not %s", c.Name, c.Image, image)
		}
	}

	// slimd's flags, with the pod's variables as the kubelet expands them.
	slimd := container(t, pod.Containers, "slimd")
	env := map[string]string{}
	for _, e := range slimd.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil:
			env[e.Name] = "node-1"
		case e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			v, ok := d.config.Data[ref.Key]
			if ref.Name != d.config.Name || !ok {
				t.Errorf("env %s: no key %s in ConfigMap %s", e.Name, ref.Key, ref.Name)
			}
			env[e.Name] = v
		}
	}
	var args []string
	for _, a := range slimd.Args {
		for k, v := range env {
			a = strings.ReplaceAll(a, "$("+k+")", v)
		}
		if strings.Contains(a, "$(") {
			t.Errorf("arg %q names an undefined variable", a)
		}
		args = append(args, a)
	}
	if len(slimd.Command) != 1 || filepath.Base(slimd.Command[0]) != "slimd" {
		t.Errorf("slimd's command %v", slimd.Command)
	}
	cfg, err := config(args)
	if err != nil {
		t.Fatalf("slimd rejects the DaemonSet's flags: %v", err)
	}
	if cfg.NodeName != "node-1" || len(cfg.EtcdEndpoints) == 0 || cfg.EtcdTLS.CertFile == "" || cfg.MetricsAddr == "" || !cfg.Kubernetes {
		t.Errorf("slimd config: node %q etcd %v tls %+v metrics %q kubernetes %v", cfg.NodeName, cfg.EtcdEndpoints, cfg.EtcdTLS, cfg.MetricsAddr, cfg.Kubernetes)
	}
	limit := slimd.Resources.Limits[corev1.ResourceMemory]
	if cfg.MemoryLimit <= 0 || cfg.MemoryLimit >= limit.Value() {
		t.Errorf("--memory-limit %d must be set below the container's limit %s", cfg.MemoryLimit, limit.String())
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	// mountOf is the mount of c that holds path, and its host path.
	mountOf := func(c corev1.Container, path string) (corev1.VolumeMount, string) {
		var best corev1.VolumeMount
		for _, m := range c.VolumeMounts {
			if (path == m.MountPath || strings.HasPrefix(path, m.MountPath+"/")) && len(m.MountPath) > len(best.MountPath) {
				best = m
			}
		}
		if best.Name == "" {
			t.Errorf("container %s: %s is on no volume", c.Name, path)
			return best, ""
		}
		v, ok := volumes[best.Name]
		if !ok {
			t.Errorf("container %s mounts an undefined volume %s", c.Name, best.Name)
			return best, ""
		}
		if v.HostPath != nil {
			rel, _ := filepath.Rel(best.MountPath, path)
			return best, filepath.Join(v.HostPath.Path, rel)
		}
		return best, ""
	}
	// What slimd shares with the host must be the host's own paths:
	// slim-cni, the runtime and the kubelet find them there.
	for what, p := range map[string]string{
		"--socket": cfg.Socket, "--agent-socket": cfg.AgentSocket, "--data-dir": cfg.DataDir,
		"--bpf-pin-dir": cfg.BPFPinDir,
	} {
		m, host := mountOf(*slimd, p)
		if host != p || m.ReadOnly {
			t.Errorf("%s %s: on the host at %q (read-only %v), want the same path, writable", what, p, host, m.ReadOnly)
		}
	}
	for _, p := range []string{cfg.EtcdTLS.TrustedCAFile, cfg.EtcdTLS.CertFile, cfg.EtcdTLS.KeyFile} {
		m, _ := mountOf(*slimd, p)
		if v := volumes[m.Name]; v.Secret == nil || v.Secret.SecretName == "" {
			t.Errorf("%s is not from a Secret", p)
		}
	}
	for _, p := range []string{"/sys/fs/cgroup", "/var/run/netns", "/sys/fs/bpf"} {
		if _, host := mountOf(*slimd, p); host != p {
			t.Errorf("slimd needs the host's %s, has %q", p, host)
		}
	}
	// The keeper must leave the pod's cgroup, or a rolling update kills
	// it with slimd; moving it writes to the host's hierarchy.
	if m, _ := mountOf(*slimd, "/sys/fs/cgroup"); cfg.KeeperCgroup == "" || m.ReadOnly {
		t.Errorf("--keeper-cgroup %q with /sys/fs/cgroup read-only %v: want a keeper cgroup, and the hierarchy writable", cfg.KeeperCgroup, m.ReadOnly)
	}
	if !pod.HostPID {
		t.Error("no hostPID: slimd reads trapped processes and moves its keeper from the host's cgroup namespace")
	}
	sc := slimd.SecurityContext
	if sc == nil || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Fatalf("slimd's capabilities: want drop ALL, then only what it needs")
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("slimd runs privileged")
	}
	caps := slices.Sorted(slices.Values(sc.Capabilities.Add))
	if want := []corev1.Capability{"BPF", "NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE"}; !slices.Equal(caps, want) {
		t.Errorf("capabilities %v, want %v (each justified in the manifest and docs/kubernetes.md)", caps, want)
	}
	if p := slimd.ReadinessProbe; p == nil || p.Exec == nil || !slices.Contains(p.Exec.Command, "--ready") {
		t.Error("readiness is not slimctl status --ready")
	}
	if slimd.LivenessProbe == nil {
		t.Error("no liveness probe")
	}

	// The init container installs the ConfigMap's files where the runtime
	// and the kubelet read them, with the agent socket slimd listens on.
	install := container(t, pod.InitContainers, "install")
	flags := map[string]string{}
	for _, a := range install.Command[2:] {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			t.Fatalf("install-node argument %q: want --flag=value", a)
		}
		flags[k] = v
	}
	if filepath.Base(install.Command[0]) != "slimctl" || install.Command[1] != "install-node" {
		t.Errorf("install command %v", install.Command)
	}
	if flags["--agent-socket"] != cfg.AgentSocket {
		t.Errorf("the profile's agent socket %q is not slimd's %q", flags["--agent-socket"], cfg.AgentSocket)
	}
	for flag, host := range map[string]string{
		"--cni-bin-dir": "/opt/cni/bin", "--cni-conf-dir": "/etc/cni/net.d", "--seccomp-dir": "/var/lib/kubelet/seccomp/slim",
	} {
		if _, h := mountOf(*install, flags[flag]); h != host {
			t.Errorf("%s %s is %q on the host, want %s", flag, flags[flag], h, host)
		}
	}
	profile, err := seccomp.Profile(cfg.AgentSocket)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.MarshalIndent(profile, "", "  ")
	key := filepath.Base(flags["--seccomp-profile"])
	if key != seccomp.ProfileName() || strings.TrimSpace(d.config.Data[key]) != string(want) {
		t.Errorf("ConfigMap key %s is not the generated profile %s (slimctl seccomp-profile prints it)", key, seccomp.ProfileName())
	}
	conf := d.config.Data[filepath.Base(flags["--conflist"])]
	list, err := libcni.ConfListFromBytes([]byte(conf))
	if err != nil {
		t.Fatalf("conflist: %v", err)
	}
	// containerd 1.6 reads cniVersion (at most 1.0.0); a current libcni
	// takes the highest of cniVersions.
	if !strings.Contains(conf, `"cniVersion": "1.0.0"`) || list.CNIVersion != "1.1.0" {
		t.Errorf("conflist: cniVersion 1.0.0 for old runtimes, and libcni chose %s (want 1.1.0 from cniVersions)", list.CNIVersion)
	}
	var plugin struct {
		Type   string `json:"type"`
		Socket string `json:"socket"`
	}
	if err := json.Unmarshal(list.Plugins[0].Bytes, &plugin); err != nil || plugin.Type != "slim-cni" || plugin.Socket != cfg.Socket {
		t.Errorf("conflist's first plugin %+v (%v): want slim-cni on slimd's socket %s", plugin, err, cfg.Socket)
	}
	for _, c := range all {
		for _, m := range c.VolumeMounts {
			if v, ok := volumes[m.Name]; ok && v.ConfigMap != nil && v.ConfigMap.Name != d.config.Name {
				t.Errorf("volume %s names ConfigMap %s", m.Name, v.ConfigMap.Name)
			}
		}
	}
}

// The opt-in policy decodes strictly, is bound, and gives pods this
// version's profile.
func TestOptInPolicy(t *testing.T) {
	b, err := os.ReadFile("../../deploy/kubernetes/opt-in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	docs, err := manifest.Documents(b)
	if err != nil || len(docs) != 2 {
		t.Fatalf("%d documents (%v), want a policy and its binding", len(docs), err)
	}
	pol := strictAs[admissionv1.MutatingAdmissionPolicy](t, docs[0])
	bind := strictAs[admissionv1.MutatingAdmissionPolicyBinding](t, docs[1])
	if pol.Kind != "MutatingAdmissionPolicy" || bind.Kind != "MutatingAdmissionPolicyBinding" {
		t.Fatalf("kinds %s, %s", pol.Kind, bind.Kind)
	}
	if bind.Spec.PolicyName != pol.Name || bind.Spec.MatchResources == nil || bind.Spec.MatchResources.NamespaceSelector == nil {
		t.Errorf("binding %+v does not bind %s to selected namespaces", bind.Spec, pol.Name)
	}
	if len(pol.Spec.Mutations) != 1 || pol.Spec.Mutations[0].ApplyConfiguration == nil ||
		!strings.Contains(pol.Spec.Mutations[0].ApplyConfiguration.Expression, `localhostProfile: "slim/`+seccomp.ProfileName()+`"`) {
		t.Errorf("the policy does not set localhostProfile slim/%s", seccomp.ProfileName())
	}
}

// strictAs decodes one document as a T, strictly.
func strictAs[T any](t *testing.T, doc []byte) *T {
	t.Helper()
	var v T
	if err := yaml.UnmarshalStrict(doc, &v); err != nil {
		t.Fatalf("%T: %v", v, err)
	}
	return &v
}

func container(t *testing.T, cs []corev1.Container, name string) *corev1.Container {
	t.Helper()
	for i := range cs {
		if cs[i].Name == name {
			return &cs[i]
		}
	}
	t.Fatalf("no container %s", name)
	return nil
}

func mapSubset(sub, m map[string]string) bool {
	for k, v := range sub {
		if m[k] != v {
			return false
		}
	}
	return true
}
