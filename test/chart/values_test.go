package chart

import (
	"bufio"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/pullsecret-injector/pullsecret-injector/test/testenv"
)

// TestValuesDocumented checks that every value in values.yaml carries a `# --` comment (on itself or on an
// enclosing object documented as a whole), and that the values tables helm-docs generates from those
// comments (docs/chart.md and the chart's README.md) have a row for each: a value helm-docs skips, or a
// generated file not regenerated since a value was added, fails here.
func TestValuesDocumented(t *testing.T) {
	documented, undocumented := valueDocs(t, readFile(t, filepath.Join(chartDir, "values.yaml")))
	for _, key := range undocumented {
		t.Errorf("values.yaml: %s has no `# --` comment", key)
	}
	if len(documented) < 40 {
		t.Fatalf("found %d documented values, fewer than values.yaml has: the parser is broken", len(documented))
	}
	for _, doc := range []string{filepath.Join(testenv.RepoRoot(), "docs", "chart.md"), filepath.Join(chartDir, "README.md")} {
		text := readFile(t, doc)
		for _, key := range documented {
			if !strings.Contains(text, "| `"+key+"` |") {
				t.Errorf("%s: the values table has no row for %s; run make helm-docs", doc, key)
			}
		}
	}
}

var (
	keyLine     = regexp.MustCompile(`^( *)([A-Za-z][A-Za-z0-9_]*):(.*)$`)
	docStart    = regexp.MustCompile(`^ *# -- `)
	commentLine = regexp.MustCompile(`^ *#`)
)

// valueDocs reads values.yaml as written here (two-space indentation, comments above their keys) and
// returns the dotted paths of the documented values, and of the values that are not documented: a key
// without a `# --` comment block directly above it that is not an object of documented keys.
func valueDocs(t *testing.T, values string) (documented, undocumented []string) {
	t.Helper()
	type frame struct {
		indent   int
		path     string
		covered  bool
		children int
	}
	var stack []*frame
	pop := func(indent int) {
		for len(stack) > 0 && stack[len(stack)-1].indent >= indent {
			f := stack[len(stack)-1]
			if !f.covered && f.children == 0 {
				undocumented = append(undocumented, f.path)
			}
			stack = stack[:len(stack)-1]
		}
	}
	inDoc := false
	sc := bufio.NewScanner(strings.NewReader(values))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.TrimSpace(line) == "":
			inDoc = false
			continue
		case docStart.MatchString(line):
			inDoc = true
			continue
		case commentLine.MatchString(line):
			continue
		}
		m := keyLine.FindStringSubmatch(line)
		hasDoc := inDoc
		inDoc = false
		if m == nil {
			continue // a list item or a continuation: part of an enclosing value
		}
		indent := len(m[1])
		pop(indent)
		if len(stack) > 0 && stack[len(stack)-1].covered {
			continue // inside a value documented as a whole
		}
		path := m[2]
		if len(stack) > 0 {
			parent := stack[len(stack)-1]
			parent.children++
			path = parent.path + "." + m[2]
		}
		inline := strings.TrimSpace(m[3]) != "" && !strings.HasPrefix(strings.TrimSpace(m[3]), "#")
		switch {
		case hasDoc:
			documented = append(documented, path)
		case inline:
			undocumented = append(undocumented, path)
			continue
		}
		stack = append(stack, &frame{indent: indent, path: path, covered: hasDoc})
	}
	pop(0)
	return documented, undocumented
}
