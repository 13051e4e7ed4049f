package chart

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/pullsecret-injector/pullsecret-injector/internal/managed"
	"github.com/pullsecret-injector/pullsecret-injector/internal/metrics"
	"github.com/pullsecret-injector/pullsecret-injector/test/testenv"
)

const (
	// driveNamespace is the release namespace of the chart the binary runs from.
	driveNamespace = "psi-system"
	// driveImage is an image of the configured registry, and driveSecret its pull secret.
	driveImage  = "registry.chart.test:5000/team/app:1.0"
	driveSecret = "team-regcred"
	// certSecret is the self-mode certificate Secret of the release.
	certSecret = fullname + "-cert"
)

// driveValues configure one registry, a serving certificate that is also valid for 127.0.0.1, where the
// API server reaches the binary in this test, and a ServiceAccount allowed to scrape the metrics.
const driveValues = `
registries:
  - registry: registry.chart.test:5000/team
    secret: {name: team-regcred}
certs:
  extraSANs: ["127.0.0.1"]
metrics:
  readers:
    - {kind: ServiceAccount, name: scraper, namespace: psi-system}
`

// scraper is the ServiceAccount driveValues bind to the metrics-reader ClusterRole, in driveNamespace.
const scraper = "scraper"

// TestRenderedChartDrivesBinary applies what the chart renders (RBAC, admission guard, ConfigMap, webhook
// registration), points the registration's clientConfig at a local port instead of the Service, and runs the
// binary there with the rendered Deployment's arguments and the rendered configuration, as the chart's
// ServiceAccount (every request impersonates it, so the rendered RBAC is all it has). The binary then creates
// its certificate, injects the CA into the registration, takes the lead through the rendered Lease, serves
// Pods the API server sends it, and, as the leader, updates a copy when its source rotates and deletes one
// whose namespace opted out. Afterwards it checks what that identity must and must not be able to do and that
// the binary's log has no Forbidden error, then stops the binary to show which Pods the registration never
// sends to it.
func TestRenderedChartDrivesBinary(t *testing.T) {
	ctx := context.Background()
	optIn := map[string]string{"pullsecret-injector.io/inject": "enabled"}
	// The release namespace carries the opt-in label too: the exclusion, not a missing label, keeps it out.
	ensureNamespace(t, driveNamespace, optIn)
	ports, err := testenv.FreePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	port := ports[0]

	objs := render(t, release, driveNamespace, driveValues)
	var args []string
	var configYAML string
	for _, obj := range objs {
		switch obj.GetKind() {
		case "MutatingWebhookConfiguration":
			webhooks, _ := obj.Object["webhooks"].([]any)
			for _, w := range webhooks {
				w.(map[string]any)["clientConfig"] = map[string]any{"url": fmt.Sprintf("https://127.0.0.1:%d/mutate-v1-pod", port)}
			}
			// With failurePolicy Fail and no binary behind it, the registration would refuse every later
			// test's Pods in opted-in namespaces.
			t.Cleanup(func() {
				if err := admin.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), obj.GetName(), metav1.DeleteOptions{}); err != nil {
					t.Errorf("delete webhook configuration: %v", err)
				}
			})
		case "Deployment":
			args = container(t, one[appsv1.Deployment](t, objs, "Deployment")).Args
		case "ConfigMap":
			configYAML = one[corev1.ConfigMap](t, objs, "ConfigMap").Data["config.yaml"]
		}
		if err := apply(ctx, obj, false); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := admin.CoreV1().Secrets(driveNamespace).Create(ctx, pullSecret(driveSecret, "registry.chart.test:5000"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	sa, kubeconfig := guardedKubeconfig(ctx, t, driveNamespace, fullname)
	local := localArgs(args)
	// A revocation waits this long, and a copy must be this old before it is revoked: the rendered minute
	// would only slow the revocation subtest down.
	// The rendered --metrics-secure stays: the metrics endpoint reviews scrapers' tokens with the rendered RBAC.
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", ports[1])
	local = append(local, "--kubeconfig="+kubeconfig, fmt.Sprintf("--webhook-port=%d", port), "--zap-log-level=debug",
		"--revocation-recheck=2s", "--metrics-bind-address="+metricsAddr)
	// StartWebhook returns once /readyz passes, which in self mode needs the certificate Secret written
	// and the CA in the registration's caBundle: the certificate flow runs with the rendered RBAC.
	w, err := cp.StartWebhook(ctx, binary, []byte(configYAML), local...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := w.Stop(); err != nil {
			t.Error(err)
		}
	})
	defer func() {
		if t.Failed() {
			t.Logf("binary args: %v\n--- webhook log ---\n%s", local, w.Log())
		}
	}()

	ensureNamespace(t, "team-a", optIn)
	if err := testenv.WaitForMutation(ctx, admin, "team-a", driveImage, driveSecret); err != nil {
		t.Fatal(err)
	}

	t.Run("leads through the rendered Lease", func(t *testing.T) {
		// The rendered --leader-election-namespace and --leader-election-id override StartWebhook's own.
		lock := driveNamespace + "/" + fullname
		acquired := func() bool {
			for _, line := range strings.Split(w.Log(), "\n") {
				if strings.Contains(strings.ToLower(line), "successfully acquired lease") && strings.Contains(line, lock) {
					return true
				}
			}
			return false
		}
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
			return acquired(), nil
		})
		if err != nil {
			t.Fatalf("the binary's log does not say it acquired the lease %s: %v", lock, err)
		}
		lease, err := admin.CoordinationV1().Leases(driveNamespace).Get(ctx, fullname, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if ptr.Deref(lease.Spec.HolderIdentity, "") == "" {
			t.Errorf("Lease %s/%s has no holder", driveNamespace, fullname)
		}
	})

	t.Run("Pod in an opted-in namespace gets the secret, copied", func(t *testing.T) {
		pod, _ := cp.MustCreatePod(t, "team-a", newPod("app"))
		if diff := cmp.Diff([]string{driveSecret}, refNames(pod)); diff != "" {
			t.Errorf("imagePullSecrets (-want +got):\n%s", diff)
		}
		source, err := admin.CoreV1().Secrets(driveNamespace).Get(ctx, driveSecret, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		copied, err := admin.CoreV1().Secrets("team-a").Get(ctx, driveSecret, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("copy not created: %v", err)
		}
		if copied.Type != source.Type || !maps.EqualFunc(copied.Data, source.Data, bytes.Equal) ||
			copied.Labels[managed.ManagedByLabel] != managed.ManagedByValue || copied.Annotations[managed.SourceAnnotation] != driveNamespace+"/"+driveSecret {
			t.Errorf("copy has type %q, labels %v, annotations %v, same data %v; want the source's type and data, managed by %s, from %s/%s",
				copied.Type, copied.Labels, copied.Annotations, maps.EqualFunc(copied.Data, source.Data, bytes.Equal),
				managed.ManagedByValue, driveNamespace, driveSecret)
		}
	})

	// The reconciler's writes, made as the ServiceAccount: a merge patch of the copy's data.
	t.Run("a rotated source reaches its copy", func(t *testing.T) {
		source, err := admin.CoreV1().Secrets(driveNamespace).Get(ctx, driveSecret, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		source.Data = pullSecret(driveSecret, "registry.chart.test:5000/rotated").Data
		if _, err := admin.CoreV1().Secrets(driveNamespace).Update(ctx, source, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		var got []byte
		err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, testenv.SettleTimeout, true, func(ctx context.Context) (bool, error) {
			copied, err := admin.CoreV1().Secrets("team-a").Get(ctx, driveSecret, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			got = copied.Data[corev1.DockerConfigJsonKey]
			return maps.EqualFunc(copied.Data, source.Data, bytes.Equal), nil
		})
		if err != nil {
			t.Errorf("copy in team-a holds %q, want the rotated source's %q: %v", got, source.Data[corev1.DockerConfigJsonKey], err)
		}
	})

	// The reconciler's revocation, made as the ServiceAccount: a list of the namespace's Pods, then a delete.
	t.Run("a copy in a namespace that opted out is revoked once no Pod uses it", func(t *testing.T) {
		ensureNamespace(t, "team-r", optIn)
		pod, _ := cp.MustCreatePod(t, "team-r", newPod("revoked"))
		if _, err := admin.CoreV1().Secrets("team-r").Get(ctx, driveSecret, metav1.GetOptions{}); err != nil {
			t.Fatalf("copy not created: %v", err)
		}
		// Never scheduled, so deleted at once.
		if err := admin.CoreV1().Pods("team-r").Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
			t.Fatal(err)
		}
		ns, err := admin.CoreV1().Namespaces().Get(ctx, "team-r", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		delete(ns.Labels, "pullsecret-injector.io/inject")
		if _, err := admin.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, testenv.SettleTimeout, true, func(ctx context.Context) (bool, error) {
			_, err := admin.CoreV1().Secrets("team-r").Get(ctx, driveSecret, metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		})
		if err != nil {
			t.Errorf("copy in team-r not revoked after the namespace opted out: %v", err)
		}
	})

	for _, tc := range notSent {
		t.Run(tc.name+": not mutated", func(t *testing.T) {
			labelNamespace(t, tc.namespace, optIn)
			pod := newPod("not-sent")
			pod.Labels = tc.podLabels
			got, _ := cp.MustCreatePod(t, tc.namespace, pod)
			if refs := refNames(got); len(refs) != 0 {
				t.Errorf("imagePullSecrets = %v, want none", refs)
			}
		})
	}

	t.Run("Pod in a namespace that did not opt in is left alone", func(t *testing.T) {
		ensureNamespace(t, "team-none", nil)
		got, _ := cp.MustCreatePod(t, "team-none", newPod("not-opted-in"))
		if refs := refNames(got); len(refs) != 0 {
			t.Errorf("imagePullSecrets = %v, want none", refs)
		}
		if _, err := admin.CoreV1().Secrets("team-none").Get(ctx, driveSecret, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("get copy in a namespace that did not opt in: %v, want NotFound", err)
		}
	})

	t.Run("dry run is patched and writes nothing", func(t *testing.T) {
		ensureNamespace(t, "team-b", optIn)
		got, err := admin.CoreV1().Pods("team-b").Create(ctx, newPod("dry"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{driveSecret}, refNames(got)); diff != "" {
			t.Errorf("imagePullSecrets (-want +got):\n%s", diff)
		}
		if _, err := admin.CoreV1().Secrets("team-b").Get(ctx, driveSecret, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("get copy after a dry run: %v, want NotFound", err)
		}
	})

	t.Run("Secret of the same name made by someone else is referenced unchanged, with a warning", func(t *testing.T) {
		ensureNamespace(t, "team-c", optIn)
		theirs := pullSecret(driveSecret, "elsewhere.example.com")
		before, err := admin.CoreV1().Secrets("team-c").Create(ctx, theirs, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pod, warnings := cp.MustCreatePod(t, "team-c", newPod("theirs"))
		if diff := cmp.Diff([]string{driveSecret}, refNames(pod)); diff != "" {
			t.Errorf("imagePullSecrets (-want +got):\n%s", diff)
		}
		if !strings.Contains(strings.Join(warnings, "\n"), "not managed by pullsecret-injector") {
			t.Errorf("warnings %q do not say the Secret is not managed by pullsecret-injector", warnings)
		}
		after, err := admin.CoreV1().Secrets("team-c").Get(ctx, driveSecret, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if after.ResourceVersion != before.ResourceVersion {
			t.Errorf("their Secret was modified: resourceVersion %s -> %s", before.ResourceVersion, after.ResourceVersion)
		}
	})

	t.Run("self-mode certificate Secret and caBundle", func(t *testing.T) {
		s, err := admin.CoreV1().Secrets(driveNamespace).Get(ctx, certSecret, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("certificate Secret: %v", err)
		}
		mwc, err := admin.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, fullname, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if s.Type != corev1.SecretTypeTLS || len(s.Data["ca.crt"]) == 0 || !bytes.Equal(mwc.Webhooks[0].ClientConfig.CABundle, s.Data["ca.crt"]) {
			t.Errorf("certificate Secret of type %q; caBundle equal to its ca.crt: %v",
				s.Type, bytes.Equal(mwc.Webhooks[0].ClientConfig.CABundle, s.Data["ca.crt"]))
		}
	})

	// The binary asks the API server, as the chart's ServiceAccount, to review each scraper's token and
	// whether its user may get /metrics: the rendered ClusterRole must allow the reviews, and the rendered
	// metrics-reader binding must authorize metrics.readers and no one else.
	t.Run("secure metrics: a reader is served, another ServiceAccount is forbidden", func(t *testing.T) {
		url := "https://" + metricsAddr + testenv.MetricsPath
		if err := testenv.WaitMetricsServing(ctx, url); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			serviceAccount string
			want           int
		}{
			{scraper, http.StatusOK},
			{"not-a-reader", http.StatusForbidden},
		} {
			token, err := testenv.ServiceAccountToken(ctx, admin, driveNamespace, tc.serviceAccount)
			if err != nil {
				t.Fatal(err)
			}
			code, body, err := testenv.Scrape(ctx, url, token)
			if err != nil {
				t.Fatal(err)
			}
			if code != tc.want {
				t.Errorf("scrape as %s: got %d, want %d: %s", tc.serviceAccount, code, tc.want, strings.TrimSpace(body))
			}
			injected := fmt.Sprintf("%s_admissions_total{outcome=%q}", metrics.Namespace, metrics.Injected)
			if v, ok := testenv.SampleValue(body, injected); tc.want == http.StatusOK && (!ok || v < 1) {
				t.Errorf("scrape as %s: %s = %v (found: %v), want 1 or more after the Pods above", tc.serviceAccount, injected, v, ok)
			}
		}
	})

	t.Run("the ServiceAccount can do what the reconciler and leader election need", func(t *testing.T) {
		checkCan(ctx, t, sa)
	})

	t.Run("the ServiceAccount cannot do more", func(t *testing.T) {
		checkCannot(ctx, t, sa)
	})

	t.Run("resourceNames authorize the watches of the certificate Secret and the registration alone", func(t *testing.T) {
		checkResourceNames(ctx, t, sa)
	})

	t.Run("documented limitation: the ServiceAccount can read, patch and delete every Secret", func(t *testing.T) {
		// The copies' cache lists Secrets cluster-wide by label, and the reconciler patches and deletes
		// copies, which live in any namespace; RBAC cannot restrict either by label, and docs/security.md
		// says so. If this fails, the ClusterRole was narrowed: update the RBAC section of docs/security.md.
		for _, verb := range []string{"list", "patch", "delete"} {
			allowed := accessReview(ctx, t, sa, authorizationv1.ResourceAttributes{Namespace: "team-none", Verb: verb, Resource: "secrets"})
			if !allowed {
				t.Errorf("the ServiceAccount cannot %s Secrets in a namespace that did not opt in, but docs/security.md says it can", verb)
			}
		}
	})

	// Everything above ran the binary through its copy, inject, certificate, leader election, update and
	// revocation paths, under the admission guard, whose refusals are Forbidden too and name the policy. The
	// API server words a Forbidden answer `<resource> "<name>" is forbidden: ...`; the metrics endpoint's own
	// count of scrapes it refused (reason forbidden) is not one.
	t.Run("no Forbidden error in the binary's log", func(t *testing.T) {
		for _, line := range strings.Split(w.Log(), "\n") {
			if l := strings.ToLower(line); strings.Contains(l, "is forbidden") || strings.Contains(l, "validatingadmissionpolicy") {
				t.Errorf("the binary was refused something its ServiceAccount needs: %s", line)
			}
		}
	})

	// With the binary stopped every call to the webhook fails, and failurePolicy Fail refuses the Pod: a
	// Pod admitted now was never sent to the webhook. This is what keeps a webhook that is down from blocking
	// its own rollout and the control plane's Pods.
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Run("webhook down: a Pod in an opted-in namespace is refused", func(t *testing.T) {
		_, err := admin.CoreV1().Pods("team-a").Create(ctx, newPod("down"), metav1.CreateOptions{})
		if err == nil || !strings.Contains(err.Error(), "pods.pullsecret-injector.io") {
			t.Errorf("got %v, want the webhook's failure to refuse the Pod", err)
		}
	})
	for _, tc := range notSent {
		t.Run("webhook down: "+tc.name+": admitted", func(t *testing.T) {
			labelNamespace(t, tc.namespace, optIn)
			pod := newPod("not-sent")
			pod.Labels = tc.podLabels
			cp.MustCreatePod(t, tc.namespace, pod)
		})
	}
}

// notSent are Pods the chart's registration must never send to the webhook. Their namespaces carry the
// opt-in label while they are created.
var notSent = []struct {
	name, namespace string
	podLabels       map[string]string
}{
	{"Pod in the release namespace", driveNamespace, nil},
	{"Pod in kube-system", "kube-system", nil},
	{"Pod labelled inject=disabled", "team-a", map[string]string{"pullsecret-injector.io/inject": "disabled"}},
}

// checkCan checks, with real requests made as user, that the chart's RBAC allows what the reconciler and
// leader election do beside the admission path (which the binary itself exercised). Writes that would
// disturb the running binary are dry runs, which the API server authorizes as the real thing.
func checkCan(ctx context.Context, t *testing.T, user string) {
	as, err := kubernetes.NewForConfig(cp.ImpersonatingConfig(user))
	if err != nil {
		t.Fatal(err)
	}
	dryRun := []string{metav1.DryRunAll}
	// The reconciler patches and deletes copies, and the admission guard lets it write nothing else (RBAC
	// grants both on every Secret: see the documented limitation below, and TestAdmissionGuard).
	copied := types.NamespacedName{Namespace: "team-a", Name: driveSecret}
	event := &eventsv1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: "chart-test", Namespace: driveNamespace},
		EventTime:  metav1.NowMicro(), ReportingController: "chart-test", ReportingInstance: "chart-test",
		Action: "Probe", Reason: "Probe", Type: corev1.EventTypeNormal,
		Regarding: corev1.ObjectReference{APIVersion: "coordination.k8s.io/v1", Kind: "Lease", Namespace: driveNamespace, Name: fullname},
	}
	mustCreate(ctx, t, func() error {
		_, err := admin.EventsV1().Events(driveNamespace).Create(ctx, event, metav1.CreateOptions{})
		return err
	})
	copyEvent := event.DeepCopy()
	copyEvent.Namespace = copied.Namespace
	copyEvent.Regarding = corev1.ObjectReference{APIVersion: "v1", Kind: "Secret", Namespace: copied.Namespace, Name: copied.Name}
	mustCreate(ctx, t, func() error {
		_, err := admin.EventsV1().Events(copyEvent.Namespace).Create(ctx, copyEvent, metav1.CreateOptions{})
		return err
	})
	mergePatch := []byte(`{"metadata":{"labels":{"chart-test":"true"}}}`)
	leases := as.CoordinationV1().Leases
	for _, tc := range []struct {
		name string
		do   func() error
	}{
		{"patch a copy", func() error {
			_, err := as.CoreV1().Secrets(copied.Namespace).Patch(ctx, copied.Name, types.MergePatchType, mergePatch, metav1.PatchOptions{})
			return err
		}},
		{"delete a copy", func() error {
			return as.CoreV1().Secrets(copied.Namespace).Delete(ctx, copied.Name, metav1.DeleteOptions{DryRun: dryRun})
		}},
		{"list the Pods of a namespace, a page at a time", func() error {
			_, err := as.CoreV1().Pods("team-a").List(ctx, metav1.ListOptions{Limit: 1})
			return err
		}},
		{"list Pods in every namespace", func() error {
			_, err := as.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{Limit: 1})
			return err
		}},
		{"get its Lease", func() error {
			_, err := leases(driveNamespace).Get(ctx, fullname, metav1.GetOptions{})
			return err
		}},
		{"update its Lease", func() error {
			// The binary renews the Lease meanwhile; a conflict is retried, a refusal is not.
			return retry.RetryOnConflict(retry.DefaultRetry, func() error {
				lease, err := leases(driveNamespace).Get(ctx, fullname, metav1.GetOptions{})
				if err != nil {
					return err
				}
				_, err = leases(driveNamespace).Update(ctx, lease, metav1.UpdateOptions{DryRun: dryRun})
				return err
			})
		}},
		{"create a Lease in the release namespace", func() error {
			_, err := leases(driveNamespace).Create(ctx, newLease("new-lease"), metav1.CreateOptions{DryRun: dryRun})
			return err
		}},
		{"create an Event in the release namespace", func() error {
			ev := &corev1.Event{
				ObjectMeta:     metav1.ObjectMeta{GenerateName: "chart-test-"},
				InvolvedObject: event.Regarding, Reason: "Probe", Message: "probe", Type: corev1.EventTypeNormal,
				Source: corev1.EventSource{Component: "chart-test"},
			}
			_, err := as.CoreV1().Events(driveNamespace).Create(ctx, ev, metav1.CreateOptions{DryRun: dryRun})
			return err
		}},
		{"create an events.k8s.io Event in the release namespace", func() error {
			ev := event.DeepCopy()
			ev.Name, ev.GenerateName = "", "chart-test-"
			_, err := as.EventsV1().Events(driveNamespace).Create(ctx, ev, metav1.CreateOptions{DryRun: dryRun})
			return err
		}},
		{"patch an Event in the release namespace", func() error {
			_, err := as.CoreV1().Events(driveNamespace).Patch(ctx, event.Name, types.MergePatchType, mergePatch, metav1.PatchOptions{DryRun: dryRun})
			return err
		}},
		{"patch an events.k8s.io Event in the release namespace", func() error {
			_, err := as.EventsV1().Events(driveNamespace).Patch(ctx, event.Name, types.MergePatchType, mergePatch, metav1.PatchOptions{DryRun: dryRun})
			return err
		}},
		// The project's Events are about copies and sources, in any namespace.
		{"create an events.k8s.io Event about a copy in its namespace", func() error {
			ev := copyEvent.DeepCopy()
			ev.Name, ev.GenerateName = "", "chart-test-"
			_, err := as.EventsV1().Events(ev.Namespace).Create(ctx, ev, metav1.CreateOptions{DryRun: dryRun})
			return err
		}},
		{"patch an events.k8s.io Event about a copy in its namespace", func() error {
			_, err := as.EventsV1().Events(copyEvent.Namespace).Patch(ctx, copyEvent.Name, types.MergePatchType, mergePatch, metav1.PatchOptions{DryRun: dryRun})
			return err
		}},
		// The secure metrics endpoint's questions about a scraper.
		{"create a TokenReview", func() error {
			_, err := as.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: "not-a-token"}}, metav1.CreateOptions{})
			return err
		}},
		{"create a SubjectAccessReview", func() error {
			sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User: "someone", NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: testenv.MetricsPath, Verb: "get"},
			}}
			_, err := as.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.do(); err != nil {
				t.Errorf("got %v, want it allowed", err)
			}
		})
	}
}

