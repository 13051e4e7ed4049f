package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"

	"github.com/pullsecret-injector/pullsecret-injector/internal/managed"
	"github.com/pullsecret-injector/pullsecret-injector/test/testenv"
)

// scaleOptions are the flags of `bench scale`.
type scaleOptions struct {
	namespaces, clients, idlePods int
	warmSet, newNamespaces        int
	serviceAccounts               bool
	settings                      []reconcilerSetting
	flowSchema                    bool
	apiserverProfile              string
	// cpuLimit, when set, is the CPU limit (a Kubernetes quantity) the project runs under, in a cgroup.
	cpuLimit string
}

// reconcilerSetting is one set of reconciler flags a rotation is measured with; the zero value passes
// none, so the binary's defaults apply.
type reconcilerSetting struct {
	qps            string
	burst, workers string
}

func (s reconcilerSetting) String() string {
	if s == (reconcilerSetting{}) {
		return "binary defaults"
	}
	return fmt.Sprintf("--reconciler-qps=%s --reconciler-burst=%s --reconciler-workers=%s", s.qps, s.burst, s.workers)
}

func (s reconcilerSetting) args() []string {
	if s == (reconcilerSetting{}) {
		return nil
	}
	return []string{"--reconciler-qps", s.qps, "--reconciler-burst", s.burst, "--reconciler-workers", s.workers}
}

func parseSettings(v string) ([]reconcilerSetting, error) {
	var out []reconcilerSetting
	for _, s := range strings.Split(v, ",") {
		if s == "default" {
			out = append(out, reconcilerSetting{})
			continue
		}
		parts := strings.Split(s, "/")
		if len(parts) != 3 {
			return nil, fmt.Errorf("reconciler setting %q: want QPS/BURST/WORKERS or default", s)
		}
		for _, p := range parts {
			if _, err := strconv.ParseFloat(p, 64); err != nil {
				return nil, fmt.Errorf("reconciler setting %q: %w", s, err)
			}
		}
		out = append(out, reconcilerSetting{qps: parts[0], burst: parts[1], workers: parts[2]})
	}
	return out, nil
}

// serviceAccount is the identity the project runs as, so that API Priority and Fairness classifies its
// requests as a workload's: the control plane's admin (system:masters) is exempt from it.
const serviceAccount = "pullsecret-injector"

// scaleProject is the running pullsecret-injector of the scale benchmark.
type scaleProject struct {
	w          *testenv.Webhook
	metricsURL string
	setting    reconcilerSetting
	// probeNamespace is where dry-run Pods tell that the API server calls the running process.
	probeNamespace string
	// kubeconfig acts as the project's ServiceAccount through proxy, which counts every request.
	kubeconfig string
	proxy      *testenv.CountingProxy
}

// runScale runs `bench scale`: it fills a control plane with opted-in namespaces and copies, measures the
// project's start, memory and idle admissions, then rotates the source once for each reconciler setting.
func runScale(ctx context.Context, args []string) error {
	o, err := parseScaleFlags(args)
	if err != nil {
		return err
	}
	c, err := startCluster(ctx)
	if err != nil {
		return err
	}
	defer c.stop()
	if o.cpuLimit != "" {
		if c.projectLimit, err = newCPULimit("psi-bench-project", o.cpuLimit); err != nil {
			return err
		}
		defer func() { reportErr(c.projectLimit.remove()) }()
		defer printThrottling("pullsecret-injector", o.cpuLimit, c.projectLimit)
	}
	if err := c.bindServiceAccount(ctx); err != nil {
		return err
	}
	proxy, err := c.cp.StartCountingProxy()
	if err != nil {
		return err
	}
	defer func() { _ = proxy.Stop() }()
	kubeconfig, err := proxy.ImpersonatingKubeconfig(testenv.ServiceAccountUser(sourceNamespace, serviceAccount))
	if err != nil {
		return err
	}

	const warmPrefix = "bench-ns"
	p := &scaleProject{probeNamespace: warmPrefix + "-probe", kubeconfig: kubeconfig, proxy: proxy}
	if err := c.createNamespace(ctx, p.probeNamespace, true); err != nil {
		return err
	}
	defer func() {
		if p.w != nil {
			stopWebhook(p.w)
		}
	}()
	f, err := c.scaleStart(ctx, o, p, warmPrefix)
	if err != nil {
		return err
	}
	printScaleStart(o, f)
	idleP50, err := c.idleAdmissions(ctx, o, warmPrefix)
	if err != nil {
		return err
	}
	return c.rotations(ctx, o, p, warmPrefix, idleP50)
}

