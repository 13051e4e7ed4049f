package config

import (
	"go/build"
	"os"
	"strings"
	"testing"
)

// TestImportsNothingOfTheProject holds config to the bottom of the dependency graph: every package of the
// project imports it, so a project import here would be a cycle waiting to happen, or, as reload metrics
// once did, a side effect (registering collectors) in every program that only wants the schema.
func TestImportsNothingOfTheProject(t *testing.T) {
	goMod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	firstLine, _, _ := strings.Cut(string(goMod), "\n")
	module, ok := strings.CutPrefix(strings.TrimSpace(firstLine), "module ")
	if !ok {
		t.Fatalf("go.mod does not start with its module path: %q", firstLine)
	}
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range pkg.Imports {
		if path == module || strings.HasPrefix(path, module+"/") {
			t.Errorf("config imports %s", path)
		}
	}
}
