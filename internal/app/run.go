// Package app wires the pullsecret-injector process: it turns the command line into Options, and Run
// builds the controller-runtime manager (its scheme and the cache every part reads from, in cache.go),
// connects the configuration, the source Secrets, their health, the admission webhook or the policy, the
// reconciler and the serving certificates to it, and runs it. Each part's logic is in its own package;
// what is here decides only which part runs, with what, and in which order.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/pullsecret-injector/pullsecret-injector/certs"
	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/internal/events"
	"github.com/pullsecret-injector/pullsecret-injector/internal/metrics"
	"github.com/pullsecret-injector/pullsecret-injector/internal/policy"
	"github.com/pullsecret-injector/pullsecret-injector/internal/ratelimit"
	"github.com/pullsecret-injector/pullsecret-injector/internal/reconciler"
	"github.com/pullsecret-injector/pullsecret-injector/internal/sources"
	"github.com/pullsecret-injector/pullsecret-injector/internal/version"
	"github.com/pullsecret-injector/pullsecret-injector/webhook"
)

// gracefulShutdownTimeout bounds the drain after the shutdown delay.
var gracefulShutdownTimeout = 20 * time.Second

// process holds the parts Run builds, for the steps that connect them.
type process struct {
	o          *Options
	store      *config.Store
	restConfig *rest.Config
	clientset  *kubernetes.Clientset
	tracker    *sources.Tracker
	// certs provides the webhook's serving certificate; nil in policy mode.
	certs    *certs.Provider
	mgr      ctrl.Manager
	recorder *events.Recorder
	health   *sources.Health
}

// Run validates o, builds the process and runs it until ctx ends. draining is set from the first signal
// on (see main's signalContext): readiness fails and admissions close their connections. cachesSynced,
// when not nil, is called once the manager's caches have made their first list.
func Run(ctx context.Context, o Options, draining *atomic.Bool, cachesSynced func()) error {
	if err := o.Validate(); err != nil {
		return err
	}
	log := ctrl.Log.WithName("setup")
	if ignored := o.ignoredFlags(); len(ignored) > 0 {
		log.Info("Policy mode runs no webhook server and needs no serving certificate: these flags are ignored",
			"flags", ignored)
	}
	p, err := connect(&o)
	if err != nil {
		return err
	}
	if p.mgr, err = p.newManager(); err != nil {
		return err
	}
	if err := p.wire(ctx, draining); err != nil {
		return err
	}
	logStart(log, &o, p.store)
	// Not a runnable of the manager, which would start it only once its caches have synced: the copies'
	// cache waits for the sources (sources.DigestWait), and every handler is registered by now.
	go func() { _ = p.tracker.Start(ctx) }()
	if cachesSynced != nil {
		go func() {
			if p.mgr.GetCache().WaitForCacheSync(ctx) {
				cachesSynced()
			}
		}()
	}
	if err := p.mgr.Start(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("run manager: %w", err)
	}
	return nil
}

// connect reads the configuration, makes the certificate provider in webhook mode, connects to the API
// server, and starts tracking the configured sources: what the manager is built from.
func connect(o *Options) (*process, error) {
	p := &process{o: o}
	var storeOpts []config.StoreOption
	var err error
	if o.policyMode() {
		// A configuration the policy cannot express exactly is refused, at start and on reload.
		storeOpts = append(storeOpts, config.WithCheck(policy.Check))
	} else if p.certs, err = certs.New(o.certs); err != nil {
		return nil, err
	}
	metrics.Register()
	if p.store, err = config.NewStore(o.configPath, o.configReloadInterval, ctrl.Log.WithName("config"), metrics.ConfigReload, storeOpts...); err != nil {
		return nil, err
	}
	if p.restConfig, err = ctrl.GetConfig(); err != nil {
		return nil, fmt.Errorf("load kubeconfig: %w", err)
	}
	if p.clientset, err = kubernetes.NewForConfig(p.restConfig); err != nil {
		return nil, fmt.Errorf("create clientset: %w", err)
	}
	if o.policyMode() {
		if err := policy.Served(p.clientset.Discovery()); err != nil {
			return nil, err
		}
	}
	// The sources first: the copies' cache compares each copy's digest annotation with its source's.
	p.tracker = sources.New(p.clientset, ctrl.Log.WithName("sources"))
	p.tracker.Set(p.store.Matcher().Sources())
	return p, nil
}

