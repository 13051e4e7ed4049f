package e2e

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/pullsecret-injector/pullsecret-injector/config/configtest"
	"github.com/pullsecret-injector/pullsecret-injector/internal/managed"
	"github.com/pullsecret-injector/pullsecret-injector/internal/policy"
	"github.com/pullsecret-injector/pullsecret-injector/internal/policy/policytest"
	"github.com/pullsecret-injector/pullsecret-injector/test/testenv"
)

// policyOptIn is the opt-in label of the policy test's own configuration. The webhook TestMain registers
// selects namespaces labelled pullsecret-injector.io/inject=enabled, and this test's namespaces never are,
// so neither the webhook nor the policy acts on the other's namespaces.
const policyOptIn = "e2e.pullsecret-injector.io/policy"

// policyConfig is the webhook's e2eConfig behind an opt-in label of its own, with entries added for what
// else the policy must reproduce: Docker Hub's index.docker.io fallback as a second pattern for one
// Secret, a lone star (single-label and IPv6 hosts), an IPv6 host, and every per-entry selector operator.
const policyConfig = `namespaceSelector: {matchLabels: {"` + policyOptIn + `": enabled}}` + e2eConfig + `
  - registry: https://index.docker.io/v1/
    secret: {namespace: pullsecret-injector, name: hub-regcred}
  - registry: ghcr.io/org
    secret: {namespace: pullsecret-injector, name: ghcr-regcred}
    namespaceSelector:
      matchExpressions:
        - {key: tier, operator: In, values: [prod, staging]}
        - {key: legacy, operator: DoesNotExist}
  - registry: "*"
    secret: {namespace: pullsecret-injector, name: local-regcred}
  - registry: "[::1]:5000"
    secret: {namespace: pullsecret-injector, name: local-regcred}
  - registry: localhost:5000
    secret: {namespace: pullsecret-injector, name: localport-regcred}
    namespaceSelector:
      matchExpressions:
        - {key: env, operator: NotIn, values: [dev]}
        - {key: team, operator: Exists}
`

