package testenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/apimachinery/pkg/util/wait"
)

// userHZ is the unit of the CPU times in /proc/<pid>/stat: the kernel reports them in USER_HZ, which is 100
// on every architecture Linux exports to user space (sysconf(_SC_CLK_TCK) reads the same constant).
const userHZ = 100

// ProcCPU returns the user plus system CPU time process pid has used so far, its threads included.
func ProcCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read CPU time of process %d: %w", pid, err)
	}
	// The command name, in parentheses, may hold spaces: the fields that follow are counted after it.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat: no command name", pid)
	}
	fields := strings.Fields(string(b[i+1:]))
	// fields[0] is field 3 (state) of proc(5): utime is field 14, stime field 15.
	const utime, stime = 14 - 3, 15 - 3
	if len(fields) <= stime {
		return 0, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(fields))
	}
	var ticks int64
	for _, f := range []string{fields[utime], fields[stime]} {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// ProcRSS returns the resident set size (VmRSS) of process pid in bytes.
func ProcRSS(pid int) (int64, error) { return procStatus(pid, "VmRSS") }

// ProcPeakRSS returns the highest resident set size process pid has had (VmHWM) in bytes.
func ProcPeakRSS(pid int) (int64, error) { return procStatus(pid, "VmHWM") }

// procStatus returns the field of /proc/<pid>/status, a size in kB, in bytes.
func procStatus(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read memory of process %d: %w", pid, err)
	}
	defer func() { _ = f.Close() }()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse %s of process %d: %w", field, pid, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// ChildProcess returns the id of the one child process of this process whose command name (comm, at most
// 15 bytes) is name, such as the kube-apiserver and etcd that envtest started.
func ChildProcess(name string) (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("list processes: %w", err)
	}
	var found []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		open, closing := strings.IndexByte(string(b), '('), strings.LastIndexByte(string(b), ')')
		if open < 0 || closing < open {
			continue
		}
		fields := strings.Fields(string(b[closing+1:]))
		if len(fields) < 2 || string(b[open+1:closing]) != name || fields[1] != strconv.Itoa(os.Getpid()) {
			continue
		}
		found = append(found, pid)
	}
	if len(found) != 1 {
		return 0, fmt.Errorf("find the child process %q: %d match", name, len(found))
	}
	return found[0], nil
}

// StartProgram runs binary with args as a Webhook, for a webhook server that is not pullsecret-injector
// (the benchmark's no-op webhook): the caller passes every flag, including those that make it listen on
// port and serve /readyz on probeAddr. Its output goes to a log file in the control plane's directory.
func (cp *ControlPlane) StartProgram(binary string, port int, probeAddr string, args ...string) (*Webhook, error) {
	logFile, err := os.CreateTemp(cp.Dir, filepath.Base(binary)+"-*.log")
	if err != nil {
		return nil, fmt.Errorf("create log file: %w", err)
	}
	w := &Webhook{Port: port, ProbeAddr: probeAddr, LogPath: logFile.Name(), done: make(chan struct{})}
	if err := w.start(binary, args, logFile); err != nil {
		return nil, err
	}
	return w, nil
}

// TimeToReady polls /readyz every 10 ms, finer than WaitReady, until it answers 200 and returns the time
// since start, or fails when the process exits or timeout passes.
func (w *Webhook) TimeToReady(ctx context.Context, start time.Time, timeout time.Duration) (time.Duration, error) {
	url := "http://" + w.ProbeAddr + "/readyz"
	deadline := time.Now().Add(timeout)
	for {
		if Ready(ctx, url) {
			return time.Since(start), nil
		}
		select {
		case <-w.done:
			return 0, fmt.Errorf("process exited before it was ready: %w\n--- log ---\n%s", errors.Join(errors.New("process exited"), w.exitErr()), w.Log())
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("not ready within %s\n--- log ---\n%s", timeout, w.Log())
		}
	}
}

// CountingProxy is a plain-HTTP front for the control plane, as LaggingProxy is, that counts the requests
// passing through it by verb, resource and namespace. A process given its Kubeconfig has every API request
// it makes counted, whichever client inside the process makes it.
type CountingProxy struct {
	*LaggingProxy
	mu     sync.Mutex
	counts map[countKey]int
}

