package chart

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/internal/managed"
	"github.com/pullsecret-injector/pullsecret-injector/test/testenv"
)

// The admission guard's messages, one per rule, as the API server reports them.
const (
	refusedNotACopy        = "may create and update only its copies"
	refusedUnserved        = "may not create or update Secrets in namespace "
	refusedTakeOver        = "may update only a Secret that already is one of its copies"
	refusedDeleteNotACopy  = "may delete only its copies"
	refusedDeleteNeverCopy = "may not delete Secrets in namespace "
)

// guardKinds are the rendered kinds an admission guard test applies: the ServiceAccount, its RBAC and the
// guard. Not the webhook registration, which with no binary behind it would refuse other tests' Pods.
var guardKinds = []string{"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
	"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}

// TestAdmissionGuardRendering checks when the chart renders the admission guard, and whom it names.
func TestAdmissionGuardRendering(t *testing.T) {
	rendered := func(objs []*unstructured.Unstructured) []string {
		var out []string
		for _, k := range kinds(objs) {
			if strings.HasPrefix(k, "ValidatingAdmissionPolicy") {
				out = append(out, k)
			}
		}
		return out
	}
	t.Run("rendered by default, for the release's ServiceAccount", func(t *testing.T) {
		objs := render(t, release, "guard-render", "")
		if diff := cmp.Diff([]string{"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}, rendered(objs)); diff != "" {
			t.Errorf("admission guard kinds (-want +got):\n%s", diff)
		}
		checkGuardSubject(t, objs, "guard-render", fullname)
	})
	t.Run("not rendered when admissionGuard.enabled is false", func(t *testing.T) {
		objs := render(t, release, "guard-render", "admissionGuard: {enabled: false}\n")
		if got := rendered(objs); len(got) != 0 {
			t.Errorf("rendered %v with the admission guard disabled", got)
		}
	})
	t.Run("not rendered where the API server does not serve ValidatingAdmissionPolicy", func(t *testing.T) {
		// Kubernetes before 1.30 serves admissionregistration.k8s.io/v1, but not this kind in it.
		out := mustHelm(t, "template", release, chartDir, "--namespace", "guard-render", "--kube-version", "1.29.0",
			"--api-versions", "admissionregistration.k8s.io/v1")
		objs, err := parseManifests(out)
		if err != nil {
			t.Fatal(err)
		}
		if got := rendered(objs); len(got) != 0 {
			t.Errorf("rendered %v for an API server without ValidatingAdmissionPolicy", got)
		}
	})
	t.Run("cert-manager mode makes no exception for a certificate Secret", func(t *testing.T) {
		objs := render(t, release, "guard-render", "certManager: {enabled: true}\n")
		vap := one[admissionregistrationv1.ValidatingAdmissionPolicy](t, objs, "ValidatingAdmissionPolicy")
		i := slices.IndexFunc(vap.Spec.Variables, func(v admissionregistrationv1.Variable) bool { return v.Name == "isCertSecret" })
		if i < 0 || vap.Spec.Variables[i].Expression != "false" {
			t.Errorf("variables %v: want isCertSecret false, cert-manager writes the certificate Secret", vap.Spec.Variables)
		}
	})
}

// checkGuardSubject checks that the admission guard applies to the ServiceAccount the Deployment runs as,
// and to nobody else, and refuses what it does not allow.
func checkGuardSubject(t *testing.T, objs []*unstructured.Unstructured, namespace, serviceAccount string) {
	t.Helper()
	vap := one[admissionregistrationv1.ValidatingAdmissionPolicy](t, objs, "ValidatingAdmissionPolicy")
	want := []admissionregistrationv1.MatchCondition{{
		Name:       "webhook-service-account",
		Expression: fmt.Sprintf("request.userInfo.username == %q", testenv.ServiceAccountUser(namespace, serviceAccount)),
	}}
	if diff := cmp.Diff(want, vap.Spec.MatchConditions); diff != "" {
		t.Errorf("admission guard matchConditions (-want +got):\n%s", diff)
	}
	if fp := vap.Spec.FailurePolicy; fp == nil || *fp != admissionregistrationv1.Fail {
		t.Errorf("admission guard failurePolicy %v, want Fail", fp)
	}
	b := one[admissionregistrationv1.ValidatingAdmissionPolicyBinding](t, objs, "ValidatingAdmissionPolicyBinding")
	if b.Spec.PolicyName != vap.Name || !slices.Equal(b.Spec.ValidationActions, []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny}) {
		t.Errorf("binding of policy %q with actions %v, want %q with [Deny]", b.Spec.PolicyName, b.Spec.ValidationActions, vap.Name)
	}
}

// TestAdmissionGuard applies the rendered ServiceAccount, RBAC and admission guard, and checks with real
// requests made as that ServiceAccount that the guard lets through what the binary writes and refuses the
// rest of what RBAC grants, and that it leaves every other user alone. Each refused request breaks one rule
// of the guard, and the test checks that rule's message.
func TestAdmissionGuard(t *testing.T) {
	ctx := context.Background()
	const (
		rel, namespace = "guard", "guard-system"
		policy         = "guard-pullsecret-injector"
		certName       = policy + "-cert"
		// team is an ordinary namespace: not opted in, which the guard does not know of, and not excluded.
		team, excluded = "guard-team", "guard-excluded"
	)
	sa := testenv.ServiceAccountUser(namespace, policy)
	installGuard(ctx, t, rel, namespace, "webhook: {excludedNamespaces: ["+excluded+"]}\n", sa, policy)
	ensureNamespace(t, team, nil)
	ensureNamespace(t, excluded, nil)

	as := clientAs(t, rest.ImpersonationConfig{UserName: sa})
	secrets := as.CoreV1().Secrets
	// Secrets someone else made: the admin's.
	theirs := pullSecret("theirs", "registry.guard.test")
	labelledOnly := pullSecret("labelled-only", "registry.guard.test")
	labelledOnly.Labels = map[string]string{managed.ManagedByLabel: managed.ManagedByValue}
	wrongType := guardCopy("wrong-type", team)
	wrongType.Type, wrongType.Data = corev1.SecretTypeOpaque, nil
	for _, s := range []struct {
		namespace string
		secret    *corev1.Secret
	}{
		{team, theirs}, {team, labelledOnly}, {team, wrongType}, {team, guardCopy("kept", team)},
		{"kube-system", guardCopy("guard-kube-copy", "kube-system")},
		{excluded, guardCopy("excluded-copy", excluded)}, {excluded, guardCopy("revoked", excluded)},
		{namespace, guardCopy("release-copy", namespace)},
	} {
		mustCreate(ctx, t, func() error {
			_, err := admin.CoreV1().Secrets(s.namespace).Create(ctx, s.secret, metav1.CreateOptions{})
			return err
		})
	}
	t.Cleanup(func() {
		if err := admin.CoreV1().Secrets("kube-system").Delete(context.Background(), "guard-kube-copy", metav1.DeleteOptions{}); err != nil {
			t.Errorf("delete the test's Secret in kube-system: %v", err)
		}
	})

	create := func(namespace string, s *corev1.Secret) func() error {
		return func() error {
			_, err := secrets(namespace).Create(ctx, s, metav1.CreateOptions{})
			return err
		}
	}
	patch := func(namespace, name, patch string) func() error {
		return func() error {
			_, err := secrets(namespace).Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
			return err
		}
	}
	del := func(namespace, name string) func() error {
		return func() error { return secrets(namespace).Delete(ctx, name, metav1.DeleteOptions{}) }
	}
	rotate := `{"data":{".dockerconfigjson":"eyJhdXRocyI6e319"}}`
	saToken := guardCopy("token", team)
	saToken.Type, saToken.Data = corev1.SecretTypeServiceAccountToken, nil
	saToken.Annotations[corev1.ServiceAccountNameKey] = "default"
	opaque := guardCopy("opaque", team)
	opaque.Type, opaque.Data = corev1.SecretTypeOpaque, map[string][]byte{"key": []byte("value")}
	unlabelled := guardCopy("unlabelled", team)
	unlabelled.Labels = nil
	unannotated := guardCopy("unannotated", team)
	unannotated.Annotations = nil
	otherManager := guardCopy("other-manager", team)
	otherManager.Labels[managed.ManagedByLabel] = "Helm"
	certSecret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: certName},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: []byte("cert"), corev1.TLSPrivateKeyKey: []byte("key")},
	}

	// In order: the certificate Secret is created before it is updated and before its delete is refused.
	for _, tc := range []struct {
		name string
		do   func() error
		// refused is the message of the rule that refuses the request; empty: the request is allowed.
		refused string
	}{
		{"create a copy in a namespace that is neither excluded nor opted in", create(team, guardCopy("made", team)), ""},
		{"patch the copy's data, as the reconciler does", patch(team, "made", rotate), ""},
		{"delete the copy, as a revocation does", del(team, "made"), ""},
		{"create a placeholder copy", create(team, managed.Placeholder(config.SecretRef{Namespace: namespace, Name: "placeholder"}, team)), ""},
		{"delete a copy whose type someone changed, to replace it", del(team, wrongType.Name), ""},
		{"delete a copy in an excluded namespace: made before it was excluded, now revoked", del(excluded, "revoked"), ""},
		{"create the certificate Secret", create(namespace, certSecret), ""},
		{"update the certificate Secret", func() error {
			s, err := admin.CoreV1().Secrets(namespace).Get(ctx, certName, metav1.GetOptions{})
			if err != nil {
				return err
			}
			s.Data[corev1.TLSCertKey] = []byte("renewed")
			_, err = secrets(namespace).Update(ctx, s, metav1.UpdateOptions{})
			return err
		}, ""},

		{"create a service-account-token Secret, even labelled and annotated as a copy", create(team, saToken), refusedNotACopy},
		{"create an Opaque Secret labelled and annotated as a copy", create(team, opaque), refusedNotACopy},
		{"create a pull secret without the managed-by label", create(team, unlabelled), refusedNotACopy},
		{"create a pull secret labelled managed-by another tool", create(team, otherManager), refusedNotACopy},
		{"create a pull secret without the source annotation", create(team, unannotated), refusedNotACopy},
		{"create a Secret of the certificate Secret's name outside the release namespace", create(team, certSecret), refusedNotACopy},
		{"create a copy in kube-system", create("kube-system", guardCopy("guard-new", "kube-system")), refusedUnserved + "kube-system"},
		{"create a copy in an excluded namespace", create(excluded, guardCopy("new", excluded)), refusedUnserved + excluded},
		{"create a copy in the release namespace", create(namespace, guardCopy("new", namespace)), refusedUnserved + namespace},
		{"patch a copy in kube-system", patch("kube-system", "guard-kube-copy", rotate), refusedUnserved + "kube-system"},
		{"patch a copy in an excluded namespace", patch(excluded, "excluded-copy", rotate), refusedUnserved + excluded},
		{"patch the label and annotation onto someone else's Secret", patch(team, theirs.Name, fmt.Sprintf(
			`{"metadata":{"labels":{%q:%q},"annotations":{%q:"x/y"}}}`, managed.ManagedByLabel, managed.ManagedByValue, managed.SourceAnnotation)),
			refusedTakeOver},
		{"patch the source annotation onto a Secret that has only the label", patch(team, labelledOnly.Name, fmt.Sprintf(
			`{"metadata":{"annotations":{%q:"x/y"}}}`, managed.SourceAnnotation)), refusedTakeOver},
		{"patch the managed-by label off a copy", patch(team, "kept", fmt.Sprintf(`{"metadata":{"labels":{%q:null}}}`, managed.ManagedByLabel)),
			refusedNotACopy},
		{"delete someone else's Secret", del(team, theirs.Name), refusedDeleteNotACopy},
		{"delete a Secret with the label but no source annotation", del(team, labelledOnly.Name), refusedDeleteNotACopy},
		{"delete a copy in kube-system", del("kube-system", "guard-kube-copy"), refusedDeleteNeverCopy + "kube-system"},
		{"delete a Secret labelled and annotated as a copy in the release namespace", del(namespace, "release-copy"),
			refusedDeleteNeverCopy + namespace},
		{"delete the certificate Secret", del(namespace, certName), refusedDeleteNotACopy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			switch {
			case tc.refused == "" && err != nil:
				t.Errorf("got %v, want it allowed", err)
			case tc.refused != "" && !deniedByGuard(err, policy):
				t.Errorf("got %v, want the admission guard %q to refuse it", err, policy)
			case tc.refused != "" && !strings.Contains(err.Error(), tc.refused):
				t.Errorf("got %v, want the refusal to say %q", err, tc.refused)
			}
		})
	}

	// Dry runs go through admission like the real thing and leave the fixtures alone.
	dryRun := []string{metav1.DryRunAll}
	unguarded := func(as kubernetes.Interface) []struct {
		name string
		do   func() error
	} {
		return []struct {
			name string
			do   func() error
		}{
			{"create an Opaque Secret in kube-system", func() error {
				s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{GenerateName: "guard-"}, StringData: map[string]string{"k": "v"}}
				_, err := as.CoreV1().Secrets("kube-system").Create(ctx, s, metav1.CreateOptions{DryRun: dryRun})
				return err
			}},
			{"patch the managed-by label onto someone else's Secret", func() error {
				p := fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, managed.ManagedByLabel, managed.ManagedByValue)
				_, err := as.CoreV1().Secrets(team).Patch(ctx, theirs.Name, types.MergePatchType, []byte(p), metav1.PatchOptions{DryRun: dryRun})
				return err
			}},
			{"delete someone else's Secret", func() error {
				return as.CoreV1().Secrets(team).Delete(ctx, theirs.Name, metav1.DeleteOptions{DryRun: dryRun})
			}},
			{"delete a copy in kube-system", func() error {
				return as.CoreV1().Secrets("kube-system").Delete(ctx, "guard-kube-copy", metav1.DeleteOptions{DryRun: dryRun})
			}},
		}
	}
	for _, who := range []struct {
		name string
		as   kubernetes.Interface
	}{
		{"the admin", admin},
		// With the same name as the guarded ServiceAccount and cluster-admin's group, so that only the
		// namespace in the user name tells them apart.
		{"a ServiceAccount of the same name in another namespace", clientAs(t, rest.ImpersonationConfig{
			UserName: testenv.ServiceAccountUser(team, policy), Groups: []string{"system:masters", "system:authenticated"}})},
	} {
		for _, tc := range unguarded(who.as) {
			t.Run(who.name+" is unaffected: "+tc.name, func(t *testing.T) {
				if err := tc.do(); err != nil {
					t.Errorf("got %v, want it allowed", err)
				}
			})
		}
	}
}