// checkCannot checks, with real requests made as user, that the chart's RBAC forbids each action.
func checkCannot(ctx context.Context, t *testing.T, user string) {
	as, err := kubernetes.NewForConfig(cp.ImpersonatingConfig(user))
	if err != nil {
		t.Fatal(err)
	}
	other := &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "someone-elses-webhook"}}
	mustCreate(ctx, t, func() error {
		_, err := admin.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, other, metav1.CreateOptions{})
		return err
	})
	// A Lease of the release's name in another namespace, and another Lease in the release namespace.
	mustCreate(ctx, t, func() error {
		_, err := admin.CoordinationV1().Leases("team-a").Create(ctx, newLease(fullname), metav1.CreateOptions{})
		return err
	})
	mustCreate(ctx, t, func() error {
		_, err := admin.CoordinationV1().Leases(driveNamespace).Create(ctx, newLease("someone-elses-lease"), metav1.CreateOptions{})
		return err
	})
	copied, err := admin.CoreV1().Secrets("team-a").Get(ctx, driveSecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	source, err := admin.CoreV1().Secrets(driveNamespace).Get(ctx, driveSecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dryRun := []string{metav1.DryRunAll}
	secrets, webhooks, leases := as.CoreV1().Secrets, as.AdmissionregistrationV1().MutatingWebhookConfigurations, as.CoordinationV1().Leases
	updateLease := func(namespace, name string) error {
		lease, err := admin.CoordinationV1().Leases(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		_, err = leases(namespace).Update(ctx, lease, metav1.UpdateOptions{DryRun: dryRun})
		return err
	}
	for _, tc := range []struct {
		name string
		do   func() error
	}{
		{"update a copy in an opted-in namespace", func() error {
			_, err := secrets("team-a").Update(ctx, copied, metav1.UpdateOptions{})
			return err
		}},
		{"delete every Secret in an opted-in namespace", func() error {
			return secrets("team-a").DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
		}},
		{"update a source Secret in the release namespace", func() error {
			_, err := secrets(driveNamespace).Update(ctx, source, metav1.UpdateOptions{})
			return err
		}},
		{"update someone else's webhook configuration", func() error {
			theirs, err := admin.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, other.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			_, err = webhooks().Update(ctx, theirs, metav1.UpdateOptions{})
			return err
		}},
		{"create a webhook configuration", func() error {
			_, err := webhooks().Create(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "injected"}}, metav1.CreateOptions{})
			return err
		}},
		{"delete its own webhook configuration", func() error {
			return webhooks().Delete(ctx, fullname, metav1.DeleteOptions{})
		}},
		{"get a Pod", func() error {
			_, err := as.CoreV1().Pods("team-a").Get(ctx, "any", metav1.GetOptions{})
			return err
		}},
		{"watch Pods", func() error {
			w, err := as.CoreV1().Pods(metav1.NamespaceAll).Watch(ctx, metav1.ListOptions{})
			if err == nil {
				w.Stop()
			}
			return err
		}},
		{"create Pods", func() error {
			_, err := as.CoreV1().Pods("team-a").Create(ctx, newPod("as-sa"), metav1.CreateOptions{DryRun: dryRun})
			return err
		}},
		{"delete a Pod", func() error {
			return as.CoreV1().Pods("team-a").Delete(ctx, "any", metav1.DeleteOptions{DryRun: dryRun})
		}},
		{"create a Lease in another namespace", func() error {
			_, err := leases("team-a").Create(ctx, newLease("new-lease"), metav1.CreateOptions{DryRun: dryRun})
			return err
		}},
		{"update a Lease of its Lease's name in another namespace", func() error {
			return updateLease("team-a", fullname)
		}},
		{"get another Lease in the release namespace", func() error {
			_, err := leases(driveNamespace).Get(ctx, "someone-elses-lease", metav1.GetOptions{})
			return err
		}},
		{"update another Lease in the release namespace", func() error {
			return updateLease(driveNamespace, "someone-elses-lease")
		}},
		{"list Leases in the release namespace", func() error {
			_, err := leases(driveNamespace).List(ctx, metav1.ListOptions{})
			return err
		}},
		{"delete its Lease", func() error {
			return leases(driveNamespace).Delete(ctx, fullname, metav1.DeleteOptions{DryRun: dryRun})
		}},
		{"create an Event in another namespace", func() error {
			ev := &corev1.Event{
				ObjectMeta:     metav1.ObjectMeta{GenerateName: "chart-test-"},
				InvolvedObject: corev1.ObjectReference{Kind: "Namespace", Name: "team-a"}, Reason: "Probe", Type: corev1.EventTypeNormal,
			}
			_, err := as.CoreV1().Events("team-a").Create(ctx, ev, metav1.CreateOptions{DryRun: dryRun})
			return err
		}},
		{"read an events.k8s.io Event", func() error {
			_, err := as.EventsV1().Events("team-a").List(ctx, metav1.ListOptions{})
			return err
		}},
		{"delete an events.k8s.io Event", func() error {
			return as.EventsV1().Events("team-a").DeleteCollection(ctx, metav1.DeleteOptions{DryRun: dryRun}, metav1.ListOptions{})
		}},
		{"request a token for a ServiceAccount", func() error {
			_, err := as.CoreV1().ServiceAccounts(driveNamespace).CreateToken(ctx, scraper, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
			return err
		}},
		{"create a LocalSubjectAccessReview", func() error {
			lsar := &authorizationv1.LocalSubjectAccessReview{
				ObjectMeta: metav1.ObjectMeta{Namespace: "team-a"},
				Spec: authorizationv1.SubjectAccessReviewSpec{User: "someone",
					ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: "team-a", Verb: "get", Resource: "secrets"}},
			}
			_, err := as.AuthorizationV1().LocalSubjectAccessReviews("team-a").Create(ctx, lsar, metav1.CreateOptions{})
			return err
		}},
		{"create a CertificateSigningRequest", func() error {
			csr := &certificatesv1.CertificateSigningRequest{
				ObjectMeta: metav1.ObjectMeta{Name: "chart-test"},
				Spec: certificatesv1.CertificateSigningRequestSpec{Request: []byte("x"), SignerName: "kubernetes.io/kube-apiserver-client",
					Usages: []certificatesv1.KeyUsage{certificatesv1.UsageClientAuth}},
			}
			_, err := as.CertificatesV1().CertificateSigningRequests().Create(ctx, csr, metav1.CreateOptions{DryRun: dryRun})
			return err
		}},
		{"get the API server's own /metrics", func() error {
			return as.Discovery().RESTClient().Get().AbsPath(testenv.MetricsPath).Do(ctx).Error()
		}},
		{"delete a namespace", func() error {
			return as.CoreV1().Namespaces().Delete(ctx, "team-none", metav1.DeleteOptions{DryRun: dryRun})
		}},
		{"read ConfigMaps", func() error {
			_, err := as.CoreV1().ConfigMaps(driveNamespace).List(ctx, metav1.ListOptions{})
			return err
		}},
		{"bind itself another role", func() error {
			rb := &rbacv1.RoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: "escalate"},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
				Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, Name: user}},
			}
			_, err := as.RbacV1().RoleBindings("team-a").Create(ctx, rb, metav1.CreateOptions{})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.do(); !apierrors.IsForbidden(err) {
				t.Errorf("got %v, want Forbidden", err)
			}
		})
	}
}