// The policy the policy-mode process writes is the one policy.Build compiles from its configuration, and it
// carries the label that makes it the project's.
func TestPolicyModeWritesTheCompiledPolicy(t *testing.T) {
	mode := policyMode(t)
	ctx := context.Background()
	want, wantBinding, err := policy.Build(mode.matcher, policy.Options{PolicyName: policyModeName})
	if err != nil {
		t.Fatal(err)
	}
	got, err := mode.cs.AdmissionregistrationV1().MutatingAdmissionPolicies().Get(ctx, policyModeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want.Spec, got.Spec); diff != "" {
		t.Errorf("policy spec (-compiled +stored):\n%s", diff)
	}
	binding, err := mode.cs.AdmissionregistrationV1().MutatingAdmissionPolicyBindings().Get(ctx, policyModeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(wantBinding.Spec, binding.Spec); diff != "" {
		t.Errorf("binding spec (-compiled +stored):\n%s", diff)
	}
	if !managed.IsManaged(got) || !managed.IsManaged(binding) {
		t.Errorf("labels %v and %v, want %s", got.Labels, binding.Labels, managed.Selector)
	}
}

// TestPolicyModeRefusesWhatItCannotCompile: a configuration with a pattern the policy cannot express
// exactly stops a process in policy mode at start, with the reason and the entry; the webhook mode serves it.
func TestPolicyModeRefusesWhatItCannotCompile(t *testing.T) {
	const cfg = `
registries:
  - registry: "cafe*:5000"
    secret: {namespace: pullsecret-injector, name: quay-regcred}
`
	w, err := cp.StartWebhookNoWait(binary, []byte(cfg), "--injection=policy", "--policy-name=refused")
	if err != nil {
		t.Fatal(err)
	}
	stopAfterTest(t, w)
	if !w.Wait(testenv.ReadyTimeout) {
		t.Fatal("the process did not exit")
	}
	for _, want := range []string{"registries[0].registry", "cannot be compiled exactly"} {
		if !strings.Contains(w.Log(), want) {
			t.Errorf("log does not say %q:\n%s", want, tail(w.Log(), 20))
		}
	}
}

// TestPolicyModeWithoutTheProcess runs two replicas in policy mode on a control plane of their own and
// measures how long a newly labelled namespace waits for its copies, and a reload's new entry for its
// copies in every namespace. Then it stops every replica: Pods in the opted-in namespaces are still created,
// with their references, and the copies they name exist. A namespace labelled while nothing runs gets the
// references but no copy, the window the operations guide describes. Last, a replica in webhook mode with
// eager provisioning deletes the policy objects and makes the copies of a newly labelled namespace.
func TestPolicyModeWithoutTheProcess(t *testing.T) {
	ctx := context.Background()
	plane, cs := ownControlPlane(t)
	if err := createSources(ctx, cs); err != nil {
		t.Fatal(err)
	}
	// The owner of the policy objects: helm uninstall deletes the chart's ClusterRole, and the garbage
	// collector (not run here) the objects it owns.
	owner, err := cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "psi-owner"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m := configtest.Matcher(t, policyConfig)
	mode := &injectionMode{name: "stopped", plane: plane, cs: cs, matcher: m, optIn: map[string]string{policyOptIn: "enabled"}}
	args := []string{"--injection=policy", "--policy-name=" + policyModeName, "--policy-owner-clusterrole=" + owner.Name,
		"--leader-election-id", "stopped",
		"--leader-election-lease-duration", leaseDuration.String(),
		"--leader-election-renew-deadline", renewDeadline.String(),
		"--leader-election-retry-period", retryPeriod.String()}
	var replicas []*testenv.Webhook
	for range 2 {
		w, err := plane.StartWebhook(ctx, binary, []byte(policyConfig), args...)
		if err != nil {
			t.Fatal(err)
		}
		stopAfterTest(t, w)
		replicas = append(replicas, w)
	}
	probe := mode.namespace(t, "probe", true, nil)
	if err := testenv.WaitForMutation(ctx, cs, probe.Name, "quay.io/probe/app", "quay-regcred"); err != nil {
		t.Fatal(err)
	}
	stored, err := cs.AdmissionregistrationV1().MutatingAdmissionPolicies().Get(ctx, policyModeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if refs := stored.OwnerReferences; len(refs) != 1 || refs[0].UID != owner.UID || refs[0].Kind != "ClusterRole" {
		t.Errorf("policy owner references %+v, want the ClusterRole %s", refs, owner.Name)
	}

	// A namespace created, then labelled, as a pipeline does: how long until its copies exist.
	teamLabels := merge(mode.optIn, map[string]string{"team": "payments", "tier": "prod"})
	wantCopies := func(nsLabels map[string]string) []string {
		var out []string
		for _, src := range m.Sources() {
			if e := m.EntryForSecret(src.Name); m.Selects(e, labels.Set(nsLabels)) {
				out = append(out, src.Name)
			}
		}
		return out
	}
	const namespaces = 10
	var labelled []string
	var waits []time.Duration
	for range namespaces {
		ns := mode.namespace(t, "labelled", false, nil)
		labelNamespace(t, cs, ns.Name, teamLabels)
		waits = append(waits, mode.waitForCopies(t, ns.Name, wantCopies(teamLabels)...))
		labelled = append(labelled, ns.Name)
	}
	t.Logf("a newly labelled namespace waited for its %d copies: median %s, max %s (%d namespaces)", len(wantCopies(teamLabels)),
		testenv.Percentile(slices.Clone(waits), 50).Round(time.Millisecond), slices.Max(waits).Round(time.Millisecond), namespaces)

	// A reload adds an entry: its copy appears in every namespace it selects, no Pod needed.
	reloaded := policyConfig + `
  - registry: reload.example.com
    secret: {namespace: pullsecret-injector, name: team-a-regcred}
  - registry: added.example.com
    secret: {namespace: pullsecret-injector, name: quay-regcred-added}
`
	if _, err := cs.CoreV1().Secrets(sourceNamespace).Create(ctx, pullSecret("quay-regcred-added", "added.example.com"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for _, w := range replicas {
		if err := w.UpdateConfig([]byte(reloaded)); err != nil {
			t.Fatal(err)
		}
	}
	for _, ns := range labelled {
		mode.waitForCopies(t, ns, "quay-regcred-added")
	}
	t.Logf("a reload's new entry reached its copies in %d namespaces in %s", namespaces, time.Since(start).Round(time.Millisecond))
	m = configtest.Matcher(t, reloaded)
	mode.matcher = m
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, testenv.SettleTimeout, true, func(ctx context.Context) (bool, error) {
		got, err := cs.CoreV1().Pods(labelled[0]).Create(ctx, podWith("probe", "added.example.com/app"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err == nil && slices.Contains(refNames(got), "quay-regcred-added"), nil
	})
	if err != nil {
		t.Fatalf("the reloaded policy never took effect: %v", err)
	}

	// Every replica stops. The API server still adds the references, and the copies are there.
	for _, w := range replicas {
		if err := w.Stop(); err != nil {
			t.Fatal(err)
		}
	}
	images := []string{"quay.io/org/app", "registry.example.com:5000/team-a/api", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app", "added.example.com/x"}
	for _, ns := range labelled {
		pod, _, err := plane.CreatePod(ctx, ns, podWith("app", images...))
		if err != nil {
			t.Fatalf("create a Pod with every replica stopped: %v", err)
		}
		want := policytest.Want(m, podWith("app", images...), labels.Set(teamLabels), policy.InjectedAnnotation)
		if diff := cmp.Diff(want.Spec.ImagePullSecrets, pod.Spec.ImagePullSecrets); diff != "" {
			t.Errorf("namespace %s: imagePullSecrets with every replica stopped (-want +got):\n%s", ns, diff)
		}
		for _, ref := range pod.Spec.ImagePullSecrets {
			if _, err := cs.CoreV1().Secrets(ns).Get(ctx, ref.Name, metav1.GetOptions{}); err != nil {
				t.Errorf("namespace %s: the copy %s the Pod names: %v", ns, ref.Name, err)
			}
		}
	}
	// Labelled while nothing runs: the references, but no copy until a replica runs again.
	late := mode.namespace(t, "late", true, nil)
	pod, _, err := plane.CreatePod(ctx, late.Name, podWith("app", "quay.io/org/app"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"quay-regcred"}, refNames(pod)); diff != "" {
		t.Errorf("imagePullSecrets in a namespace labelled with every replica stopped (-want +got):\n%s", diff)
	}
	if _, err := cs.CoreV1().Secrets(late.Name).Get(ctx, "quay-regcred", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("copy in a namespace labelled with every replica stopped: %v, want NotFound", err)
	}

	// Back to webhook mode, with eager provisioning: the new leader deletes the policy objects, and makes
	// the copies of the namespace labelled while nothing ran.
	w, err := plane.StartWebhook(ctx, binary, []byte(reloaded), "--injection=webhook", "--provision=eager",
		"--policy-name="+policyModeName, "--leader-election-id", "stopped")
	if err != nil {
		t.Fatal(err)
	}
	stopAfterTest(t, w)
	mode.waitForCopies(t, late.Name, "quay-regcred")
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, testenv.SettleTimeout, true, func(ctx context.Context) (bool, error) {
		_, errP := cs.AdmissionregistrationV1().MutatingAdmissionPolicies().Get(ctx, policyModeName, metav1.GetOptions{})
		_, errB := cs.AdmissionregistrationV1().MutatingAdmissionPolicyBindings().Get(ctx, policyModeName, metav1.GetOptions{})
		return apierrors.IsNotFound(errP) && apierrors.IsNotFound(errB), nil
	})
	if err != nil {
		t.Fatalf("webhook mode left the policy objects: %v", err)
	}
}