// parseScaleFlags parses the flags of `bench scale`.
func parseScaleFlags(args []string) (scaleOptions, error) {
	var o scaleOptions
	var settings string
	fs := flag.NewFlagSet("scale", flag.ExitOnError)
	fs.IntVar(&o.namespaces, "namespaces", 10000, "Opted-in namespaces, each given a copy by a Pod create through the webhook.")
	fs.IntVar(&o.clients, "clients", 16, "Parallel clients creating the namespaces and Pods.")
	fs.IntVar(&o.idlePods, "idle-pods", 200, "Pod creates in warm namespaces measured while the reconciler is idle.")
	fs.IntVar(&o.warmSet, "warm-namespaces", 20,
		"Warm namespaces the measured Pods cycle through. Few, and each given a Pod first: the API server's own admission "+
			"(LimitRanger, ResourceQuota) makes a live read for a namespace it has not seen for 30 s, which adds ~100 ms to that Pod create.")
	fs.IntVar(&o.newNamespaces, "idle-new-namespaces", 10, "New namespaces whose first Pod is measured while the reconciler is idle.")
	fs.BoolVar(&o.serviceAccounts, "serviceaccounts", true,
		"Give each namespace its default ServiceAccount, as kube-controller-manager does (envtest runs none): the webhook caches ServiceAccounts.")
	fs.StringVar(&settings, "settings", "default",
		"Comma-separated reconciler settings, QPS/BURST/WORKERS or default (the binary's), to rotate the source with, one rotation each, "+
			"each started as soon as a restarted process leads.")
	fs.BoolVar(&o.flowSchema, "flowschema", false,
		"Rotate once more with the last setting and a FlowSchema that gives the admission path's copy creates a priority level of their own.")
	fs.StringVar(&o.apiserverProfile, "apiserver-profile", "",
		"Write a CPU profile of the API server over the first 10 s of the first rotation to this file.")
	fs.StringVar(&o.cpuLimit, "cpu-limit", "",
		"Run pullsecret-injector in a CPU cgroup with this limit (a Kubernetes quantity, the chart's is 500m), started inside it "+
			"so that the Go runtime derives GOMAXPROCS from it as in a Pod; the cgroup is removed at the end.")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	var err error
	o.settings, err = parseSettings(settings)
	return o, err
}

// scaleStartFigures is what `bench scale` measures before any rotation.
type scaleStartFigures struct {
	ready0, readyN                   time.Duration
	rss0, rssRunning, rssReady, rssN memory
	populate, firstPass              time.Duration
	firstPassCalls                   map[testenv.RequestKind]int
}

// scaleStart starts the project on an empty cluster, creates o.namespaces opted-in namespaces with a Pod
// (and so a copy) each, then restarts the project: it returns the times to ready and the memory at each step.
func (c *cluster) scaleStart(ctx context.Context, o scaleOptions, p *scaleProject, warmPrefix string) (scaleStartFigures, error) {
	var f scaleStartFigures
	var err error
	if f.ready0, err = c.restartProject(ctx, p, reconcilerSetting{}); err != nil {
		return f, err
	}
	if _, err := reconcilerIdle(ctx, p.metricsURL, 0, time.Minute); err != nil {
		return f, err
	}
	if f.rss0, err = readMemory(ctx, p.w.Pid(), p.metricsURL); err != nil {
		return f, err
	}
	logf("Creating %d opted-in namespaces with a Pod each, through the webhook", o.namespaces)
	start := time.Now()
	if err := c.populateScale(ctx, warmPrefix, o.namespaces, o.clients, o.serviceAccounts); err != nil {
		return f, err
	}
	f.populate = time.Since(start)
	if _, err := reconcilerIdle(ctx, p.metricsURL, o.namespaces, 10*time.Minute); err != nil {
		return f, err
	}
	if f.rssRunning, err = readMemory(ctx, p.w.Pid(), p.metricsURL); err != nil {
		return f, err
	}

	logf("Restarting pullsecret-injector with %d copies in the cluster", o.namespaces)
	before := p.proxy.Counts()
	if f.readyN, err = c.restartProject(ctx, p, reconcilerSetting{}); err != nil {
		return f, err
	}
	if f.rssReady, err = readMemory(ctx, p.w.Pid(), p.metricsURL); err != nil {
		return f, err
	}
	if f.firstPass, err = reconcilerIdle(ctx, p.metricsURL, o.namespaces, time.Hour); err != nil {
		return f, err
	}
	f.firstPassCalls = testenv.CountsSince(before, p.proxy.Counts())
	f.rssN, err = readMemory(ctx, p.w.Pid(), p.metricsURL)
	return f, err
}

