// Package testenv runs a real kube-apiserver and etcd (through controller-runtime's envtest, from the
// binaries hack/build-controlplane.sh builds) and the pullsecret-injector binary against them. The e2e
// tests and the demo share it.
package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/pullsecret-injector/pullsecret-injector/test/fixtures"
)

// K8sVersion is the version of the control plane binaries the tests run against.
const K8sVersion = "1.37.2"

const (
	// ConfigFile is the configuration's file name inside Webhook.ConfigDir, as the chart mounts it.
	ConfigFile = "config.yaml"
	// LeaseNamespace is where the webhooks a test starts elect their leader by default.
	LeaseNamespace = "default"
	// LeaseName is the Lease the webhooks a test starts elect their leader with by default.
	LeaseName = "pullsecret-injector-test"
)

// RepoRoot returns the root of the source tree this package was compiled from.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// AssetsDir returns the directory holding etcd and kube-apiserver: KUBEBUILDER_ASSETS when set, otherwise
// the cache hack/build-controlplane.sh writes.
func AssetsDir() (string, error) {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		dir = filepath.Join(RepoRoot(), "bin", "k8s", K8sVersion)
	}
	for _, b := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return "", fmt.Errorf("find control plane binary %q in %s (run `make controlplane` or set KUBEBUILDER_ASSETS): %w", b, dir, err)
		}
	}
	return dir, nil
}

// ControlPlane is a running kube-apiserver and etcd on loopback.
type ControlPlane struct {
	Env *envtest.Environment
	// Config is an admin (system:masters) client configuration.
	Config *rest.Config
	// Kubeconfig is the path of an admin kubeconfig file for the binary and for kubectl.
	Kubeconfig string
	// CertDir holds tls.crt and tls.key valid for 127.0.0.1 and localhost, and CAData trusts them.
	CertDir string
	CAData  []byte
	// Dir is a scratch directory removed by Stop.
	Dir string
}

// ControlPlaneOption changes how the control plane is started.
type ControlPlaneOption func(*envtest.Environment)

// WithServiceAccountAdmission enables the ServiceAccount admission plugin, which envtest disables. No
// controller creates ServiceAccounts here: a test that creates Pods then creates the ones they use.
func WithServiceAccountAdmission() ControlPlaneOption {
	return func(env *envtest.Environment) {
		env.ControlPlane.GetAPIServer().Configure().Set("disable-admission-plugins", "DefaultStorageClass")
	}
}

// logOnce sets controller-runtime's logger once per test process (see StartControlPlane).
var logOnce sync.Once

// StartControlPlane starts etcd and kube-apiserver.
func StartControlPlane(opts ...ControlPlaneOption) (*ControlPlane, error) {
	assets, err := AssetsDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pullsecret-injector-test-")
	if err != nil {
		return nil, fmt.Errorf("create scratch directory: %w", err)
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		// No webhooks are installed here (the tests register their own once the binary serves), but this
		// makes envtest generate a serving certificate for loopback.
		WebhookInstallOptions: envtest.WebhookInstallOptions{LocalServingHost: "127.0.0.1"},
	}
	for _, o := range opts {
		o(env)
	}
	// envtest logs through controller-runtime's logger; unset, the logger prints a stack trace after 30 s
	// of waiting to be set, into the verbose test output. What envtest says is the control plane's
	// progress, which the tests do not need.
	logOnce.Do(func() { ctrllog.SetLogger(logr.Discard()) })
	cfg, err := env.Start()
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("start control plane from %s: %w", assets, err)
	}
	cp := &ControlPlane{Env: env, Config: cfg, Dir: dir,
		CertDir: env.WebhookInstallOptions.LocalServingCertDir, CAData: env.WebhookInstallOptions.LocalServingCAData}
	user, err := env.AddUser(envtest.User{Name: "pullsecret-injector-admin", Groups: []string{"system:masters"}}, nil)
	if err == nil {
		var kc []byte
		if kc, err = user.KubeConfig(); err == nil {
			cp.Kubeconfig = filepath.Join(dir, "kubeconfig")
			err = os.WriteFile(cp.Kubeconfig, kc, 0o600)
		}
	}
	if err != nil {
		_ = cp.Stop()
		return nil, fmt.Errorf("write admin kubeconfig: %w", err)
	}
	return cp, nil
}