// mustCreate runs create, an admin's create of a test fixture, and fails the test unless it succeeds or the
// object exists.
func mustCreate(ctx context.Context, t *testing.T, create func() error) {
	t.Helper()
	if err := create(); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// guardedKubeconfig returns the user name of the release's ServiceAccount name in namespace and a kubeconfig
// that impersonates it, once the rendered admission guard is enforced on it: the binary runs under the guard
// from its first write.
func guardedKubeconfig(ctx context.Context, t *testing.T, namespace, name string) (string, string) {
	t.Helper()
	sa := testenv.ServiceAccountUser(namespace, name)
	waitForGuard(ctx, t, sa, name)
	kubeconfig, err := cp.ImpersonatingKubeconfig(sa)
	if err != nil {
		t.Fatal(err)
	}
	return sa, kubeconfig
}

// localArgs returns the rendered arguments less those that name in-cluster paths and ports, which
// StartWebhook sets for this machine.
func localArgs(args []string) []string {
	var local []string
	for _, a := range args {
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		switch name {
		case "config", "webhook-port", "health-probe-bind-address", "metrics-bind-address":
			continue
		}
		local = append(local, a)
	}
	return local
}

func newLease(name string) *coordinationv1.Lease {
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: ptr.To("chart-test")},
	}
}

