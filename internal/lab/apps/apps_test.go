package apps

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// nginx itself checks the configuration (nginx -t), with every path under
// a temporary prefix: a typo in the template fails here, not in a lab.
// nginx -t parses and opens its files but binds no socket.
func TestNginxConfigValid(t *testing.T) {
	if _, err := exec.LookPath("nginx"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("nginx not installed, and CI is set (scripts/deps.sh installs nginx-light)")
		}
		t.Skip("nginx not installed")
	}
	for _, master := range []bool{false, true} {
		dir := t.TempDir()
		n := Nginx{Prefix: filepath.Join(dir, "nginx"), Listen: "127.0.0.1:8080", Root: dir, Master: master, Comment: "test"}
		if err := n.Write(); err != nil {
			t.Fatal(err)
		}
		conf := n.Config()
		want := map[bool]string{false: "master_process off;", true: "master_process on;"}[master]
		if !strings.Contains(conf, want) || !strings.Contains(conf, "listen 127.0.0.1:8080;") {
			t.Errorf("config lacks %q or the listen line:\n%s", want, conf)
		}
		cmd := n.Command()
		if cmd[0] != "nginx" {
			t.Fatalf("Command() = %q", cmd)
		}
		out, err := exec.Command(cmd[0], append(cmd[1:], "-t", "-q")...).CombinedOutput()
		if err != nil {
			t.Errorf("nginx -t (master %v): %v\n%s\n%s", master, err, out, conf)
		}
	}
}

func TestAsPostgres(t *testing.T) {
	got := strings.Join(AsPostgres("initdb", "-D", "x"), " ")
	if want := "setpriv --reuid=postgres --regid=postgres --init-groups initdb -D x"; got != want {
		t.Errorf("AsPostgres = %q, want %q", got, want)
	}
}
