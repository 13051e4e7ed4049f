package checkcmd

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/config/configtest"
	"github.com/pullsecret-injector/pullsecret-injector/test/fixtures"
)

const testConfig = `
registries:
` + fixtures.ExampleRegistries + `  - registry: docker.io/myorg
    secret: {namespace: pullsecret-injector, name: hub-regcred}
  - registry: https://index.docker.io/v1/
    secret: {namespace: pullsecret-injector, name: hub-regcred}
  - registry: quay.io
    secret: {namespace: pullsecret-injector, name: quay-regcred}
`

const noClusterHeader = `namespace: any (no --namespace); selectors not evaluated, answers hold for a namespace that namespaceSelector pullsecret-injector.io/inject=enabled selects
sources: not checked (no --kubeconfig)
`

func matcher(t *testing.T) *config.Matcher {
	t.Helper()
	return configtest.Matcher(t, testConfig)
}

func TestRunWithoutCluster(t *testing.T) {
	tests := []struct {
		name    string
		image   string
		verbose bool
		want    string
		status  int
	}{
		{
			name:  "path-prefixed entry matches by a plain string prefix",
			image: "registry.example.com:5000/team-ab/api:1",
			want: `
registry.example.com:5000/team-ab/api:1
  repository registry.example.com:5000/team-ab/api
  registries[0] registry.example.com:5000/team-a matches host registry.example.com, port 5000 and path prefix team-a (a plain string prefix, as in the kubelet: team-ab/api has it)
    secret pullsecret-injector/team-a-regcred
    namespace not evaluated (no entry namespaceSelector)
  result: gets team-a-regcred (if the selectors select the namespace; sources not checked)
`,
		},
		{
			name:  "wildcard entry matches one DNS label and shows its selector",
			image: "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app:1",
			want: `
123456789012.dkr.ecr.eu-west-1.amazonaws.com/app:1
  repository 123456789012.dkr.ecr.eu-west-1.amazonaws.com/app
  registries[1] *.dkr.ecr.eu-west-1.amazonaws.com matches host 123456789012.dkr.ecr.eu-west-1.amazonaws.com ("*" matches the one DNS label "123456789012"), any path
    secret pullsecret-injector/ecr-regcred
    namespace not evaluated (entry namespaceSelector team=payments)
  result: gets ecr-regcred (if the selectors select the namespace; sources not checked)
`,
		},
		{
			name:  "short docker hub name matches docker.io entries once per secret",
			image: "myorg/app",
			want: `
myorg/app
  repository docker.io/myorg/app
  registries[2] docker.io/myorg matches host docker.io and path prefix myorg
    secret pullsecret-injector/hub-regcred
    namespace not evaluated (no entry namespaceSelector)
  registries[3] https://index.docker.io/v1/ matches every Docker Hub image (the kubelet's index.docker.io fallback)
    secret pullsecret-injector/hub-regcred
    namespace not evaluated (no entry namespaceSelector)
  result: gets hub-regcred (if the selectors select the namespace; sources not checked)
`,
		},
		{
			name:   "image without a matching entry gets nothing",
			image:  "ghcr.io/x/y",
			status: ExitNothing,
			want: `
ghcr.io/x/y
  repository ghcr.io/x/y
  no entry matches
  not served by pullsecret-injector: the kubelet pulls it with the node's credentials, a kubelet credential provider (which can use the Pod's ServiceAccount token) or pull secrets the Pod has of its own, never with a Secret from this project
  result: gets nothing
`,
		},
		{
			name:    "verbose lists why the other entries do not match",
			image:   "quay.io/x/y",
			verbose: true,
			want: `
quay.io/x/y
  repository quay.io/x/y
  registries[0] registry.example.com:5000/team-a does not match: the pattern has port 5000, the image none (ports must be equal)
  registries[1] *.dkr.ecr.eu-west-1.amazonaws.com does not match: host quay.io has 2 DNS labels, the pattern 6 (a '*' never crosses a dot)
  registries[2] docker.io/myorg does not match: host quay.io is not docker.io
  registries[3] https://index.docker.io/v1/ does not match: it stands for Docker Hub images only (the kubelet's index.docker.io fallback)
  registries[4] quay.io matches host quay.io, any path
    secret pullsecret-injector/quay-regcred
    namespace not evaluated (no entry namespaceSelector)
  result: gets quay-regcred (if the selectors select the namespace; sources not checked)
`,
		},
		{
			name:  "an image volume's reference by digest is checked like any image",
			image: "quay.io/models/llm@sha256:" + strings.Repeat("a", 64),
			want: `
quay.io/models/llm@sha256:` + strings.Repeat("a", 64) + `
  repository quay.io/models/llm
  registries[4] quay.io matches host quay.io, any path
    secret pullsecret-injector/quay-regcred
    namespace not evaluated (no entry namespaceSelector)
  result: gets quay-regcred (if the selectors select the namespace; sources not checked)
`,
		},
		{
			name:   "invalid reference gets nothing",
			image:  "quay.io/UPPER",
			status: ExitNothing,
			want: `
quay.io/UPPER
  not a valid image reference: parse image reference "quay.io/UPPER": invalid reference format: repository name (UPPER) must be lowercase
  result: gets nothing (the webhook skips an invalid image; the kubelet cannot pull it)
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			status := Run(context.Background(), Options{Matcher: matcher(t), Verbose: tt.verbose}, []string{tt.image}, &out, &errOut)
			if diff := cmp.Diff(noClusterHeader+tt.want, out.String()); diff != "" {
				t.Errorf("output (-want +got):\n%s", diff)
			}
			if status != tt.status {
				t.Errorf("status = %d, want %d", status, tt.status)
			}
			if errOut.Len() > 0 {
				t.Errorf("stderr: %s", errOut.String())
			}
		})
	}
}

func TestRunAnyImageWithNothingFails(t *testing.T) {
	var out bytes.Buffer
	if got := Run(context.Background(), Options{Matcher: matcher(t)}, []string{"quay.io/a", "ghcr.io/b", "myorg/c"}, &out, &out); got != ExitNothing {
		t.Errorf("status = %d, want %d", got, ExitNothing)
	}
}

func dockerConfigSecret(name, key, auth string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "pullsecret-injector", Name: name},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"` + key + `":{"auth":"` + auth + `"}}}`)},
	}
}