// Stop stops the control plane and removes its files.
func (cp *ControlPlane) Stop() error {
	err := cp.Env.Stop()
	if rmErr := os.RemoveAll(cp.Dir); err == nil {
		err = rmErr
	}
	return err
}

// BuildBinary builds the pullsecret-injector binary into dir with the same command as `make build`.
func BuildBinary(dir string) (string, error) {
	out := filepath.Join(dir, "pullsecret-injector")
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, ".")
	cmd.Dir = RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build pullsecret-injector: %w\n%s", err, b)
	}
	return out, nil
}

// Webhook is a running pullsecret-injector process.
type Webhook struct {
	// Port is the webhook server's port on 127.0.0.1.
	Port int
	// ProbeAddr serves /healthz and /readyz.
	ProbeAddr string
	// LogPath is the file the process writes its output to.
	LogPath string
	// ConfigDir holds the configuration as a ConfigMap volume does; UpdateConfig swaps it.
	ConfigDir string

	cmd  *exec.Cmd
	done chan struct{}
	mu   sync.Mutex
	err  error
}

// StartWebhook writes configYAML to a file and runs binary with it against the control plane, serving the
// control plane's loopback certificate. Extra flags are appended (a later flag wins). It returns once
// /readyz answers 200.
// A process that could not bind the ports it was given is started again on others, a few times.
func (cp *ControlPlane) StartWebhook(ctx context.Context, binary string, configYAML []byte, extraArgs ...string) (*Webhook, error) {
	for attempt := 1; ; attempt++ {
		w, err := cp.StartWebhookNoWait(binary, configYAML, extraArgs...)
		if err != nil {
			return nil, err
		}
		err = w.WaitReady(ctx, ReadyTimeout)
		if err == nil {
			return w, nil
		}
		_ = w.Stop()
		if log := w.Log(); !portInUse(log) || attempt == maxStartAttempts {
			return nil, fmt.Errorf("%w\n--- webhook log ---\n%s", err, log)
		}
	}
}

// maxStartAttempts bounds the starts of a process whose ports were taken under it.
const maxStartAttempts = 5

// SettleTimeout bounds a test's wait for a behaviour that takes effect asynchronously (a copy created,
// restored, updated or revoked, an Event recorded, a log line written). It is a guard against a behaviour
// that never happens, not a measure of how fast it happens: tests wait for the condition and log the time
// it took.
const SettleTimeout = 2 * time.Minute

// ReadyTimeout bounds the wait for a process this package starts to become ready. It only keeps a broken
// process from hanging a test: readiness takes well under a second on a quiet machine.
const ReadyTimeout = 2 * time.Minute

