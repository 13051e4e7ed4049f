package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pullsecret-injector/pullsecret-injector/internal/checkcmd"
)

// checkEntries extend the webhook's configuration with sources whose credentials the kubelet cannot use.
// The webhook does not serve them; only the check subcommand reads this configuration.
const checkEntries = `
  - registry: badauth.example.com
    secret: {namespace: pullsecret-injector, name: check-badauth-regcred}
  - registry: wrongkey.example.com/team
    secret: {namespace: pullsecret-injector, name: check-wrongkey-regcred}
`

// checkSecretData is in every bad source: no output may contain it.
const checkSecretData = "not-base64-p4ssw0rd!"

const ecrImage = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/payments/api:7"

// runCheck runs the binary's check subcommand and returns its stdout, stderr and exit status.
func runCheck(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"check"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return stdout.String(), stderr.String(), 0
	case errors.As(err, &exitErr):
		return stdout.String(), stderr.String(), exitErr.ExitCode()
	default:
		t.Fatalf("run check: %v", err)
		return "", "", 0
	}
}

func writeCheckConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func createCheckSources(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	sources := []*corev1.Secret{
		{
			ObjectMeta: metav1.ObjectMeta{Name: "check-badauth-regcred"},
			Type:       corev1.SecretTypeDockerConfigJson,
			Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(
				`{"auths":{"badauth.example.com":{"auth":"` + checkSecretData + `"}}}`)},
		},
		pullSecret("check-wrongkey-regcred", "wrongkey.example.com/other"),
	}
	for _, s := range sources {
		if _, err := admin.CoreV1().Secrets(sourceNamespace).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create source secret %q: %v", s.Name, err)
		}
		t.Cleanup(func() {
			if err := admin.CoreV1().Secrets(sourceNamespace).Delete(context.Background(), s.Name, metav1.DeleteOptions{}); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestCheckSubcommand(t *testing.T) {
	createCheckSources(t)
	payments := newNamespace(t, "check-payments", merge(optIn(), map[string]string{"team": "payments"}))
	shop := newNamespace(t, "check-shop", optIn())
	off := newNamespace(t, "check-off", nil)
	cfg := writeCheckConfig(t, e2eConfig+checkEntries)

	tests := []struct {
		name      string
		namespace string
		images    []string
		status    int
		wantLines []string
	}{
		{
			name: "opted-in namespace gets a usable secret", namespace: payments,
			images: []string{"registry.example.com:5000/team-a/api:1", ecrImage},
			status: checkcmd.ExitOK,
			wantLines: []string{
				"namespace " + payments + " (pullsecret-injector.io/inject=enabled): opted in: selected by namespaceSelector pullsecret-injector.io/inject=enabled",
				"  registries[0] registry.example.com:5000/team-a matches host registry.example.com, port 5000 and path prefix team-a",
				`    source exists; credential ok (auths keys "registry.example.com:5000")`,
				`    kubelet offers auths keys "registry.example.com:5000" for this image`,
				"  result: gets team-a-regcred",
				"    namespace selected (entry namespaceSelector team=payments)",
				"  result: gets ecr-regcred",
			},
		},
		{
			name: "namespace the entry selector leaves out gets nothing", namespace: shop,
			images: []string{ecrImage},
			status: checkcmd.ExitNothing,
			wantLines: []string{
				"    namespace not selected by the entry namespaceSelector team=payments: this entry adds nothing here",
				"  result: gets nothing (no matching entry applies in this namespace)",
			},
		},
		{
			name: "namespace that did not opt in gets nothing", namespace: off,
			images: []string{"quay.io/x/y"},
			status: checkcmd.ExitNothing,
			wantLines: []string{
				"namespace " + off + " (label pullsecret-injector.io/inject not set): not opted in: Pods there are never mutated; not selected by namespaceSelector pullsecret-injector.io/inject=enabled",
				"  result: gets nothing (no matching entry applies in this namespace)",
			},
		},
		{
			name: "missing source is no usable credential", namespace: shop,
			images: []string{"missing.example.com/app"},
			status: checkcmd.ExitNothing,
			wantLines: []string{
				"    source missing: the Pod gets an empty placeholder copy and pulls anonymously until the source exists",
				"  result: gets missing-regcred, but no usable credential from it",
			},
		},
		{
			name: "source with an auth that is not base64 is no usable credential", namespace: shop,
			images: []string{"badauth.example.com/app"},
			status: checkcmd.ExitNothing,
			wantLines: []string{
				`    source exists; credential invalid_auth: the auth value of auths key "badauth.example.com" is not valid base64; the kubelet refuses the whole Secret and every pull of a Pod that references it`,
				"  result: gets check-badauth-regcred, but no usable credential from it",
			},
		},
		{
			name: "source whose key the kubelet never uses for the entry is no usable credential", namespace: shop,
			images: []string{"wrongkey.example.com/team/app"},
			status: checkcmd.ExitNothing,
			wantLines: []string{
				`    source exists; credential no_matching_key: entry "wrongkey.example.com/team": no auths key is used by the kubelet for its images; the keys are "wrongkey.example.com/other"`,
				"    kubelet offers none of its auths keys for this image",
				"  result: gets check-wrongkey-regcred, but no usable credential from it",
			},
		},
		{
			name: "source of the wrong type is no usable credential", namespace: shop,
			images: []string{"opaque.example.com/app"},
			status: checkcmd.ExitNothing,
			wantLines: []string{
				`    source exists; credential wrong_type: the Secret has type "Opaque", not "kubernetes.io/dockerconfigjson"; the kubelet reads pull secrets of type "kubernetes.io/dockerconfigjson" only here`,
			},
		},
		{
			name: "one image with nothing fails the run", namespace: shop,
			images:    []string{"quay.io/x/y", "ghcr.io/x/y"},
			status:    checkcmd.ExitNothing,
			wantLines: []string{"  result: gets quay-regcred", "  no entry matches", "  result: gets nothing"},
		},
		{
			name:   "without a namespace selectors are not evaluated but sources are checked",
			images: []string{"myorg/app"},
			status: checkcmd.ExitOK,
			wantLines: []string{
				"namespace: any (no --namespace); selectors not evaluated, answers hold for a namespace that namespaceSelector pullsecret-injector.io/inject=enabled selects",
				`    source exists; credential ok (auths keys "https://index.docker.io/v1/")`,
				"  result: gets hub-regcred (if the selectors select the namespace)",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"--config", cfg, "--kubeconfig", cp.Kubeconfig}
			if tt.namespace != "" {
				args = append(args, "--namespace", tt.namespace)
			}
			stdout, stderr, status := runCheck(t, append(args, tt.images...)...)
			t.Logf("exit status %d, output:\n%s%s", status, stdout, stderr)
			if status != tt.status {
				t.Errorf("exit status = %d, want %d\nstdout:\n%s\nstderr:\n%s", status, tt.status, stdout, stderr)
			}
			lines := strings.Split(stdout, "\n")
			for _, want := range tt.wantLines {
				if !slices.Contains(lines, want) {
					t.Errorf("no line %q in:\n%s", want, stdout)
				}
			}
			if strings.Contains(stdout+stderr, checkSecretData) || strings.Contains(stdout+stderr, "dXNlcjpwYXNz") {
				t.Errorf("output contains secret data:\n%s\n%s", stdout, stderr)
			}
		})
	}
}

func TestCheckSubcommandUsageErrors(t *testing.T) {
	good := writeCheckConfig(t, e2eConfig)
	bad := writeCheckConfig(t, "registries:\n  - registry: ftp://x\n    secret: {namespace: src, name: Bad_Name}\n")
	tests := []struct {
		name       string
		args       []string
		wantStderr string
	}{
		{name: "invalid configuration names the field", args: []string{"--config", bad, "quay.io/x"}, wantStderr: "registries[0].secret.name"},
		{name: "unknown namespace", args: []string{"--config", good, "--kubeconfig", cp.Kubeconfig, "--namespace", "check-absent", "quay.io/x"},
			wantStderr: `read namespace "check-absent"`},
		{name: "no image", args: []string{"--config", good}, wantStderr: "at least one IMAGE is required"},
		{name: "a webhook flag is not a check flag", args: []string{"--config", good, "--webhook-port", "1", "quay.io/x"},
			wantStderr: "flag provided but not defined: -webhook-port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, status := runCheck(t, tt.args...)
			if status != checkcmd.ExitUsage {
				t.Errorf("exit status = %d, want %d\nstdout:\n%s\nstderr:\n%s", status, checkcmd.ExitUsage, stdout, stderr)
			}
			if !strings.Contains(stderr, tt.wantStderr) {
				t.Errorf("stderr does not contain %q:\n%s", tt.wantStderr, stderr)
			}
		})
	}
}