// TestAdmissionGuardCertManager checks that with cert-manager, which writes the certificate Secret, the
// webhook's ServiceAccount may not write it.
func TestAdmissionGuardCertManager(t *testing.T) {
	ctx := context.Background()
	const rel, namespace, policy = "guardcm", "guard-cm", "guardcm-pullsecret-injector"
	sa := testenv.ServiceAccountUser(namespace, policy)
	installGuard(ctx, t, rel, namespace, "certManager: {enabled: true}\n", sa, policy)
	as := clientAs(t, rest.ImpersonationConfig{UserName: sa})
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: policy + "-cert-manager"},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: []byte("cert"), corev1.TLSPrivateKeyKey: []byte("key")},
	}
	_, err := as.CoreV1().Secrets(namespace).Create(ctx, s, metav1.CreateOptions{})
	if !deniedByGuard(err, policy) || !strings.Contains(err.Error(), refusedNotACopy) {
		t.Errorf("create cert-manager's certificate Secret: got %v, want the admission guard %q to refuse it", err, policy)
	}
}

// installGuard applies the ServiceAccount, RBAC and admission guard the chart renders for release in
// namespace with values, removes them when the test ends, and waits until the API server enforces the guard
// named policy on user.
func installGuard(ctx context.Context, t *testing.T, release, namespace, values, user, policy string) {
	t.Helper()
	ensureNamespace(t, namespace, nil)
	applied := map[string]bool{}
	for _, obj := range render(t, release, namespace, values) {
		if !slices.Contains(guardKinds, obj.GetKind()) {
			continue
		}
		if err := apply(ctx, obj, false); err != nil {
			t.Fatal(err)
		}
		applied[obj.GetKind()] = true
		t.Cleanup(func() {
			r, _, err := resourceFor(obj)
			if err == nil {
				err = r.Delete(context.Background(), obj.GetName(), metav1.DeleteOptions{})
			}
			if err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("delete %s %q: %v", obj.GetKind(), obj.GetName(), err)
			}
		})
	}
	if len(applied) != len(guardKinds) {
		t.Fatalf("applied %v of the kinds %v: the chart did not render them all", slices.Sorted(maps.Keys(applied)), guardKinds)
	}
	waitForGuard(ctx, t, user, policy)
}