// StartWebhookNoWait is StartWebhook without the wait for /readyz, for a process expected to stay unready
// for a while, or several processes started at the same moment. Call WaitReady when it should be ready.
func (cp *ControlPlane) StartWebhookNoWait(binary string, configYAML []byte, extraArgs ...string) (*Webhook, error) {
	configDir, err := os.MkdirTemp(cp.Dir, "config-")
	if err != nil {
		return nil, fmt.Errorf("create config directory: %w", err)
	}
	if err := fixtures.WriteConfigMapVolume(configDir, ConfigFile, configYAML); err != nil {
		return nil, err
	}
	ports, err := FreePorts(2)
	if err != nil {
		return nil, err
	}
	w := &Webhook{Port: ports[0], ProbeAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1])), done: make(chan struct{}),
		ConfigDir: configDir}
	logFile, err := os.CreateTemp(cp.Dir, "webhook-*.log")
	if err != nil {
		return nil, fmt.Errorf("create log file: %w", err)
	}
	w.LogPath = logFile.Name()
	args := append([]string{
		"--config", filepath.Join(configDir, ConfigFile),
		"--config-reload-interval", "500ms",
		// Every webhook of one control plane competes for the same Lease, as the replicas of one release
		// do, so one reconciler runs at a time; a test that wants its own passes --leader-election-id.
		"--leader-election-namespace", LeaseNamespace,
		"--leader-election-id", LeaseName,
		"--revocation-recheck", "2s",
		// Nothing routes to these processes through endpoints that lag; the rollout test sets its own.
		"--shutdown-delay", "0s",
		// Tests look for the Events of what they do; the shared webhook does far more than production's
		// rate allows.
		"--events-qps", "1000", "--events-burst", "1000",
		"--kubeconfig", cp.Kubeconfig,
		"--cert-dir", cp.CertDir,
		"--webhook-host", "127.0.0.1",
		"--webhook-port", strconv.Itoa(w.Port),
		"--metrics-bind-address", "0",
		"--health-probe-bind-address", w.ProbeAddr,
		"--zap-log-level", "debug",
	}, extraArgs...)
	if err := w.start(binary, args, logFile); err != nil {
		return nil, err
	}
	return w, nil
}

// start runs binary with args, its output going to logFile, which it closes once the process has exited
// (or at once when it does not start); done is closed when the process exits.
func (w *Webhook) start(binary string, args []string, logFile *os.File) error {
	w.cmd = exec.Command(binary, args...)
	w.cmd.Stdout, w.cmd.Stderr = logFile, logFile
	// Its own process group, so that nothing it starts outlives the test.
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := w.cmd.Start(); err != nil {
		_ = logFile.Close()
		return fmt.Errorf("start %s: %w", binary, err)
	}
	go func() {
		err := w.cmd.Wait()
		_ = logFile.Close()
		w.mu.Lock()
		w.err = err
		w.mu.Unlock()
		close(w.done)
	}()
	return nil
}

// UpdateConfig replaces the webhook's configuration the way the kubelet updates a ConfigMap volume.
func (w *Webhook) UpdateConfig(configYAML []byte) error {
	return fixtures.WriteConfigMapVolume(w.ConfigDir, ConfigFile, configYAML)
}

// Pid returns the process id, for a test that signals the process itself.
func (w *Webhook) Pid() int { return w.cmd.Process.Pid }

// Kill kills the process at once, as a node failure would, and waits for it.
func (w *Webhook) Kill() {
	_ = syscall.Kill(-w.cmd.Process.Pid, syscall.SIGKILL)
	<-w.done
}

// Terminate sends SIGTERM, as the kubelet does to a Pod being deleted, and returns at once.
func (w *Webhook) Terminate() {
	_ = syscall.Kill(-w.cmd.Process.Pid, syscall.SIGTERM)
}

// Wait waits up to timeout for the process to exit and reports whether it did.
func (w *Webhook) Wait(timeout time.Duration) bool {
	select {
	case <-w.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// WaitReady polls /readyz until it answers 200, the process exits, or timeout passes.
func (w *Webhook) WaitReady(ctx context.Context, timeout time.Duration) error {
	url := "http://" + w.ProbeAddr + "/readyz"
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		select {
		case <-w.done:
			return false, fmt.Errorf("pullsecret-injector exited before it was ready: %w", errors.Join(errors.New("process exited"), w.exitErr()))
		default:
		}
		return Ready(ctx, url), nil
	})
}

