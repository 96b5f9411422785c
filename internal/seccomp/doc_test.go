package seccomp

import (
	"go/parser"
	"go/token"
	"strings"
	"testing"
)

// TestPackageDoc enforces the style guide's rule that every package has a
// doc comment, and that it keeps the design notes.
func TestPackageDoc(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "doc.go", nil, parser.PackageClauseOnly|parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	if f.Doc == nil {
		t.Fatal("package seccomp has no doc comment")
	}
	doc := f.Doc.Text()
	for _, topic := range []string{"KILL_PROCESS", "x32", "MSG_FASTOPEN", "WAIT_KILLABLE_RECV", "POLLHUP",
		"PIDFD_THREAD", "ID_VALID", "connect to the agent before", "SCM_RIGHTS", "ENOSYS"} {
		if !strings.Contains(doc, topic) {
			t.Errorf("package doc does not explain %q", topic)
		}
	}
}