// fakeAuth is base64("robot:fake-password-123"); no output may contain it.
const fakeAuth = "cm9ib3Q6ZmFrZS1wYXNzd29yZC0xMjM="

func TestRunWithCluster(t *testing.T) {
	objects := []runtime.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "payments", Labels: map[string]string{config.InjectLabel: config.InjectEnabled, "team": "payments"}}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{config.InjectLabel: config.InjectEnabled}}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "legacy", Labels: map[string]string{config.InjectLabel: config.InjectDisabled}}},
		dockerConfigSecret("ecr-regcred", "123456789012.dkr.ecr.eu-west-1.amazonaws.com", fakeAuth),
		dockerConfigSecret("quay-regcred", "ghcr.io", fakeAuth),
		dockerConfigSecret("hub-regcred", "https://index.docker.io/v1/", fakeAuth),
	}
	tests := []struct {
		name      string
		namespace string
		image     string
		// objects replace the default ones of the same name.
		objects   []runtime.Object
		status    int
		wantLines []string
	}{
		{name: "selected namespace gets a usable secret", namespace: "payments", image: "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app",
			wantLines: []string{
				"namespace payments (pullsecret-injector.io/inject=enabled): opted in: selected by namespaceSelector pullsecret-injector.io/inject=enabled",
				"    namespace selected (entry namespaceSelector team=payments)",
				`    source exists; credential partial_match: entry "*.dkr.ecr.eu-west-1.amazonaws.com": only auths keys "123456789012.dkr.ecr.eu-west-1.amazonaws.com" carry a credential, and they are used for some of its images only`,
				`    kubelet offers auths keys "123456789012.dkr.ecr.eu-west-1.amazonaws.com" for this image`,
				"  result: gets ecr-regcred",
			}},
		{name: "entry selector leaves another opted-in namespace out", namespace: "shop", image: "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app",
			status: ExitNothing,
			wantLines: []string{
				"    namespace not selected by the entry namespaceSelector team=payments: this entry adds nothing here",
				notServed,
				"  result: gets nothing (no matching entry applies in this namespace)",
			}},
		{name: "namespace that opted out gets nothing", namespace: "legacy", image: "quay.io/x",
			status: ExitNothing,
			wantLines: []string{
				"namespace legacy (pullsecret-injector.io/inject=disabled): not opted in: Pods there are never mutated; not selected by namespaceSelector pullsecret-injector.io/inject=enabled",
				"    namespace not opted in",
				notServed,
				"  result: gets nothing (no matching entry applies in this namespace)",
			}},
		{name: "missing source is no usable credential", namespace: "shop", image: "registry.example.com:5000/team-a/api",
			status: ExitNothing,
			wantLines: []string{
				"    source missing: the Pod gets an empty placeholder copy and pulls anonymously until the source exists",
				"  result: gets team-a-regcred, but no usable credential from it",
			}},
		{name: "source whose keys do not match is no usable credential", namespace: "shop", image: "quay.io/x",
			status: ExitNothing,
			wantLines: []string{
				`    source exists; credential no_matching_key: entry "quay.io": no auths key is used by the kubelet for its images; the keys are "ghcr.io"`,
				"    kubelet offers none of its auths keys for this image",
				"  result: gets quay-regcred, but no usable credential from it",
			}},
		{name: "docker hub source under the legacy key is usable", namespace: "shop", image: "myorg/app",
			wantLines: []string{
				`    source exists; credential ok (auths keys "https://index.docker.io/v1/")`,
				`    kubelet offers auths keys "https://index.docker.io/v1/" for this image`,
				"  result: gets hub-regcred",
			}},
		{name: "a narrow key that does not serve this image is no usable credential", namespace: "payments",
			image:  "999999999999.dkr.ecr.eu-west-1.amazonaws.com/app",
			status: ExitNothing,
			wantLines: []string{
				"    kubelet offers none of its auths keys for this image",
				"  result: gets ecr-regcred, but no usable credential from it",
			}},
		{name: "invalid auth makes the kubelet refuse the secret", namespace: "shop", image: "quay.io/x",
			objects: []runtime.Object{dockerConfigSecret("quay-regcred", "quay.io", "!!!")},
			status:  ExitNothing,
			wantLines: []string{
				`    source exists; credential invalid_auth: the auth value of auths key "quay.io" is not valid base64; the kubelet refuses the whole Secret and every pull of a Pod that references it`,
				"  result: gets quay-regcred, but no usable credential from it",
			}},
		{name: "empty credentials are offered but useless", namespace: "shop", image: "quay.io/x",
			objects: []runtime.Object{dockerConfigSecret("quay-regcred", "quay.io", "")},
			status:  ExitNothing,
			wantLines: []string{
				`    source exists; credential empty_credentials: entry "quay.io": auths keys "quay.io" match its images but carry no username or password`,
				`    kubelet offers auths keys "quay.io" for this image, without a username or password`,
			}},
		{name: "user information in a key is never shown", namespace: "shop", image: "quay.io/x",
			objects: []runtime.Object{dockerConfigSecret("quay-regcred", "https://robot:fake-password-123@quay.io", fakeAuth)},
			wantLines: []string{
				`    source exists; credential ok (auths keys "https://<redacted>@quay.io")`,
				`    kubelet offers auths keys "https://<redacted>@quay.io" for this image`,
				"  result: gets quay-regcred",
			}},
		{name: "user information in a key that does not match is never shown", namespace: "shop", image: "quay.io/x",
			objects: []runtime.Object{dockerConfigSecret("quay-regcred", "robot:fake-password-123@ghcr.io/team?token=fake-password-123", fakeAuth)},
			status:  ExitNothing,
			wantLines: []string{
				`    source exists; credential no_matching_key: entry "quay.io": no auths key is used by the kubelet for its images; the keys are "<redacted>@ghcr.io/team?<redacted>"`,
			}},
		{name: "without a namespace sources are still checked", image: "quay.io/x",
			status: ExitNothing,
			wantLines: []string{
				"namespace: any (no --namespace); selectors not evaluated, answers hold for a namespace that namespaceSelector pullsecret-injector.io/inject=enabled selects",
				"    namespace not evaluated (no entry namespaceSelector)",
				"  result: gets quay-regcred, but no usable credential from it",
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := fake.NewClientset(append(slices.Clone(tt.objects), withoutNamed(objects, tt.objects)...)...)
			var out, errOut bytes.Buffer
			status := Run(context.Background(), Options{Matcher: matcher(t), Client: client, Namespace: tt.namespace}, []string{tt.image}, &out, &errOut)
			if status != tt.status {
				t.Errorf("status = %d, want %d", status, tt.status)
			}
			lines := strings.Split(out.String(), "\n")
			for _, want := range tt.wantLines {
				if !containsLine(lines, want) {
					t.Errorf("output has no line %q:\n%s", want, out.String())
				}
			}
			if strings.Contains(out.String(), fakeAuth) || strings.Contains(out.String(), "fake-password") {
				t.Errorf("output contains secret data:\n%s", out.String())
			}
		})
	}
}