// waitForGuard waits until the API server refuses, through the admission guard named policy, a request
// user must not make. The API server loads and compiles a new policy and its binding a moment after they
// are created, and enforces nothing before.
func waitForGuard(ctx context.Context, t *testing.T, user, policy string) {
	t.Helper()
	as := clientAs(t, rest.ImpersonationConfig{UserName: user})
	probe := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{GenerateName: "guard-probe-"}, StringData: map[string]string{"k": "v"}}
	var last error
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, last = as.CoreV1().Secrets(metav1.NamespaceDefault).Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return deniedByGuard(last, policy), nil
	})
	if err != nil {
		t.Fatalf("the admission guard %q never refused an Opaque Secret made by %s (last: %v): %v", policy, user, last, err)
	}
}

// deniedByGuard reports whether err is a refusal by the admission guard named policy, rather than by RBAC.
func deniedByGuard(err error, policy string) bool {
	return apierrors.IsForbidden(err) && strings.Contains(err.Error(), "ValidatingAdmissionPolicy '"+policy+"'")
}

// guardCopy returns a copy as the binary makes it, of a source of the same name in the release namespace.
func guardCopy(name, namespace string) *corev1.Secret {
	source := pullSecret(name, "registry.guard.test")
	source.Namespace = "guard-system"
	return managed.Copy(source, namespace)
}

// clientAs returns a client that acts as the impersonated user.
func clientAs(t *testing.T, who rest.ImpersonationConfig) kubernetes.Interface {
	t.Helper()
	cfg := rest.CopyConfig(cp.Config)
	cfg.Impersonate = who
	cfg.WarningHandlerWithContext = rest.NoWarnings{}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}