// TestCheckAgreesWithTheWebhook creates a Pod per image and compares what the webhook gave it with what
// check said it would get, with the configuration the webhook runs.
func TestCheckAgreesWithTheWebhook(t *testing.T) {
	payments := newNamespace(t, "check-agree-payments", merge(optIn(), map[string]string{"team": "payments"}))
	shop := newNamespace(t, "check-agree-shop", optIn())
	cfg := writeCheckConfig(t, e2eConfig)
	images := []string{
		"registry.example.com:5000/team-a/api:1", "registry.example.com:5000/team-ab/api:1", "registry.example.com/team-a/api",
		ecrImage, "myorg/app", "nginx", "quay.io/x/y", "ghcr.io/x/y",
	}
	for _, ns := range []string{payments, shop} {
		for i, image := range images {
			stdout, stderr, _ := runCheck(t, "--config", cfg, "--kubeconfig", cp.Kubeconfig, "--namespace", ns, image)
			var said []string
			for _, line := range strings.Split(stdout, "\n") {
				if rest, ok := strings.CutPrefix(line, "  result: gets "); ok && !strings.HasPrefix(rest, "nothing") {
					rest, _, _ = strings.Cut(rest, " (")
					rest, _, _ = strings.Cut(rest, ", but")
					said = strings.Split(rest, ", ")
				}
			}
			pod, _ := cp.MustCreatePod(t, ns, podWith("agree-"+string(rune('a'+i)), image))
			if diff := cmp.Diff(said, refNames(pod)); diff != "" {
				t.Errorf("namespace %s, image %s: check said (-) and the webhook gave (+):\n%s\ncheck output:\n%s%s", ns, image, diff, stdout, stderr)
			}
		}
	}
}
