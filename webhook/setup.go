package webhook

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/internal/managed"
)

// CacheOptions returns the informer cache the webhook and the reconciler read from: the managed copies
// (Secrets labelled as managed, anywhere) and namespaces, both as trimmed metadata. No Secret data is
// cached here, so memory grows with the number of copies, never with their size or with the cluster's
// other Secrets; the source Secrets are cached apart, one informer each (package sources).
func CacheOptions() cache.Options {
	return cache.Options{
		ByObject: map[client.Object]cache.ByObject{
			managed.PartialSecret(): {
				Label:     labels.SelectorFromSet(labels.Set{managed.ManagedByLabel: managed.ManagedByValue}),
				Transform: managed.TrimCopyMetadata,
			},
			managed.PartialNamespace(): {Transform: managed.TrimNamespaceMetadata},
		},
	}
}

// Synced is what readiness waits for besides the manager's cache: the source Secrets' informers.
type Synced interface {
	HasSynced() bool
}

// SetupWithManager registers the injector at Path on the manager's webhook server, starts the informers it
// reads from so that readiness waits for them, and adds the readiness checks.
func SetupWithManager(ctx context.Context, mgr ctrl.Manager, store *config.Store, sources interface {
	SourceReader
	Synced
}) error {
	for _, obj := range []client.Object{managed.PartialNamespace(), managed.PartialSecret()} {
		if _, err := mgr.GetCache().GetInformer(ctx, obj); err != nil {
			return fmt.Errorf("start informer for %s: %w", obj.GetObjectKind().GroupVersionKind().Kind, err)
		}
	}
	injector := &Injector{
		Config:    store,
		Sources:   sources,
		Cache:     mgr.GetCache(),
		APIReader: mgr.GetAPIReader(),
		Writer:    mgr.GetClient(),
		Decoder:   admission.NewDecoder(mgr.GetScheme()),
	}
	mgr.GetWebhookServer().Register(Path, &ctrlwebhook.Admission{Handler: injector})
	if err := mgr.AddReadyzCheck("webhook-server", mgr.GetWebhookServer().StartedChecker()); err != nil {
		return fmt.Errorf("add webhook readiness check: %w", err)
	}
	if err := mgr.AddReadyzCheck("informers", cacheSynced(mgr.GetCache(), sources)); err != nil {
		return fmt.Errorf("add informer readiness check: %w", err)
	}
	return nil
}

// cacheSynced fails until the informers have synced, so no request is answered from an empty cache by a
// replica that has just started. Sources added by a reload later do not make a serving replica unready:
// until their informers list, the handler reads them from the API server.
func cacheSynced(c cache.Cache, sources Synced) func(*http.Request) error {
	var sourcesSynced atomic.Bool
	return func(req *http.Request) error {
		ctx, cancel := context.WithTimeout(req.Context(), 100*time.Millisecond)
		defer cancel()
		if !c.WaitForCacheSync(ctx) {
			return fmt.Errorf("informer caches not synced")
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

// Scheme returns the types the injector reads and writes.
func Scheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := corev1.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("add core/v1 to scheme: %w", err)
	}
	return s, nil
}
