package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/internal/policy"
	"github.com/pullsecret-injector/pullsecret-injector/test/fixtures"
	"github.com/pullsecret-injector/pullsecret-injector/test/testenv"
)

// admissionOptions are the flags of `bench admission`.
type admissionOptions struct {
	pods, rounds, concurrency, warmup int
	unrelatedSecrets, unrelatedSize   int
	copies, clients                   int
	perfProfile                       string
	memory                            bool
	// pprofDir, when set, is where the project's Go CPU, block and mutex profiles under load go.
	pprofDir string
	// cpuLimit, when set, is the CPU limit (a Kubernetes quantity) both webhooks run under, each in a
	// cgroup of its own.
	cpuLimit string
	// projectEnv is added to the project's environment.
	projectEnv string
}

// cell is one of the set-ups every round measures: no webhook, the no-op webhook, this project's webhook,
// and this project's MutatingAdmissionPolicy, which the API server evaluates itself.
type cell struct {
	name    string
	webhook *testenv.Webhook // nil: no webhook
	// policy installs the project's MutatingAdmissionPolicy, compiled from the same configuration.
	policy bool
	// metricsURL, when set, serves the webhook's Go runtime metrics.
	metricsURL string
	// limit, when set, is the CPU cgroup the webhook runs in.
	limit *cpuLimit
}

// cellRound is what one cell measured in one round.
type cellRound struct {
	serial     []time.Duration
	throughput float64
	// concurrent holds the latencies of the Pods created at o.concurrency.
	concurrent []time.Duration
	// gcCycles counts the webhook's garbage collections over the cell, and allocated the bytes it
	// allocated, when its metrics are known.
	gcCycles  int
	allocated int64
	// throttled counts the CFS periods the webhook's cgroup was held back in, of periods it ran in.
	throttled, periods int64
	cpu                time.Duration
	admissions         int
	apiRequests        map[testenv.RequestKind]int
	// apiserverCPU is the API server's own CPU time over the cell (process_cpu_seconds_total).
	apiserverCPU time.Duration
}

// admissionConfig is the project's configuration in this benchmark: the docs' example (docs/configuration.md,
// two entries, one with a namespace selector) and the benchmark's own registry, which the Pods pull from.
const admissionConfig = fixtures.DocsExample + `  - registry: ` + registry + `
    secret: {namespace: ` + sourceNamespace + `, name: ` + sourceName + `}
`

// policyName names the MutatingAdmissionPolicy and binding of the policy cell.
const policyName = "pullsecret-injector-bench"

func runAdmission(ctx context.Context, args []string) error {
	o, err := parseAdmissionFlags(args)
	if err != nil {
		return err
	}
	c, err := startCluster(ctx)
	if err != nil {
		return err
	}
	defer c.stop()
	c.config = []byte(admissionConfig)
	b := &admissionBench{}
	defer b.close()
	if err := c.prepareAdmission(ctx, o, b); err != nil {
		return err
	}
	results, err := c.admissionRounds(ctx, o, b)
	if err != nil {
		return err
	}
	fixed, err := c.afterRounds(ctx, o, b)
	if err != nil {
		return err
	}
	printAdmission(o, results, fixed)
	return nil
}

