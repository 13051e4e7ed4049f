// Command pullsecret-injector is a mutating admission webhook that copies registry pull secrets into the
// namespaces of Pods that need them and adds them to the Pods' imagePullSecrets.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/pullsecret-injector/pullsecret-injector/certs"
	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/internal/checkcmd"
	"github.com/pullsecret-injector/pullsecret-injector/internal/events"
	"github.com/pullsecret-injector/pullsecret-injector/internal/metrics"
	"github.com/pullsecret-injector/pullsecret-injector/internal/policy"
	"github.com/pullsecret-injector/pullsecret-injector/internal/ratelimit"
	"github.com/pullsecret-injector/pullsecret-injector/internal/reconciler"
	"github.com/pullsecret-injector/pullsecret-injector/internal/sources"
	"github.com/pullsecret-injector/pullsecret-injector/webhook"
)

type options struct {
	configPath           string
	configReloadInterval time.Duration
	webhookHost          string
	webhookPort          int
	certDir              string
	metricsAddr          string
	metricsSecure        bool
	metricsCertDir       string
	probeAddr            string
	enableHTTP2          bool

	leaderElect             bool
	leaderElectionNamespace string
	leaderElectionID        string
	leaseDuration           time.Duration
	renewDeadline           time.Duration
	retryPeriod             time.Duration

	resyncPeriod      time.Duration
	revocationRecheck time.Duration
	reconcilerWorkers int
	reconcilerQPS     float64
	reconcilerBurst   int

	shutdownDelay time.Duration

	eventsQPS   float64
	eventsBurst int

	serviceAccountPullSecrets string

	injection    string
	provision    string
	policyName   string
	policyOwner  string
	ignoredFlags []string
	provisionSet bool
	saSetByFlag  bool

	certs certs.Options
	zap   zap.Options
}

// The values of --injection and --provision.
const (
	injectionWebhook = "webhook"
	injectionPolicy  = "policy"
	provisionLazy    = "lazy"
	provisionEager   = "eager"
)

// webhookOnlyFlags configure the webhook server and its certificate, which policy mode does not run.
var webhookOnlyFlags = []string{
	"webhook-host", "webhook-port", "cert-dir",
	"cert-mode", "service-name", "service-namespace", "cert-secret-name", "webhook-config-name", "cert-extra-sans",
	"ca-validity", "ca-renew-before", "cert-validity", "cert-renew-before", "ca-propagation-delay",
}

// gracefulShutdownTimeout bounds the drain after the shutdown delay.
var gracefulShutdownTimeout = 20 * time.Second

// defaultGCPercent is the binary's GOGC unless the environment sets one. Its live heap is mostly the
// metadata cache, which changes little, so halving the runtime's default headroom (100) costs little CPU
// and keeps the RSS about 5 MiB lower with 1,000 copies (docs/performance.md has the measurements).
const defaultGCPercent = 50

// startupGCPercent is the binary's GOGC while its caches make their first list, unless the environment
// sets one: the list's decoding garbage (every object arrives whole, with its managed fields, and is
// trimmed) would otherwise let the heap grow to half again the caches' size, the highest the process
// ever holds. Collecting more often costs CPU only while the list lasts (docs/performance.md).
const startupGCPercent = 10

// defaultLeaderElectionID is the name of the Lease the replicas elect their leader with.
const defaultLeaderElectionID = "pullsecret-injector"

// defaultPolicyName names the policy objects when --policy-name does not.
const defaultPolicyName = "pullsecret-injector"

