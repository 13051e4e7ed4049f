package webhook

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/internal/events"
	"github.com/pullsecret-injector/pullsecret-injector/internal/managed"
	sourcecache "github.com/pullsecret-injector/pullsecret-injector/internal/sources"
)

// Synced is what readiness waits for besides the manager's cache: the source Secrets' informers.
type Synced interface {
	HasSynced() bool
}

// Options are what SetupWithManager wires the injector to.
type Options struct {
	// Config is the configuration in force.
	Config *config.Store
	// Sources reads the source Secrets; readiness waits for it to sync.
	Sources interface {
		sourcecache.Reader
		Synced
	}
	// Health says which sources hold a credential that cannot work, for the admission warnings.
	Health CredentialProblems
	// Events records Events on the copies created.
	Events *events.Recorder
	// ServiceAccounts: see Injector.ServiceAccounts.
	ServiceAccounts ServiceAccountMode
	// Draining reports that the process is shutting down: responses then close their connections, so
	// that the API server opens new ones, which reach other replicas, instead of reusing one that this
	// replica is about to close under a request in flight (a POST the API server does not retry, refused
	// by failurePolicy Fail).
	Draining func() bool
}

// SetupWithManager registers the injector at Path on the manager's webhook server, starts the informers it
// reads from so that readiness waits for them, and adds the readiness checks.
func SetupWithManager(ctx context.Context, mgr ctrl.Manager, o Options) error {
	for _, obj := range []client.Object{managed.PartialNamespace(), managed.PartialSecret()} {
		if _, err := mgr.GetCache().GetInformer(ctx, obj); err != nil {
			return fmt.Errorf("start informer for %s: %w", obj.GetObjectKind().GroupVersionKind().Kind, err)
		}
	}
	sas, err := newEnforcingServiceAccounts(mgr.GetConfig())
	if err != nil {
		return err
	}
	// Not a runnable of the manager, which would start it only once its caches have synced: it lists at
	// the same time as they do, and readiness waits for it too.
	go func() { _ = sas.Start(ctx) }()
	injector := &Injector{
		Config:    o.Config,
		Sources:   o.Sources,
		Health:    o.Health,
		Cache:     serviceAccountReader{Reader: mgr.GetCache(), sas: sas},
		APIReader: mgr.GetAPIReader(),
		Writer:    mgr.GetClient(),
		Events:    o.Events,

		ServiceAccounts: o.ServiceAccounts,
	}
	mgr.GetWebhookServer().Register(Path, withBudget(admissionWebhook(injector), o.Draining))
	if err := mgr.AddReadyzCheck("webhook-server", mgr.GetWebhookServer().StartedChecker()); err != nil {
		return fmt.Errorf("add webhook readiness check: %w", err)
	}
	if err := mgr.AddReadyzCheck("informers", CacheSynced(mgr.GetCache(), o.Sources, sas)); err != nil {
		return fmt.Errorf("add informer readiness check: %w", err)
	}
	return nil
}

// admissionWebhook serves h as an admission webhook, as the webhook server runs it.
func admissionWebhook(h admission.Handler) *ctrlwebhook.Admission {
	return &ctrlwebhook.Admission{Handler: h, LogConstructor: requestLogger}
}

const (
	// defaultTimeout is the API server's own default for a webhook call, used when a request does not say.
	defaultTimeout = 10 * time.Second
	// maxMargin caps what is kept back from a request's timeout for the answer to reach the API server.
	maxMargin = time.Second
)

// Budget returns how long the handler may spend on a request that the API server will wait timeout for:
// timeout less a fifth of it, and never less than all but maxMargin of it.
func Budget(timeout time.Duration) time.Duration {
	return timeout - min(timeout/5, maxMargin)
}

// withBudget gives each request a deadline from the timeout the API server sends in the URL (?timeout=5s,
// from the registration's timeoutSeconds), so that API calls the handler makes under a burst or against a
// slow API server end in time for it to answer, with the Pod's references, before the API server gives up
// and applies the failure policy.
// While draining, it also closes each connection after its response (see SetupWithManager).
func withBudget(next http.Handler, draining func() bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if draining() {
			w.Header().Set("Connection", "close")
		}
		timeout := defaultTimeout
		if d, err := time.ParseDuration(r.URL.Query().Get("timeout")); err == nil && d > 0 {
			timeout = d
		}
		ctx, cancel := context.WithTimeout(r.Context(), Budget(timeout))
		defer cancel()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// CacheSynced is a readiness check that fails until the informers have synced, so no request is answered
// from an empty cache by a replica that has just started. Sources added by a reload later do not make a
// serving replica unready: until their informers list, the handler reads them from the API server.
// serviceAccounts is nil where no ServiceAccount cache runs (policy mode).
func CacheSynced(c cache.Cache, sources, serviceAccounts Synced) func(*http.Request) error {
	var sourcesSynced atomic.Bool
	return func(req *http.Request) error {
		ctx, cancel := context.WithTimeout(req.Context(), 100*time.Millisecond)
		defer cancel()
		if !c.WaitForCacheSync(ctx) {
			return fmt.Errorf("informer caches not synced")
		}
		if serviceAccounts != nil && !serviceAccounts.HasSynced() {
			return fmt.Errorf("service account cache not synced")
		}
		if !sourcesSynced.Load() {
			if !sources.HasSynced() {
				return fmt.Errorf("source secret informers not synced")
			}
			sourcesSynced.Store(true)
		}
		return nil
	}
}
