package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/config/configtest"
	"github.com/pullsecret-injector/pullsecret-injector/internal/managed"
	"github.com/pullsecret-injector/pullsecret-injector/internal/policy/policytest"
	"github.com/pullsecret-injector/pullsecret-injector/test/testenv"
	injector "github.com/pullsecret-injector/pullsecret-injector/webhook"
)

// injectionMode is one way Pods get their references, with the control plane it runs on: the shared
// webhook process of TestMain, or a process in policy mode. The policy-mode process runs on a control plane
// of its own: two reconcilers with different configurations on one control plane would each revoke the
// other's copies.
type injectionMode struct {
	name    string
	plane   *testenv.ControlPlane
	cs      kubernetes.Interface
	matcher *config.Matcher
	// optIn are the labels the mode's configuration selects namespaces by.
	optIn map[string]string
}

// webhookMode is the shared webhook process of TestMain.
func webhookMode(t *testing.T) *injectionMode {
	return &injectionMode{name: "webhook", plane: cp, cs: admin, matcher: configtest.Matcher(t, e2eConfig), optIn: optIn()}
}

// policyModeName is the name of the policy objects of the policy-mode processes the tests start.
const policyModeName = "pullsecret-injector-e2e-policy"

// policyEnv is the policy-mode process and its control plane, started by the first test that asks for them
// and stopped when TestMain ends.
var policyEnv struct {
	once sync.Once
	mode *injectionMode
	w    *testenv.Webhook
	err  error
}

// policyMode returns the policy-mode process's mode, starting it on its own control plane the first time.
func policyMode(t *testing.T) *injectionMode {
	t.Helper()
	policyEnv.once.Do(func() {
		policyEnv.mode, policyEnv.w, policyEnv.err = startPolicyMode(context.Background())
	})
	if policyEnv.err != nil {
		t.Fatal(policyEnv.err)
	}
	return policyEnv.mode
}

// startPolicyMode starts a control plane with the sources of e2eConfig and a pullsecret-injector in policy
// mode with policyConfig, and waits until the API server applies the policy the process wrote.
func startPolicyMode(ctx context.Context) (*injectionMode, *testenv.Webhook, error) {
	plane, err := testenv.StartControlPlane()
	if err != nil {
		return nil, nil, err
	}
	mode, w, err := func() (*injectionMode, *testenv.Webhook, error) {
		cs, err := kubernetes.NewForConfig(plane.Config)
		if err != nil {
			return nil, nil, err
		}
		if err := createSources(ctx, cs); err != nil {
			return nil, nil, err
		}
		c, err := config.Parse([]byte(policyConfig))
		if err != nil {
			return nil, nil, err
		}
		m, err := config.NewMatcher(c)
		if err != nil {
			return nil, nil, err
		}
		w, err := plane.StartWebhook(ctx, binary, []byte(policyConfig), "--injection=policy", "--policy-name="+policyModeName)
		if err != nil {
			return nil, nil, err
		}
		const probe = "policy-probe"
		if err := createNamespaceIn(ctx, cs, probe, map[string]string{policyOptIn: "enabled"}); err != nil {
			return nil, nil, errors.Join(err, w.Stop())
		}
		if err := testenv.WaitForMutation(ctx, cs, probe, "quay.io/probe/app", "quay-regcred"); err != nil {
			return nil, nil, errors.Join(fmt.Errorf("%w\n--- log ---\n%s", err, tail(w.Log(), 100)), w.Stop())
		}
		return &injectionMode{name: "policy", plane: plane, cs: cs, matcher: m, optIn: map[string]string{policyOptIn: "enabled"}}, w, nil
	}()
	if err != nil {
		return nil, nil, errors.Join(err, plane.Stop())
	}
	return mode, w, nil
}

// stopPolicyMode stops the policy-mode process and its control plane, if a test started them.
func stopPolicyMode() {
	if policyEnv.mode == nil {
		return
	}
	if err := policyEnv.w.Stop(); err != nil {
		fmt.Println("stop the policy-mode process:", err)
	}
	if err := policyEnv.mode.plane.Stop(); err != nil {
		fmt.Println("stop the policy mode's control plane:", err)
	}
}