// parseAdmissionFlags reads the admission benchmark's flags.
func parseAdmissionFlags(args []string) (admissionOptions, error) {
	var o admissionOptions
	fs := flag.NewFlagSet("admission", flag.ExitOnError)
	fs.IntVar(&o.pods, "pods", 300, "Pod creates per cell and round, at concurrency 1 and again at -concurrency.")
	fs.IntVar(&o.rounds, "rounds", 5, "Interleaved rounds over the four cells.")
	fs.IntVar(&o.concurrency, "concurrency", 8, "Clients creating Pods at once in the throughput phase.")
	fs.IntVar(&o.warmup, "warmup", 20, "Pod creates before each cell's measurement, not measured, to open connections.")
	fs.IntVar(&o.unrelatedSecrets, "unrelated-secrets", 10000, "Secrets that are not copies, created before the memory measurement.")
	fs.IntVar(&o.unrelatedSize, "unrelated-size", 10<<10, "Bytes of data in each unrelated Secret.")
	fs.IntVar(&o.copies, "copies", 1000, "Copies made through the webhook (one opted-in namespace and Pod each) before the memory measurement.")
	fs.IntVar(&o.clients, "clients", 16, "Parallel clients that create the memory measurement's objects.")
	fs.StringVar(&o.perfProfile, "perf-profile", "",
		"After the rounds, record CPU profiles (`perf record -g`, as the binary serves no pprof endpoint) of the no-op webhook "+
			"and of pullsecret-injector while 3x -pods Pods are created at -concurrency, to FILE.noop and FILE.project, and print their hottest functions.")
	fs.BoolVar(&o.memory, "memory", true, "After the rounds, fill the cluster and measure the project's memory and restart.")
	fs.StringVar(&o.pprofDir, "pprof", "",
		"Build pullsecret-injector with a loopback pprof endpoint and block and mutex profiling (never in the released binary), "+
			"and after the rounds save its CPU, block and mutex profiles under load at -concurrency to DIR and print their tops. "+
			"The rounds then measure that build.")
	fs.StringVar(&o.projectEnv, "project-env", "",
		"Comma-separated KEY=VALUE added to pullsecret-injector's environment (GOGC=100,GOMEMLIMIT=200MiB), to compare runtime settings.")
	fs.StringVar(&o.cpuLimit, "cpu-limit", "",
		"Run each webhook in a CPU cgroup of its own with this limit (a Kubernetes quantity, the chart's is 500m), started inside "+
			"it so that the Go runtime derives GOMAXPROCS from it as in a Pod; the cgroups are removed at the end.")
	err := fs.Parse(args)
	return o, err
}

// benchNamespace is the opted-in namespace the admission benchmark creates its Pods in.
const benchNamespace = "bench-admission"

// admissionBench is what the admission benchmark runs against: the webhooks, the proxy that counts the
// project's API requests, the policy cell's objects, and what undoes them, last first.
type admissionBench struct {
	project, noop           *testenv.Webhook
	projectReady, noopReady time.Duration
	metricsURL, pprofAddr   string
	proxy                   *testenv.CountingProxy
	policyObjects           *policyObjects
	cells                   []cell
	load0                   string
	cleanups                []func()
}

// close undoes what prepareAdmission set up, last first.
func (b *admissionBench) close() {
	for i := len(b.cleanups) - 1; i >= 0; i-- {
		b.cleanups[i]()
	}
}

// prepareAdmission sets up the cells: the CPU limits and runtime settings asked for, both webhooks (the
// project's requests through a counting proxy), the policy's objects, and the copy, made by a first Pod,
// so that every Pod measured takes the warm path.
func (c *cluster) prepareAdmission(ctx context.Context, o admissionOptions, b *admissionBench) error {
	var err error
	if o.cpuLimit != "" {
		if c.projectLimit, err = newCPULimit("psi-bench-project", o.cpuLimit); err != nil {
			return err
		}
		b.cleanups = append(b.cleanups, func() { reportErr(c.projectLimit.remove()) })
		if c.noopLimit, err = newCPULimit("psi-bench-noop", o.cpuLimit); err != nil {
			return err
		}
		b.cleanups = append(b.cleanups, func() { reportErr(c.noopLimit.remove()) })
		logf("CPU limit %s: %s, %s", o.cpuLimit, c.projectLimit, c.noopLimit)
	}
	if o.pprofDir != "" {
		pp, err := testenv.FreePorts(1)
		if err != nil {
			return err
		}
		b.pprofAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(pp[0]))
		if c.project, err = buildProfiled(c.cp.Dir, b.pprofAddr); err != nil {
			return err
		}
	}
	if o.projectEnv != "" {
		c.projectEnv = strings.Split(o.projectEnv, ",")
	}
	b.load0 = loadAverage()
	if b.policyObjects, err = compilePolicy(); err != nil {
		return err
	}
	noopBinary, err := buildNoop(c.cp.Dir)
	if err != nil {
		return err
	}
	if b.proxy, err = c.cp.StartCountingProxy(); err != nil {
		return err
	}
	b.cleanups = append(b.cleanups, func() { _ = b.proxy.Stop() })
	if err := c.startAdmissionWebhooks(ctx, b, noopBinary); err != nil {
		return err
	}
	if err := c.createNamespace(ctx, benchNamespace, true); err != nil {
		return err
	}
	// The first Pod through the project makes the copy: every Pod measured after it takes the warm path.
	if err := c.register(ctx, b.project.Port, benchNamespace); err != nil {
		return err
	}
	if _, err := c.createPod(ctx, benchNamespace, true); err != nil {
		return err
	}
	if _, err := reconcilerIdle(ctx, b.metricsURL, 1, time.Minute); err != nil {
		return err
	}
	b.cells = []cell{{name: "none"}, {name: "noop", webhook: b.noop, limit: c.noopLimit},
		{name: "project", webhook: b.project, metricsURL: b.metricsURL, limit: c.projectLimit}, {name: "policy", policy: true}}
	return nil
}

