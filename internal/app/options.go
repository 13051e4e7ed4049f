package app

import (
	"flag"
	"fmt"
	"slices"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/pullsecret-injector/pullsecret-injector/certs"
	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/internal/events"
	"github.com/pullsecret-injector/pullsecret-injector/webhook"
)

// Options are the process's command-line flags. BindFlags registers them with their defaults; Validate
// checks them, before anything reads a file or calls the API server.
type Options struct {
	// Zap configures the logger, which main builds before Run.
	Zap zap.Options
	// ShowVersion is --version: print the build and exit.
	ShowVersion bool
	// ShutdownDelay is how long the process keeps serving admissions, not ready, after SIGTERM.
	ShutdownDelay time.Duration

	configPath           string
	configReloadInterval time.Duration

	injection   string
	provision   string
	policyName  string
	policyOwner string

	webhookHost               string
	webhookPort               int
	enableHTTP2               bool
	serviceAccountPullSecrets string

	certDir string
	certs   certs.Options

	resyncPeriod      time.Duration
	revocationRecheck time.Duration
	reconcilerWorkers int
	reconcilerQPS     float64
	reconcilerBurst   int

	eventsQPS   float64
	eventsBurst int

	metricsAddr    string
	metricsSecure  bool
	metricsCertDir string
	probeAddr      string

	leaderElect             bool
	leaderElectionNamespace string
	leaderElectionID        string
	leaseDuration           time.Duration
	renewDeadline           time.Duration
	retryPeriod             time.Duration

	// flags is the set BindFlags registered on: Validate asks it which flags the command line set.
	flags *flag.FlagSet
	// groups lists the flags of each group, in the order --help shows them.
	groups []flagGroup
}

// The values of --injection and --provision.
const (
	injectionWebhook = "webhook"
	injectionPolicy  = "policy"
	provisionLazy    = "lazy"
	provisionEager   = "eager"
)

// defaultLeaderElectionID is the name of the Lease the replicas elect their leader with.
const defaultLeaderElectionID = "pullsecret-injector"

// defaultPolicyName names the policy objects when --policy-name does not.
const defaultPolicyName = "pullsecret-injector"

// webhookOnlyFlags configure the webhook server and its certificate, which policy mode does not run.
var webhookOnlyFlags = []string{
	"webhook-host", "webhook-port", "cert-dir",
	"cert-mode", "service-name", "service-namespace", "cert-secret-name", "webhook-config-name", "cert-extra-sans",
	"ca-validity", "ca-renew-before", "cert-validity", "cert-renew-before", "ca-propagation-delay",
}

// flagGroup is a titled set of flags that --help lists together.
type flagGroup struct {
	title string
	names []string
}

// BindFlags registers every flag of the process on fs, with its default, and remembers which group each
// belongs to for Usage: a flag is in the group whose bind function registered it.
func (o *Options) BindFlags(fs *flag.FlagSet) {
	o.flags = fs
	for _, g := range []struct {
		title string
		bind  func(*flag.FlagSet)
	}{
		{"Configuration", o.bindConfigFlags},
		{"Injection", o.bindInjectionFlags},
		{"Admission webhook", o.bindWebhookFlags},
		{"Certificates (webhook mode)", o.bindCertFlags},
		{"Reconciler", o.bindReconcilerFlags},
		{"Events", o.bindEventFlags},
		{"Metrics and health probes", o.bindMetricsFlags},
		{"Leader election", o.bindLeaderElectionFlags},
		{"Logging", o.Zap.BindFlags},
		{"General", o.bindGeneralFlags},
	} {
		before := map[string]bool{}
		fs.VisitAll(func(f *flag.Flag) { before[f.Name] = true })
		g.bind(fs)
		group := flagGroup{title: g.title}
		fs.VisitAll(func(f *flag.Flag) {
			if !before[f.Name] {
				group.names = append(group.names, f.Name)
			}
		})
		o.groups = append(o.groups, group)
	}
}

func (o *Options) bindConfigFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.configPath, "config", config.DefaultPath, "Path of the YAML configuration file. It is read again when it changes.")
	fs.DurationVar(&o.configReloadInterval, "config-reload-interval", config.DefaultReloadInterval,
		"How often the configuration file is read for a change.")
}