// serverTLS is the TLS of both servers, webhook and metrics: TLS 1.2 or later, and HTTP/2 only when asked for.
func (o *Options) serverTLS(c *tls.Config) {
	c.MinVersion = tls.VersionTLS12
	if !o.enableHTTP2 {
		c.NextProtos = []string{"http/1.1"}
	}
}

// newManager builds the manager: its scheme and cache, leader election, metrics and probe servers, and in
// webhook mode the webhook server.
func (p *process) newManager() (ctrl.Manager, error) {
	o := p.o
	scheme, err := Scheme()
	if err != nil {
		return nil, err
	}
	mgrOpts := ctrl.Options{
		Scheme:                        scheme,
		Cache:                         CacheOptions(p.store, p.tracker.Digest),
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
		Metrics:                 o.metricsOptions(),
		HealthProbeBindAddress:  o.probeAddr,
	}
	if !o.policyMode() {
		// The manager starts the webhook server only once something asks for it (webhook.SetupWithManager).
		mgrOpts.WebhookServer = ctrlwebhook.NewServer(ctrlwebhook.Options{
			Host:    o.webhookHost,
			Port:    o.webhookPort,
			CertDir: o.certDir,
			TLSOpts: []func(*tls.Config){p.certs.TLSOpt, o.serverTLS},
		})
	}
	mgr, err := ctrl.NewManager(p.restConfig, mgrOpts)
	if err != nil {
		return nil, fmt.Errorf("create manager: %w", err)
	}
	return mgr, nil
}

// metricsOptions serves metrics the way current kubebuilder projects do: HTTPS, with every scrape
// authenticated and authorized by the API server, unless --metrics-secure=false.
func (o *Options) metricsOptions() metricsserver.Options {
	opts := metricsserver.Options{BindAddress: o.metricsAddr}
	if o.metricsSecure {
		opts.SecureServing = true
		opts.FilterProvider = metrics.WithAuthenticationAndAuthorization
		opts.CertDir = o.metricsCertDir
		// The webhook's certificate is for the webhook Service's name; the metrics endpoint keeps the TLS
		// version and HTTP/2 rules and takes its certificate from --metrics-cert-dir.
		opts.TLSOpts = []func(*tls.Config){o.serverTLS}
	}
	return opts
}

// wire connects the parts to the manager and to each other: probes, source health, admission (the webhook
// or, in policy mode, the readiness it would add), the reconciler, the policy syncer, what a reload
// changes, and the serving certificate.
func (p *process) wire(ctx context.Context, draining *atomic.Bool) error {
	if err := p.addProbes(draining); err != nil {
		return err
	}
	p.recorder = events.New(p.mgr.GetEventRecorder(events.Controller), float32(p.o.eventsQPS), p.o.eventsBurst)
	p.health = sources.NewHealth(p.store, p.tracker, p.recorder, ctrl.Log.WithName("sources"))
	p.tracker.OnChange(p.health.Check)
	if err := p.setupAdmission(ctx, draining); err != nil {
		return err
	}
	trigger, err := p.setupReconciler(ctx)
	if err != nil {
		return err
	}
	syncer := p.newPolicySyncer()
	p.tracker.OnChange(trigger.SourceChanged)
	p.store.Subscribe(func(m *config.Matcher) {
		p.tracker.Set(m.Sources())
		p.health.CheckAll()
		syncer.Trigger()
		trigger.All()
	})
	for _, r := range []manager.Runnable{p.store, p.health, p.health.CheckWhenSynced(p.tracker.HasSynced), syncer} {
		if err := p.mgr.Add(r); err != nil {
			return fmt.Errorf("add %T: %w", r, err)
		}
	}
	return p.setupCertificates()
}

// addProbes adds the liveness check and the readiness check that fails from the first signal on.
func (p *process) addProbes(draining *atomic.Bool) error {
	if err := p.mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("add health check: %w", err)
	}
	if err := p.mgr.AddReadyzCheck("shutdown", func(*http.Request) error {
		if draining.Load() {
			return errors.New("shutting down")
		}
		return nil
	}); err != nil {
		return fmt.Errorf("add shutdown readiness check: %w", err)
	}
	return nil
}

