// Repository-wide checks from the style guide: every package has a doc
// comment, and the CLI and the CNI plugin stay free of the daemon's
// kernel-heavy packages.
package slim_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestEveryPackageHasDoc(t *testing.T) {
	dirs := map[string]bool{}
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && ((strings.HasPrefix(d.Name(), ".") && path != ".") || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
			dir := filepath.Dir(path)
			if _, seen := dirs[dir]; !seen {
				dirs[dir] = false
			}
			f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.PackageClauseOnly|parser.ParseComments)
			if err != nil {
				return err
			}
			if f.Doc != nil && strings.TrimSpace(f.Doc.Text()) != "" {
				dirs[dir] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) == 0 {
		t.Fatal("no packages found")
	}
	for dir, ok := range dirs {
		if !ok {
			t.Errorf("package in %s has no doc comment", dir)
		}
	}
}

// slimctl and slim-cni run on every host and in runtimes' hook paths; they
// must not pull in the daemon, etcd or BPF code.
func TestCLIDependencies(t *testing.T) {
	banned := []string{
		"github.com/slimnet/slim/internal/daemon",
		"github.com/slimnet/slim/internal/broker",
		"github.com/slimnet/slim/internal/bpf",
		"go.etcd.io/etcd/server/v3",
	}
	for _, cmd := range []string{"./cmd/slimctl", "./cmd/slim-cni"} {
		out, err := exec.Command("go", "list", "-deps", cmd).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", cmd, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, b := range banned {
				if dep == b || strings.HasPrefix(dep, b+"/") {
					t.Errorf("%s depends on %s", cmd, dep)
				}
			}
		}
	}
}
