package docs

import (
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// ARCHITECTURE.md's package table names every package of the module, and no other.
func TestArchitecturePackageTable(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("needs the go tool on PATH to list the packages")
	}
	out, err := exec.Command(goTool, "list", "-f", "{{.ImportPath}}", "../../...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const mod = "github.com/epair-cni/epair/"
	var listed []string
	for _, p := range strings.Fields(string(out)) {
		listed = append(listed, strings.TrimPrefix(p, mod))
	}
	b, err := os.ReadFile("../../ARCHITECTURE.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `([a-z0-9_./-]+)` \\|")
	var table []string
	for _, m := range row.FindAllStringSubmatch(string(b), -1) {
		table = append(table, m[1])
	}
	for _, p := range listed {
		if !slices.Contains(table, p) {
			t.Errorf("package %s is not in ARCHITECTURE.md's package table", p)
		}
	}
	for _, p := range table {
		if !slices.Contains(listed, p) {
			t.Errorf("ARCHITECTURE.md's package table names %s, which go list does not know", p)
		}
	}
}
