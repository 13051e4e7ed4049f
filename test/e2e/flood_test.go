package e2e

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"flag"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/internal/managed"
	"github.com/pullsecret-injector/pullsecret-injector/test/testenv"
)

// floodScale multiplies the objects each vector of TestTenantFlood creates: `go test ./test/e2e -run
// TestTenantFlood -args -tenant-flood-scale=10` for a run closer to what a determined tenant does. The
// default keeps the test within make test's budget.
var floodScale = flag.Int("tenant-flood-scale", 1, "multiplies the number of objects TestTenantFlood's vectors create")

const (
	// tenantUser is the tenant: RBAC in its own namespaces only.
	tenantUser = "tenant"
	// floodPassword is the credential the source Secrets hide in their auths keys; no output may show it.
	floodPassword = "Fl00d-pAssw0rd-7c1e"
	// floodEventsQPS and floodEventsBurst are the Event rate of the process under attack: the defaults.
	floodEventsQPS, floodEventsBurst = 5, 50
)

// floodConfig gives tenant-in its copies: flood-regcred is a good source; leaky-regcred holds credentials
// only under keys that never match its entry (one with a password in its user information, one with a
// token in its query), so that every Pod that gets it is warned with the keys listed, and an Event and a log
// line list them too.
const floodConfig = `
registries:
  - registry: flood.example.com
    secret: {namespace: pullsecret-injector, name: flood-regcred}
  - registry: leaky.example.com
    secret: {namespace: pullsecret-injector, name: leaky-regcred}
`