// Ready reports whether a GET of url answers 200.
func Ready(ctx context.Context, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func (w *Webhook) exitErr() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Log returns what the process has written so far.
func (w *Webhook) Log() string {
	b, err := os.ReadFile(w.LogPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", w.LogPath, err)
	}
	return string(bytes.TrimSpace(b))
}

// Stop sends SIGTERM, waits for a graceful exit, and kills the process group after 15 seconds.
func (w *Webhook) Stop() error {
	if !signalGroup(w.cmd.Process.Pid, w.done, syscall.SIGTERM, 15*time.Second) {
		_ = syscall.Kill(-w.cmd.Process.Pid, syscall.SIGKILL)
		<-w.done
		return fmt.Errorf("pullsecret-injector did not stop on SIGTERM within 15s")
	}
	return nil
}

// signalGroup sends sig to the process group pid leads, unless done is already closed, and reports whether
// done closed within grace.
func signalGroup(pid int, done <-chan struct{}, sig syscall.Signal, grace time.Duration) bool {
	select {
	case <-done:
		return true
	default:
	}
	_ = syscall.Kill(-pid, sig)
	select {
	case <-done:
		return true
	case <-time.After(grace):
		return false
	}
}

// FreePorts returns n distinct free TCP ports on 127.0.0.1, each reserved for this process: a port is picked
// here and bound later by another process, and in between nothing else that reserves ports the same way
// (another test package, envtest's own kube-apiserver and etcd ports) may pick it. The reservation is
// envtest's: a file per port, locked with flock(2) for the life of the process and honoured for two minutes
// after its last use, in the directory envtest uses.
func FreePorts(n int) ([]int, error) {
	var ports []int
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			_ = l.Close()
		}
	}()
	for len(ports) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		listeners = append(listeners, l)
		port := l.Addr().(*net.TCPAddr).Port
		reserved, err := reservePort(port)
		if err != nil {
			return nil, err
		}
		if reserved {
			ports = append(ports, port)
		}
	}
	return ports, nil
}

// portReserveTime is how long a reservation file keeps a port from other processes once it is no longer
// locked, as in envtest.
const portReserveTime = 2 * time.Minute

// reservePort reserves port for this process unless another process holds it or used it less than
// portReserveTime ago.
func reservePort(port int) (bool, error) {
	dir, err := portCacheDir()
	if err != nil {
		return false, err
	}
	path := filepath.Join(dir, "port-"+strconv.Itoa(port))
	if info, err := os.Stat(path); err == nil && time.Since(info.ModTime()) < portReserveTime {
		return false, nil
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return false, fmt.Errorf("reserve port %d: %w", port, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return false, nil
		}
		return false, fmt.Errorf("reserve port %d: %w", port, err)
	}
	now := time.Now()
	_ = os.Chtimes(path, now, now)
	// The file stays open, and locked, until the process exits.
	reservations.Lock()
	reservations.files = append(reservations.files, f)
	reservations.Unlock()
	return true, nil
}

// reservations keeps the locked reservation files open for the life of the process.
var reservations struct {
	sync.Mutex
	files []*os.File
}

// portCacheDir is envtest's reservation directory (controller-runtime pkg/internal/testing/addr).
func portCacheDir() (string, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	dir := filepath.Join(base, "kubebuilder-envtest")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", fmt.Errorf("create port reservation directory: %w", err)
	}
	return dir, nil
}

// portInUse reports whether log says a listener could not bind its port: another process took it between
// FreePorts and the bind, which the reservation makes rare but cannot rule out (an outgoing connection's
// ephemeral port, a process that does not reserve).
func portInUse(log string) bool {
	return strings.Contains(log, "address already in use")
}

// MutatingWebhookConfiguration returns the registration the chart makes, pointed at a webhook on
// 127.0.0.1:port that serves the control plane's loopback certificate. namespaceSelector may be nil.
func (cp *ControlPlane) MutatingWebhookConfiguration(name string, port int, namespaceSelector *metav1.LabelSelector) *admissionregistrationv1.MutatingWebhookConfiguration {
	url := fmt.Sprintf("https://127.0.0.1:%d/mutate-v1-pod", port)
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "pods.pullsecret-injector.io",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: cp.CAData},
			AdmissionReviewVersions: []string{"v1"},
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNoneOnDryRun),
			ReinvocationPolicy:      ptr.To(admissionregistrationv1.IfNeededReinvocationPolicy),
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			MatchPolicy:             ptr.To(admissionregistrationv1.Equivalent),
			TimeoutSeconds:          ptr.To[int32](10),
			NamespaceSelector:       namespaceSelector,
			Rules:                   WebhookRules(),
		}},
	}
}