// countKey is what CountingProxy counts by: the kind of request and the namespace its path names ("" for
// none).
type countKey struct {
	RequestKind
	namespace string
}

// RequestKind is what CountingProxy counts requests by.
type RequestKind struct {
	// Method is the HTTP method, or WATCH for a watch.
	Method string
	// Resource is the resource the path names ("secrets", "leases"), with its group for a group other than
	// the core one ("leases.coordination.k8s.io"), or the path itself for a non-resource path.
	Resource string
}

func (k RequestKind) String() string { return k.Method + " " + k.Resource }

// StartCountingProxy starts a CountingProxy.
func (cp *ControlPlane) StartCountingProxy() (*CountingProxy, error) {
	p := &CountingProxy{counts: map[countKey]int{}}
	lp, err := cp.startProxy(func(next http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(req *http.Request) (*http.Response, error) {
			p.count(req)
			return next.RoundTrip(req)
		})
	})
	if err != nil {
		return nil, err
	}
	p.LaggingProxy = lp
	return p, nil
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

func (p *CountingProxy) count(req *http.Request) {
	k := countKey{RequestKind: RequestKind{Method: req.Method, Resource: resourceOf(req.URL.Path)}, namespace: namespaceOf(req.URL.Path)}
	if isWatch(req) {
		k.Method = "WATCH"
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts[k]++
}

// Counts returns the number of requests of each kind so far.
func (p *CountingProxy) Counts() map[RequestKind]int {
	return p.CountsIn(func(string) bool { return true })
}

// CountsIn returns the number of requests of each kind so far whose path names a namespace for which in
// returns true (in("") for the requests that name none).
func (p *CountingProxy) CountsIn(in func(namespace string) bool) map[RequestKind]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[RequestKind]int{}
	for k, n := range p.counts {
		if in(k.namespace) {
			out[k.RequestKind] += n
		}
	}
	return out
}

// namespaceOf returns the namespace an API path names: "ns" in /api/v1/namespaces/ns/secrets/name, and in
// /api/v1/namespaces/ns itself; "" for a path that names none.
func namespaceOf(path string) string {
	seg := strings.Split(strings.Trim(path, "/"), "/")
	for i := 0; i+1 < len(seg); i++ {
		if seg[i] == "namespaces" && (seg[0] == "api" && i == 2 || seg[0] == "apis" && i == 3) {
			return seg[i+1]
		}
	}
	return ""
}

// CountsSince returns the requests counted in after that were not yet in before, two Counts of one proxy.
func CountsSince(before, after map[RequestKind]int) map[RequestKind]int {
	out := map[RequestKind]int{}
	for k, n := range after {
		if d := n - before[k]; d > 0 {
			out[k] = d
		}
	}
	return out
}