// printScaleStart prints what scaleStart measured, memory as growth per 1,000 namespaces.
func printScaleStart(o scaleOptions, f scaleStartFigures) {
	fmt.Printf("\n== Scale: %d opted-in namespaces, one copy each%s, kube-apiserver %s, %d CPUs ==\n", o.namespaces,
		map[bool]string{true: " and a default ServiceAccount each"}[o.serviceAccounts], testenv.K8sVersion, runtime.NumCPU())
	fmt.Printf("namespaces+Pods created through the webhook in %s (%.0f/s from %d clients)\n",
		f.populate.Round(time.Second), float64(o.namespaces)/f.populate.Seconds(), o.clients)
	fmt.Printf("start to /readyz OK: %s with no copies, %s with %d copies  [goal <= 5s]\n",
		f.ready0.Round(time.Millisecond), f.readyN.Round(time.Millisecond), o.namespaces)
	perThousand := func(m memory) string {
		k := float64(o.namespaces) / 1000
		return fmt.Sprintf("%.2f MiB (heap in use %.2f MiB)", float64(m.rss-f.rss0.rss)/(1<<20)/k, float64(m.heap-f.rss0.heap)/(1<<20)/k)
	}
	fmt.Printf("RSS with no copies: %s\n", f.rss0)
	fmt.Printf("RSS with %d copies and namespaces, and growth per 1,000 of them  [goal <= 2 MiB]:\n", o.namespaces)
	fmt.Printf("  running, after creating them:      %s; %s\n", f.rssRunning, perThousand(f.rssRunning))
	fmt.Printf("  restarted, at ready:               %s; %s\n", f.rssReady, perThousand(f.rssReady))
	fmt.Printf("  after the reconciler's first pass: %s; %s (peak RSS of the process %s)\n", f.rssN, perThousand(f.rssN),
		testenv.MiB(f.rssN.peak))
	fmt.Printf("reconciler's first pass after the restart: %s; API requests: %s\n", f.firstPass.Round(time.Second),
		testenv.FormatCounts(f.firstPassCalls, "leases.coordination.k8s.io", "events.k8s.io", "events"))
}

// idleAdmissions measures Pod creates while the reconciler is idle, in warm namespaces and as the first
// Pod of new ones, prints them and returns the two medians, which the rotations compare with.
func (c *cluster) idleAdmissions(ctx context.Context, o scaleOptions, warmPrefix string) ([2]time.Duration, error) {
	idle, err := c.warmAdmissions(ctx, warmPrefix, o.warmSet, o.idlePods)
	if err != nil {
		return [2]time.Duration{}, err
	}
	var idleFresh []time.Duration
	for i := range o.newNamespaces {
		ns := fmt.Sprintf("bench-new-idle-%04d", i)
		if err := c.createNamespace(ctx, ns, true); err != nil {
			return [2]time.Duration{}, err
		}
		d, err := c.createPod(ctx, ns, true)
		if err != nil {
			return [2]time.Duration{}, err
		}
		idleFresh = append(idleFresh, d)
	}
	idleP50, idleFreshP50 := testenv.Percentile(idle, 50), testenv.Percentile(idleFresh, 50)
	fmt.Printf("Reconciler idle: Pod create in a warm namespace p50 %s p99 %s; first Pod of a new namespace p50 %s max %s\n",
		idleP50.Round(10*time.Microsecond), testenv.Percentile(idle, 99).Round(10*time.Microsecond),
		idleFreshP50.Round(10*time.Microsecond), testenv.Percentile(idleFresh, 100).Round(10*time.Microsecond))
	return [2]time.Duration{idleP50, idleFreshP50}, nil
}