// namespace creates a uniquely named namespace labelled with the mode's opt-in labels (when optedIn) and
// extra, and returns it as stored.
func (m *injectionMode) namespace(t *testing.T, prefix string, optedIn bool, extra map[string]string) *corev1.Namespace {
	t.Helper()
	l := merge(nil, extra)
	if optedIn {
		l = merge(l, m.optIn)
	}
	name := fmt.Sprintf("%s-%s-%d", m.name, prefix, nsCounter.Add(1))
	if err := createNamespaceIn(context.Background(), m.cs, name, l); err != nil {
		t.Fatal(err)
	}
	ns, err := m.cs.CoreV1().Namespaces().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// waitForCopies waits until every Secret in names has a managed copy in namespace, and returns how long
// that took.
func (m *injectionMode) waitForCopies(t *testing.T, namespace string, names ...string) time.Duration {
	t.Helper()
	start := time.Now()
	var missing []string
	err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, testenv.SettleTimeout, true, func(ctx context.Context) (bool, error) {
		list, err := m.cs.CoreV1().Secrets(namespace).List(ctx, metav1.ListOptions{LabelSelector: managed.Selector})
		if err != nil {
			return false, err
		}
		missing = slices.DeleteFunc(slices.Clone(names), func(n string) bool {
			return slices.ContainsFunc(list.Items, func(s corev1.Secret) bool { return s.Name == n })
		})
		return len(missing) == 0, nil
	})
	if err != nil {
		t.Fatalf("copies %v never made in namespace %q: %v", missing, namespace, err)
	}
	return time.Since(start)
}

// sidecarLabel marks the Pods the sidecar webhook adds a container to.
const sidecarLabel = "e2e.pullsecret-injector.io/sidecar"

// sidecarImage is the image of the container the sidecar webhook adds: quay-regcred pulls it.
const sidecarImage = "quay.io/org/sidecar:1"

// withSidecar registers, for the rest of the test, a mutating webhook served by the test process that adds
// a container of sidecarImage to the Pods labelled sidecarLabel=add. The API server calls it after the
// project's policy (policies run before webhooks) and after the project's webhook (webhooks run in the
// order of their configurations' names), so the project sees the container only when reinvoked.
func (m *injectionMode) withSidecar(t *testing.T) {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(filepath.Join(m.plane.CertDir, "tls.crt"), filepath.Join(m.plane.CertDir, "tls.key"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(sidecarHandler), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })

	url := fmt.Sprintf("https://%s/", l.Addr().(*net.TCPAddr).String())
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "zz-e2e-sidecar"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "sidecar.e2e.pullsecret-injector.io",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: m.plane.CAData},
			AdmissionReviewVersions: []string{"v1"},
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			ReinvocationPolicy:      ptr.To(admissionregistrationv1.NeverReinvocationPolicy),
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			TimeoutSeconds:          ptr.To[int32](10),
			ObjectSelector:          &metav1.LabelSelector{MatchLabels: map[string]string{sidecarLabel: "add"}},
			Rules:                   testenv.WebhookRules()[:1],
		}},
	}
	registerWebhook(t, m.cs, mwc)
	probe := m.namespace(t, "sidecar-probe", false, nil)
	pod := podWith("probe", "registry.example.com:5000/team-a/app")
	pod.Labels = map[string]string{sidecarLabel: "add"}
	err = wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		got, err := m.cs.CoreV1().Pods(probe.Name).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err == nil && len(got.Spec.Containers) == 2, nil
	})
	if err != nil {
		t.Fatalf("the sidecar webhook never took effect: %v", err)
	}
}

