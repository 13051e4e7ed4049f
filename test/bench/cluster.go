package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"
	"sigs.k8s.io/yaml"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/internal/events"
	"github.com/pullsecret-injector/pullsecret-injector/internal/reconciler"
	"github.com/pullsecret-injector/pullsecret-injector/test/testenv"
)

const (
	// sourceNamespace and sourceName are the source Secret every Pod of the benchmark needs.
	sourceNamespace = "pullsecret-injector"
	sourceName      = "bench-regcred"
	// registry is the one configured registry; image is in it.
	registry = "registry.bench.example"
	image    = registry + "/team/app:1"
	// webhookConfigName is the MutatingWebhookConfiguration the benchmark creates and deletes.
	webhookConfigName = "pullsecret-injector-bench"
)

// cluster is a control plane with the benchmark's source Secret and a client without client-side rate
// limits, so that the load generator never queues its own requests.
type cluster struct {
	cp *testenv.ControlPlane
	cs kubernetes.Interface
	// project is the pullsecret-injector binary built from this tree.
	project string
	// config is the project's configuration file; nil is configYAML's.
	config []byte
	// projectLimit and noopLimit, when set, are the CPU cgroups the project's and the no-op webhook's
	// processes start in.
	projectLimit, noopLimit *cpuLimit
	// projectEnv is added to the project's environment (GOGC=100).
	projectEnv []string
}

func startCluster(ctx context.Context) (*cluster, error) {
	cp, err := testenv.StartControlPlane()
	if err != nil {
		return nil, err
	}
	c := &cluster{cp: cp}
	if err := c.setUp(ctx); err != nil {
		_ = cp.Stop()
		return nil, err
	}
	return c, nil
}

func (c *cluster) setUp(ctx context.Context) error {
	cfg := rest.CopyConfig(c.cp.Config)
	cfg.RateLimiter = flowcontrol.NewFakeAlwaysRateLimiter()
	var err error
	if c.cs, err = kubernetes.NewForConfig(cfg); err != nil {
		return fmt.Errorf("create client: %w", err)
	}
	logf("Building pullsecret-injector from %s", testenv.RepoRoot())
	if c.project, err = testenv.BuildBinary(c.cp.Dir); err != nil {
		return err
	}
	if err := c.createNamespace(ctx, sourceNamespace, false); err != nil {
		return err
	}
	return c.writeSource(ctx, []byte(`{"auths":{"`+registry+`":{"auth":"YmVuY2g6b25l"}}}`))
}

// stop stops the control plane; the webhooks, in their own process groups, are stopped by their owners.
func (c *cluster) stop() {
	if err := c.cp.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "bench: stop control plane:", err)
	}
}

// configYAML is the project's configuration: one registry, one source.
func configYAML() ([]byte, error) {
	b, err := yaml.Marshal(config.Config{Registries: []config.Registry{{
		Registry: registry,
		Secret:   config.SecretRef{Namespace: sourceNamespace, Name: sourceName},
	}}})
	if err != nil {
		return nil, fmt.Errorf("marshal configuration: %w", err)
	}
	return b, nil
}

// writeSource creates the source Secret or replaces its data.
func (c *cluster) writeSource(ctx context.Context, dockerConfig []byte) error {
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: sourceNamespace, Name: sourceName},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: dockerConfig},
	}
	secrets := c.cs.CoreV1().Secrets(sourceNamespace)
	_, err := secrets.Create(ctx, s, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		_, err = secrets.Update(ctx, s, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("write source secret: %w", err)
	}
	return nil
}

func (c *cluster) createNamespace(ctx context.Context, name string, optIn bool) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if optIn {
		ns.Labels = map[string]string{config.InjectLabel: config.InjectEnabled}
	}
	if _, err := c.cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create namespace %q: %w", name, err)
	}
	return nil
}

func pod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "bench-"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: image}}},
	}
}

// createPod creates a Pod in namespace and returns how long the create took. With mutated, a Pod stored
// without exactly the source's reference is an error: the webhook the benchmark measures did not run.
func (c *cluster) createPod(ctx context.Context, namespace string, mutated bool) (time.Duration, error) {
	start := time.Now()
	got, err := c.cs.CoreV1().Pods(namespace).Create(ctx, pod(), metav1.CreateOptions{})
	elapsed := time.Since(start)
	if err != nil {
		return elapsed, fmt.Errorf("create pod in namespace %q: %w", namespace, err)
	}
	if has := len(got.Spec.ImagePullSecrets) == 1 && got.Spec.ImagePullSecrets[0].Name == sourceName; has != mutated {
		return elapsed, fmt.Errorf("pod %s/%s has imagePullSecrets %v, want the reference %t", namespace, got.Name,
			got.Spec.ImagePullSecrets, mutated)
	}
	return elapsed, nil
}

