package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/config/configtest"
	"github.com/pullsecret-injector/pullsecret-injector/internal/app"
	"github.com/pullsecret-injector/pullsecret-injector/internal/managed"
	"github.com/pullsecret-injector/pullsecret-injector/internal/reconciler"
	"github.com/pullsecret-injector/pullsecret-injector/test/fixtures"
	"github.com/pullsecret-injector/pullsecret-injector/test/testenv"
)

// scaleConfig is the configuration of TestRotationRightAfterARestartAtScale, on a control plane of its own.
const scaleConfig = `
registries:
  - registry: scale.example.com
    secret: {namespace: pullsecret-injector, name: scale-regcred}
`

const (
	// scaleNamespaces is how many opted-in namespaces, each with a copy, the scale test makes.
	scaleNamespaces = 1000
	// scaleClients is how many clients make them, and make Pods during the rotation.
	scaleClients = 16
	// cacheBytesBound is the most heap the caches of a replica may hold per copy and namespace (one
	// each), as TestRotationRightAfterARestartAtScale measures in its own process: about 1 KiB now.
	cacheBytesBound = 1536
)

// TestRotationRightAfterARestartAtScale gives 1,000 opted-in namespaces a copy each through the webhook,
// restarts the process, and counts the API requests of its reconciler's first pass: none for the copies,
// which are in step. It then restarts it again and rotates the source as soon as it leads, while Pods are
// created in those namespaces and in new ones: every copy must follow with exactly one write and no read,
// and no Pod create may fail. Every API request of the process goes through a counting proxy. It also
// measures what the caches hold per copy and namespace. Timing is not asserted: `make bench-scale`
// measures it.
func TestRotationRightAfterARestartAtScale(t *testing.T) {
	const name, registry = "scale-regcred", "scale.example.com"
	ctx := context.Background()
	plane, _ := ownControlPlane(t)
	cs := fastClient(t, plane)
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: sourceNamespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Secrets(sourceNamespace).Create(ctx, pullSecret(name, registry), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	proxy, err := plane.StartCountingProxy()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Stop() })
	ports, err := testenv.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	metricsURL := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])) + "/metrics"
	// A rate high enough that the fan-out takes seconds on a loaded machine: this test counts requests.
	args := []string{"--leader-election-id", "scale", "--kubeconfig", proxy.Kubeconfig,
		"--metrics-bind-address", net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])), "--metrics-secure=false",
		"--reconciler-qps", "500", "--reconciler-burst", "100", "--zap-log-level", "info"}
	start := func() *testenv.Webhook {
		t.Helper()
		w, err := plane.StartWebhook(ctx, binary, []byte(scaleConfig), args...)
		if err != nil {
			t.Fatal(err)
		}
		stopAfterTest(t, w)
		return w
	}
	first := start()
	registerWebhook(t, cs, plane.MutatingWebhookConfiguration("scale", first.Port, &metav1.LabelSelector{MatchLabels: optIn()}))
	if err := createNamespace2(ctx, cs, "scale-probe"); err != nil {
		t.Fatal(err)
	}
	// serve points the registration at w, whose port is its own, and waits until the API server calls it.
	serve := func(w *testenv.Webhook) {
		t.Helper()
		mwc, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "scale", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		mwc.Webhooks[0].ClientConfig = plane.MutatingWebhookConfiguration("scale", w.Port, nil).Webhooks[0].ClientConfig
		if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Update(ctx, mwc, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := testenv.WaitForMutation(ctx, cs, "scale-probe", registry+"/app:1", name); err != nil {
			t.Fatal(err)
		}
	}
	serve(first)

	namespaces := make([]string, scaleNamespaces)
	for i := range namespaces {
		namespaces[i] = fmt.Sprintf("scale-ns-%04d", i)
	}
	began := time.Now()
	if err := testenv.Parallel(ctx, len(namespaces), scaleClients, func(ctx context.Context, i int) error {
		if err := createNamespace2(ctx, cs, namespaces[i]); err != nil {
			return err
		}
		return createMutatedPod(ctx, cs, namespaces[i], registry+"/app:1", name)
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d namespaces with a Pod and a copy each in %v", len(namespaces), time.Since(began).Round(time.Millisecond))
	source := getSecretIn(t, cs, sourceNamespace, name)
	if ok, d := copiesHold(t, cs, name, namespaces, source.Data[corev1.DockerConfigJsonKey]); !ok {
		t.Fatalf("after the admissions: %s", d)
	}
	measureCacheBytes(t, plane.Config, source, len(namespaces))

	// The first pass of a restarted process: no request for a copy in step.
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	inScale := func(ns string) bool { return strings.HasPrefix(ns, "scale-ns-") }
	before := proxy.CountsIn(inScale)
	second := start()
	took, err := testenv.ReconcilerIdle(ctx, metricsURL, reconciler.Name, len(namespaces), testenv.SettleTimeout)
	if err != nil {
		t.Fatal(err)
	}
	firstPass := testenv.CountsSince(before, proxy.CountsIn(inScale))
	t.Logf("first pass over %d copies in %v; API requests in their namespaces: %s", len(namespaces), took.Round(time.Millisecond),
		testenv.FormatCounts(firstPass))
	if diff := cmp.Diff(map[testenv.RequestKind]int{}, firstPass); diff != "" {
		t.Errorf("API requests of the first pass in the copies' namespaces (-want +got):\n%s", diff)
	}

	// A rotation as soon as a restarted process leads, with Pods created meanwhile.
	if err := second.Stop(); err != nil {
		t.Fatal(err)
	}
	before = proxy.CountsIn(inScale)
	third := start()
	serve(third)
	if err := testenv.WaitLeader(ctx, metricsURL, testenv.SettleTimeout); err != nil {
		t.Fatal(err)
	}
	rotated := rotatedConfig(registry, "at-scale")
	source.Data = map[string][]byte{corev1.DockerConfigJsonKey: rotated}
	if _, err := cs.CoreV1().Secrets(sourceNamespace).Update(ctx, source, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	began = time.Now()
	load := startPodLoad(ctx, cs, namespaces, registry+"/app:1", name)
	took = eventually(t, testenv.SettleTimeout, "the rotation reaches every copy", func() (bool, error) {
		ok, _ := copiesHold(t, cs, name, namespaces, rotated)
		return ok, nil
	}, func() string { _, d := copiesHold(t, cs, name, namespaces, rotated); return d })
	creates, newNamespaces, failures := load.stop()
	t.Logf("rotation reached %d copies %v after the source was updated (%.0f copies/s on this machine); %d Pods created meanwhile "+
		"in them and %d new namespaces", len(namespaces), took.Round(time.Millisecond), float64(len(namespaces))/time.Since(began).Seconds(),
		creates, len(newNamespaces))
	if len(failures) > 0 {
		t.Errorf("%d Pod creates failed during the rotation, first: %v", len(failures), failures[0])
	}
	if _, err := testenv.ReconcilerIdle(ctx, metricsURL, reconciler.Name, len(namespaces), testenv.SettleTimeout); err != nil {
		t.Fatal(err)
	}
	rotation := testenv.CountsSince(before, proxy.CountsIn(inScale))
	t.Logf("API requests in the copies' namespaces during the rotation: %s", testenv.FormatCounts(rotation))
	// Events on the copies are the binary's business and rate-limited; what counts is the copies.
	delete(rotation, testenv.RequestKind{Method: "POST", Resource: "events.events.k8s.io"})
	want := map[testenv.RequestKind]int{{Method: "PATCH", Resource: "secrets"}: len(namespaces)}
	if diff := cmp.Diff(want, rotation); diff != "" {
		t.Errorf("API requests of the rotation in the copies' namespaces (-want +got):\n%s", diff)
	}
	// The copies made at admission meanwhile follow too, whichever bytes they were made with.
	if ok, d := copiesHold(t, cs, name, newNamespaces, rotated); !ok {
		t.Errorf("copies made in new namespaces during the rotation: %s", d)
	}
	if t.Failed() {
		t.Logf("--- third process's log ---\n%s", tail(third.Log(), 40))
	}
}

// fastClient returns an admin client of plane without client-side rate limits.
func fastClient(t *testing.T, plane *testenv.ControlPlane) kubernetes.Interface {
	t.Helper()
	cfg := rest.CopyConfig(plane.Config)
	cfg.RateLimiter = flowcontrol.NewFakeAlwaysRateLimiter()
	cfg.WarningHandlerWithContext = rest.NoWarnings{}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func createNamespace2(ctx context.Context, cs kubernetes.Interface, name string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: optIn()}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create namespace %q: %w", name, err)
	}
	return nil
}

// createMutatedPod creates a Pod of image in namespace and fails unless the webhook gave it secret.
func createMutatedPod(ctx context.Context, cs kubernetes.Interface, namespace, image, secret string) error {
	pod := podWith("", image)
	pod.GenerateName = "app-"
	got, err := cs.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create pod in namespace %q: %w", namespace, err)
	}
	if refs := refNames(got); len(refs) != 1 || refs[0] != secret {
		return fmt.Errorf("pod %s/%s has imagePullSecrets %v, want %s", namespace, got.Name, refs, secret)
	}
	return nil
}

func getSecretIn(t *testing.T, cs kubernetes.Interface, ns, name string) *corev1.Secret {
	t.Helper()
	s, err := cs.CoreV1().Secrets(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// copiesHold reports whether the copy of name in each of namespaces holds data, with its digest annotation.
func copiesHold(t *testing.T, cs kubernetes.Interface, name string, namespaces []string, data []byte) (bool, string) {
	t.Helper()
	list, err := cs.CoreV1().Secrets("").List(context.Background(), metav1.ListOptions{LabelSelector: managed.Selector})
	if err != nil {
		t.Fatal(err)
	}
	byNamespace := map[string]*corev1.Secret{}
	for i := range list.Items {
		if list.Items[i].Name == name {
			byNamespace[list.Items[i].Namespace] = &list.Items[i]
		}
	}
	var stale []string
	for _, ns := range namespaces {
		c := byNamespace[ns]
		if c == nil || !bytes.Equal(c.Data[corev1.DockerConfigJsonKey], data) ||
			c.Annotations[managed.DigestAnnotation] != managed.DigestString(c.Type, c.Data) {
			stale = append(stale, ns)
		}
	}
	if len(stale) > 5 {
		stale = append(stale[:5], "...")
	}
	return len(stale) == 0, fmt.Sprintf("%d of %d copies not holding the data with its digest: %v", len(stale), len(namespaces), stale)
}

// podLoad creates Pods in existing namespaces from a few clients, and every so often the first Pod of a
// new namespace, until stopped.
type podLoad struct {
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	mu       sync.Mutex
	creates  int
	created  []string
	failures []error
}

func startPodLoad(ctx context.Context, cs kubernetes.Interface, namespaces []string, image, secret string) *podLoad {
	ctx, cancel := context.WithCancel(ctx)
	l := &podLoad{cancel: cancel}
	record := func(err error) {
		l.mu.Lock()
		defer l.mu.Unlock()
		if err != nil && ctx.Err() == nil {
			l.failures = append(l.failures, err)
		} else if err == nil {
			l.creates++
		}
	}
	for w := range 4 {
		l.wg.Go(func() {
			for i := w; ctx.Err() == nil; i += 4 {
				record(createMutatedPod(ctx, cs, namespaces[i%len(namespaces)], image, secret))
			}
		})
	}
	l.wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			ns := fmt.Sprintf("scale-new-%03d", i)
			err := createNamespace2(ctx, cs, ns)
			if err == nil {
				err = createMutatedPod(ctx, cs, ns, image, secret)
			}
			if err == nil {
				l.mu.Lock()
				l.created = append(l.created, ns)
				l.mu.Unlock()
			}
			record(err)
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond): // a new namespace now and then, not a flood
			}
		}
	})
	return l
}