func (o *Options) bindInjectionFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.injection, "injection", injectionWebhook,
		"How Pods get their pull secret references: webhook (this process's admission webhook) or policy (a "+
			"MutatingAdmissionPolicy that the leader writes and the API server evaluates itself; no webhook server runs).")
	fs.StringVar(&o.provision, "provision", provisionLazy,
		"When copies are made: lazy (at the admission of the first Pod in the namespace that needs one) or eager (in every "+
			"namespace an entry selects, as soon as it is selected). Policy mode is always eager.")
	fs.StringVar(&o.policyName, "policy-name", defaultPolicyName,
		"Name of the MutatingAdmissionPolicy and of its binding that the leader keeps in policy mode, and deletes in webhook mode.")
	fs.StringVar(&o.policyOwner, "policy-owner-clusterrole", "",
		"Policy mode: a ClusterRole made the owner of the policy objects, so that deleting it (helm uninstall) deletes them. Empty: none.")
}

func (o *Options) bindWebhookFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.webhookHost, "webhook-host", "", "Address the webhook server listens on (empty: all addresses).")
	fs.IntVar(&o.webhookPort, "webhook-port", 9443, "Port the webhook server listens on.")
	fs.BoolVar(&o.enableHTTP2, "enable-http2", false,
		"Serve the webhook over HTTP/2. Off by default because of the HTTP/2 rapid reset attack (CVE-2023-44487).")
	fs.StringVar(&o.serviceAccountPullSecrets, "serviceaccount-pull-secrets", string(webhook.ServiceAccountSkip),
		"For a Pod whose ServiceAccount enforces mountable secrets (kubernetes.io/enforce-mountable-secrets) and does not list a "+
			"Secret the Pod would get: skip (add nothing and warn) or append (add the Secret to the ServiceAccount's imagePullSecrets, then to the Pod).")
	fs.DurationVar(&o.ShutdownDelay, "shutdown-delay", 5*time.Second,
		"On SIGTERM, how long to keep serving admissions while /readyz fails, so that the API server stops sending "+
			"requests here before the listener closes. Keep terminationGracePeriodSeconds above it plus the drain.")
}

func (o *Options) bindCertFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.certDir, "cert-dir", "", "External certificate mode: directory holding tls.crt and tls.key for the webhook server, reloaded when they change.")
	o.certs.BindFlags(fs)
}

func (o *Options) bindReconcilerFlags(fs *flag.FlagSet) {
	fs.DurationVar(&o.resyncPeriod, "resync-period", 10*time.Minute,
		"How often every copy is checked again behind the event-driven path; a copy whose digest annotation says it is in step "+
			"costs no API call. Also how often the leader lists the cluster's unfinished Pods to recreate missing copies they reference "+
			"(and once when it starts leading), and how long after it starts leading it reads every copy once (0: never).")
	fs.DurationVar(&o.revocationRecheck, "revocation-recheck", time.Minute,
		"How often a copy that no longer applies is checked again while unfinished Pods reference it, and the age a copy must reach before it is revoked at all.")
	// A rotation costs one request per copy, so --reconciler-qps is the fan-out's copies per second; the
	// workers only have to keep that many requests in flight. docs/performance.md has the measurements.
	fs.IntVar(&o.reconcilerWorkers, "reconciler-workers", 8, "Copies reconciled at once.")
	fs.Float64Var(&o.reconcilerQPS, "reconciler-qps", 100,
		"Most API requests per second of the reconciler's own client, apart from the admission path's: the copies per second "+
			"a source rotation fans out at when the API server keeps up. The rate shrinks while the API server answers the "+
			"reconciler's writes slower than when it was least loaded, or refuses them, and grows back to this.")
	fs.IntVar(&o.reconcilerBurst, "reconciler-burst", 200,
		"Largest burst of API requests of the reconciler's own client; a burst is also never more than a tenth of a second at the current rate.")
}

func (o *Options) bindEventFlags(fs *flag.FlagSet) {
	fs.Float64Var(&o.eventsQPS, "events-qps", events.DefaultQPS,
		"Kubernetes Events emitted per second at most, on copies and sources; the ones over it are dropped and counted.")
	fs.IntVar(&o.eventsBurst, "events-burst", events.DefaultBurst, "Burst of Kubernetes Events over --events-qps.")
}

func (o *Options) bindMetricsFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":8443", "Address the metrics endpoint binds to; 0 disables it.")
	fs.BoolVar(&o.metricsSecure, "metrics-secure", true,
		"Serve metrics over HTTPS, to clients the API server authenticates (TokenReview) and authorizes (SubjectAccessReview "+
			"for get on the non-resource URL /metrics). False serves plain HTTP to anyone who can reach the port.")
	fs.StringVar(&o.metricsCertDir, "metrics-cert-dir", "",
		"Directory holding tls.crt and tls.key for the metrics endpoint. Empty: a self-signed certificate made at start.")
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "Address the /healthz and /readyz endpoints bind to.")
}

