package policy

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/pullsecret-injector/pullsecret-injector/config"
)

// hostileImages are seeds for FuzzNormalizeImage beside FuzzMatchImage's corpus: every branch of
// ParseNormalizedNamed and of the reference grammar, and strings built to confuse a naive split.
var hostileImages = []string{
	"nginx", "nginx:1.27", "library/nginx", "docker.io/nginx", "docker.io/library/nginx:1", "index.docker.io/nginx",
	"index.docker.io/myorg/app", "myorg/app", "localhost/app", "localhost", "localhost:5000", "localhost:5000/app:v1",
	"LOCAL/app", "Local/app", "upper/Case", "[::1]/app", "[::1]:5000/app", "[A]/app", "[zz]/app", "[]/app",
	"my_reg.io/app", "my_reg.io:5000/app", "a__b.io/x", "a-.io/x", "-a.io/x", "a.io:/x", "a.io:5000:6000/x",
	"registry.example.com:5000/team-a/app:1.0@sha256:" + strings.Repeat("a", 64),
	"quay.io/x@sha256:" + strings.Repeat("A", 64), "quay.io/x@sha384:" + strings.Repeat("a", 96),
	"quay.io/x@sha512:" + strings.Repeat("a", 128), "quay.io/x@sha256:" + strings.Repeat("a", 63),
	"quay.io/x@md5:" + strings.Repeat("a", 32), "quay.io/x@SHA256:" + strings.Repeat("a", 64),
	"quay.io/x@sha256+b64:" + strings.Repeat("a", 64), strings.Repeat("a", 64), strings.Repeat("a", 65),
	strings.Repeat("f", 64) + ":tag", "quay.io/" + strings.Repeat("a", 255), "quay.io/" + strings.Repeat("a", 256),
	strings.Repeat("a", 247), strings.Repeat("a", 248), "my_reg.io/" + strings.Repeat("a", 245),
	"my_reg.io/" + strings.Repeat("a", 246), "quay.io/x:" + strings.Repeat("t", 128), "quay.io/x:" + strings.Repeat("t", 129),
	"quay.io/x:-t", "quay.io/x:.t", "quay.io/x:_t", "quay.io//x", "quay.io/x/", "/x", "x/", "", ":", "@", ":tag",
	"quay.io/x:tag:tag", "quay.io/x@", "quay.io/x:@sha256:" + strings.Repeat("a", 64), "quay.io/a..b", "quay.io/a._b",
	"quay.io/a___b", "quay.io/a---b", "quay.io/a-_b", "docker.io/Nginx", "Docker.io/nginx", "index.docker.io/Nginx",
	"ｑｕａｙ.io/x", "quay.io/x\n", " quay.io/x", "quay.io/x ", "quay.io/\u212a", "\u0130/x", "É/x", "é.io/x",
	"quay.io/x\u0000", "quay.io/x\xff", "https://quay.io/x", "quay.io:99999999999999999999/x",
}

var normalizeOnce struct {
	sync.Once
	h *harness
}

// normalizeHarness compiles, once per process, a policy to probe the normalisation of.
func normalizeHarness(tb testing.TB) *harness {
	tb.Helper()
	normalizeOnce.Do(func() {
		normalizeOnce.h = newHarness(tb, `
registries:
  - registry: quay.io
    secret: {namespace: ops, name: quay}
`, "variables."+varRepositories)
	})
	if normalizeOnce.h == nil {
		tb.Fatal("the normalisation harness did not compile")
	}
	return normalizeOnce.h
}

// FuzzNormalizeImage checks that the policy's CEL normalisation, evaluated by the API server's CEL
// environment, lists for an image exactly what config.NormalizeImage returns, and nothing for an image
// it refuses. The image reaches CEL as the API server decodes it from JSON, with invalid UTF-8 replaced;
// the webhook sees the same string. Without -fuzz it runs only the seeds: hostileImages, and in
// testdata/fuzz the images of config's FuzzMatchImage corpus.
func FuzzNormalizeImage(f *testing.F) {
	for _, image := range hostileImages {
		f.Add(image)
	}
	f.Fuzz(func(t *testing.T, image string) {
		image = jsonRoundTrip(t, image)
		h := normalizeHarness(t)
		got, _, err := probe[[]string](h.eval, "variables."+varRepositories, podOf(image), plainNS)
		if err != nil {
			t.Fatalf("evaluate for %q: %v", image, err)
		}
		var want []string
		if repository, err := config.NormalizeImage(image); err == nil {
			want = []string{repository}
		}
		if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("repositories of %q (-NormalizeImage +CEL):\n%s", image, diff)
		}
	})
}

// jsonRoundTrip returns s as the API server decodes it from a JSON request.
func jsonRoundTrip(t testing.TB, s string) string {
	raw, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var out string
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatal(err)
	}
	return out
}