// startAdmissionWebhooks starts the project, every API request of whose (admission path and reconciler
// alike) goes through b's proxy, and the no-op webhook.
func (c *cluster) startAdmissionWebhooks(ctx context.Context, b *admissionBench, noopBinary string) error {
	ports, err := testenv.FreePorts(1)
	if err != nil {
		return err
	}
	b.metricsURL = "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])) + "/metrics"
	if b.project, b.projectReady, err = c.startProject(ctx, ports[0], "--kubeconfig", b.proxy.Kubeconfig); err != nil {
		return err
	}
	// b.project is the restarted process after the memory measurement: the cleanup reads it then.
	b.cleanups = append(b.cleanups, func() { stopWebhook(b.project) })
	if b.noop, b.noopReady, err = c.startNoop(ctx, noopBinary); err != nil {
		return err
	}
	b.cleanups = append(b.cleanups, func() { stopWebhook(b.noop) })
	return nil
}

// admissionRounds measures every cell in each of o.rounds interleaved rounds, by cell name.
func (c *cluster) admissionRounds(ctx context.Context, o admissionOptions, b *admissionBench) (map[string][]cellRound, error) {
	results := map[string][]cellRound{}
	for r := range o.rounds {
		for _, cl := range b.cells {
			if err := c.switchTo(ctx, cl, b.policyObjects, benchNamespace); err != nil {
				return nil, err
			}
			res, err := c.measureCell(ctx, o, cl, benchNamespace, b.proxy)
			if err != nil {
				return nil, fmt.Errorf("round %d, cell %s: %w", r+1, cl.name, err)
			}
			results[cl.name] = append(results[cl.name], res)
			logf("round %d %-7s c=1 p50 %-8s p99 %-8s c=%d p50 %-8s p99 %-8s %6.1f pods/s (load %s)", r+1, cl.name,
				testenv.Percentile(slices.Clone(res.serial), 50).Round(10*time.Microsecond),
				testenv.Percentile(slices.Clone(res.serial), 99).Round(10*time.Microsecond), o.concurrency,
				testenv.Percentile(slices.Clone(res.concurrent), 50).Round(10*time.Microsecond),
				testenv.Percentile(slices.Clone(res.concurrent), 99).Round(10*time.Microsecond), res.throughput, loadAverage())
			if err := c.deletePods(ctx, benchNamespace); err != nil {
				return nil, err
			}
		}
	}
	return results, nil
}

// afterRounds takes the profiles asked for, the webhooks' RSS after the load and, unless o.memory is
// false, the project's memory in a filled cluster.
func (c *cluster) afterRounds(ctx context.Context, o admissionOptions, b *admissionBench) (admissionFixed, error) {
	f := admissionFixed{projectReady: b.projectReady, noopReady: b.noopReady}
	if err := c.switchTo(ctx, b.cells[0], b.policyObjects, benchNamespace); err != nil {
		return f, err
	}
	f.load = [2]string{b.load0, loadAverage()}
	if o.perfProfile != "" {
		for _, cl := range b.cells[1:3] {
			if err := c.profile(ctx, o, cl, benchNamespace); err != nil {
				return f, err
			}
		}
	}
	if o.pprofDir != "" {
		if err := c.pprofProfile(ctx, o, &b.cells[2], benchNamespace, b.pprofAddr); err != nil {
			return f, err
		}
	}
	var err error
	if f.rssLoad, err = testenv.ProcRSS(b.project.Pid()); err != nil {
		return f, err
	}
	if f.noopRSS, err = testenv.ProcRSS(b.noop.Pid()); err != nil {
		return f, err
	}
	if o.memory {
		f.memory, err = c.memory(ctx, o, b.project, b.metricsURL, b.proxy.Kubeconfig)
		b.project = f.memory.restarted
	}
	return f, err
}