// rotations rotates the source once for each of o.settings, each right after a restart with it, and once
// more with a FlowSchema if o.flowSchema.
func (c *cluster) rotations(ctx context.Context, o scaleOptions, p *scaleProject, warmPrefix string, idleP50 [2]time.Duration) error {
	for i, s := range o.settings {
		// Each rotation starts as soon as a restarted process leads: its first pass and the fan-out are one.
		logf("Restarting pullsecret-injector with %s, to rotate as soon as it leads", s)
		if _, err := c.restartProject(ctx, p, s); err != nil {
			return err
		}
		if err := testenv.WaitLeader(ctx, p.metricsURL, time.Minute); err != nil {
			return err
		}
		profile := ""
		if i == 0 {
			profile = o.apiserverProfile
		}
		if err := c.rotate(ctx, o, p, warmPrefix, i+1, idleP50, false, profile); err != nil {
			return err
		}
	}
	if o.flowSchema {
		if err := c.createFlowSchema(ctx); err != nil {
			return err
		}
		if err := c.rotate(ctx, o, p, warmPrefix, len(o.settings)+1, idleP50, true, ""); err != nil {
			return err
		}
	}
	return nil
}

// bindServiceAccount binds the project's ServiceAccount to cluster-admin: the chart's narrower RBAC is
// tested elsewhere; here only the API server's classification counts.
func (c *cluster) bindServiceAccount(ctx context.Context) error {
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "pullsecret-injector-bench"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: sourceNamespace, Name: serviceAccount}},
	}
	if _, err := c.cs.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("bind the service account: %w", err)
	}
	return nil
}

// populateScale creates n opted-in namespaces called prefix-NNNNN from clients clients, each with a Pod
// through the webhook (which makes its copy) and, with serviceAccounts, the default ServiceAccount that
// kube-controller-manager would make.
func (c *cluster) populateScale(ctx context.Context, prefix string, n, clients int, serviceAccounts bool) error {
	return testenv.Parallel(ctx, n, clients, func(ctx context.Context, i int) error {
		ns := fmt.Sprintf("%s-%05d", prefix, i)
		if err := c.createNamespace(ctx, ns, true); err != nil {
			return err
		}
		if serviceAccounts {
			sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}
			if _, err := c.cs.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
				return fmt.Errorf("create service account in namespace %q: %w", ns, err)
			}
		}
		_, err := c.createPod(ctx, ns, true)
		return err
	})
}

// restartProject stops the running project, if any, starts it with setting and points the webhook
// configuration at it; it returns the time to ready.
func (c *cluster) restartProject(ctx context.Context, p *scaleProject, setting reconcilerSetting) (time.Duration, error) {
	if p.w != nil {
		stopWebhook(p.w)
		p.w = nil
	}
	ports, err := testenv.FreePorts(1)
	if err != nil {
		return 0, err
	}
	w, ready, err := c.startProject(ctx, ports[0], append([]string{"--kubeconfig", p.kubeconfig}, setting.args()...)...)
	if err != nil {
		return 0, err
	}
	p.w, p.setting = w, setting
	p.metricsURL = "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])) + "/metrics"
	return ready, c.register(ctx, w.Port, p.probeNamespace)
}

// touch creates a Pod, not measured, in each of the first warmSet warm namespaces, so that the API
// server's own admission has looked the namespace up recently (see the -warm-namespaces flag).
func (c *cluster) touch(ctx context.Context, prefix string, warmSet int) error {
	for i := range warmSet {
		if _, err := c.createPod(ctx, fmt.Sprintf("%s-%05d", prefix, i), true); err != nil {
			return err
		}
	}
	return nil
}

// warmAdmissions creates n Pods one after another, each in the next of the first warmSet warm namespaces.
func (c *cluster) warmAdmissions(ctx context.Context, prefix string, warmSet, n int) ([]time.Duration, error) {
	if err := c.touch(ctx, prefix, warmSet); err != nil {
		return nil, err
	}
	var lat []time.Duration
	for i := range n {
		d, err := c.createPod(ctx, fmt.Sprintf("%s-%05d", prefix, i%warmSet), true)
		if err != nil {
			return nil, err
		}
		lat = append(lat, d)
	}
	return lat, nil
}