// TestTenantFlood drives every way a tenant, with RBAC in its own namespaces only, can push state into the
// process (labelled Secrets with large annotations, ServiceAccounts that enforce mountable secrets, Pods
// with hostile image strings, dry runs, a copy deleted over and over, ephemeral containers, bearer tokens
// sent to the metrics port) against one process on a control plane of its own, and asserts that its memory,
// its API calls and its Events stay inside stated bounds and that no credential reaches the tenant. Each
// vector logs the process's RSS before and after, and the API calls it cost.
func TestTenantFlood(t *testing.T) {
	ctx := context.Background()
	scale := max(*floodScale, 1)
	plane, cs := ownControlPlane(t)
	f := newFlood(ctx, t, plane, cs)

	t.Run("labelled Secrets with large unique source annotations, created and deleted", func(t *testing.T) {
		// Before the transform kept only configured values, each distinct annotation value was kept for
		// good: 300 of 200 KiB pinned 60 MiB.
		const size, bound = 200 << 10, 24 << 20
		n := 150 * scale
		// A namespace of their own: the reconciler revokes them (they claim to be copies where no entry gives
		// them) at a bounded rate per namespace, which must not hold back the sentinel sync waits for.
		baits := f.namespace(t, "tenant-bait", false)
		before := f.rss(t)
		var names []string
		for i := range n {
			for _, ns := range []string{f.in, baits} {
				s := &corev1.Secret{
					ObjectMeta: metav1.ObjectMeta{
						Name:        fmt.Sprintf("bait-%04d", i),
						Labels:      map[string]string{managed.ManagedByLabel: managed.ManagedByValue},
						Annotations: map[string]string{managed.SourceAnnotation: randomString(t, size)},
					},
					Type: corev1.SecretTypeOpaque,
					Data: map[string][]byte{"x": []byte("y")},
				}
				if _, err := f.tenant.CoreV1().Secrets(ns).Create(ctx, s, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			names = append(names, fmt.Sprintf("bait-%04d", i))
		}
		f.sync(t)
		held := f.rss(t)
		for _, name := range names {
			for _, ns := range []string{f.in, baits} {
				// The reconciler may have deleted some already: they claim to be copies where no entry
				// gives them.
				if err := f.tenant.CoreV1().Secrets(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
					t.Fatal(err)
				}
			}
		}
		f.sync(t)
		after := f.rss(t)
		t.Logf("%d Secrets with %d KiB annotations in 2 namespaces: RSS %s before, %s while they existed, %s after they were deleted (bound: %s of growth)",
			2*n, size>>10, testenv.MiB(before), testenv.MiB(held), testenv.MiB(after), testenv.MiB(bound))
		if held-before > bound || after-before > bound {
			t.Errorf("RSS grew by %s while the Secrets existed and by %s after, want at most %s", testenv.MiB(held-before), testenv.MiB(after-before), testenv.MiB(bound))
		}
	})

	t.Run("ServiceAccounts that enforce mountable secrets and list many long names", func(t *testing.T) {
		const bound = 16 << 20
		n := 100 * scale
		before, calls := f.rss(t), f.calls()
		for i := range n {
			sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("enforcing-%04d", i),
				Annotations: map[string]string{managed.EnforceMountableSecretsAnnotation: "true"}}}
			for j := range 64 {
				sa.ImagePullSecrets = append(sa.ImagePullSecrets, corev1.LocalObjectReference{Name: fmt.Sprintf("%03d-%s", j, strings.Repeat("n", 249))})
			}
			if _, err := f.tenant.CoreV1().ServiceAccounts(f.in).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		f.sync(t)
		for round := range 2 {
			for i := range n {
				pod := podWith(fmt.Sprintf("sa-%d-%04d", round, i), "flood.example.com/app:1")
				pod.Spec.ServiceAccountName = fmt.Sprintf("enforcing-%04d", i)
				got, warnings := f.createPod(t, f.in, pod)
				if len(got.Spec.ImagePullSecrets) != 0 || !containsAll(warnings, "enforces mountable secrets") {
					t.Fatalf("pod %s: imagePullSecrets %v, warnings %q: want none added and a warning", pod.Name, refNames(got), warnings)
				}
			}
		}
		after, cost := f.rss(t), f.since(calls)
		t.Logf("%d enforcing ServiceAccounts listing 64 names of 253 bytes, 2 Pods each: RSS %s before, %s after; API calls %v",
			n, testenv.MiB(before), testenv.MiB(after), cost)
		// Each ServiceAccount is read live once, then answered from memory while it does not change.
		if reads := cost[testenv.RequestKind{Method: http.MethodGet, Resource: "serviceaccounts"}]; reads > n {
			t.Errorf("%d live reads of ServiceAccounts for %d ServiceAccounts, want at most one each", reads, n)
		}
		if after-before > bound {
			t.Errorf("RSS grew by %s, want at most %s", testenv.MiB(after-before), testenv.MiB(bound))
		}
	})

	t.Run("Pods with many unique and hostile image strings", func(t *testing.T) {
		const bound = 16 << 20
		n := 60 * scale
		huge := "flood.example.com/" + strings.Repeat("a", 100<<10) // a valid reference is far shorter
		before := f.rss(t)
		for i := range n {
			images := []string{huge + strconv.Itoa(i)}
			for j := range 40 {
				images = append(images, fmt.Sprintf("flood.example.com/team-%d/app-%d:%s", i, j, strings.Repeat("t", 100)))
			}
			got, _ := f.createPod(t, f.in, podWith(fmt.Sprintf("images-%04d", i), images...))
			if !containsAll(refNames(got), "flood-regcred") {
				t.Fatalf("pod images-%04d: imagePullSecrets %v, want flood-regcred", i, refNames(got))
			}
		}
		after := f.rss(t)
		t.Logf("%d Pods of 41 unique images each, one of 100 KiB: RSS %s before, %s after", n, testenv.MiB(before), testenv.MiB(after))
		if after-before > bound {
			t.Errorf("RSS grew by %s, want at most %s", testenv.MiB(after-before), testenv.MiB(bound))
		}
	})

	t.Run("dry-run Pods cost no more API reads than real ones", func(t *testing.T) {
		n := 20 * scale
		measure := func(dryRun bool) map[testenv.RequestKind]int {
			ns := f.namespace(t, "tenant-dry", true)
			calls := f.calls()
			opts := metav1.CreateOptions{}
			if dryRun {
				opts.DryRun = []string{metav1.DryRunAll}
			}
			for i := range n {
				got, err := f.tenant.CoreV1().Pods(ns).Create(ctx, podWith(fmt.Sprintf("p-%04d", i), "flood.example.com/app:1"), opts)
				if err != nil {
					t.Fatal(err)
				}
				if !containsAll(refNames(got), "flood-regcred") {
					t.Fatalf("dry run %v: imagePullSecrets %v, want flood-regcred", dryRun, refNames(got))
				}
			}
			return f.since(calls)
		}
		dry, real := measure(true), measure(false)
		t.Logf("%d dry-run Pods in a new namespace cost %v; %d real Pods cost %v", n, dry, n, real)
		get := testenv.RequestKind{Method: http.MethodGet, Resource: "secrets"}
		if dry[get] > real[get] {
			t.Errorf("dry-run Pods read %d Secrets live, real Pods %d", dry[get], real[get])
		}
		// One dry-run create answers for every dry run of the next second.
		post := testenv.RequestKind{Method: http.MethodPost, Resource: "secrets"}
		if dry[post] > real[post]+2 {
			t.Errorf("dry-run Pods made %d dry-run creates, real Pods %d creates", dry[post], real[post])
		}
	})

	t.Run("no credential hidden in an auths key reaches a warning, an Event or a log line", func(t *testing.T) {
		var warnings []string
		for i := range 5 {
			_, w := f.createPod(t, f.in, podWith(fmt.Sprintf("leaky-%d", i), "leaky.example.com/app:1"))
			warnings = append(warnings, w...)
		}
		// The check ran and said what is wrong, naming the keys: otherwise there is nothing to leak.
		if !containsAll(warnings, "leaky-regcred", "no auths key") {
			t.Fatalf("warnings %q do not report leaky-regcred's keys", warnings)
		}
		waitForEventIn(t, f.cs, sourceNamespace, "leaky-regcred", "SourceInvalid", "no_matching_key")
		events, err := f.cs.EventsV1().Events("").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var notes []string
		for _, e := range events.Items {
			notes = append(notes, e.Note)
		}
		for what, texts := range map[string][]string{"warning": warnings, "Event note": notes, "log line": strings.Split(f.w.Log(), "\n")} {
			for _, text := range texts {
				if strings.Contains(text, floodPassword) || strings.Contains(text, base64.StdEncoding.EncodeToString([]byte("robot:"+floodPassword))) {
					t.Errorf("a %s shows the credential: %s", what, text)
				}
			}
		}
	})

	t.Run("a copy deleted over and over and ephemeral containers make Events at the configured rate", func(t *testing.T) {
		// More recreations than the burst allows, each an Event of its own (a new object): without the
		// rate limit every one would be written.
		n := 100 * scale
		calls, start := f.calls(), time.Now()
		for i := range n {
			old, err := f.cs.CoreV1().Secrets(f.in).Get(ctx, "flood-regcred", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if err := f.tenant.CoreV1().Secrets(f.in).Delete(ctx, "flood-regcred", metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, testenv.SettleTimeout, true, func(ctx context.Context) (bool, error) {
				got, err := f.cs.CoreV1().Secrets(f.in).Get(ctx, "flood-regcred", metav1.GetOptions{})
				return err == nil && got.UID != old.UID, nil
			}); err != nil {
				t.Fatalf("deletion %d: the copy was not recreated: %v", i, err)
			}
		}
		// A Pod that lacks leaky-regcred, and an ephemeral container that needs it, added again and again:
		// each is warned about and recorded as an Event on the Pod.
		pod, _ := f.createPod(t, f.in, podWith("debugged", "flood.example.com/app:1"))
		for i := range 30 * scale {
			pod.Spec.EphemeralContainers = append(pod.Spec.EphemeralContainers, corev1.EphemeralContainer{
				EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: fmt.Sprintf("debug-%d", i), Image: "leaky.example.com/debug:1"}})
			updated, err := f.tenant.CoreV1().Pods(f.in).UpdateEphemeralContainers(ctx, pod.Name, pod, metav1.UpdateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			pod = updated
		}
		elapsed := time.Since(start)
		// Events are written by a broadcaster after the fact: wait until the writes stop, then count.
		var cost map[testenv.RequestKind]int
		writes := func() int {
			cost = f.since(calls)
			return cost[testenv.RequestKind{Method: http.MethodPost, Resource: "events.events.k8s.io"}] +
				cost[testenv.RequestKind{Method: http.MethodPatch, Resource: "events.events.k8s.io"}]
		}
		last := -1
		if err := wait.PollUntilContextTimeout(ctx, time.Second, testenv.SettleTimeout, false, func(context.Context) (bool, error) {
			n := writes()
			settled := n == last
			last = n
			return settled, nil
		}); err != nil {
			t.Fatal(err)
		}
		bound := floodEventsBurst + int(elapsed.Seconds()*floodEventsQPS) + floodEventsQPS
		t.Logf("%d deletions of a copy and %d ephemeral containers in %v: %d Event writes (bound %d); API calls %v",
			n, 30*scale, elapsed.Round(time.Millisecond), last, bound, cost)
		if last > bound {
			t.Errorf("%d Event writes, want at most %d (burst %d + %d/s)", last, bound, floodEventsBurst, floodEventsQPS)
		}
	})

	t.Run("tokens a tenant mints and invents do not keep the metrics from their scraper", func(t *testing.T) {
		var minted []string
		for i := range 5 {
			token, err := testenv.ServiceAccountToken(ctx, f.tenant, f.in, fmt.Sprintf("flooder-%d", i))
			if err != nil {
				t.Fatal(err)
			}
			minted = append(minted, token)
		}
		readerToken, err := testenv.ServiceAccountToken(ctx, f.cs, f.monitoring, "scraper")
		if err != nil {
			t.Fatal(err)
		}
		calls := f.calls()
		stop := make(chan struct{})
		var answered atomic.Int64
		var wg sync.WaitGroup
		for i := range 20 * scale {
			wg.Go(func() {
				for j := 0; ; j++ {
					select {
					case <-stop:
						return
					default:
					}
					// Every other token is a new invention, which no cache can have seen.
					token := minted[(i+j)%len(minted)]
					if j%2 == 1 {
						token = "invented-" + randomString(t, 32)
					}
					code, _, err := testenv.Scrape(ctx, f.metricsURL, token)
					answered.Add(1)
					if err != nil || code >= 500 || code == http.StatusOK {
						t.Errorf("a flooding scrape got %d (%v), want 401, 403 or 429", code, err)
					}
				}
			})
		}
		time.Sleep(2 * time.Second) // let the flood build up before the real scrape
		began := time.Now()
		code, _, err := testenv.Scrape(ctx, f.metricsURL, readerToken)
		latency := time.Since(began)
		close(stop)
		wg.Wait()
		reviews := f.since(calls)[testenv.RequestKind{Method: http.MethodPost, Resource: "tokenreviews.authentication.k8s.io"}]
		t.Logf("during a flood of %d scrapes from %d connections with minted and invented tokens (%d TokenReviews), the scraper was answered %d in %v",
			answered.Load(), 20*scale, reviews, code, latency.Round(time.Millisecond))
		if err != nil || code != http.StatusOK {
			t.Errorf("the authorized scrape got %d (%v), want 200", code, err)
		}
		// A flood must be refused mostly without asking the API server: when every invented token costs a
		// review, the reviews queue and the flood is answered only as fast as they are (before the local check,
		// 56 reviews for 82 scrapes, and the scraper waited 8 s; now about 20 for hundreds).
		if int64(reviews)*3 > answered.Load() {
			t.Errorf("%d TokenReviews for %d flooding scrapes: invented tokens are reviewed, want most refused without a review", reviews, answered.Load())
		}
	})
}

// tenantFlood is TestTenantFlood's process under attack and what it is attacked with.
type tenantFlood struct {
	plane *testenv.ControlPlane
	// cs is the admin; tenant acts as tenantUser.
	cs, tenant kubernetes.Interface
	w          *testenv.Webhook
	proxy      *testenv.CountingProxy
	// in is opted in, out is not; both are the tenant's. monitoring holds the authorized scraper.
	in, out, monitoring string
	metricsURL          string
	namespaces          atomic.Int64
}

func newFlood(ctx context.Context, t *testing.T, plane *testenv.ControlPlane, cs kubernetes.Interface) *tenantFlood {
	t.Helper()
	f := &tenantFlood{plane: plane, cs: cs, in: "tenant-in", out: "tenant-out", monitoring: "monitoring"}
	for _, ns := range []string{sourceNamespace, f.monitoring} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	robot := base64.StdEncoding.EncodeToString([]byte("robot:" + floodPassword))
	leaky := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "leaky-regcred"},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(fmt.Sprintf(
			`{"auths":{"https://robot:%s@other.example.com":{"auth":%q},"elsewhere.example.com/v2/?token=%s":{"auth":%q}}}`,
			floodPassword, robot, floodPassword, robot))},
	}
	for _, s := range []*corev1.Secret{pullSecret("flood-regcred", "flood.example.com"), leaky} {
		if _, err := cs.CoreV1().Secrets(sourceNamespace).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	if f.proxy, err = plane.StartCountingProxy(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.proxy.Stop(); err != nil {
			t.Error(err)
		}
	})
	ports, err := testenv.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	f.metricsURL = "https://" + metricsAddr + testenv.MetricsPath
	f.w, err = plane.StartWebhook(ctx, binary, []byte(floodConfig), "--kubeconfig", f.proxy.Kubeconfig,
		"--leader-election-id", "tenant-flood", "--metrics-bind-address", metricsAddr,
		"--events-qps", strconv.Itoa(floodEventsQPS), "--events-burst", strconv.Itoa(floodEventsBurst))
	if err != nil {
		t.Fatal(err)
	}
	stopAfterTest(t, f.w)
	if err := testenv.WaitMetricsServing(ctx, f.metricsURL); err != nil {
		t.Fatal(err)
	}
	bindMetricsReader(ctx, t, cs, f.monitoring, "scraper")
	mwc := plane.MutatingWebhookConfiguration("tenant-flood", f.w.Port, &metav1.LabelSelector{
		MatchExpressions: []metav1.LabelSelectorRequirement{{
			Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"kube-system", sourceNamespace},
		}},
	})
	registerWebhook(t, cs, mwc)

	cfg := plane.ImpersonatingConfig(tenantUser)
	cfg.QPS, cfg.Burst = 500, 1000
	if f.tenant, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	f.namespace(t, f.in, true)
	f.namespace(t, f.out, false)
	if err := testenv.WaitForMutation(ctx, f.tenant, f.in, "flood.example.com/app", "flood-regcred"); err != nil {
		t.Fatal(err)
	}
	return f
}