// checkResourceNames checks that list and watch with a metadata.name field selector are authorized by
// resourceNames, as the binary's certificate caches need, and that the same list without the selector is
// not: the Role and the registration rule grant one object each, not the collection.
func checkResourceNames(ctx context.Context, t *testing.T, sa string) {
	// A user bound to the rendered Role alone: the ServiceAccount's ClusterRole covers every Secret, so
	// only this shows what the Role grants.
	const roleUser = "role-only"
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "role-only"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: fullname},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: roleUser}},
	}
	if _, err := admin.RbacV1().RoleBindings(driveNamespace).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	roleOnly, err := kubernetes.NewForConfig(cp.ImpersonatingConfig(roleUser))
	if err != nil {
		t.Fatal(err)
	}
	asSA, err := kubernetes.NewForConfig(cp.ImpersonatingConfig(sa))
	if err != nil {
		t.Fatal(err)
	}
	byName := func(name string) metav1.ListOptions {
		return metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String()}
	}
	// The API server's RBAC authorizer learns of the new RoleBinding through a watch: wait until it has,
	// or the first checks below race it.
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, testenv.SettleTimeout, true, func(ctx context.Context) (bool, error) {
		_, err := roleOnly.CoreV1().Secrets(driveNamespace).List(ctx, byName(certSecret))
		return err == nil, nil
	}); err != nil {
		t.Fatalf("the RoleBinding of %s never took effect: %v", roleUser, err)
	}
	for _, tc := range []struct {
		name    string
		do      func() error
		allowed bool
	}{
		{"Role: list the certificate Secret by name", func() error {
			_, err := roleOnly.CoreV1().Secrets(driveNamespace).List(ctx, byName(certSecret))
			return err
		}, true},
		{"Role: watch the certificate Secret by name", func() error {
			w, err := roleOnly.CoreV1().Secrets(driveNamespace).Watch(ctx, byName(certSecret))
			if err == nil {
				w.Stop()
			}
			return err
		}, true},
		{"Role: list every Secret", func() error {
			_, err := roleOnly.CoreV1().Secrets(driveNamespace).List(ctx, metav1.ListOptions{})
			return err
		}, false},
		{"Role: get a source Secret", func() error {
			_, err := roleOnly.CoreV1().Secrets(driveNamespace).Get(ctx, driveSecret, metav1.GetOptions{})
			return err
		}, false},
		{"ClusterRole: list its webhook configuration by name", func() error {
			_, err := asSA.AdmissionregistrationV1().MutatingWebhookConfigurations().List(ctx, byName(fullname))
			return err
		}, true},
		{"ClusterRole: watch its webhook configuration by name", func() error {
			w, err := asSA.AdmissionregistrationV1().MutatingWebhookConfigurations().Watch(ctx, byName(fullname))
			if err == nil {
				w.Stop()
			}
			return err
		}, true},
		{"ClusterRole: list every webhook configuration", func() error {
			_, err := asSA.AdmissionregistrationV1().MutatingWebhookConfigurations().List(ctx, metav1.ListOptions{})
			return err
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) { checkAllowed(t, tc.do(), tc.allowed) })
	}
}