func main() {
	// The check subcommand has flags of its own and must never start the webhook.
	if len(os.Args) > 1 && os.Args[1] == "check" {
		os.Exit(checkcmd.Main(os.Args[2:], os.Stdout, os.Stderr))
	}
	_, gogcSet := os.LookupEnv("GOGC")
	if !gogcSet {
		debug.SetGCPercent(startupGCPercent)
	}
	var o options
	fs := flag.CommandLine
	fs.StringVar(&o.configPath, "config", config.DefaultPath, "Path of the YAML configuration file. It is read again when it changes.")
	fs.DurationVar(&o.configReloadInterval, "config-reload-interval", config.DefaultReloadInterval,
		"How often the configuration file is read for a change.")
	fs.StringVar(&o.webhookHost, "webhook-host", "", "Address the webhook server listens on (empty: all addresses).")
	fs.IntVar(&o.webhookPort, "webhook-port", 9443, "Port the webhook server listens on.")
	fs.StringVar(&o.certDir, "cert-dir", "", "External certificate mode: directory holding tls.crt and tls.key for the webhook server, reloaded when they change.")
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":8443", "Address the metrics endpoint binds to; 0 disables it.")
	fs.BoolVar(&o.metricsSecure, "metrics-secure", true,
		"Serve metrics over HTTPS, to clients the API server authenticates (TokenReview) and authorizes (SubjectAccessReview "+
			"for get on the non-resource URL /metrics). False serves plain HTTP to anyone who can reach the port.")
	fs.StringVar(&o.metricsCertDir, "metrics-cert-dir", "",
		"Directory holding tls.crt and tls.key for the metrics endpoint. Empty: a self-signed certificate made at start.")
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "Address the /healthz and /readyz endpoints bind to.")
	fs.BoolVar(&o.enableHTTP2, "enable-http2", false,
		"Serve the webhook over HTTP/2. Off by default because of the HTTP/2 rapid reset attack (CVE-2023-44487).")
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
	fs.DurationVar(&o.resyncPeriod, "resync-period", 10*time.Minute,
		"How often every copy is checked again behind the event-driven path; a copy whose digest annotation says it is in step "+
			"costs no API call. A leader also reads every copy once, this long after it starts leading (0: never).")
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
	fs.Float64Var(&o.eventsQPS, "events-qps", events.DefaultQPS,
		"Kubernetes Events emitted per second at most, on copies and sources; the ones over it are dropped and counted.")
	fs.IntVar(&o.eventsBurst, "events-burst", events.DefaultBurst, "Burst of Kubernetes Events over --events-qps.")
	fs.DurationVar(&o.shutdownDelay, "shutdown-delay", 5*time.Second,
		"On SIGTERM, how long to keep serving admissions while /readyz fails, so that the API server stops sending "+
			"requests here before the listener closes. Keep terminationGracePeriodSeconds above it plus the drain.")
	fs.StringVar(&o.serviceAccountPullSecrets, "serviceaccount-pull-secrets", string(webhook.ServiceAccountSkip),
		"For a Pod whose ServiceAccount enforces mountable secrets (kubernetes.io/enforce-mountable-secrets) and does not list a "+
			"Secret the Pod would get: skip (add nothing and warn) or append (add the Secret to the ServiceAccount's imagePullSecrets, then to the Pod).")
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
	o.certs.BindFlags(fs)
	o.zap.BindFlags(fs)
	flag.Parse()
	fs.Visit(func(f *flag.Flag) {
		switch {
		case slices.Contains(webhookOnlyFlags, f.Name):
			o.ignoredFlags = append(o.ignoredFlags, "--"+f.Name)
		case f.Name == "provision":
			o.provisionSet = true
		case f.Name == "serviceaccount-pull-secrets":
			o.saSetByFlag = true
		}
	})

	var draining atomic.Bool
	if err := run(signalContext(o.shutdownDelay, &draining), o, &draining, !gogcSet); err != nil {
		fmt.Fprintf(os.Stderr, "pullsecret-injector: %v\n", err)
		os.Exit(1)
	}
}

// metricsOptions serves metrics the way current kubebuilder projects do: HTTPS, with every scrape
// authenticated and authorized by the API server, unless --metrics-secure=false.
func metricsOptions(o options, serverTLS func(*tls.Config)) metricsserver.Options {
	opts := metricsserver.Options{BindAddress: o.metricsAddr}
	if o.metricsSecure {
		opts.SecureServing = true
		opts.FilterProvider = metrics.WithAuthenticationAndAuthorization
		opts.CertDir = o.metricsCertDir
		// The webhook's certificate is for the webhook Service's name; the metrics endpoint keeps the TLS
		// version and HTTP/2 rules and takes its certificate from --metrics-cert-dir.
		opts.TLSOpts = []func(*tls.Config){serverTLS}
	}
	return opts
}

// signalContext returns a context that ends shutdownDelay after the first SIGTERM or interrupt, and sets
// draining at the signal. In between, the process keeps serving admissions but reports not ready: the
// Service's endpoints and the API server's connections take a moment to move to other replicas, and a
// listener that closed at once would refuse their requests, which failurePolicy Fail turns into refused
// Pods. A second signal ends the context at once, and a third exits.
func signalContext(shutdownDelay time.Duration, draining *atomic.Bool) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	c := make(chan os.Signal, 3)
	signal.Notify(c, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-c
		draining.Store(true)
		ctrl.Log.WithName("setup").Info("Shutting down: not ready, still serving admissions for the shutdown delay",
			"shutdownDelay", shutdownDelay.String())
		select {
		case <-time.After(shutdownDelay):
		case <-c:
		}
		cancel()
		<-c
		os.Exit(1)
	}()
	return ctx
}

