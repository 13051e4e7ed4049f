// Package e2e runs the pullsecret-injector binary against a real kube-apiserver and etcd and checks what
// the API server persists.
package e2e

import (
	"context"
	"fmt"
	"os"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/test/fixtures"
	"github.com/pullsecret-injector/pullsecret-injector/test/testenv"
)

const (
	sourceNamespace = "pullsecret-injector"
	webhookName     = "pullsecret-injector-e2e"
)

// e2eConfig maps one registry to each behaviour under test.
const e2eConfig = `
registries:
` + fixtures.ExampleRegistries + `  - registry: docker.io/myorg
    secret: {namespace: pullsecret-injector, name: hub-regcred}
  - registry: quay.io
    secret: {namespace: pullsecret-injector, name: quay-regcred}
  - registry: missing.example.com
    secret: {namespace: pullsecret-injector, name: missing-regcred}
  - registry: conflict.example.com
    secret: {namespace: pullsecret-injector, name: conflict-regcred}
  - registry: opaque.example.com
    secret: {namespace: pullsecret-injector, name: opaque-regcred}
` + lifecycleEntries

// lifecycleEntries give each lifecycle test a Secret of its own, so that no test's rotation, revocation or
// reload touches another's copies.
const lifecycleEntries = `
  - registry: rotate.example.com
    secret: {namespace: pullsecret-injector, name: rotate-regcred}
  - registry: drift.example.com
    secret: {namespace: pullsecret-injector, name: drift-regcred}
  - registry: appears.example.com
    secret: {namespace: pullsecret-injector, name: appears-regcred}
  - registry: revoke.example.com
    secret: {namespace: pullsecret-injector, name: revoke-regcred}
  - registry: removed.example.com
    secret: {namespace: pullsecret-injector, name: removed-regcred}
  - registry: guard.example.com
    secret: {namespace: pullsecret-injector, name: guard-regcred}
`

var (
	cp      *testenv.ControlPlane
	webhook *testenv.Webhook
	// binary is the pullsecret-injector binary TestMain built.
	binary string
	// admin is a client whose warnings are dropped; createPod returns them.
	admin kubernetes.Interface
)

func TestMain(m *testing.M) {
	os.Exit(testenv.RunWithControlPlane(func(plane *testenv.ControlPlane, built string) int {
		cp, binary = plane, built
		return run(m)
	}))
}

// run starts the shared webhook against cp, registers it, waits until it mutates Pods and runs the tests.
func run(m *testing.M) int {
	ctx := context.Background()
	var err error
	if admin, err = newClient(); err != nil {
		fmt.Fprintln(os.Stderr, "admin client:", err)
		return 1
	}
	if err := createSources(ctx, admin); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	webhook, err = cp.StartWebhook(ctx, binary, []byte(e2eConfig))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// The webhook server stops before the control plane (deferred calls run last-in first-out).
	defer func() {
		if err := webhook.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}()

	// No opt-in label in the registration's selector: the handler's own namespace check is what keeps
	// unlabelled namespaces untouched here, as it must when someone registers the webhook by hand.
	mwc := cp.MutatingWebhookConfiguration(webhookName, webhook.Port, &metav1.LabelSelector{
		MatchExpressions: []metav1.LabelSelectorRequirement{{
			Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn,
			Values: []string{"kube-system", sourceNamespace},
		}},
	})
	if _, err := admin.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, mwc, metav1.CreateOptions{}); err != nil {
		fmt.Fprintln(os.Stderr, "register webhook:", err)
		return 1
	}
	probe := "e2e-probe"
	if err := createNamespace(ctx, probe, optIn()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := testenv.WaitForMutation(ctx, admin, probe, "quay.io/probe/app", "quay-regcred"); err != nil {
		fmt.Fprintln(os.Stderr, err, "\n--- webhook log ---\n", webhook.Log())
		return 1
	}
	code := m.Run()
	stopPolicyMode()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "--- webhook log (%s) ---\n%s\n", webhook.LogPath, tail(webhook.Log(), 200))
	}
	return code
}

// dockerConfig returns a dockerconfigjson payload; the credentials are fake, the tests compare bytes.
func dockerConfig(registry string) []byte {
	return []byte(fmt.Sprintf(`{"auths":{%q:{"auth":"dXNlcjpwYXNz"}}}`, registry))
}