// measureCell measures one cell: warm-up Pods, o.pods Pods one at a time, then o.pods Pods from
// o.concurrency clients, with the webhook's CPU time and API requests over the whole of it.
func (c *cluster) measureCell(ctx context.Context, o admissionOptions, cl cell, namespace string,
	proxy *testenv.CountingProxy) (cellRound, error) {
	mutated := cl.webhook != nil || cl.policy
	var res cellRound
	before, err := c.cellCounters(ctx, cl, proxy)
	if err != nil {
		return res, err
	}
	if _, err := c.serial(ctx, namespace, o.warmup, mutated); err != nil {
		return res, err
	}
	if res.serial, err = c.serial(ctx, namespace, o.pods, mutated); err != nil {
		return res, err
	}
	if res.throughput, res.concurrent, err = c.concurrent(ctx, namespace, o.pods, o.concurrency, mutated); err != nil {
		return res, err
	}
	after, err := c.cellCounters(ctx, cl, proxy)
	if err != nil {
		return res, err
	}
	res.admissions = o.warmup + 2*o.pods
	res.cpu, res.apiserverCPU = after.cpu-before.cpu, after.apiserverCPU-before.apiserverCPU
	res.gcCycles, res.allocated = after.gcCycles-before.gcCycles, after.allocated-before.allocated
	res.throttled, res.periods = after.throttled-before.throttled, after.periods-before.periods
	res.apiRequests = map[testenv.RequestKind]int{}
	for k, n := range after.requests {
		if d := n - before.requests[k]; d > 0 {
			res.apiRequests[k] = d
		}
	}
	return res, nil
}

// counters is what measureCell reads before and after a cell: the webhook's CPU time, garbage collections,
// allocated bytes and CFS throttling (each when the cell has them), the API server's CPU time, and the
// project's API requests so far.
type counters struct {
	cpu, apiserverCPU  time.Duration
	gcCycles           int
	allocated          int64
	throttled, periods int64
	requests           map[testenv.RequestKind]int
}

// cellCounters reads the counters of cl now.
func (c *cluster) cellCounters(ctx context.Context, cl cell, proxy *testenv.CountingProxy) (counters, error) {
	var n counters
	var err error
	if cl.webhook != nil {
		if n.cpu, err = testenv.ProcCPU(cl.webhook.Pid()); err != nil {
			return n, err
		}
	}
	if cl.metricsURL != "" {
		if n.gcCycles, n.allocated, err = gcCycles(ctx, cl.metricsURL); err != nil {
			return n, err
		}
	}
	if cl.limit != nil {
		if n.throttled, n.periods, _, err = cl.limit.throttling(); err != nil {
			return n, err
		}
	}
	n.requests = proxy.Counts()
	n.apiserverCPU, err = c.apiserverCPU(ctx)
	return n, err
}

// profile records, apart from the measured rounds because sampling slows the process down, the call
// stacks of cl's webhook while 3*o.pods Pods are created at o.concurrency, and prints its hottest functions.
func (c *cluster) profile(ctx context.Context, o admissionOptions, cl cell, namespace string) error {
	if err := c.register(ctx, cl.webhook.Port, namespace); err != nil {
		return err
	}
	path := o.perfProfile + "." + cl.name
	perf, err := startPerf(cl.webhook.Pid(), path)
	if err != nil {
		return err
	}
	_, _, err = c.concurrent(ctx, namespace, 3*o.pods, o.concurrency, true)
	if err = errors.Join(err, stopPerf(perf)); err != nil {
		return err
	}
	// Inclusive shares (a function with everything it calls) of the functions that tell the request's
	// stages apart: the HTTP server, controller-runtime's AdmissionReview handling, the handler itself
	// and what it calls into.
	report := exec.Command("perf", "report", "-i", path, "--children", "--sort", "symbol", "--stdio", "-g", "none",
		"--percent-limit", "1")
	out, err := report.Output()
	if err != nil {
		return fmt.Errorf("perf report: %w", err)
	}
	fmt.Printf("\n== CPU profile of %s, warm path at c=%d: inclusive share of samples (perf report -i %s --children) ==\n",
		cl.name, o.concurrency, path)
	shown := 0
	for line := range strings.Lines(string(out)) {
		if shown < 30 && !strings.HasPrefix(strings.TrimSpace(line), "#") && slices.ContainsFunc(profileStages, func(s string) bool {
			return strings.Contains(line, s)
		}) {
			fmt.Print(line)
			shown++
		}
	}
	return c.deletePods(ctx, namespace)
}