// checkModes returns an error for flags that contradict the injection mode, and whether copies are
// provisioned eagerly.
func checkModes(o options) (eager bool, err error) {
	if o.provision != provisionLazy && o.provision != provisionEager {
		return false, fmt.Errorf("--provision=%q: want %q or %q", o.provision, provisionLazy, provisionEager)
	}
	switch o.injection {
	case injectionWebhook:
		return o.provision == provisionEager, nil
	case injectionPolicy:
	default:
		return false, fmt.Errorf("--injection=%q: want %q or %q", o.injection, injectionWebhook, injectionPolicy)
	}
	// The API server adds the references without a call here, so the copies must exist before the Pods.
	if o.provisionSet && o.provision == provisionLazy {
		return false, fmt.Errorf("--provision=%s with --injection=%s: policy mode makes copies ahead of the Pods that need them", provisionLazy, injectionPolicy)
	}
	// No ServiceAccount is looked at in policy mode: nothing would be appended.
	if o.saSetByFlag && webhook.ServiceAccountMode(o.serviceAccountPullSecrets) == webhook.ServiceAccountAppend {
		return false, fmt.Errorf("--serviceaccount-pull-secrets=%s with --injection=%s: the policy cannot change ServiceAccounts",
			webhook.ServiceAccountAppend, injectionPolicy)
	}
	return true, nil
}