func (o *Options) bindLeaderElectionFlags(fs *flag.FlagSet) {
	fs.BoolVar(&o.leaderElect, "leader-elect", true,
		"Elect one replica, through a Lease, to run the reconciler that keeps copies in step. Every replica serves admissions either way.")
	fs.StringVar(&o.leaderElectionNamespace, "leader-election-namespace", "",
		"Namespace of the leader election Lease. Default: the namespace the Pod runs in; required outside a Pod.")
	fs.StringVar(&o.leaderElectionID, "leader-election-id", defaultLeaderElectionID, "Name of the leader election Lease.")
	fs.DurationVar(&o.leaseDuration, "leader-election-lease-duration", 15*time.Second,
		"How long a replica waits, after the leader stops renewing, before taking the lead.")
	fs.DurationVar(&o.renewDeadline, "leader-election-renew-deadline", 10*time.Second,
		"How long the leader keeps trying to renew its Lease before it gives up the lead.")
	fs.DurationVar(&o.retryPeriod, "leader-election-retry-period", 2*time.Second, "How often replicas try to take or renew the Lease.")
}

// bindGeneralFlags registers --version, and --kubeconfig, which controller-runtime registers on the
// process's default flag set when it is imported: it is taken over so that fs holds every flag.
func (o *Options) bindGeneralFlags(fs *flag.FlagSet) {
	fs.BoolVar(&o.ShowVersion, "version", false, "Print the version, git commit and Go version of this binary, and exit.")
	if fs.Lookup("kubeconfig") == nil {
		if f := flag.CommandLine.Lookup("kubeconfig"); f != nil {
			fs.Var(f.Value, f.Name, f.Usage)
		}
	}
}

// setOnCommandLine reports whether the command line set the flag called name.
func (o *Options) setOnCommandLine(name string) bool {
	set := false
	if o.flags != nil {
		o.flags.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	}
	return set
}

// ignoredFlags returns the flags the command line set that the injection mode does not use.
func (o *Options) ignoredFlags() []string {
	var ignored []string
	if o.injection != injectionPolicy || o.flags == nil {
		return nil
	}
	o.flags.Visit(func(f *flag.Flag) {
		if slices.Contains(webhookOnlyFlags, f.Name) {
			ignored = append(ignored, "--"+f.Name)
		}
	})
	return ignored
}

// Validate returns the flags' problems, before any I/O: flags that contradict the injection mode, an
// unknown value, and, in webhook mode, the certificate flags' problems.
func (o *Options) Validate() error {
	if o.provision != provisionLazy && o.provision != provisionEager {
		return fmt.Errorf("--provision=%q: want %q or %q", o.provision, provisionLazy, provisionEager)
	}
	saMode := webhook.ServiceAccountMode(o.serviceAccountPullSecrets)
	switch o.injection {
	case injectionWebhook:
		o.certs.CertDir = o.certDir
		if err := o.certs.Validate(); err != nil {
			return fmt.Errorf("validate certificate flags: %w", err)
		}
	case injectionPolicy:
		// The API server adds the references without a call here, so the copies must exist before the Pods.
		if o.setOnCommandLine("provision") && o.provision == provisionLazy {
			return fmt.Errorf("--provision=%s with --injection=%s: policy mode makes copies ahead of the Pods that need them", provisionLazy, injectionPolicy)
		}
		// No ServiceAccount is looked at in policy mode: nothing would be appended.
		if o.setOnCommandLine("serviceaccount-pull-secrets") && saMode == webhook.ServiceAccountAppend {
			return fmt.Errorf("--serviceaccount-pull-secrets=%s with --injection=%s: the policy cannot change ServiceAccounts",
				webhook.ServiceAccountAppend, injectionPolicy)
		}
	default:
		return fmt.Errorf("--injection=%q: want %q or %q", o.injection, injectionWebhook, injectionPolicy)
	}
	if saMode != webhook.ServiceAccountSkip && saMode != webhook.ServiceAccountAppend {
		return fmt.Errorf("--serviceaccount-pull-secrets=%q: want %q or %q", saMode, webhook.ServiceAccountSkip, webhook.ServiceAccountAppend)
	}
	return nil
}

// policyMode reports whether the API server injects, through the policy, rather than this process.
func (o *Options) policyMode() bool { return o.injection == injectionPolicy }

// eager reports whether copies are made ahead of the Pods that need them: always in policy mode.
func (o *Options) eager() bool { return o.policyMode() || o.provision == provisionEager }