// profileStages are the substrings of the symbols the profile summary shows.
var profileStages = []string{
	"net/http.(*conn).serve", "crypto/tls.(*Conn)", "webhook/admission.", "pullsecret-injector/", "jsonpatch",
	"serializer/json.(*Serializer).Decode", "encoding/json.Marshal", "runtime.gcBgMarkWorker", "runtime.mallocgc",
	"client-go/tools/cache", "controller-runtime/pkg/internal/controller",
}

// startPerf samples the call stacks of process pid until stopPerf.
func startPerf(pid int, path string) (*exec.Cmd, error) {
	cmd := exec.Command("perf", "record", "--quiet", "-F", "999", "-g", "-p", strconv.Itoa(pid), "-o", path)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start perf: %w", err)
	}
	// perf writes the file's header once it is attached and sampling.
	if err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 10*time.Second, true,
		func(context.Context) (bool, error) {
			st, err := os.Stat(path)
			return err == nil && st.Size() > 0, nil
		}); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("wait for perf to attach to process %d: %w", pid, err)
	}
	return cmd, nil
}

func stopPerf(cmd *exec.Cmd) error {
	_ = cmd.Process.Signal(syscall.SIGINT)
	err := cmd.Wait()
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.Sys().(syscall.WaitStatus).Signal() == syscall.SIGINT {
		err = nil // perf ended by the interrupt it was sent, having written the profile
	}
	if err != nil {
		return fmt.Errorf("perf record: %w", err)
	}
	return nil
}

// memoryResult is what the memory measurement found.
type memoryResult struct {
	populate      time.Duration
	rssRunning    memory
	ready         time.Duration
	rssReady      memory
	initialPass   time.Duration
	rssReconciled memory
	// restarted is the project process started for the ready measurement; the caller stops it.
	restarted *testenv.Webhook
}

// memory fills the cluster with unrelated Secrets and with copies, reads the running project's RSS, then
// restarts it and reads its time to ready and its RSS from a fresh start.
func (c *cluster) memory(ctx context.Context, o admissionOptions, project *testenv.Webhook, metricsURL, kubeconfig string) (memoryResult, error) {
	res := memoryResult{restarted: project}
	start := time.Now()
	const unrelated = "bench-unrelated"
	if err := c.createNamespace(ctx, unrelated, false); err != nil {
		return res, err
	}
	logf("Creating %d unrelated Secrets of %d bytes and %d copies through the webhook", o.unrelatedSecrets, o.unrelatedSize, o.copies)
	data := map[string][]byte{"data": []byte(strings.Repeat("x", o.unrelatedSize))}
	if err := testenv.Parallel(ctx, o.unrelatedSecrets, o.clients, func(ctx context.Context, i int) error {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("unrelated-%05d", i)}, Data: data}
		_, err := c.cs.CoreV1().Secrets(unrelated).Create(ctx, s, metav1.CreateOptions{})
		return err
	}); err != nil {
		return res, fmt.Errorf("create unrelated secrets: %w", err)
	}
	if err := c.populate(ctx, "bench-copy", o.copies, o.clients); err != nil {
		return res, err
	}
	res.populate = time.Since(start)
	// Each copy's create event is reconciled once, plus the first copy's.
	if _, err := reconcilerIdle(ctx, metricsURL, o.copies+1, 5*time.Minute); err != nil {
		return res, err
	}
	var err error
	if res.rssRunning, err = readMemory(ctx, project.Pid(), metricsURL); err != nil {
		return res, err
	}

	stopWebhook(project)
	ports, err := testenv.FreePorts(1)
	if err != nil {
		return res, err
	}
	restarted, ready, err := c.startProject(ctx, ports[0], "--kubeconfig", kubeconfig)
	if err != nil {
		return res, err
	}
	res.restarted, res.ready = restarted, ready
	restartedMetrics := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])) + "/metrics"
	if res.rssReady, err = readMemory(ctx, restarted.Pid(), restartedMetrics); err != nil {
		return res, err
	}
	if res.initialPass, err = reconcilerIdle(ctx, restartedMetrics, o.copies+1, 10*time.Minute); err != nil {
		return res, err
	}
	if res.rssReconciled, err = readMemory(ctx, restarted.Pid(), restartedMetrics); err != nil {
		return res, err
	}
	return res, nil
}