func run(ctx context.Context, o options, draining *atomic.Bool, setGC bool) error {
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&o.zap)))
	log := ctrl.Log.WithName("setup")

	eager, err := checkModes(o)
	if err != nil {
		return err
	}
	policyMode := o.injection == injectionPolicy
	var certProvider *certs.Provider
	var storeOpts []config.StoreOption
	if policyMode {
		if len(o.ignoredFlags) > 0 {
			log.Info("Policy mode runs no webhook server and needs no serving certificate: these flags are ignored",
				"flags", o.ignoredFlags)
		}
		// A configuration the policy cannot express exactly is refused, at start and on reload.
		storeOpts = append(storeOpts, config.WithCheck(policy.Check))
	} else {
		o.certs.CertDir = o.certDir
		if certProvider, err = certs.New(o.certs); err != nil {
			return err
		}
	}
	saMode := webhook.ServiceAccountMode(o.serviceAccountPullSecrets)
	if saMode != webhook.ServiceAccountSkip && saMode != webhook.ServiceAccountAppend {
		return fmt.Errorf("--serviceaccount-pull-secrets=%q: want %q or %q", saMode, webhook.ServiceAccountSkip, webhook.ServiceAccountAppend)
	}
	metrics.Register()
	store, err := config.NewStore(o.configPath, o.configReloadInterval, ctrl.Log.WithName("config"), metrics.ConfigReload, storeOpts...)
	if err != nil {
		return err
	}
	scheme, err := webhook.Scheme()
	if err != nil {
		return err
	}
	restConfig, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("load kubeconfig: %w", err)
	}
	cs, err := kubernetes.NewForConfig(restConfig)
	if err != nil {
		return fmt.Errorf("create clientset: %w", err)
	}
	if policyMode {
		if err := policy.Served(cs.Discovery()); err != nil {
			return err
		}
	}
	// The sources first: the copies' cache compares each copy's digest annotation with its source's.
	tracker := sources.New(cs, ctrl.Log.WithName("sources"))
	tracker.Set(store.Matcher().Sources())

	// Both servers: TLS 1.2 or later, and HTTP/2 only when asked for.
	serverTLS := func(c *tls.Config) {
		c.MinVersion = tls.VersionTLS12
		if !o.enableHTTP2 {
			c.NextProtos = []string{"http/1.1"}
		}
	}
	mgrOpts := ctrl.Options{
		Scheme:                        scheme,
		Cache:                         webhook.CacheOptions(store, tracker.Digest),
		LeaderElection:                o.leaderElect,
		LeaderElectionID:              o.leaderElectionID,
		LeaderElectionNamespace:       o.leaderElectionNamespace,
		LeaderElectionReleaseOnCancel: true,
		// The shutdown delay plus this stays inside the chart's terminationGracePeriodSeconds (30 s): the
		// admissions in flight end within the registration's timeoutSeconds anyway.
		GracefulShutdownTimeout: &gracefulShutdownTimeout,
		LeaseDuration:           &o.leaseDuration,
		RenewDeadline:           &o.renewDeadline,
		RetryPeriod:             &o.retryPeriod,
		Metrics:                 metricsOptions(o, serverTLS),
		HealthProbeBindAddress:  o.probeAddr,
	}
	if !policyMode {
		// The manager starts the webhook server only once something asks for it (webhook.SetupWithManager).
		mgrOpts.WebhookServer = ctrlwebhook.NewServer(ctrlwebhook.Options{
			Host:    o.webhookHost,
			Port:    o.webhookPort,
			CertDir: o.certDir,
			TLSOpts: []func(*tls.Config){certProvider.TLSOpt, serverTLS},
		})
	}
	mgr, err := ctrl.NewManager(restConfig, mgrOpts)
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("add health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("shutdown", func(*http.Request) error {
		if draining.Load() {
			return errors.New("shutting down")
		}
		return nil
	}); err != nil {
		return fmt.Errorf("add shutdown readiness check: %w", err)
	}
	recorder := events.New(mgr.GetEventRecorder(events.Controller), float32(o.eventsQPS), o.eventsBurst)
	health := sources.NewHealth(store, tracker, recorder, ctrl.Log.WithName("sources"))
	tracker.OnChange(health.Check)
	if policyMode {
		if err := mgr.AddReadyzCheck("informers", webhook.CacheSynced(mgr.GetCache(), tracker, nil)); err != nil {
			return fmt.Errorf("add informer readiness check: %w", err)
		}
	} else if err := webhook.SetupWithManager(ctx, mgr, webhook.Options{
		Config:          store,
		Sources:         tracker,
		Health:          health,
		Events:          recorder,
		ServiceAccounts: saMode,
		Draining:        draining.Load,
	}); err != nil {
		return err
	}

	// The reconciler's writes go through a client of their own, so that a rotation fanning out to every
	// copy queues behind its own rate limit, not in front of the admission path's creates; and that limit
	// adapts, so that the fan-out yields to admissions when the API server slows down.
	reconcilerConfig := rest.CopyConfig(restConfig)
	limiter := ratelimit.New(o.reconcilerQPS, o.reconcilerBurst, func(d ratelimit.Decision, perSecond float64) {
		metrics.ReconcilerRate(string(d), perSecond)
	})
	reconcilerConfig.RateLimiter = limiter
	reconcilerConfig.Wrap(limiter.Transport)
	reconcilerClient, err := client.New(reconcilerConfig, client.Options{Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper()})
	if err != nil {
		return fmt.Errorf("create reconciler client: %w", err)
	}
	reconcilerREST, err := kubernetes.NewForConfig(reconcilerConfig)
	if err != nil {
		return fmt.Errorf("create reconciler clientset: %w", err)
	}
	trigger, err := reconciler.SetupWithManager(ctx, mgr, store, tracker, reconcilerClient, reconciler.Options{
		Pods:              reconcilerREST.CoreV1().RESTClient(),
		Workers:           o.reconcilerWorkers,
		ResyncPeriod:      o.resyncPeriod,
		RevocationRecheck: o.revocationRecheck,
		Events:            recorder,
		Provision:         eager,
	})
	if err != nil {
		return err
	}
	// In policy mode the leader keeps the policy objects in step; in webhook mode it deletes them, in case
	// the cluster went back from policy mode.
	syncer := policy.NewSyncer()
	syncer.Client, syncer.Config, syncer.Enabled = cs, store, policyMode
	syncer.Options = policy.Options{PolicyName: o.policyName}
	syncer.Log = ctrl.Log.WithName("policy")
	if o.policyOwner != "" {
		syncer.Owner = policy.ClusterRoleOwner(cs.RbacV1(), o.policyOwner)
	}
	tracker.OnChange(trigger.SourceChanged)
	store.Subscribe(func(m *config.Matcher) {
		tracker.Set(m.Sources())
		health.CheckAll()
		syncer.Trigger()
		trigger.All()
	})
	for _, r := range []manager.Runnable{store, health, health.CheckWhenSynced(tracker.HasSynced), syncer} {
		if err := mgr.Add(r); err != nil {
			return fmt.Errorf("add %T: %w", r, err)
		}
	}
	if !policyMode {
		if err := certProvider.SetupWithManager(mgr); err != nil {
			return err
		}
		if err := metrics.RegisterCertificateExpiry(certProvider.NotAfter); err != nil {
			return fmt.Errorf("register certificate expiry metric: %w", err)
		}
	}

	provision := provisionLazy
	if eager {
		provision = provisionEager
	}
	kv := []any{"injection", o.injection, "provision", provision, "registries", len(store.Matcher().Entries()), "leaderElection", o.leaderElect}
	if policyMode {
		kv = append(kv, "policyName", o.policyName)
	} else {
		kv = append(kv, "webhookPort", o.webhookPort, "path", webhook.Path)
	}
	log.Info("Starting", kv...)
	// Not a runnable of the manager, which would start it only once its caches have synced: the copies'
	// cache waits for the sources (sources.DigestWait), and every handler is registered by now.
	go func() { _ = tracker.Start(ctx) }()
	if setGC {
		go func() {
			if mgr.GetCache().WaitForCacheSync(ctx) {
				debug.SetGCPercent(defaultGCPercent)
				// What the first list left free goes back to the kernel now, not over the next minutes.
				debug.FreeOSMemory()
			}
		}()
	}
	if err := mgr.Start(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("run manager: %w", err)
	}
	return nil
}