// sidecarHandler adds the sidecar container to a Pod that does not have it.
func sidecarHandler(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 10<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	review := &admissionv1.AdmissionReview{}
	if err := json.Unmarshal(body, review); err != nil || review.Request == nil {
		http.Error(w, "not an AdmissionReview", http.StatusBadRequest)
		return
	}
	pod := &corev1.Pod{}
	if err := json.Unmarshal(review.Request.Object.Raw, pod); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	resp := &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
	if !slices.ContainsFunc(pod.Spec.Containers, func(c corev1.Container) bool { return c.Name == "sidecar" }) {
		patch, _ := json.Marshal([]map[string]any{{"op": "add", "path": "/spec/containers/-",
			"value": corev1.Container{Name: "sidecar", Image: sidecarImage}}})
		resp.Patch, resp.PatchType = patch, ptr.To(admissionv1.PatchTypeJSONPatch)
	}
	out, _ := json.Marshal(&admissionv1.AdmissionReview{TypeMeta: review.TypeMeta, Response: resp})
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)
}

// injectionCase is a Pod created in one of the namespaces of TestInjection.
type injectionCase struct {
	name string
	// ns is "plain", "payments", "legacy" or "off" (not opted in).
	ns  string
	pod *corev1.Pod
	// dryRun creates the Pod with dryRun=All: the response has the references, nothing is stored.
	dryRun bool
	// sidecar labels the Pod for the sidecar webhook, which adds a container after the project ran.
	sidecar bool
}

// injectionCases are the Pods TestInjection creates in each mode.
func injectionCases() []injectionCase {
	digest := "@sha256:" + strings.Repeat("0123456789abcdef", 4)
	many := make([]string, 200)
	for i := range many {
		many[i] = []string{"quay.io/org/app-%d:1", "registry.example.com:5000/team-a/svc-%d", "nginx:1.%d", "gcr.io/x/y-%d"}[i%4]
		many[i] = fmt.Sprintf(many[i], i)
	}
	with := func(pod *corev1.Pod, change func(*corev1.Pod)) *corev1.Pod {
		change(pod)
		return pod
	}
	return []injectionCase{
		{name: "plain", ns: "plain", pod: podWith("plain", "quay.io/org/app:1")},
		{name: "config order", ns: "payments", pod: podWith("order",
			"ghcr.io/org/app", "quay.io/x", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app"+digest, "registry.example.com:5000/team-a/api")},
		{name: "config order with references of the Pod's own", ns: "plain", pod: with(podWith("own"), func(p *corev1.Pod) {
			p.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "own-secret"}, {Name: "quay-regcred"}}
			p.Spec.InitContainers = []corev1.Container{
				{Name: "init-quay", Image: "quay.io/org/init:1"},
				{Name: "init-hub", Image: "myorg/migrate@sha256:" + strings.Repeat("a", 64)},
			}
			p.Spec.Containers = containersOf("docker.io/myorg/app:2", "registry.example.com:5000/team-a/api",
				"registry.example.com:5000/team-a/worker:3", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app:1", "nginx")
		})},
		{name: "per-entry selectors exclude", ns: "legacy", pod: podWith("legacy",
			"ghcr.io/org/app", "localhost:5000/app", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app", "quay.io/x")},
		{name: "per-entry selectors include", ns: "payments", pod: podWith("include",
			"localhost:5000/app", "ghcr.io/org/tool", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/payments/api:7")},
		{name: "two patterns of one secret", ns: "plain", pod: podWith("hub", "myorg/app", "nginx")},
		{name: "lone star and ipv6", ns: "plain", pod: podWith("local", "localhost/app", "[::1]:5000/app")},
		{name: "image volume", ns: "plain", pod: with(podWith("volume", "gcr.io/x/app"), func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
				Image: &corev1.ImageVolumeSource{Reference: "quay.io/org/data:1", PullPolicy: corev1.PullIfNotPresent}}}}
		})},
		{name: "everything already referenced", ns: "plain", pod: with(podWith("referenced", "quay.io/x"), func(p *corev1.Pod) {
			p.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "quay-regcred"}}
		})},
		{name: "opted-out Pod", ns: "plain", pod: with(podWith("opted-out", "quay.io/x"), func(p *corev1.Pod) {
			p.Labels = map[string]string{config.InjectLabel: config.InjectDisabled}
		})},
		{name: "namespace not opted in", ns: "off", pod: podWith("off", "quay.io/x", "registry.example.com:5000/team-a/app")},
		{name: "invalid images", ns: "plain", pod: podWith("invalid",
			"Quay.io/Org/App", "quay.io/x:", "upper/Case", strings.Repeat("a", 64), "quay.io/"+strings.Repeat("a", 300), "registry.example.com:5000/team-a/ok")},
		{name: "200 containers", ns: "payments", pod: podWith("many", many...)},
		{name: "dry run", ns: "plain", dryRun: true, pod: podWith("dry", "quay.io/org/app", "registry.example.com:5000/team-a/app")},
		{name: "reinvocation after a later webhook adds a container", ns: "plain", sidecar: true,
			pod: podWith("reinvoked", "registry.example.com:5000/team-a/app")},
	}
}