// stop stops the load and returns how many Pods it created, the new namespaces it made a Pod in, and
// the creates that failed.
func (l *podLoad) stop() (int, []string, []error) {
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.creates, l.created, l.failures
}

// measureCacheBytes starts, in this process, the caches a replica runs (copies and namespaces, as the
// binary configures them) against the control plane at cfg, which holds n copies of src in n opted-in
// namespaces, and fails when they hold more than cacheBytesBound of heap per copy and namespace.
func measureCacheBytes(t *testing.T, cfg *rest.Config, src *corev1.Secret, n int) {
	t.Helper()
	m := configtest.Matcher(t, scaleConfig)
	scheme, err := app.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	digest := managed.DigestString(src.Type, src.Data)
	opts := app.CacheOptions(config.NewStaticStore(m), func(config.SecretRef) (string, bool) { return digest, true })
	opts.Scheme = scheme
	c, err := cache.New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, obj := range []*metav1.PartialObjectMetadata{managed.PartialSecret(), managed.PartialNamespace()} {
		if _, err := c.GetInformer(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	before := fixtures.HeapAlloc()
	done := make(chan error, 1)
	go func() { done <- c.Start(ctx) }()
	if !c.WaitForCacheSync(ctx) {
		t.Fatal("caches did not sync")
	}
	held := fixtures.HeapAlloc() - before
	runtime.KeepAlive(c)
	perItem := held / n
	t.Logf("caches hold %d bytes of heap for %d copies and namespaces: %d per copy and namespace (bound %d)", held, n, perItem, cacheBytesBound)
	if perItem > cacheBytesBound {
		t.Errorf("caches hold %d bytes per copy and namespace, want at most %d", perItem, cacheBytesBound)
	}
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Error(err)
	}
}
