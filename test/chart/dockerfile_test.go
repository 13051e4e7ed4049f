package chart

import (
	"bufio"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/pullsecret-injector/pullsecret-injector/test/testenv"
)

// TestDockerfileBuildsLikeMake checks the Dockerfile without a container engine: its go build command is
// `make build`'s, and that command builds the binary from the build context the Dockerfile sees (the tree
// less .dockerignore). It also pins the image's shape the issue asks for.
func TestDockerfileBuildsLikeMake(t *testing.T) {
	root := testenv.RepoRoot()
	dockerfile := readFile(t, filepath.Join(root, "Dockerfile"))

	makeEnv, makeCmd := splitCommand(t, recipeLine(t, readFile(t, filepath.Join(root, "Makefile")), "build"))
	dockerEnv, dockerCmd := splitCommand(t, runLine(t, dockerfile))
	if diff := cmp.Diff(withoutOutput(makeCmd), withoutOutput(dockerCmd)); diff != "" {
		t.Errorf("go build command (-make +Dockerfile):\n%s", diff)
	}
	// The Dockerfile adds only the target platform.
	wantDockerEnv := map[string]string{"GOOS": "${TARGETOS}", "GOARCH": "${TARGETARCH}"}
	for k, v := range makeEnv {
		wantDockerEnv[k] = v
	}
	if diff := cmp.Diff(wantDockerEnv, dockerEnv); diff != "" {
		t.Errorf("go build environment (-make's plus the target platform +Dockerfile):\n%s", diff)
	}
	if makeEnv["CGO_ENABLED"] != "0" {
		t.Errorf("make build runs with CGO_ENABLED=%q, want 0", makeEnv["CGO_ENABLED"])
	}

	for _, want := range []string{
		`(?m)^FROM --platform=\$BUILDPLATFORM golang:\$\{GO_VERSION\} AS build$`,
		`(?m)^COPY go\.mod go\.sum \./\nRUN go mod download$`,
		`(?m)^ARG TARGETOS\nARG TARGETARCH$`,
		`(?m)^FROM gcr\.io/distroless/static:nonroot$`,
		`(?m)^COPY --from=build /out/pullsecret-injector /pullsecret-injector$`,
		`(?m)^USER 65532:65532$`,
		`(?m)^ENTRYPOINT \["/pullsecret-injector"\]$`,
	} {
		if !regexp.MustCompile(want).MatchString(dockerfile) {
			t.Errorf("Dockerfile does not match %s", want)
		}
	}
	// The builder's Go is the one go.mod asks for.
	goMod := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(readFile(t, filepath.Join(root, "go.mod")))
	goArg := regexp.MustCompile(`(?m)^ARG GO_VERSION=(\S+)$`).FindStringSubmatch(dockerfile)
	if goMod == nil || goArg == nil || goMod[1] != goArg[1] {
		t.Errorf("Dockerfile's GO_VERSION %v differs from go.mod's go directive %v", goArg, goMod)
	}

	// The linker sets the version package's variables; make and the Dockerfile name the same package.
	versionPkg := regexp.MustCompile(`(?m)^ARG VERSION_PKG=(\S+)$`).FindStringSubmatch(dockerfile)
	makePkg := regexp.MustCompile(`(?m)^VERSION_PKG := (\S+)$`).FindStringSubmatch(readFile(t, filepath.Join(root, "Makefile")))
	if versionPkg == nil || makePkg == nil || versionPkg[1] != makePkg[1] {
		t.Fatalf("Dockerfile's VERSION_PKG %v differs from the Makefile's %v", versionPkg, makePkg)
	}

	// Build as the Dockerfile's RUN does, in a copy of the build context, for this machine's platform, with
	// the build arguments `make docker-build` passes.
	dir := buildContext(t, root)
	out := filepath.Join(t.TempDir(), "pullsecret-injector")
	buildArgs := map[string]string{"VERSION_PKG": versionPkg[1], "VERSION": "v0.0.0-test", "COMMIT": "0123456789abcdef"}
	args := slices.Clone(dockerCmd)
	for i := range args {
		args[i] = os.Expand(args[i], func(name string) string {
			v, ok := buildArgs[name]
			if !ok {
				t.Fatalf("the go build command uses ${%s}, which this test does not set", name)
			}
			return v
		})
	}
	args[slices.Index(args, "-o")+1] = out
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOOS="+runtime.GOOS, "GOARCH="+runtime.GOARCH)
	for k, v := range makeEnv {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s in the build context: %v\n%s", strings.Join(args, " "), err, b)
	}
	help, _ := exec.Command(out, "--help").CombinedOutput()
	if !strings.Contains(string(help), "-cert-mode") {
		t.Errorf("the built binary's --help does not list --cert-mode:\n%s", help)
	}
	v, err := exec.Command(out, "--version").CombinedOutput()
	if err != nil {
		t.Errorf("the built binary's --version: %v\n%s", err, v)
	}
	for _, want := range []string{buildArgs["VERSION"], buildArgs["COMMIT"], runtime.Version()} {
		if !strings.Contains(string(v), want) {
			t.Errorf("the built binary's --version does not say %q:\n%s", want, v)
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// recipeLine returns the recipe line of a Makefile target that runs go build.
func recipeLine(t *testing.T, makefile, target string) string {
	t.Helper()
	in := false
	sc := bufio.NewScanner(strings.NewReader(makefile))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, target+":"):
			in = true
		case in && strings.HasPrefix(line, "\t"):
			if strings.Contains(line, "go build") {
				return strings.TrimSpace(line)
			}
		case in:
			in = false
		}
	}
	t.Fatalf("no go build line in the recipe of make %s", target)
	return ""
}