// setupAdmission registers the webhook; in policy mode, which serves no admission, it adds only the
// readiness check on the informers that the webhook's setup would add.
func (p *process) setupAdmission(ctx context.Context, draining *atomic.Bool) error {
	if p.o.policyMode() {
		if err := p.mgr.AddReadyzCheck("informers", webhook.CacheSynced(p.mgr.GetCache(), p.tracker, nil)); err != nil {
			return fmt.Errorf("add informer readiness check: %w", err)
		}
		return nil
	}
	return webhook.SetupWithManager(ctx, p.mgr, webhook.Options{
		Config:          p.store,
		Sources:         p.tracker,
		Health:          p.health,
		Events:          p.recorder,
		ServiceAccounts: webhook.ServiceAccountMode(p.o.serviceAccountPullSecrets),
		Draining:        draining.Load,
	})
}

// setupReconciler adds the reconciler, reading and writing through clients of its own.
func (p *process) setupReconciler(ctx context.Context) (reconciler.Trigger, error) {
	c, pods, err := p.reconcilerClients()
	if err != nil {
		return nil, err
	}
	return reconciler.SetupWithManager(ctx, p.mgr, reconciler.Options{
		Config:            p.store,
		Sources:           p.tracker,
		Client:            c,
		Pods:              pods,
		Workers:           p.o.reconcilerWorkers,
		ResyncPeriod:      p.o.resyncPeriod,
		RevocationRecheck: p.o.revocationRecheck,
		Events:            p.recorder,
		Provision:         p.o.eager(),
	})
}

// reconcilerClients returns the reconciler's own client, and a core/v1 REST client for its Pod lists, both
// with the same rate limit. The reconciler's requests go through them so that a rotation fanning out to
// every copy queues behind its own rate limit, not in front of the admission path's creates; and that
// limit adapts, so that the fan-out yields to admissions when the API server slows down.
func (p *process) reconcilerClients() (client.Client, rest.Interface, error) {
	cfg := rest.CopyConfig(p.restConfig)
	limiter := ratelimit.New(p.o.reconcilerQPS, p.o.reconcilerBurst, func(d ratelimit.Decision, perSecond float64) {
		metrics.ReconcilerRate(string(d), perSecond)
	})
	cfg.RateLimiter = limiter
	cfg.Wrap(limiter.Transport)
	c, err := client.New(cfg, client.Options{Scheme: p.mgr.GetScheme(), Mapper: p.mgr.GetRESTMapper()})
	if err != nil {
		return nil, nil, fmt.Errorf("create reconciler client: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("create reconciler clientset: %w", err)
	}
	return c, cs.CoreV1().RESTClient(), nil
}

// newPolicySyncer returns the leader's policy syncer: in policy mode it keeps the policy objects in step;
// in webhook mode it deletes them, in case the cluster went back from policy mode.
func (p *process) newPolicySyncer() *policy.Syncer {
	syncer := policy.NewSyncer()
	syncer.Client, syncer.Config, syncer.Enabled = p.clientset, p.store, p.o.policyMode()
	syncer.Options = policy.Options{PolicyName: p.o.policyName}
	syncer.Log = ctrl.Log.WithName("policy")
	if p.o.policyOwner != "" {
		syncer.Owner = policy.ClusterRoleOwner(p.clientset.RbacV1(), p.o.policyOwner)
	}
	return syncer
}

// setupCertificates runs the serving certificate's provider and serves its expiry, in webhook mode.
func (p *process) setupCertificates() error {
	if p.certs == nil {
		return nil
	}
	if err := p.certs.SetupWithManager(p.mgr); err != nil {
		return err
	}
	if err := metrics.RegisterCertificateExpiry(p.certs.NotAfter); err != nil {
		return fmt.Errorf("register certificate expiry metric: %w", err)
	}
	return nil
}

// logStart says what runs, once everything is wired.
func logStart(log logr.Logger, o *Options, store *config.Store) {
	provision := provisionLazy
	if o.eager() {
		provision = provisionEager
	}
	kv := []any{"version", version.Version, "commit", version.Commit, "goVersion", version.GoVersion(),
		"injection", o.injection, "provision", provision, "registries", len(store.Matcher().Entries()), "leaderElection", o.leaderElect}
	if o.policyMode() {
		kv = append(kv, "policyName", o.policyName)
	} else {
		kv = append(kv, "webhookPort", o.webhookPort, "path", webhook.Path)
	}
	log.Info("Starting", kv...)
}