// rotation is what one rotation measured.
type rotation struct {
	fanOut             time.Duration
	warm, fresh        []time.Duration
	warmErrs, freshErr int
	firstErr           error
	cpu                map[string]time.Duration
	apiserver          [2]testenv.Metrics
	// project is the project's metrics before and after; calls, the API requests it made meanwhile about
	// the copies rotated (in the namespaces populated before) and about anything else.
	project     [2]testenv.Metrics
	calls, rest map[testenv.RequestKind]int
}

// rotate changes the source's bytes and measures the fan-out to every warm copy, with Pods created in warm
// namespaces one after another and, every second, the first Pod of a new namespace meanwhile.
func (c *cluster) rotate(ctx context.Context, o scaleOptions, p *scaleProject, prefix string, n int, idleP50 [2]time.Duration,
	flowSchema bool, apiserverProfile string) error {
	newConfig := rotatedConfig(n)
	pending, w, err := c.watchCopies(ctx, prefix)
	if err != nil {
		return err
	}
	defer w.Stop()
	total := len(pending)
	pids, err := c.pids(p)
	if err != nil {
		return err
	}
	if err := c.touch(ctx, prefix, o.warmSet); err != nil {
		return err
	}
	var r rotation
	cpu0 := cpuTimes(pids)
	if r.apiserver[0], r.project[0], err = c.rotationMetrics(ctx, p); err != nil {
		return err
	}
	rotated := func(ns string) bool { return strings.HasPrefix(ns, prefix+"-") && ns != p.probeNamespace }
	others := func(ns string) bool { return !rotated(ns) }
	calls0, rest0 := p.proxy.CountsIn(rotated), p.proxy.CountsIn(others)

	stopLoad := c.startRotationLoad(ctx, prefix, o.warmSet, n, &r)
	profileDone := c.startAPIServerProfile(ctx, apiserverProfile)

	logf("Rotation %d (%s%s): fanning out to %d copies", n, p.setting, map[bool]string{true: ", with the FlowSchema"}[flowSchema], total)
	start := time.Now()
	if err := c.writeSource(ctx, newConfig); err != nil {
		stopLoad()
		return err
	}
	if err := waitRotated(w, pending, newConfig); err != nil {
		stopLoad()
		return err
	}
	r.fanOut = time.Since(start)
	r.calls, r.rest = testenv.CountsSince(calls0, p.proxy.CountsIn(rotated)), testenv.CountsSince(rest0, p.proxy.CountsIn(others))
	stopLoad()
	r.cpu = cpuDeltas(cpu0, cpuTimes(pids))
	if r.apiserver[1], r.project[1], err = c.rotationMetrics(ctx, p); err != nil {
		return err
	}
	if err := <-profileDone; err != nil {
		return err
	}
	printRotation(p, n, total, idleP50, flowSchema, r)
	if apiserverProfile != "" {
		return printAPIServerProfile(apiserverProfile)
	}
	return nil
}

// rotationMetrics scrapes the API server's metrics and the project's.
func (c *cluster) rotationMetrics(ctx context.Context, p *scaleProject) (apiserver, project testenv.Metrics, err error) {
	if apiserver, err = c.apiserverMetrics(ctx); err != nil {
		return apiserver, project, err
	}
	project, err = testenv.ScrapeURL(ctx, p.metricsURL)
	return apiserver, project, err
}

// startAPIServerProfile records a CPU profile of the API server's next 10 s to path, unless path is empty;
// the channel it returns receives the recording's error once done.
func (c *cluster) startAPIServerProfile(ctx context.Context, path string) <-chan error {
	done := make(chan error, 1)
	if path == "" {
		done <- nil
		return done
	}
	go func() { done <- c.apiserverProfile(ctx, 10*time.Second, path) }()
	return done
}

// rotatedConfig returns the source's bytes for rotation n: new, valid credentials, base64 of
// "bench:<password>" (an invalid one would put a warning on every Pod).
func rotatedConfig(n int) []byte {
	password := strconv.Itoa(n) + "-" + strconv.FormatInt(time.Now().UnixNano(), 10)
	return []byte(fmt.Sprintf(`{"auths":{"%s":{"auth":"%s"}}}`, registry, base64.StdEncoding.EncodeToString([]byte("bench:"+password))))
}

