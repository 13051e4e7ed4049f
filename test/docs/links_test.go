// Package docs checks the documentation: every relative link in README.md, docs/ and the chart's README
// names a file that exists and, when it has one, a heading that exists in that file; and the packages'
// imports keep the layering docs/development.md#architecture draws.
package docs

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/pullsecret-injector/pullsecret-injector/test/testenv"
)

// TestRelativeLinksResolve follows every relative link of the documentation to its file and heading.
func TestRelativeLinksResolve(t *testing.T) {
	root := testenv.RepoRoot()
	pages, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	design, err := filepath.Glob(filepath.Join(root, "docs", "design", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	pages = append(pages, design...)
	pages = append(pages, filepath.Join(root, "README.md"), filepath.Join(root, "charts", "pullsecret-injector", "README.md"))

	checked := 0
	for _, page := range pages {
		text, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, page)
		for _, target := range links(string(text)) {
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			checked++
			file, anchor, _ := strings.Cut(target, "#")
			dest := page
			if file != "" {
				dest = filepath.Join(filepath.Dir(page), filepath.FromSlash(file))
			}
			destRel, _ := filepath.Rel(root, dest)
			if strings.HasPrefix(destRel, "..") {
				t.Errorf("%s: link %q leaves the repository", rel, target)
				continue
			}
			if _, err := os.Stat(dest); err != nil {
				t.Errorf("%s: link %q names %s, which does not exist", rel, target, destRel)
				continue
			}
			if anchor == "" {
				continue
			}
			if !strings.HasSuffix(dest, ".md") {
				t.Errorf("%s: link %q has an anchor into %s, which is not markdown", rel, target, destRel)
				continue
			}
			destText, err := os.ReadFile(dest)
			if err != nil {
				t.Fatal(err)
			}
			if !anchors(string(destText))[anchor] {
				t.Errorf("%s: link %q names heading #%s, which %s does not have", rel, target, anchor, destRel)
			}
		}
	}
	// The front page alone links to every page of the manual: far fewer links means the parser is broken.
	if checked < 100 {
		t.Fatalf("checked %d relative links, fewer than the documentation has: the link parser is broken", checked)
	}
}

var (
	fence    = regexp.MustCompile("(?m)^ *```")
	comment  = regexp.MustCompile(`(?s)<!--.*?-->`)
	codeSpan = regexp.MustCompile("`[^`\n]*`")
	// A link's text may hold code spans (already blanked out) and one level of nested brackets.
	link    = regexp.MustCompile(`\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(([^()\s]+)\)`)
	heading = regexp.MustCompile(`(?m)^#{1,6} +(.+?) *#* *$`)
)

// prose returns text without fenced code blocks, HTML comments and code spans, which hold no links or
// headings.
func prose(text string) string {
	var b strings.Builder
	inFence := false
	for _, line := range strings.Split(text, "\n") {
		if fence.MatchString(line) {
			inFence = !inFence
			continue
		}
		if !inFence {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return comment.ReplaceAllString(b.String(), "")
}

// links returns the targets of the inline links in a markdown text.
func links(text string) []string {
	var targets []string
	for _, m := range link.FindAllStringSubmatch(codeSpan.ReplaceAllString(prose(text), "code"), -1) {
		targets = append(targets, m[1])
	}
	return targets
}

// anchors returns the anchors GitHub gives the headings of a markdown text: the heading lowercased, every
// character but letters, digits, spaces, hyphens and underscores dropped, spaces made hyphens, and -1, -2,
// ... appended to repeats.
func anchors(text string) map[string]bool {
	seen := map[string]int{}
	out := map[string]bool{}
	for _, m := range heading.FindAllStringSubmatch(prose(text), -1) {
		slug := slugify(m[1])
		if n := seen[slug]; n > 0 {
			out[fmt.Sprintf("%s-%d", slug, n)] = true
		} else {
			out[slug] = true
		}
		seen[slug]++
	}
	return out
}

func slugify(title string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(title) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r > 127:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func TestParsing(t *testing.T) {
	text := "# `failurePolicy`: `Fail` or `Ignore`\n" +
		"## RBAC: what the webhook may do, and why\n" +
		"## Values\n" +
		"### Values\n" +
		"```sh\n# not a heading [nor a link](nowhere.md)\n```\n" +
		"<!-- [commented out](gone.md) -->\n" +
		"See [the chart](chart.md#values), [`code` in text](#values-1) and [x](https://example.com).\n" +
		"A code span `[not a link](x.md)` is not a link. [a [nested] text](security.md)\n"

	wantAnchors := map[string]bool{
		"failurepolicy-fail-or-ignore":         true,
		"rbac-what-the-webhook-may-do-and-why": true,
		"values":                               true,
		"values-1":                             true,
	}
	if diff := cmp.Diff(wantAnchors, anchors(text)); diff != "" {
		t.Errorf("anchors (-want +got):\n%s", diff)
	}
	wantLinks := []string{"chart.md#values", "#values-1", "https://example.com", "security.md"}
	if diff := cmp.Diff(wantLinks, links(text)); diff != "" {
		t.Errorf("links (-want +got):\n%s", diff)
	}
}
