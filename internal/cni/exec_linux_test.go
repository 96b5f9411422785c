package cni

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
)

// execPlugin runs the test binary as slim-cni with env (CNI_*) and stdin,
// in the namespace n (nil: the test's own).
func execPlugin(t *testing.T, n ns.NetNS, env []string, stdin []byte) (stdout, stderr []byte, exitCode int) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append([]string{execPluginEnv + "=1", "PATH=" + os.Getenv("PATH")}, env...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	run := func(ns.NetNS) error {
		// The child is forked from this thread, so it starts in n.
		return cmd.Run()
	}
	var err error
	if n != nil {
		err = n.Do(run)
	} else {
		err = run(nil)
	}
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		exitCode = exitErr.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return out.Bytes(), errOut.Bytes(), exitCode
}

// decodeOnly decodes stdout into v and fails if anything else is there.
func decodeOnly(t *testing.T, stdout []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("stdout %q: %v", stdout, err)
	}
	if rest := bytes.TrimSpace(stdout[dec.InputOffset():]); len(rest) != 0 {
		t.Fatalf("stdout has more than one JSON value: %q", stdout)
	}
}

func TestExecVersion(t *testing.T) {
	out, _, code := execPlugin(t, nil, []string{"CNI_COMMAND=VERSION"}, []byte(`{"cniVersion":"1.1.0"}`))
	if code != 0 {
		t.Fatalf("VERSION exited %d", code)
	}
	var v struct {
		CNIVersion        string   `json:"cniVersion"`
		SupportedVersions []string `json:"supportedVersions"`
	}
	decodeOnly(t, out, &v)
	if v.CNIVersion != "1.1.0" || !slices.Equal(v.SupportedVersions, []string{"1.0.0", "1.1.0"}) {
		t.Fatalf("VERSION answered %+v", v)
	}
}

func TestExecAbout(t *testing.T) {
	out, errOut, code := execPlugin(t, nil, nil, nil)
	if code != 0 || len(out) != 0 || !strings.Contains(string(errOut), "CNI plugin slim-cni test") {
		t.Fatalf("without CNI_COMMAND: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestExecAddDel(t *testing.T) {
	e := newEnv(t, true)
	env := func(cmd string) []string {
		return []string{"CNI_COMMAND=" + cmd, "CNI_CONTAINERID=c1", "CNI_IFNAME=eth0",
			"CNI_NETNS=" + e.cont.Path(), "CNI_PATH=/opt/cni/bin",
			"CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=pod1"}
	}
	out, errOut, code := execPlugin(t, e.host, env("ADD"), e.conf(""))
	if code != 0 {
		t.Fatalf("ADD exited %d: stdout %s, stderr %s", code, out, errOut)
	}
	var res current.Result
	decodeOnly(t, out, &res)
	if res.CNIVersion != "1.1.0" || len(res.Interfaces) != 2 || len(res.IPs) != 2 {
		t.Fatalf("ADD result %s", out)
	}

	prev, err := json.Marshal(&res)
	e.must(err)
	out, errOut, code = execPlugin(t, e.host, env("CHECK"), e.conf(`"prevResult":`+string(prev)))
	if code != 0 || len(out) != 0 {
		t.Fatalf("CHECK exited %d: stdout %q, stderr %s", code, out, errOut)
	}

	out, errOut, code = execPlugin(t, e.host, env("DEL"), e.conf(""))
	if code != 0 || len(out) != 0 {
		t.Fatalf("DEL exited %d: stdout %q, stderr %s", code, out, errOut)
	}
	e.assertClean()

	// A failure: exit 1, the CNI error as the only thing on stdout, the
	// diagnostics on stderr.
	out, errOut, code = execPlugin(t, e.host, env("ADD"), e.conf(`"sokcet":"/x"`))
	if code != 1 {
		t.Fatalf("ADD with a bad config exited %d", code)
	}
	var cniErr types.Error
	decodeOnly(t, out, &cniErr)
	if cniErr.Code != types.ErrUnsupportedField || !strings.Contains(cniErr.Msg, "sokcet") {
		t.Fatalf("error result %+v", cniErr)
	}
	if !strings.Contains(string(errOut), "cni command failed") {
		t.Errorf("stderr %q: want the failure logged", errOut)
	}
	e.assertClean()
}