// watchCopies lists the copies in the namespaces prefix-* and watches every copy from that list on: it
// returns the namespaces whose copy is still to rotate, and the watch, which the caller stops.
func (c *cluster) watchCopies(ctx context.Context, prefix string) (map[string]bool, watch.Interface, error) {
	list, err := c.cs.CoreV1().Secrets(metav1.NamespaceAll).List(ctx, metav1.ListOptions{LabelSelector: managed.Selector})
	if err != nil {
		return nil, nil, fmt.Errorf("list copies: %w", err)
	}
	pending := map[string]bool{}
	for _, s := range list.Items {
		if strings.HasPrefix(s.Namespace, prefix+"-") {
			pending[s.Namespace] = true
		}
	}
	w, err := c.cs.CoreV1().Secrets(metav1.NamespaceAll).Watch(ctx, metav1.ListOptions{
		LabelSelector: managed.Selector, ResourceVersion: list.ResourceVersion})
	if err != nil {
		return nil, nil, fmt.Errorf("watch copies: %w", err)
	}
	return pending, w, nil
}

// waitRotated waits until every namespace in pending has seen its copy modified to newConfig, deleting
// each from pending as it does.
func waitRotated(w watch.Interface, pending map[string]bool, newConfig []byte) error {
	total := len(pending)
	timeout := time.After(30*time.Minute + time.Duration(total)*100*time.Millisecond)
	for len(pending) > 0 {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				return fmt.Errorf("watch of copies ended with %d of %d copies not rotated", len(pending), total)
			}
			if s, isSecret := ev.Object.(*corev1.Secret); isSecret && ev.Type == watch.Modified &&
				bytes.Equal(s.Data[corev1.DockerConfigJsonKey], newConfig) {
				delete(pending, s.Namespace)
			}
		case <-timeout:
			return fmt.Errorf("%d of %d copies not rotated in time", len(pending), total)
		}
	}
	return nil
}

// startRotationLoad creates, until the returned stop is called, Pods in the first warmSet warm namespaces
// one after another and, every second, the first Pod of a new namespace; it records their latencies and
// failures in r. stop returns once both loops have ended; failures after it are not counted.
func (c *cluster) startRotationLoad(ctx context.Context, prefix string, warmSet, n int, r *rotation) (stop func()) {
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var mu sync.Mutex
	record := func(lat *[]time.Duration, errs *int, d time.Duration, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			if loadCtx.Err() == nil {
				*errs++
				if r.firstErr == nil {
					r.firstErr = err
				}
			}
			return
		}
		*lat = append(*lat, d)
	}
	wg.Go(func() {
		for i := 0; loadCtx.Err() == nil; i++ {
			d, err := c.createPod(loadCtx, fmt.Sprintf("%s-%05d", prefix, i%warmSet), true)
			record(&r.warm, &r.warmErrs, d, err)
		}
	})
	wg.Go(func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-loadCtx.Done():
				return
			case <-tick.C:
			}
			ns := fmt.Sprintf("bench-new-%d-%04d", n, i)
			if err := c.createNamespace(loadCtx, ns, true); err != nil {
				record(&r.fresh, &r.freshErr, 0, err)
				continue
			}
			d, err := c.createPod(loadCtx, ns, true)
			record(&r.fresh, &r.freshErr, d, err)
		}
	})
	return func() {
		stopLoad()
		wg.Wait()
	}
}

// printAPIServerProfile prints the API server profile's inclusive shares of apiserverStages.
func printAPIServerProfile(path string) error {
	top, err := exec.Command("go", "tool", "pprof", "-top", "-cum", "-nodecount", "500", path).Output()
	if err != nil {
		return fmt.Errorf("go tool pprof: %w", err)
	}
	fmt.Printf("API server CPU profile, first 10 s of the fan-out, inclusive (go tool pprof -top -cum %s):\n", path)
	for line := range strings.Lines(string(top)) {
		if strings.HasPrefix(line, "Duration") || slices.ContainsFunc(apiserverStages, func(s string) bool { return strings.Contains(line, s) }) {
			fmt.Print(line)
		}
	}
	return nil
}