// serial creates n Pods one after another and returns their latencies.
func (c *cluster) serial(ctx context.Context, namespace string, n int, mutated bool) ([]time.Duration, error) {
	lat := make([]time.Duration, 0, n)
	for range n {
		d, err := c.createPod(ctx, namespace, mutated)
		if err != nil {
			return nil, err
		}
		lat = append(lat, d)
	}
	return lat, nil
}

// concurrent creates n Pods from workers clients at once and returns the Pods per second and every
// create's latency.
func (c *cluster) concurrent(ctx context.Context, namespace string, n, workers int, mutated bool) (float64, []time.Duration, error) {
	var next atomic.Int64
	errs := make([]error, workers)
	lats := make([][]time.Duration, workers)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range workers {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				d, err := c.createPod(ctx, namespace, mutated)
				if err != nil {
					errs[w] = err
					return
				}
				lats[w] = append(lats[w], d)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return 0, nil, err
	}
	return float64(n) / elapsed.Seconds(), slices.Concat(lats...), nil
}

// deletePods deletes every Pod of namespace, so that each measurement starts with the same number of Pods
// stored. Without a kubelet, a Pod never scheduled goes at once.
func (c *cluster) deletePods(ctx context.Context, namespace string) error {
	if err := c.cs.CoreV1().Pods(namespace).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
		return fmt.Errorf("delete pods in namespace %q: %w", namespace, err)
	}
	return nil
}

// register points the API server at a webhook on port (0: none) and waits until a dry-run Pod create in
// namespace shows that the switch is effective: mutated by the new webhook, or not mutated at all.
func (c *cluster) register(ctx context.Context, port int, namespace string) error {
	mwcs := c.cs.AdmissionregistrationV1().MutatingWebhookConfigurations()
	if err := mwcs.Delete(ctx, webhookConfigName, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete webhook configuration: %w", err)
	}
	// First until no webhook answers, so that the old webhook cannot be mistaken for the new one.
	if err := c.waitMutation(ctx, namespace, false); err != nil {
		return err
	}
	if port == 0 {
		return nil
	}
	mwc := c.cp.MutatingWebhookConfiguration(webhookConfigName, port, &metav1.LabelSelector{
		MatchLabels: map[string]string{config.InjectLabel: config.InjectEnabled},
	})
	if _, err := mwcs.Create(ctx, mwc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create webhook configuration: %w", err)
	}
	return c.waitMutation(ctx, namespace, true)
}

func (c *cluster) waitMutation(ctx context.Context, namespace string, mutated bool) error {
	var last error
	err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		got, err := c.cs.CoreV1().Pods(namespace).Create(ctx, pod(), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			last = err
			return false, nil
		}
		return (len(got.Spec.ImagePullSecrets) > 0) == mutated, nil
	})
	if err != nil {
		return fmt.Errorf("wait for pods in %q to be mutated=%t: %w", namespace, mutated, errors.Join(err, last))
	}
	return nil
}

// startProject starts pullsecret-injector with its metrics endpoint on loopback and returns it with the
// time from the process start to /readyz answering 200.
func (c *cluster) startProject(ctx context.Context, metricsPort int, args ...string) (*testenv.Webhook, time.Duration, error) {
	cfg, err := configYAML()
	if err != nil {
		return nil, 0, err
	}
	if c.config != nil {
		cfg = c.config
	}
	args = append([]string{
		// The chart's log level: debug logging would add its cost to every admission.
		"--zap-log-level", "info",
		"--metrics-bind-address", net.JoinHostPort("127.0.0.1", strconv.Itoa(metricsPort)),
		// The load program scrapes without a token; how metrics are served is no part of an admission.
		"--metrics-secure=false",
		// The binary's Event rate, not the tests' (testenv raises it so that tests see every Event): at the
		// tests' rate a rotation writes an Event per copy besides the copy.
		"--events-qps", strconv.FormatFloat(events.DefaultQPS, 'f', -1, 64), "--events-burst", strconv.Itoa(events.DefaultBurst),
	}, args...)
	binary, err := wrapBinary(c.project, c.projectLimit, c.projectEnv)
	if err != nil {
		return nil, 0, err
	}
	start := time.Now()
	w, err := c.cp.StartWebhookNoWait(binary, cfg, args...)
	if err != nil {
		return nil, 0, err
	}
	ready, err := w.TimeToReady(ctx, start, 2*time.Minute)
	if err != nil {
		_ = w.Stop()
		return nil, 0, fmt.Errorf("start pullsecret-injector: %w", err)
	}
	return w, ready, nil
}