// populate creates n opted-in namespaces prefix-<i> with one Pod each, through the registered webhook,
// which copies the source into each.
func (c *cluster) populate(ctx context.Context, prefix string, n, clients int) error {
	return testenv.Parallel(ctx, n, clients, func(ctx context.Context, i int) error {
		ns := fmt.Sprintf("%s-%05d", prefix, i)
		if err := c.createNamespace(ctx, ns, true); err != nil {
			return err
		}
		_, err := c.createPod(ctx, ns, true)
		return err
	})
}

type admissionFixed struct {
	projectReady, noopReady time.Duration
	rssLoad, noopRSS        int64
	memory                  memoryResult
	// load is the load average before and after the rounds.
	load [2]string
}

// admissionSummary is what one cell measured over every round: latencies pooled, throughput the median of
// the rounds', CPU and GC cycles per admission over all of them.
type admissionSummary struct {
	p50, p99, cp50, cp99 time.Duration
	throughput           float64
	cpuPerAdm            time.Duration
	apiCPU               time.Duration
	admissions           int
	gcCycles             int
	allocated            int64
	throttled, periods   int64
	requests             map[testenv.RequestKind]int
}

func summarize(rounds []cellRound) admissionSummary {
	var lat, clat []time.Duration
	var tput []float64
	var cpu, apiCPU time.Duration
	s := admissionSummary{requests: map[testenv.RequestKind]int{}}
	for _, r := range rounds {
		lat = append(lat, r.serial...)
		clat = append(clat, r.concurrent...)
		tput = append(tput, r.throughput)
		cpu += r.cpu
		apiCPU += r.apiserverCPU
		s.admissions += r.admissions
		s.gcCycles += r.gcCycles
		s.allocated += r.allocated
		s.throttled += r.throttled
		s.periods += r.periods
		for k, n := range r.apiRequests {
			s.requests[k] += n
		}
	}
	s.p50, s.p99 = testenv.Percentile(slices.Clone(lat), 50), testenv.Percentile(slices.Clone(lat), 99)
	s.cp50, s.cp99 = testenv.Percentile(slices.Clone(clat), 50), testenv.Percentile(slices.Clone(clat), 99)
	s.throughput = testenv.Median(tput)
	if s.admissions > 0 {
		s.cpuPerAdm = cpu / time.Duration(s.admissions)
		s.apiCPU = apiCPU / time.Duration(s.admissions)
	}
	return s
}

// printAdmission prints the figures, ratios to the no-op webhook first: those hold across machines.
func printAdmission(o admissionOptions, results map[string][]cellRound, f admissionFixed) {
	names := []string{"none", "noop", "project", "policy"}
	sums := map[string]admissionSummary{}
	for _, name := range names {
		sums[name] = summarize(results[name])
	}
	proj := sums["project"]
	c := fmt.Sprintf("c=%d", o.concurrency)
	limit := "no CPU limit"
	if o.projectEnv != "" {
		limit = "project environment " + o.projectEnv + ", " + limit
	}
	if o.cpuLimit != "" {
		limit = "each webhook limited to " + o.cpuLimit + " CPU"
	}
	fmt.Printf("\n== Admission through kube-apiserver %s: %d rounds x %d Pods per cell and concurrency, interleaved; %s; "+
		"load average %s before, %s after ==\n", testenv.K8sVersion, o.rounds, o.pods, limit, f.load[0], f.load[1])
	fmt.Printf("%-8s %9s %9s %9s %9s %13s %14s %14s\n", "cell", "c=1 p50", "c=1 p99", c+" p50", c+" p99",
		c+" pods/s", "CPU/admission", "API srv CPU/adm")
	for _, name := range names {
		s := sums[name]
		cpu := "-"
		if name == "noop" || name == "project" {
			cpu = fmt.Sprintf("%.0f µs", float64(s.cpuPerAdm.Nanoseconds())/1e3)
		}
		fmt.Printf("%-8s %9s %9s %9s %9s %13.1f %14s %14s\n", name, ms(s.p50), ms(s.p99), ms(s.cp50), ms(s.cp99), s.throughput, cpu,
			fmt.Sprintf("%.0f µs", float64(s.apiCPU.Nanoseconds())/1e3))
	}
	fmt.Printf("(latencies pooled over the rounds; pods/s the median of the rounds)\n")

	printRatios(o, results, sums)
	printProjectCosts(o, sums)
	printRequests(proj)
	if o.memory {
		printMemory(o, f)
	}
}

