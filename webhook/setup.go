package webhook

import (
	"context"
	"fmt"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/pullsecret-injector/pullsecret-injector/config"
)

// CacheOptions returns the informer cache the injector reads from: every Secret in the source namespaces,
// only the managed copies elsewhere, and namespaces as metadata. Nothing else in the cluster is cached,
// so memory does not grow with the cluster's other Secrets.
func CacheOptions(cfg *config.Config) cache.Options {
	secretNamespaces := map[string]cache.Config{
		cache.AllNamespaces: {LabelSelector: labels.SelectorFromSet(labels.Set{ManagedByLabel: ManagedByValue})},
	}
	for _, ns := range cfg.SourceNamespaces() {
		secretNamespaces[ns] = cache.Config{}
	}
	return cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}: {Namespaces: secretNamespaces},
		},
	}
}

// SetupWithManager registers the injector at Path on the manager's webhook server, starts the informers it
// reads from so that readiness waits for them, and adds the readiness checks.
func SetupWithManager(ctx context.Context, mgr ctrl.Manager, matcher *config.Matcher) error {
	ns := &metav1.PartialObjectMetadata{}
	ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	for _, obj := range []client.Object{ns, &corev1.Secret{}} {
		if _, err := mgr.GetCache().GetInformer(ctx, obj); err != nil {
			return fmt.Errorf("start informer for %T: %w", obj, err)
		}
	}
	injector := &Injector{
		Matcher:   matcher,
		Cache:     mgr.GetCache(),
		APIReader: mgr.GetAPIReader(),
		Writer:    mgr.GetClient(),
		Decoder:   admission.NewDecoder(mgr.GetScheme()),
	}
	mgr.GetWebhookServer().Register(Path, &ctrlwebhook.Admission{Handler: injector})
	if err := mgr.AddReadyzCheck("webhook-server", mgr.GetWebhookServer().StartedChecker()); err != nil {
		return fmt.Errorf("add webhook readiness check: %w", err)
	}
	if err := mgr.AddReadyzCheck("informers", cacheSynced(mgr.GetCache())); err != nil {
		return fmt.Errorf("add informer readiness check: %w", err)
	}
	return nil
}

// cacheSynced fails until the informers have synced, so no request is answered from an empty cache by a
// replica that has just started.
func cacheSynced(c cache.Cache) func(*http.Request) error {
	return func(req *http.Request) error {
		ctx, cancel := context.WithTimeout(req.Context(), 100*time.Millisecond)
		defer cancel()
		if !c.WaitForCacheSync(ctx) {
			return fmt.Errorf("informer caches not synced")
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