// checkAllowed checks that err, the answer to a request, is no error when allowed, and Forbidden otherwise.
func checkAllowed(t *testing.T, err error, allowed bool) {
	t.Helper()
	if allowed && err != nil {
		t.Errorf("got %v, want it allowed", err)
	}
	if !allowed && !apierrors.IsForbidden(err) {
		t.Errorf("got %v, want Forbidden", err)
	}
}

// accessReview asks the API server whether user may do attrs.
func accessReview(ctx context.Context, t *testing.T, user string, attrs authorizationv1.ResourceAttributes) bool {
	t.Helper()
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:               user,
		Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:" + driveNamespace, "system:authenticated"},
		ResourceAttributes: &attrs,
	}}
	got, err := admin.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return got.Status.Allowed
}

func pullSecret(name, registry string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: fmt.Appendf(nil, `{"auths":{%q:{"auth":"dXNlcjpwYXNz"}}}`, registry)},
	}
}

func newPod(prefix string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: driveImage}}},
	}
}

func refNames(pod *corev1.Pod) []string {
	var out []string
	for _, r := range pod.Spec.ImagePullSecrets {
		out = append(out, r.Name)
	}
	return out
}

// labelNamespace adds labels to a namespace and removes them when the test ends.
func labelNamespace(t *testing.T, name string, labels map[string]string) {
	t.Helper()
	ctx := context.Background()
	ns, err := admin.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	original := maps.Clone(ns.Labels)
	if ns.Labels == nil {
		ns.Labels = map[string]string{}
	}
	maps.Copy(ns.Labels, labels)
	if _, err := admin.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ns, err := admin.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			ns.Labels = original
			_, err = admin.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{})
		}
		if err != nil {
			t.Errorf("restore labels of namespace %q: %v", name, err)
		}
	})
}