func TestRunUnreadableSourceIsAClusterError(t *testing.T) {
	client := fake.NewClientset()
	client.PrependReactor("get", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(corev1.Resource("secrets"), "quay-regcred", errors.New("no RBAC"))
	})
	var out, errOut bytes.Buffer
	status := Run(context.Background(), Options{Matcher: matcher(t), Client: client}, []string{"quay.io/x"}, &out, &errOut)
	if status != ExitCluster {
		t.Errorf("status = %d, want %d", status, ExitCluster)
	}
	lines := strings.Split(out.String(), "\n")
	for _, want := range []string{
		`    source could not be read: secrets "quay-regcred" is forbidden: no RBAC`,
		"  result: gets quay-regcred (if the selectors select the namespace; quay-regcred could not be checked)",
	} {
		if !containsLine(lines, want) {
			t.Errorf("output has no line %q:\n%s", want, out.String())
		}
	}
}

func TestRunUnknownNamespaceIsAUsageError(t *testing.T) {
	var out, errOut bytes.Buffer
	status := Run(context.Background(), Options{Matcher: matcher(t), Client: fake.NewClientset(), Namespace: "nope"}, []string{"quay.io/x"}, &out, &errOut)
	if status != ExitUsage {
		t.Errorf("status = %d, want %d", status, ExitUsage)
	}
	if !strings.Contains(errOut.String(), `read namespace "nope"`) {
		t.Errorf("stderr = %q, want it to name the namespace", errOut.String())
	}
}