// apiserverStages are the functions the API server profile summary shows: the reconciler's PATCHes, the
// Pod creates' webhook calls, etcd writes, watch fan-out, serialization, GC. The filters that wrap every
// request (authentication, APF) are left out: their inclusive share is the whole request's.
var apiserverStages = []string{
	"(*patcher).patchResource.func2", "etcd3.(*store).GuaranteedUpdate", "(*mutatingDispatcher).Dispatch",
	"(*Cacher).dispatchEvent", "(*cacheWatcher).process", "versioning.(*codec).Decode", "versioning.(*codec).doEncode",
	"runtime.gcBgMarkWorker\n",
}

// pids returns the processes whose CPU time a rotation reports.
func (c *cluster) pids(p *scaleProject) (map[string]int, error) {
	apiserver, err := testenv.ChildProcess("kube-apiserver")
	if err != nil {
		return nil, err
	}
	etcd, err := testenv.ChildProcess("etcd")
	if err != nil {
		return nil, err
	}
	return map[string]int{"kube-apiserver": apiserver, "etcd": etcd, "pullsecret-injector": p.w.Pid(), "bench": os.Getpid()}, nil
}

func cpuTimes(pids map[string]int) map[string]time.Duration {
	out := map[string]time.Duration{}
	for name, pid := range pids {
		if d, err := testenv.ProcCPU(pid); err == nil {
			out[name] = d
		}
	}
	return out
}

func cpuDeltas(before, after map[string]time.Duration) map[string]time.Duration {
	out := map[string]time.Duration{}
	for name, d := range after {
		out[name] = d - before[name]
	}
	return out
}

// flowSchemaName names the FlowSchema and the priority level the FlowSchema measurement creates.
const flowSchemaName = "pullsecret-injector-admission"

// createFlowSchema gives the project's copy creates, the writes of its admission path, a priority level
// of their own, apart from the reconciler's patches, which stay in the ServiceAccounts' workload-low.
func (c *cluster) createFlowSchema(ctx context.Context) error {
	plc := &flowcontrolv1.PriorityLevelConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: flowSchemaName},
		Spec: flowcontrolv1.PriorityLevelConfigurationSpec{
			Type: flowcontrolv1.PriorityLevelEnablementLimited,
			Limited: &flowcontrolv1.LimitedPriorityLevelConfiguration{
				NominalConcurrencyShares: ptr.To[int32](30),
				LimitResponse: flowcontrolv1.LimitResponse{Type: flowcontrolv1.LimitResponseTypeQueue,
					Queuing: &flowcontrolv1.QueuingConfiguration{Queues: 16, HandSize: 4, QueueLengthLimit: 50}},
			},
		},
	}
	if _, err := c.cs.FlowcontrolV1().PriorityLevelConfigurations().Create(ctx, plc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create priority level: %w", err)
	}
	fs := &flowcontrolv1.FlowSchema{
		ObjectMeta: metav1.ObjectMeta{Name: flowSchemaName},
		Spec: flowcontrolv1.FlowSchemaSpec{
			PriorityLevelConfiguration: flowcontrolv1.PriorityLevelConfigurationReference{Name: flowSchemaName},
			// Ahead of the suggested "service-accounts" schema (9000).
			MatchingPrecedence:  1000,
			DistinguisherMethod: &flowcontrolv1.FlowDistinguisherMethod{Type: flowcontrolv1.FlowDistinguisherMethodByNamespaceType},
			Rules: []flowcontrolv1.PolicyRulesWithSubjects{{
				Subjects: []flowcontrolv1.Subject{{Kind: flowcontrolv1.SubjectKindServiceAccount,
					ServiceAccount: &flowcontrolv1.ServiceAccountSubject{Namespace: sourceNamespace, Name: serviceAccount}}},
				ResourceRules: []flowcontrolv1.ResourcePolicyRule{{
					Verbs: []string{"create"}, APIGroups: []string{""}, Resources: []string{"secrets"}, Namespaces: []string{flowcontrolv1.NamespaceEvery},
				}},
			}},
		},
	}
	if _, err := c.cs.FlowcontrolV1().FlowSchemas().Create(ctx, fs, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create flow schema: %w", err)
	}
	return nil
}

