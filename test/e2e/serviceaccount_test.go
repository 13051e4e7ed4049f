package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pullsecret-injector/pullsecret-injector/internal/managed"
	"github.com/pullsecret-injector/pullsecret-injector/test/testenv"
)

const saConfig = `
registries:
  - registry: sa.example.com
    secret: {namespace: pullsecret-injector, name: sa-regcred}
`

// TestEnforceMountableSecrets runs the webhook against a control plane with the ServiceAccount admission
// plugin enabled, which refuses, after the webhooks, a Pod that references a pull secret its ServiceAccount
// does not list when the ServiceAccount carries kubernetes.io/enforce-mountable-secrets: "true". In the
// default mode the webhook adds nothing for such a Pod (it is admitted as it would have been, with a
// warning); with --serviceaccount-pull-secrets=append it lists the Secret on the ServiceAccount first.
func TestEnforceMountableSecrets(t *testing.T) {
	ctx := context.Background()
	plane, cs := ownControlPlane(t, testenv.WithServiceAccountAdmission())
	mkNamespace := func(name string, labels map[string]string) {
		t.Helper()
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	mkServiceAccount := func(ns, name string, enforce bool) {
		t.Helper()
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if enforce {
			sa.Annotations = map[string]string{managed.EnforceMountableSecretsAnnotation: "true"}
		}
		if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	mkNamespace(sourceNamespace, nil)
	if _, err := cs.CoreV1().Secrets(sourceNamespace).Create(ctx, pullSecret("sa-regcred", "sa.example.com"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	for _, mode := range []string{"skip", "append"} {
		w, err := plane.StartWebhook(ctx, binary, []byte(saConfig), "--serviceaccount-pull-secrets", mode)
		if err != nil {
			t.Fatal(err)
		}
		stopAfterTest(t, w)
		mwc := plane.MutatingWebhookConfiguration("sa-"+mode, w.Port, &metav1.LabelSelector{MatchLabels: map[string]string{"mode": mode}})
		registerWebhook(t, cs, mwc)
	}
	podAs := func(name, sa string, refs ...string) *corev1.Pod {
		p := podWith(name, "sa.example.com/team/app:1")
		p.Spec.ServiceAccountName = sa
		for _, r := range refs {
			p.Spec.ImagePullSecrets = append(p.Spec.ImagePullSecrets, corev1.LocalObjectReference{Name: r})
		}
		return p
	}

	skip := "sa-skip"
	mkNamespace(skip, merge(optIn(), map[string]string{"mode": "skip"}))
	mkServiceAccount(skip, "default", false)
	mkServiceAccount(skip, "locked", true)
	if err := testenv.WaitForMutation(ctx, cs, skip, "sa.example.com/app", "sa-regcred"); err != nil {
		t.Fatal(err)
	}
	t.Run("the plugin is on: a Pod naming a Secret its enforcing ServiceAccount does not list is refused", func(t *testing.T) {
		_, _, err := plane.CreatePod(ctx, skip, podAs("named", "locked", "sa-regcred"))
		if err == nil || !strings.Contains(err.Error(), "does not reference that imagePullSecret") {
			t.Fatalf("create = %v, want the ServiceAccount plugin's refusal", err)
		}
	})
	t.Run("default mode: an enforcing ServiceAccount's Pod is admitted without the Secret, with a warning", func(t *testing.T) {
		pod, warns, err := plane.CreatePod(ctx, skip, podAs("locked", "locked"))
		if err != nil {
			t.Fatalf("Pod refused: %v", err)
		}
		if len(pod.Spec.ImagePullSecrets) != 0 {
			t.Errorf("imagePullSecrets = %v, want none", refNames(pod))
		}
		if !containsAll(warns, `service account "locked" enforces mountable secrets`, "sa-regcred") {
			t.Errorf("warnings %q do not explain", warns)
		}
	})
	t.Run("default mode: a ServiceAccount that does not enforce gets the Secret", func(t *testing.T) {
		pod, _, err := plane.CreatePod(ctx, skip, podAs("open", ""))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"sa-regcred"}, refNames(pod)); diff != "" {
			t.Errorf("imagePullSecrets (-want +got):\n%s", diff)
		}
	})
	t.Run("append mode: the Secret is listed on the ServiceAccount and the Pod is admitted with it", func(t *testing.T) {
		for i := range 5 {
			ns := fmt.Sprintf("sa-append-%d", i)
			mkNamespace(ns, merge(optIn(), map[string]string{"mode": "append"}))
			mkServiceAccount(ns, "default", false)
			mkServiceAccount(ns, "locked", true)
			if i == 0 {
				if err := testenv.WaitForMutation(ctx, cs, ns, "sa.example.com/app", "sa-regcred"); err != nil {
					t.Fatal(err)
				}
			}
			pod, warns, err := plane.CreatePod(ctx, ns, podAs("locked", "locked"))
			if err != nil {
				t.Fatalf("namespace %s: Pod refused: %v", ns, err)
			}
			if diff := cmp.Diff([]string{"sa-regcred"}, refNames(pod)); diff != "" || len(warns) > 0 {
				t.Errorf("namespace %s: imagePullSecrets (-want +got):\n%s\nwarnings %q", ns, diff, warns)
			}
			sa, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "locked", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if len(sa.ImagePullSecrets) != 1 || sa.ImagePullSecrets[0].Name != "sa-regcred" {
				t.Errorf("namespace %s: ServiceAccount imagePullSecrets = %v", ns, sa.ImagePullSecrets)
			}
		}
	})
}