// namespace creates a namespace of the tenant's (opted in or not) named name, or prefix-N when name is a
// prefix already taken, and returns its name. The tenant may do anything a namespace's owner does there.
func (f *tenantFlood) namespace(t *testing.T, name string, optedIn bool) string {
	t.Helper()
	ctx := context.Background()
	if name != f.in && name != f.out {
		name = fmt.Sprintf("%s-%d", name, f.namespaces.Add(1))
	}
	var labels map[string]string
	if optedIn {
		labels = map[string]string{config.InjectLabel: config.InjectEnabled}
	}
	if _, err := f.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: tenantUser},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"secrets", "pods", "serviceaccounts"}, Verbs: []string{"*"}},
			{APIGroups: []string{""}, Resources: []string{"pods/ephemeralcontainers", "serviceaccounts/token"}, Verbs: []string{"*"}},
			{APIGroups: []string{"", "events.k8s.io"}, Resources: []string{"events"}, Verbs: []string{"get", "list", "watch"}},
		},
	}
	if _, err := f.cs.RbacV1().Roles(name).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: tenantUser},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: tenantUser},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: tenantUser}},
	}
	if _, err := f.cs.RbacV1().RoleBindings(name).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The RBAC authorizer learns of the binding through a watch.
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, testenv.SettleTimeout, true, func(ctx context.Context) (bool, error) {
		_, err := f.tenant.CoreV1().Secrets(name).List(ctx, metav1.ListOptions{Limit: 1})
		return err == nil, nil
	}); err != nil {
		t.Fatalf("the tenant's RoleBinding in %s never took effect: %v", name, err)
	}
	return name
}