func TestMainUsageAndConfigErrors(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(good, []byte(testConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	badConfig := "registries:\n  - registry: ftp://x\n    secret: {namespace: src, name: Bad_Name}\n    namespaceSelectr: {}\n"
	if err := os.WriteFile(bad, []byte(badConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		args       []string
		status     int
		wantStderr []string
	}{
		{name: "no image", args: []string{"--config", good}, status: ExitUsage, wantStderr: []string{"at least one IMAGE"}},
		{name: "unknown flag", args: []string{"--config", good, "--nope", "quay.io/x"}, status: ExitUsage, wantStderr: []string{"nope"}},
		{name: "missing config file", args: []string{"--config", filepath.Join(dir, "absent.yaml"), "quay.io/x"}, status: ExitUsage,
			wantStderr: []string{"read config file"}},
		{name: "invalid config names every field path", args: []string{"--config", bad, "quay.io/x"}, status: ExitUsage,
			wantStderr: []string{"registries[0].registry", "registries[0].secret.name", "namespaceSelectr"}},
		{name: "bad kubeconfig", args: []string{"--config", good, "--kubeconfig", filepath.Join(dir, "absent"), "quay.io/x"}, status: ExitUsage,
			wantStderr: []string{"load kubeconfig"}},
		{name: "flags after images are flags", args: []string{"quay.io/x", "--config", good, "-v"}, status: ExitOK},
		{name: "help", args: []string{"-h"}, status: ExitOK, wantStderr: []string{"Usage: pullsecret-injector check"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if got := Main(tt.args, &out, &errOut); got != tt.status {
				t.Errorf("status = %d, want %d; stderr: %s", got, tt.status, errOut.String())
			}
			for _, s := range tt.wantStderr {
				if !strings.Contains(errOut.String(), s) {
					t.Errorf("stderr %q does not contain %q", errOut.String(), s)
				}
			}
		})
	}
}

// withoutNamed returns the objects of all whose name none of replaced has.
func withoutNamed(all, replaced []runtime.Object) []runtime.Object {
	var out []runtime.Object
	for _, o := range all {
		name := o.(metav1.Object).GetName()
		if !slices.ContainsFunc(replaced, func(r runtime.Object) bool { return r.(metav1.Object).GetName() == name }) {
			out = append(out, o)
		}
	}
	return out
}

func containsLine(lines []string, want string) bool {
	for _, l := range lines {
		if l == want {
			return true
		}
	}
	return false
}
