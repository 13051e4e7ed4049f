package docs

import (
	"fmt"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/pullsecret-injector/pullsecret-injector/test/testenv"
)

// The layers of docs/development.md#architecture, lowest first. A package imports only packages of lower
// layers, and of its own layer but for webhook and certs, which stay apart; nothing but tests imports
// test/, hack/ or a test helper package (a name ending in "test", such as config/configtest).
const (
	layerConfig   = iota // config
	layerInternal        // internal/*
	layerServing         // webhook, certs: each on its own
	layerMain            // the module root and internal/app: flags and wiring
)

// layerOf returns the layer of the package at rel, its directory relative to the module root ("." for the
// root), or exempt when the layering does not bind it: test/, hack/ and test helper packages are above
// every layer. ok is false for a package the layering does not place yet.
func layerOf(rel string) (layer int, exempt, ok bool) {
	switch {
	case rel == "test" || strings.HasPrefix(rel, "test/") || strings.HasPrefix(rel, "hack/"),
		rel != "." && strings.HasSuffix(path.Base(rel), "test"):
		return 0, true, true
	case rel == "config":
		return layerConfig, false, true
	case rel == "." || rel == "internal/app":
		return layerMain, false, true
	case strings.HasPrefix(rel, "internal/"):
		return layerInternal, false, true
	case rel == "webhook", rel == "certs":
		return layerServing, false, true
	}
	return 0, false, false
}

// layerViolations returns, sorted, every import in imports (package directory to the project packages its
// non-test files import, both relative to the module root) that goes against the layering.
func layerViolations(imports map[string][]string) []string {
	var out []string
	for from, tos := range imports {
		fromLayer, fromExempt, ok := layerOf(from)
		if !ok {
			out = append(out, fmt.Sprintf("%s: no layer; place it in layerOf and docs/development.md#architecture", from))
			continue
		}
		if fromExempt {
			continue
		}
		for _, to := range tos {
			toLayer, toExempt, ok := layerOf(to)
			switch {
			case !ok:
				out = append(out, fmt.Sprintf("%s imports %s, which has no layer", from, to))
			case toExempt:
				out = append(out, fmt.Sprintf("%s imports %s, which only tests may import", from, to))
			case toLayer > fromLayer, toLayer == fromLayer && fromLayer == layerServing:
				out = append(out, fmt.Sprintf("%s imports %s, which is not below it", from, to))
			}
		}
	}
	slices.Sort(out)
	return out
}

// projectImports reads the imports of every non-test Go file under root and returns, for each package
// directory, the project packages it imports, both relative to root.
func projectImports(t *testing.T, root string) map[string][]string {
	t.Helper()
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	var module string
	for line := range strings.Lines(string(gomod)) {
		if m, found := strings.CutPrefix(strings.TrimSpace(line), "module "); found {
			module = strings.Trim(strings.TrimSpace(m), `"`)
			break
		}
	}
	if module == "" {
		t.Fatal("go.mod names no module")
	}
	imports := map[string][]string{}
	fset := token.NewFileSet()
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if p != root && (name == "bin" || name == "testdata" || name == "vendor" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, filepath.Dir(p))
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if _, seen := imports[rel]; !seen {
			imports[rel] = nil
		}
		for _, spec := range f.Imports {
			ip, err := strconv.Unquote(spec.Path.Value)
			if err != nil {
				return err
			}
			to, found := strings.CutPrefix(ip, module+"/")
			if ip == module {
				to, found = ".", true
			}
			if found && !slices.Contains(imports[rel], to) {
				imports[rel] = append(imports[rel], to)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return imports
}

// TestLayering holds the source tree to the layering: config below internal/*, internal/* below webhook
// and certs, those below the root's wiring; tests, test/ and hack/ exempt.
func TestLayering(t *testing.T) {
	imports := projectImports(t, testenv.RepoRoot())
	for _, want := range []string{".", "config", "webhook", "internal/managed"} {
		if _, ok := imports[want]; !ok {
			t.Fatalf("package %q not found: the walk over the tree read the wrong files", want)
		}
	}
	if diff := cmp.Diff([]string(nil), layerViolations(imports)); diff != "" {
		t.Errorf("imports against the layering of docs/development.md#architecture (-want +got):\n%s", diff)
	}
}

// TestLayerViolations shows the check finds what it is for: each case is a tree with one import of the
// kind named.
func TestLayerViolations(t *testing.T) {
	tests := []struct {
		name    string
		imports map[string][]string
		want    []string
	}{
		{
			name:    "the wiring imports every layer",
			imports: map[string][]string{".": {"webhook", "certs", "internal/metrics", "config"}},
		},
		{
			name:    "the wiring in internal/app imports the handler and the certificates",
			imports: map[string][]string{".": {"internal/app"}, "internal/app": {"webhook", "certs", "internal/reconciler"}},
		},
		{
			name:    "internal packages import each other and config",
			imports: map[string][]string{"internal/sources": {"internal/managed", "config"}},
		},
		{
			name:    "tests' helpers import anything",
			imports: map[string][]string{"test/testenv": {"webhook", "test/fixtures"}, "config/configtest": {"config"}, "hack/demo": {"."}},
		},
		{
			name:    "config importing internal is upward",
			imports: map[string][]string{"config": {"internal/metrics"}},
			want:    []string{"config imports internal/metrics, which is not below it"},
		},
		{
			name:    "internal importing webhook is upward",
			imports: map[string][]string{"internal/reconciler": {"webhook"}},
			want:    []string{"internal/reconciler imports webhook, which is not below it"},
		},
		{
			name:    "webhook importing certs is sideways",
			imports: map[string][]string{"webhook": {"certs"}},
			want:    []string{"webhook imports certs, which is not below it"},
		},
		{
			name:    "a package importing the wiring is upward",
			imports: map[string][]string{"certs": {"."}, "webhook": {"internal/app"}},
			want:    []string{"certs imports ., which is not below it", "webhook imports internal/app, which is not below it"},
		},
		{
			name:    "production importing a test helper",
			imports: map[string][]string{"internal/policy": {"config/configtest"}, "webhook": {"test/fixtures"}},
			want: []string{
				"internal/policy imports config/configtest, which only tests may import",
				"webhook imports test/fixtures, which only tests may import",
			},
		},
		{
			name:    "a package of no layer",
			imports: map[string][]string{"pkg/new": nil, "config": {"pkg/other"}},
			want: []string{
				"config imports pkg/other, which has no layer",
				"pkg/new: no layer; place it in layerOf and docs/development.md#architecture",
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, layerViolations(tc.imports)); diff != "" {
				t.Errorf("layerViolations (-want +got):\n%s", diff)
			}
		})
	}
}