// printRatios prints every cell's figures as ratios to the no-op webhook's, with the goals, and the
// project's and the policy's per round: the spread over rounds says how much of a ratio is noise.
func printRatios(o admissionOptions, results map[string][]cellRound, sums map[string]admissionSummary) {
	none, noop := sums["none"], sums["noop"]
	c := fmt.Sprintf("c=%d", o.concurrency)
	ratio := func(a, b time.Duration) string { return fmt.Sprintf("%.2f", float64(a)/float64(b)) }
	fmt.Printf("\nRatios to the no-op webhook (goals in the last row):\n")
	fmt.Printf("%-8s %9s %9s %9s %9s %13s %14s\n", "cell", "c=1 p50", "c=1 p99", c+" p50", c+" p99", c+" pods/s", "CPU/admission")
	for _, name := range []string{"none", "project", "policy"} {
		s := sums[name]
		cpu := "-"
		if name == "project" {
			cpu = ratio(s.cpuPerAdm, noop.cpuPerAdm)
		}
		fmt.Printf("%-8s %9s %9s %9s %9s %13.2f %14s\n", name, ratio(s.p50, noop.p50), ratio(s.p99, noop.p99),
			ratio(s.cp50, noop.cp50), ratio(s.cp99, noop.cp99), s.throughput/noop.throughput, cpu)
	}
	fmt.Printf("%-8s %9s %9s %9s %9s %13s %14s\n", "goal", "<= 1.10", "", "", "<= 1.30", ">= 0.90", "<= 1.25")
	var p50s, p99s, cp99s, tputs, cpus, polP50s []string
	for r := range results["project"] {
		pr, nr, pol := results["project"][r], results["noop"][r], results["policy"][r]
		pct := func(l []time.Duration, q float64) time.Duration { return testenv.Percentile(slices.Clone(l), q) }
		p50s = append(p50s, ratio(pct(pr.serial, 50), pct(nr.serial, 50)))
		p99s = append(p99s, ratio(pct(pr.serial, 99), pct(nr.serial, 99)))
		cp99s = append(cp99s, ratio(pct(pr.concurrent, 99), pct(nr.concurrent, 99)))
		tputs = append(tputs, fmt.Sprintf("%.2f", pr.throughput/nr.throughput))
		cpus = append(cpus, ratio(pr.cpu, nr.cpu))
		polP50s = append(polP50s, ratio(pct(pol.serial, 50), pct(nr.serial, 50)))
	}
	fmt.Printf("Project/noop per round: c=1 p50 %s; c=1 p99 %s; %s p99 %s; throughput %s; CPU %s\n", strings.Join(p50s, " "),
		strings.Join(p99s, " "), c, strings.Join(cp99s, " "), strings.Join(tputs, " "), strings.Join(cpus, " "))
	fmt.Printf("Policy/noop per round: c=1 p50 %s\n", strings.Join(polP50s, " "))
	fmt.Printf("(noop/none: c=1 p50 %.2f, %s p99 %.2f, throughput %.2f)\n", float64(noop.p50)/float64(none.p50), c,
		float64(noop.cp99)/float64(none.cp99), noop.throughput/none.throughput)
}

// printProjectCosts prints the project's garbage collections and allocations per admission, and with a
// CPU limit how often each webhook was throttled.
func printProjectCosts(o admissionOptions, sums map[string]admissionSummary) {
	proj := sums["project"]
	if proj.admissions > 0 {
		fmt.Printf("\npullsecret-injector over %d admissions: %d garbage collections, %.1f per 1,000; %.1f KiB allocated per admission\n",
			proj.admissions, proj.gcCycles, 1000*float64(proj.gcCycles)/float64(proj.admissions),
			float64(proj.allocated)/1024/float64(proj.admissions))
	}
	if o.cpuLimit != "" {
		for _, name := range []string{"noop", "project"} {
			s := sums[name]
			fmt.Printf("CFS periods %s was throttled in at %s: %d of %d (%.1f%%)\n", name, o.cpuLimit, s.throttled, s.periods,
				100*float64(s.throttled)/float64(max(s.periods, 1)))
		}
	}

}