// WebhookRules are the requests the chart's registration sends the webhook: Pod creates, and updates of
// the ephemeralcontainers subresource (kubectl debug), whose new images may need a copy.
func WebhookRules() []admissionregistrationv1.RuleWithOperations {
	rule := func(op admissionregistrationv1.OperationType, resource string) admissionregistrationv1.RuleWithOperations {
		return admissionregistrationv1.RuleWithOperations{
			Operations: []admissionregistrationv1.OperationType{op},
			Rule: admissionregistrationv1.Rule{
				APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{resource},
				Scope: ptr.To(admissionregistrationv1.NamespacedScope),
			},
		}
	}
	return []admissionregistrationv1.RuleWithOperations{
		rule(admissionregistrationv1.Create, "pods"),
		rule(admissionregistrationv1.Update, "pods/ephemeralcontainers"),
	}
}

// WaitForMutation creates dry-run Pods with image in namespace until the API server has picked up the
// webhook registration and the returned Pod references secret.
func WaitForMutation(ctx context.Context, cs kubernetes.Interface, namespace, image, secret string) error {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "probe-"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: image}}},
	}
	var last error
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		got, err := cs.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			last = err
			return false, nil
		}
		for _, ref := range got.Spec.ImagePullSecrets {
			if ref.Name == secret {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("wait for the webhook to mutate pods in %q: %w", namespace, errors.Join(err, last))
	}
	return nil
}

// Warnings collects the warnings the API server returns to a client: set it as a rest.Config's
// WarningHandlerWithContext.
type Warnings struct {
	mu   sync.Mutex
	list []string
}

// HandleWarningHeaderWithContext implements rest.WarningHandlerWithContext.
func (w *Warnings) HandleWarningHeaderWithContext(_ context.Context, _ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.list = append(w.list, text)
}

// List returns the warnings received so far.
func (w *Warnings) List() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.list...)
}

// MustCreatePod is CreatePod for a test: it fails t when the create or the read back fails.
func (cp *ControlPlane) MustCreatePod(t testing.TB, namespace string, pod *corev1.Pod) (*corev1.Pod, []string) {
	t.Helper()
	stored, warnings, err := cp.CreatePod(context.Background(), namespace, pod)
	if err != nil {
		t.Fatal(err)
	}
	return stored, warnings
}

// RunWithControlPlane is the body of a TestMain that needs a control plane and the binary: it starts a
// control plane with opts, builds the binary into its directory, calls run with both and stops the plane
// once run returns. It returns run's exit code, or 1 when the plane or the binary cannot be had.
func RunWithControlPlane(run func(cp *ControlPlane, binary string) int, opts ...ControlPlaneOption) int {
	cp, err := StartControlPlane(opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		if err := cp.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop control plane:", err)
		}
	}()
	binary, err := BuildBinary(cp.Dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return run(cp, binary)
}

// CreatePod creates pod in namespace as the control plane's admin and returns the Pod as stored (read back,
// not the create response) and the warnings the API server returned with the create.
func (cp *ControlPlane) CreatePod(ctx context.Context, namespace string, pod *corev1.Pod) (*corev1.Pod, []string, error) {
	var w Warnings
	cfg := rest.CopyConfig(cp.Config)
	cfg.WarningHandlerWithContext = &w
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("create client: %w", err)
	}
	created, err := cs.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return nil, w.List(), fmt.Errorf("create pod in namespace %q: %w", namespace, err)
	}
	stored, err := cs.CoreV1().Pods(namespace).Get(ctx, created.Name, metav1.GetOptions{})
	if err != nil {
		return nil, w.List(), fmt.Errorf("read back pod %q: %w", created.Name, err)
	}
	return stored, w.List(), nil
}