func containersOf(images ...string) []corev1.Container {
	return podWith("", images...).Spec.Containers
}

// TestInjection creates the Pods of injectionCases in both modes and checks that each is stored with the
// references and the injected annotation the webhook's decision gives for the same Pod (policytest.Want,
// with the mode's configuration), and that the copies it references exist: made at admission in webhook
// mode, ahead of the Pod in policy mode. The policy mode's configuration has entries the shared webhook's
// does not (a lone star, an IPv6 host, Docker Hub's fallback pattern, every selector operator), so some
// Pods come out differently in the two modes, each as its own configuration says.
func TestInjection(t *testing.T) {
	for _, mode := range []*injectionMode{webhookMode(t), policyMode(t)} {
		t.Run(mode.name, func(t *testing.T) {
			mode.withSidecar(t)
			namespaces := map[string]*corev1.Namespace{
				"plain":    mode.namespace(t, "plain", true, nil),
				"payments": mode.namespace(t, "payments", true, map[string]string{"team": "payments", "tier": "prod"}),
				"legacy":   mode.namespace(t, "legacy", true, map[string]string{"tier": "prod", "legacy": "yes", "env": "dev", "team": "x"}),
				"off":      mode.namespace(t, "off", false, map[string]string{"team": "payments"}),
			}
			for _, tc := range injectionCases() {
				t.Run(tc.name, func(t *testing.T) {
					ns := namespaces[tc.ns]
					pod := tc.pod.DeepCopy()
					final := pod.DeepCopy() // the Pod once every mutation ran
					if tc.sidecar {
						pod.Labels = merge(pod.Labels, map[string]string{sidecarLabel: "add"})
						final = pod.DeepCopy()
						final.Spec.Containers = append(final.Spec.Containers, corev1.Container{Name: "sidecar", Image: sidecarImage})
					}
					want := policytest.Want(mode.matcher, final, labels.Set(ns.Labels), injector.InjectedAnnotation)
					var stored *corev1.Pod
					if tc.dryRun {
						var err error
						stored, err = mode.cs.CoreV1().Pods(ns.Name).Create(context.Background(), pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
						if err != nil {
							t.Fatal(err)
						}
						if _, err := mode.cs.CoreV1().Pods(ns.Name).Get(context.Background(), pod.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
							t.Errorf("pod after a dry run: %v, want NotFound", err)
						}
					} else {
						var err error
						if stored, _, err = mode.plane.CreatePod(context.Background(), ns.Name, pod); err != nil {
							t.Fatal(err)
						}
					}
					if diff := cmp.Diff(want.Spec.ImagePullSecrets, stored.Spec.ImagePullSecrets); diff != "" {
						t.Errorf("imagePullSecrets (-webhook's decision +stored):\n%s", diff)
					}
					if diff := cmp.Diff(want.Annotations, stored.Annotations); diff != "" {
						t.Errorf("annotations (-webhook's decision +stored):\n%s", diff)
					}
					if tc.dryRun {
						return
					}
					// Every configured Secret the Pod references, and its namespace gets, has its copy.
					var copies []string
					for _, ref := range stored.Spec.ImagePullSecrets {
						if e := mode.matcher.EntryForSecret(ref.Name); e != nil && mode.matcher.Selects(e, labels.Set(ns.Labels)) {
							copies = append(copies, ref.Name)
						}
					}
					mode.waitForCopies(t, ns.Name, copies...)
				})
			}
		})
	}
}