// createPod creates pod in namespace as the tenant and returns it as stored and the warnings returned.
func (f *tenantFlood) createPod(t *testing.T, namespace string, pod *corev1.Pod) (*corev1.Pod, []string) {
	t.Helper()
	var w testenv.Warnings
	cfg := f.plane.ImpersonatingConfig(tenantUser)
	cfg.WarningHandlerWithContext = &w
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got, err := cs.CoreV1().Pods(namespace).Create(context.Background(), pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s/%s as the tenant: %v", namespace, pod.Name, err)
	}
	return got, w.List()
}

// sync returns once the process has handled every change to copies made before it: a Secret in the form of
// a copy of flood-regcred in the namespace that does not opt in is revoked (deleted) by the reconciler,
// after every earlier event of the copies' informer, which delivers in order.
func (f *tenantFlood) sync(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	sentinel := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "flood-regcred",
			Labels:      map[string]string{managed.ManagedByLabel: managed.ManagedByValue},
			Annotations: map[string]string{managed.SourceAnnotation: sourceNamespace + "/flood-regcred"}},
		Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{}}`)},
	}
	if _, err := f.tenant.CoreV1().Secrets(f.out).Create(ctx, sentinel, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, revokeBound, "the sentinel copy in a namespace that does not opt in is revoked", secretGoneIn(f.cs, f.out, "flood-regcred"),
		func() string { return tail(f.w.Log(), 20) })
}

func secretGoneIn(cs kubernetes.Interface, ns, name string) func() (bool, error) {
	return func() (bool, error) {
		_, err := cs.CoreV1().Secrets(ns).Get(context.Background(), name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	}
}

func (f *tenantFlood) rss(t *testing.T) int64 {
	t.Helper()
	return rss(t, f.w.Pid())
}

// calls returns the process's API requests so far, to pass to since.
func (f *tenantFlood) calls() map[testenv.RequestKind]int { return f.proxy.Counts() }

// since returns the process's API requests made after before, watches and leader election left out.
func (f *tenantFlood) since(before map[testenv.RequestKind]int) map[testenv.RequestKind]int {
	out := map[testenv.RequestKind]int{}
	for k, n := range f.proxy.Counts() {
		if k.Method == "WATCH" || strings.HasPrefix(k.Resource, "leases.") {
			continue
		}
		if d := n - before[k]; d > 0 {
			out[k] = d
		}
	}
	return out
}

// randomString returns n random lowercase hexadecimal characters.
func randomString(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, (n+1)/2)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)[:n]
}

// bindMetricsReader creates the ServiceAccount namespace/name and binds it to the chart's metrics-reader
// rules, cluster-wide.
func bindMetricsReader(ctx context.Context, t *testing.T, cs kubernetes.Interface, namespace, name string) {
	t.Helper()
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "flood-metrics-reader"}, Rules: testenv.MetricsReaderRules()}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "flood-metrics-reader"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: namespace, Name: name}},
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// waitForEventIn is waitForEvent on another control plane's client.
func waitForEventIn(t *testing.T, cs kubernetes.Interface, namespace, regarding, reason, note string) {
	t.Helper()
	eventually(t, syncBound, fmt.Sprintf("%s event about %s/%s", reason, namespace, regarding), func() (bool, error) {
		list, err := cs.EventsV1().Events(namespace).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, e := range list.Items {
			if e.Regarding.Name == regarding && e.Reason == reason && strings.Contains(e.Note, note) {
				return true, nil
			}
		}
		return false, nil
	}, func() string { return "no such event" })
}