// runLine returns the Dockerfile's RUN instruction that runs go build, without RUN.
func runLine(t *testing.T, dockerfile string) string {
	t.Helper()
	var found []string
	for _, line := range strings.Split(dockerfile, "\n") {
		if rest, ok := strings.CutPrefix(line, "RUN "); ok && strings.Contains(rest, "go build") {
			found = append(found, strings.TrimSpace(rest))
		}
	}
	if len(found) != 1 {
		t.Fatalf("Dockerfile has %d RUN lines with go build, want 1", len(found))
	}
	return found[0]
}

// splitCommand splits a shell command line of plain words, or words in double quotes without escapes, into
// its leading VAR=value assignments and the command. Other shell syntax is refused rather than half
// understood; ${VAR} is left for the caller.
func splitCommand(t *testing.T, line string) (map[string]string, []string) {
	t.Helper()
	if strings.ContainsAny(line, `'\;&|<>`+"`") {
		t.Fatalf("command %q uses shell syntax this test does not parse", line)
	}
	var words []string
	for i, part := range strings.Split(line, `"`) {
		if i%2 == 1 {
			words = append(words, part) // inside quotes: one word
			continue
		}
		words = append(words, strings.Fields(part)...)
	}
	if strings.Count(line, `"`)%2 != 0 {
		t.Fatalf("command %q has an unclosed double quote", line)
	}
	env := map[string]string{}
	for len(words) > 0 {
		k, v, ok := strings.Cut(words[0], "=")
		if !ok || strings.HasPrefix(k, "-") {
			break
		}
		env[k] = v
		words = words[1:]
	}
	return env, words
}

// withoutOutput replaces the -o argument with its base name: where the binary goes differs by design.
func withoutOutput(cmd []string) []string {
	out := slices.Clone(cmd)
	if i := slices.Index(out, "-o"); i >= 0 && i+1 < len(out) {
		out[i+1] = filepath.Base(out[i+1])
	}
	return out
}

// buildContext copies the tree at root into a temporary directory, less what .dockerignore excludes,
// and returns the copy.
func buildContext(t *testing.T, root string) string {
	t.Helper()
	patterns := dockerignore(t, readFile(t, filepath.Join(root, ".dockerignore")))
	dst := t.TempDir()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil || rel == "." {
			return err
		}
		for _, p := range patterns {
			if p.MatchString(filepath.ToSlash(rel)) {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
	if err != nil {
		t.Fatalf("copy the build context: %v", err)
	}
	return dst
}

// dockerignore turns .dockerignore's patterns into regular expressions over slash-separated paths from
// the root: `*` and `?` stay within a path element, `**` spans any number of them. A pattern that matches
// a directory excludes what is below it (the walk skips the directory). Exceptions (`!`) are refused.
func dockerignore(t *testing.T, content string) []*regexp.Regexp {
	t.Helper()
	var out []*regexp.Regexp
	for _, line := range strings.Split(content, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "!") || strings.ContainsAny(line, "[\\") {
			t.Fatalf(".dockerignore pattern %q uses syntax this test does not implement", line)
		}
		p := strings.Trim(filepath.ToSlash(filepath.Clean(line)), "/")
		var re strings.Builder
		re.WriteString("^")
		for i := 0; i < len(p); i++ {
			switch {
			case strings.HasPrefix(p[i:], "**/"):
				re.WriteString("(.*/)?")
				i += 2
			case strings.HasPrefix(p[i:], "**"):
				re.WriteString(".*")
				i++
			case p[i] == '*':
				re.WriteString("[^/]*")
			case p[i] == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(p[i : i+1]))
			}
		}
		re.WriteString("$")
		out = append(out, regexp.MustCompile(re.String()))
	}
	return out
}