// createSources creates the source namespace and the source Secrets of e2eConfig through cs.
func createSources(ctx context.Context, cs kubernetes.Interface) error {
	if err := createNamespaceIn(ctx, cs, sourceNamespace, nil); err != nil {
		return err
	}
	sources := []*corev1.Secret{
		pullSecret("team-a-regcred", "registry.example.com:5000"),
		pullSecret("ecr-regcred", "123456789012.dkr.ecr.eu-west-1.amazonaws.com"),
		pullSecret("hub-regcred", "https://index.docker.io/v1/"),
		pullSecret("quay-regcred", "quay.io"),
		pullSecret("conflict-regcred", "conflict.example.com"),
		pullSecret("rotate-regcred", "rotate.example.com"),
		pullSecret("drift-regcred", "drift.example.com"),
		pullSecret("revoke-regcred", "revoke.example.com"),
		pullSecret("removed-regcred", "removed.example.com"),
		pullSecret("guard-regcred", "guard.example.com"),
		{
			ObjectMeta: metav1.ObjectMeta{Name: "opaque-regcred"},
			Type:       corev1.SecretTypeOpaque,
			Data:       map[string][]byte{"token": []byte("not-a-docker-config")},
		},
	}
	for _, s := range sources {
		if _, err := cs.CoreV1().Secrets(sourceNamespace).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create source secret %q: %w", s.Name, err)
		}
	}
	return nil
}

func pullSecret(name, registry string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: dockerConfig(registry)},
	}
}

func optIn() map[string]string {
	return map[string]string{config.InjectLabel: config.InjectEnabled}
}

func createNamespace(ctx context.Context, name string, labels map[string]string) error {
	return createNamespaceIn(ctx, admin, name, labels)
}

func createNamespaceIn(ctx context.Context, cs kubernetes.Interface, name string, labels map[string]string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create namespace %q: %w", name, err)
	}
	return nil
}

// newClient returns an admin client that drops warnings and allows enough requests per second for the
// concurrent tests.
func newClient() (kubernetes.Interface, error) {
	cfg := rest.CopyConfig(cp.Config)
	cfg.QPS, cfg.Burst = 200, 400
	cfg.WarningHandlerWithContext = rest.NoWarnings{}
	return kubernetes.NewForConfig(cfg)
}

func tail(s string, lines int) string {
	n := 0
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '\n' {
			n++
			if n == lines {
				return s[i+1:]
			}
		}
	}
	return s
}

// stopAfterTest stops w when the test ends and, when the test failed, logs the end of w's log.
func stopAfterTest(t *testing.T, w *testenv.Webhook) {
	t.Helper()
	t.Cleanup(func() {
		if err := w.Stop(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("--- webhook log (%s, port %d) ---\n%s", w.LogPath, w.Port, tail(w.Log(), 100))
		}
	})
}

// ownControlPlane starts a control plane for one test, apart from the shared one (so that no other
// webhook or reconciler acts beside the test's own), with an admin clientset; it stops when the test ends,
// after the test's own cleanups.
func ownControlPlane(t *testing.T, opts ...testenv.ControlPlaneOption) (*testenv.ControlPlane, kubernetes.Interface) {
	t.Helper()
	plane, err := testenv.StartControlPlane(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := plane.Stop(); err != nil {
			t.Error(err)
		}
	})
	cs, err := kubernetes.NewForConfig(plane.Config)
	if err != nil {
		t.Fatal(err)
	}
	return plane, cs
}

// registerWebhook creates mwc through cs and deletes it when the test ends, so that no Pod of a later test
// is sent to a webhook that has stopped.
func registerWebhook(t *testing.T, cs kubernetes.Interface, mwc *admissionregistrationv1.MutatingWebhookConfiguration) {
	t.Helper()
	if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(context.Background(), mwc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("register webhook %q: %v", mwc.Name, err)
	}
	t.Cleanup(func() {
		if err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), mwc.Name, metav1.DeleteOptions{}); err != nil {
			t.Errorf("unregister webhook %q: %v", mwc.Name, err)
		}
	})
}