// printRotation prints one rotation's figures and what the API server saw meanwhile.
func printRotation(p *scaleProject, n, total int, idleP50 [2]time.Duration, flowSchema bool, r rotation) {
	fs := ""
	if flowSchema {
		fs = ", FlowSchema " + flowSchemaName
	}
	fmt.Printf("\n-- Rotation %d, started as soon as the restarted process led: %s%s --\n", n, p.setting, fs)
	fmt.Printf("fan-out to %d copies: %s, %.1f copies/s  [goal >= 50/s]\n", total, r.fanOut.Round(time.Millisecond),
		float64(total)/r.fanOut.Seconds())
	fmt.Printf("API requests of the project during the fan-out: in the %d namespaces rotated: %s; elsewhere (new namespaces, "+
		"Pods, Events, Leases): %s\n", total, testenv.FormatCounts(r.calls), testenv.FormatCounts(r.rest))
	rate, _ := r.project[1].Value("pullsecret_injector_reconciler_rate_limit", nil)
	var changes []string
	for _, reason := range []string{"increase", "slow", "throttled"} {
		after, _ := r.project[1].Value("pullsecret_injector_reconciler_rate_changes_total", map[string]string{"reason": reason})
		before, _ := r.project[0].Value("pullsecret_injector_reconciler_rate_changes_total", map[string]string{"reason": reason})
		changes = append(changes, fmt.Sprintf("%s %.0f", reason, after-before))
	}
	fmt.Printf("reconciler rate limit at the end: %.0f/s; changes during the fan-out: %s\n", rate, strings.Join(changes, ", "))
	warmP50, freshP50 := testenv.Percentile(r.warm, 50), testenv.Percentile(r.fresh, 50)
	fmt.Printf("Pod create in a warm namespace during the fan-out (%d): p50 %s (%.2fx idle) p99 %s  [goal p50 <= 1.2x]\n",
		len(r.warm), warmP50.Round(10*time.Microsecond), float64(warmP50)/float64(idleP50[0]), testenv.Percentile(r.warm, 99).Round(10*time.Microsecond))
	fmt.Printf("first Pod of a new namespace during the fan-out (%d, the copy made in admission): p50 %s (%.2fx idle) max %s  [goal p50 <= 2x]\n",
		len(r.fresh), freshP50.Round(10*time.Microsecond), float64(freshP50)/float64(idleP50[1]), testenv.Percentile(r.fresh, 100).Round(10*time.Microsecond))
	fmt.Printf("failed Pod creates (over the webhook's timeout or refused): %d warm, %d new", r.warmErrs, r.freshErr)
	if r.firstErr != nil {
		fmt.Printf("; first: %v", r.firstErr)
	}
	fmt.Println()
	secs := r.fanOut.Seconds()
	var used []string
	for _, name := range []string{"kube-apiserver", "etcd", "pullsecret-injector", "bench"} {
		used = append(used, fmt.Sprintf("%s %.2f", name, r.cpu[name].Seconds()/secs))
	}
	fmt.Printf("CPU used during the fan-out, in cores of %d: %s\n", runtime.NumCPU(), strings.Join(used, ", "))
	delta := func(name string, match map[string]string) (mean time.Duration, count float64) {
		s1, n1 := r.apiserver[1].Value(name, match)
		s0, n0 := r.apiserver[0].Value(name, match)
		if n1-n0 <= 0 {
			return 0, 0
		}
		return time.Duration((s1 - s0) / (n1 - n0) * float64(time.Second)), n1 - n0
	}
	patch, patches := delta("apiserver_request_duration_seconds", map[string]string{"verb": "PATCH", "resource": "secrets"})
	create, creates := delta("apiserver_request_duration_seconds", map[string]string{"verb": "POST", "resource": "pods"})
	etcdUpdate, _ := delta("etcd_request_duration_seconds", map[string]string{"resource": "secrets", "operation": "update"})
	fmt.Printf("API server: %.0f secret PATCHes, mean %s; %.0f pod creates, mean %s; etcd secret updates mean %s\n",
		patches, patch.Round(10*time.Microsecond), creates, create.Round(10*time.Microsecond), etcdUpdate.Round(10*time.Microsecond))
	for _, level := range []string{"workload-low", flowSchemaName} {
		wait, waits := delta("apiserver_flowcontrol_request_wait_duration_seconds", map[string]string{"priority_level": level})
		if waits > 0 {
			fmt.Printf("APF priority level %s: %.0f requests, mean queue wait %s\n", level, waits, wait.Round(time.Microsecond))
		}
	}
}