// startNoop starts the no-op webhook serving the control plane's loopback certificate.
func (c *cluster) startNoop(ctx context.Context, binary string) (*testenv.Webhook, time.Duration, error) {
	ports, err := testenv.FreePorts(2)
	if err != nil {
		return nil, 0, err
	}
	probe := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
	if binary, err = wrapBinary(binary, c.noopLimit, nil); err != nil {
		return nil, 0, err
	}
	start := time.Now()
	w, err := c.cp.StartProgram(binary, ports[0], probe, "--cert-dir", c.cp.CertDir, "--webhook-host", "127.0.0.1",
		"--webhook-port", strconv.Itoa(ports[0]), "--health-probe-bind-address", probe, "--secret-name", sourceName,
		"--registry", registry)
	if err != nil {
		return nil, 0, err
	}
	ready, err := w.TimeToReady(ctx, start, time.Minute)
	if err != nil {
		_ = w.Stop()
		return nil, 0, fmt.Errorf("start noopwebhook: %w", err)
	}
	return w, ready, nil
}

// stopWebhook stops w and reports a failure to stop on stderr: the benchmark's figures stand anyway.
func stopWebhook(w *testenv.Webhook) {
	if err := w.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
	}
}

// reconcilerIdle waits until the webhook whose metrics are at metricsURL leads, has reconciled at least
// want copies since it started, and has nothing queued or in progress; it returns how long that took.
func reconcilerIdle(ctx context.Context, metricsURL string, want int, timeout time.Duration) (time.Duration, error) {
	return testenv.ReconcilerIdle(ctx, metricsURL, reconciler.Name, want, timeout)
}

// apiserverMetrics scrapes the API server's /metrics.
func (c *cluster) apiserverMetrics(ctx context.Context) (testenv.Metrics, error) {
	rc, err := c.cs.CoreV1().RESTClient().Get().AbsPath("/metrics").Stream(ctx)
	if err != nil {
		return nil, fmt.Errorf("scrape API server metrics: %w", err)
	}
	defer func() { _ = rc.Close() }()
	return testenv.ScrapeMetrics(rc)
}

// apiserverProfile writes a CPU profile of the API server over d to path (the API server serves
// /debug/pprof by default).
func (c *cluster) apiserverProfile(ctx context.Context, d time.Duration, path string) error {
	rc, err := c.cs.CoreV1().RESTClient().Get().AbsPath("/debug/pprof/profile").
		Param("seconds", strconv.Itoa(int(d.Seconds()))).Timeout(d + 30*time.Second).Stream(ctx)
	if err != nil {
		return fmt.Errorf("profile the API server: %w", err)
	}
	defer func() { _ = rc.Close() }()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, rc); err != nil {
		_ = f.Close()
		return fmt.Errorf("write API server profile: %w", err)
	}
	return f.Close()
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// memory is a process's resident set and its Go heap in use, the part of the resident set the process
// holds on to (the rest is garbage not yet collected or freed pages not yet returned), the highest
// resident set it has had, and its heap's free pages that the runtime has not returned to the kernel.
type memory struct{ rss, heap, peak, retained int64 }

func (m memory) String() string {
	return fmt.Sprintf("%s (heap in use %s, free heap kept %s)", testenv.MiB(m.rss), testenv.MiB(m.heap), testenv.MiB(m.retained))
}

// readMemory reads the memory of process pid, whose metrics are at metricsURL.
func readMemory(ctx context.Context, pid int, metricsURL string) (memory, error) {
	rss, err := testenv.ProcRSS(pid)
	if err != nil {
		return memory{}, err
	}
	peak, err := testenv.ProcPeakRSS(pid)
	if err != nil {
		return memory{}, err
	}
	m, err := testenv.ScrapeURL(ctx, metricsURL)
	if err != nil {
		return memory{}, err
	}
	heap, _ := m.Value("go_memstats_heap_inuse_bytes", nil)
	idle, _ := m.Value("go_memstats_heap_idle_bytes", nil)
	released, _ := m.Value("go_memstats_heap_released_bytes", nil)
	return memory{rss: rss, heap: int64(heap), peak: peak, retained: int64(idle - released)}, nil
}
