package keeper

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
		t.Fatal("package keeper has no doc comment")
	}
	doc := f.Doc.Text()
	for _, topic := range []string{"ENOSYS", "POLLHUP", "SOCK_SEQPACKET", "SCM_RIGHTS", "SIGTERM", "setsid",
		"KillMode", "MAP_SHARED", "fsync", "seal", "ErrJournalBusy", "tmpfs", "epoll"} {
		if !strings.Contains(doc, topic) {
			t.Errorf("package doc does not explain %q", topic)
		}
	}
}