// FormatCounts formats counts as "GET secrets 3, PATCH secrets 10", sorted, leaving out the resources in
// skip; "none" when nothing is left.
func FormatCounts(counts map[RequestKind]int, skip ...string) string {
	var parts []string
	for k, n := range counts {
		if !slices.Contains(skip, k.Resource) {
			parts = append(parts, fmt.Sprintf("%s %d", k, n))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

// resourceOf returns the resource of an API path: /api/v1/namespaces/ns/secrets/name is "secrets",
// /apis/coordination.k8s.io/v1/namespaces/ns/leases/name is "leases.coordination.k8s.io", and
// /api/v1/namespaces/ns is "namespaces".
func resourceOf(path string) string {
	seg := strings.Split(strings.Trim(path, "/"), "/")
	var group string
	var rest []string
	switch {
	case len(seg) >= 3 && seg[0] == "api":
		rest = seg[2:]
	case len(seg) >= 4 && seg[0] == "apis":
		group, rest = seg[1], seg[3:]
	default:
		return path
	}
	resource := rest[0]
	if resource == "namespaces" && len(rest) >= 3 {
		resource = rest[2]
	}
	if group != "" {
		resource += "." + group
	}
	return resource
}

// ReconcilerIdle waits until the process whose metrics are at metricsURL leads, its controller has
// reconciled at least want objects since it started, and has nothing queued or in progress for half a
// second (a resync or a requeue after a conflict may be about to land); it returns how long that took,
// the half second left out.
func ReconcilerIdle(ctx context.Context, metricsURL, controller string, want int, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	var last string
	idleSince := time.Time{}
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		m, err := ScrapeURL(ctx, metricsURL)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		leader, _ := m.Value("leader_election_master_status", nil)
		done, _ := m.Value("controller_runtime_reconcile_total", map[string]string{"controller": controller})
		depth, _ := m.Value("workqueue_depth", map[string]string{"name": controller})
		active, _ := m.Value("controller_runtime_active_workers", map[string]string{"controller": controller})
		last = fmt.Sprintf("leader=%v reconciled=%v queued=%v active=%v", leader, done, depth, active)
		if leader < 1 || done < float64(want) || depth > 0 || active > 0 {
			idleSince = time.Time{}
			return false, nil
		}
		if idleSince.IsZero() {
			idleSince = time.Now()
		}
		return time.Since(idleSince) >= 500*time.Millisecond, nil
	})
	if err != nil {
		return 0, fmt.Errorf("wait for the reconciler to be idle (%s): %w", last, err)
	}
	return time.Since(start) - 500*time.Millisecond, nil
}

// WaitLeader waits until the process whose metrics are at metricsURL leads.
func WaitLeader(ctx context.Context, metricsURL string, timeout time.Duration) error {
	var last error
	err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		m, err := ScrapeURL(ctx, metricsURL)
		if err != nil {
			last = err
			return false, nil
		}
		leader, _ := m.Value("leader_election_master_status", nil)
		return leader >= 1, nil
	})
	if err != nil {
		return fmt.Errorf("wait for the process to lead: %w", errors.Join(err, last))
	}
	return nil
}

// Percentile returns the p-th percentile (0 < p <= 100) of samples by the nearest-rank method, or 0 for
// no samples. It sorts samples.
func Percentile(samples []time.Duration, p float64) time.Duration {
	if len(samples) == 0 {
		return 0
	}
	slices.Sort(samples)
	rank := int(math.Ceil(p / 100 * float64(len(samples))))
	return samples[min(max(rank, 1), len(samples))-1]
}

// Median returns the median of values, or 0 for none. It does not change values.
func Median(values []float64) float64 {
	if len(values) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(values))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// MiB formats a number of bytes in MiB.
func MiB(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// Metrics is one scrape of a Prometheus text endpoint.
type Metrics map[string]*dto.MetricFamily

// ScrapeMetrics reads the Prometheus text format from body.
func ScrapeMetrics(body io.Reader) (Metrics, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(body)
	if err != nil {
		return nil, fmt.Errorf("parse metrics: %w", err)
	}
	return families, nil
}

// ScrapeURL scrapes the metrics endpoint at url.
func ScrapeURL(ctx context.Context, url string) (Metrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	return ScrapeMetrics(resp.Body)
}

// Value returns the sum, over the series of metric name whose labels include every pair in match, of
// their values (a histogram's or summary's sample sum), and their count (for a histogram or summary, its
// sample count; otherwise the number of series).
func (m Metrics) Value(name string, match map[string]string) (sum, count float64) {
	f, ok := m[name]
	if !ok {
		return 0, 0
	}
	for _, s := range f.GetMetric() {
		if !labelsMatch(s.GetLabel(), match) {
			continue
		}
		switch {
		case s.Gauge != nil:
			sum, count = sum+s.GetGauge().GetValue(), count+1
		case s.Counter != nil:
			sum, count = sum+s.GetCounter().GetValue(), count+1
		case s.Untyped != nil:
			sum, count = sum+s.GetUntyped().GetValue(), count+1
		case s.Histogram != nil:
			sum, count = sum+s.GetHistogram().GetSampleSum(), count+float64(s.GetHistogram().GetSampleCount())
		case s.Summary != nil:
			sum, count = sum+s.GetSummary().GetSampleSum(), count+float64(s.GetSummary().GetSampleCount())
		}
	}
	return sum, count
}

func labelsMatch(pairs []*dto.LabelPair, match map[string]string) bool {
	found := 0
	for _, p := range pairs {
		if v, ok := match[p.GetName()]; ok {
			if v != p.GetValue() {
				return false
			}
			found++
		}
	}
	return found == len(match)
}