// printRequests prints the API requests the project made during its warm admissions: the goal is none,
// leader election apart.
func printRequests(proj admissionSummary) {
	var leases, other int
	var otherKinds []string
	for _, k := range slices.SortedFunc(maps.Keys(proj.requests), func(a, b testenv.RequestKind) int {
		return strings.Compare(a.String(), b.String())
	}) {
		n := proj.requests[k]
		switch {
		case k.Method == "WATCH":
		case strings.HasPrefix(k.Resource, "leases."):
			leases += n
		default:
			other += n
			otherKinds = append(otherKinds, fmt.Sprintf("%s: %d", k, n))
		}
	}
	fmt.Printf("\nAPI requests by pullsecret-injector during its %d warm admissions: %d (%.3f per admission) [goal 0]",
		proj.admissions, other, float64(other)/float64(proj.admissions))
	if len(otherKinds) > 0 {
		fmt.Printf(" (%s)", strings.Join(otherKinds, ", "))
	}
	fmt.Printf("; besides, %d leader election Lease requests\n", leases)
}

// printMemory prints the project's start time and memory, after the load and in a filled cluster.
func printMemory(o admissionOptions, f admissionFixed) {
	m := f.memory
	fmt.Printf("\nProcess start to /readyz OK: project %s, noop %s (empty cluster)\n",
		f.projectReady.Round(time.Millisecond), f.noopReady.Round(time.Millisecond))
	fmt.Printf("RSS after the load: project %s, noop %s\n", testenv.MiB(f.rssLoad), testenv.MiB(f.noopRSS))
	fmt.Printf("With %d unrelated Secrets of %d KiB and %d copies (created in %s):\n", o.unrelatedSecrets, o.unrelatedSize>>10,
		o.copies, m.populate.Round(time.Second))
	fmt.Printf("  RSS of the running project          %s  [goal <= 45 MiB]\n", m.rssRunning)
	fmt.Printf("  restarted: start to /readyz OK      %s\n", m.ready.Round(time.Millisecond))
	fmt.Printf("  restarted: RSS at ready             %s\n", m.rssReady)
	fmt.Printf("  restarted: reconciler's first pass  %s, then RSS %s\n", m.initialPass.Round(time.Millisecond), m.rssReconciled)
}

// compilePolicy returns the policy cell's objects: the project's MutatingAdmissionPolicy and binding, as
// policy mode writes them, compiled from admissionConfig.
func compilePolicy() (*policyObjects, error) {
	c, err := config.Parse([]byte(admissionConfig))
	if err != nil {
		return nil, err
	}
	m, err := config.NewMatcher(c)
	if err != nil {
		return nil, err
	}
	p, b, err := policy.Build(m, policy.Options{PolicyName: policyName})
	if err != nil {
		return nil, err
	}
	return &policyObjects{policy: p, binding: b}, nil
}

// policyObjects are the policy cell's MutatingAdmissionPolicy and binding.
type policyObjects struct {
	policy  *admissionregistrationv1.MutatingAdmissionPolicy
	binding *admissionregistrationv1.MutatingAdmissionPolicyBinding
}

// switchTo makes cl the one set-up that mutates Pods in namespace, and waits until the API server shows
// it: the policy objects are deleted for the other cells, and the webhook registration for the policy cell.
func (c *cluster) switchTo(ctx context.Context, cl cell, p *policyObjects, namespace string) error {
	policies := c.cs.AdmissionregistrationV1().MutatingAdmissionPolicies()
	bindings := c.cs.AdmissionregistrationV1().MutatingAdmissionPolicyBindings()
	if err := bindings.Delete(ctx, policyName, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete policy binding: %w", err)
	}
	if err := policies.Delete(ctx, policyName, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete policy: %w", err)
	}
	port := 0
	if cl.webhook != nil {
		port = cl.webhook.Port
	}
	if err := c.register(ctx, port, namespace); err != nil || !cl.policy {
		return err
	}
	if _, err := policies.Create(ctx, p.policy.DeepCopy(), metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create policy: %w", err)
	}
	if _, err := bindings.Create(ctx, p.binding.DeepCopy(), metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create policy binding: %w", err)
	}
	return c.waitMutation(ctx, namespace, true)
}

// apiserverCPU returns the CPU time the API server has used since it started.
func (c *cluster) apiserverCPU(ctx context.Context) (time.Duration, error) {
	m, err := c.apiserverMetrics(ctx)
	if err != nil {
		return 0, err
	}
	v, n := m.Value("process_cpu_seconds_total", nil)
	if n == 0 {
		return 0, errors.New("the API server reports no process_cpu_seconds_total")
	}
	return time.Duration(v * float64(time.Second)), nil
}
