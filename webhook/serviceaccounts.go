package webhook

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/pullsecret-injector/pullsecret-injector/internal/managed"
)

// enforcingServiceAccounts caches the ServiceAccounts that enforce mountable secrets, and nothing of the
// others: a reflector lists and watches every ServiceAccount's metadata into it, and it keeps the
// namespace/name and resourceVersion of those whose annotation enforces. The webhook needs no more: a
// ServiceAccount that does not enforce is answered as one that does not exist. Every namespace has at least
// its default ServiceAccount, which an informer's cache would hold as an object of about 400 bytes; here
// it costs nothing once its event is handled. An entry (about 100 bytes) goes when its ServiceAccount stops
// enforcing or is deleted; how many there are is up to whoever may annotate ServiceAccounts, one per
// enforcing ServiceAccount. It is safe for concurrent use.
type enforcingServiceAccounts struct {
	lw toolscache.ListerWatcher

	mu sync.RWMutex
	// keys maps namespace/name to resourceVersion.
	keys map[string]string
	// synced is set by the first Replace, the reflector's first list.
	synced atomic.Bool
}

// newEnforcingServiceAccounts returns a cache of the enforcing ServiceAccounts that lists and watches
// their metadata through cfg. Start runs it.
func newEnforcingServiceAccounts(cfg *rest.Config) (*enforcingServiceAccounts, error) {
	mc, err := metadata.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("create metadata client: %w", err)
	}
	res := mc.Resource(corev1.SchemeGroupVersion.WithResource("serviceaccounts"))
	return &enforcingServiceAccounts{keys: map[string]string{}, lw: &toolscache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return res.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return res.Watch(ctx, o)
		},
	}}, nil
}

// Start runs the reflector until ctx ends.
func (s *enforcingServiceAccounts) Start(ctx context.Context) error {
	toolscache.NewReflectorWithOptions(s.lw, &metav1.PartialObjectMetadata{}, s, toolscache.ReflectorOptions{
		Name: "enforcing-serviceaccounts", TypeDescription: "ServiceAccount metadata",
	}).RunWithContext(ctx)
	return nil
}

// HasSynced reports whether the first list has been stored.
func (s *enforcingServiceAccounts) HasSynced() bool { return s.synced.Load() }

// resourceVersion returns the resourceVersion of the ServiceAccount key (namespace/name) when it enforces
// mountable secrets.
func (s *enforcingServiceAccounts) resourceVersion(key string) (string, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	rv, ok := s.keys[key]
	return rv, ok
}

// Transformer implements toolscache.TransformingStore: the reflector's first streamed list holds every
// ServiceAccount until it ends, trimmed rather than whole.
func (s *enforcingServiceAccounts) Transformer() toolscache.TransformFunc {
	return managed.TrimServiceAccountMetadata
}

func (s *enforcingServiceAccounts) set(obj any) error {
	m, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return fmt.Errorf("service account cache: unexpected %T", obj)
	}
	key := m.Namespace + "/" + m.Name
	s.mu.Lock()
	defer s.mu.Unlock()
	if managed.EnforcesMountableSecrets(m) {
		s.keys[key] = m.ResourceVersion
	} else {
		delete(s.keys, key)
	}
	return nil
}

// Add implements toolscache.ReflectorStore.
func (s *enforcingServiceAccounts) Add(obj any) error { return s.set(obj) }

// Update implements toolscache.ReflectorStore.
func (s *enforcingServiceAccounts) Update(obj any) error { return s.set(obj) }

// Delete implements toolscache.ReflectorStore.
func (s *enforcingServiceAccounts) Delete(obj any) error {
	if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	m, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return fmt.Errorf("service account cache: unexpected %T", obj)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.keys, m.Namespace+"/"+m.Name)
	return nil
}

// Replace implements toolscache.ReflectorStore.
func (s *enforcingServiceAccounts) Replace(objs []any, _ string) error {
	keys := map[string]string{}
	for _, obj := range objs {
		if m, ok := obj.(*metav1.PartialObjectMetadata); ok && managed.EnforcesMountableSecrets(m) {
			keys[m.Namespace+"/"+m.Name] = m.ResourceVersion
		}
	}
	s.mu.Lock()
	s.keys = keys
	s.mu.Unlock()
	s.synced.Store(true)
	return nil
}

// Resync implements toolscache.ReflectorStore.
func (*enforcingServiceAccounts) Resync() error { return nil }

// serviceAccountReader is the reader the injector reads from: ServiceAccounts' metadata from sas (one that
// does not enforce mountable secrets is not found), everything else from the manager's cache.
type serviceAccountReader struct {
	client.Reader
	sas *enforcingServiceAccounts
}

// Get implements client.Reader.
func (r serviceAccountReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	m, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok || m.GroupVersionKind() != managed.PartialServiceAccount().GroupVersionKind() {
		return r.Reader.Get(ctx, key, obj, opts...)
	}
	rv, enforcing := r.enforcing(key)
	if !enforcing {
		return apierrors.NewNotFound(corev1.Resource("serviceaccounts"), key.Name)
	}
	m.Namespace, m.Name, m.ResourceVersion = key.Namespace, key.Name, rv
	m.Annotations = map[string]string{managed.EnforceMountableSecretsAnnotation: "true"}
	return nil
}

// enforcing returns the resourceVersion of the ServiceAccount key when it enforces mountable secrets. The
// handler asks this rather than Get: for the usual ServiceAccount, which does not enforce, Get would build
// a metadata object and a NotFound error, with its formatted message, on every admission.
func (r serviceAccountReader) enforcing(key types.NamespacedName) (string, bool) {
	return r.sas.resourceVersion(key.Namespace + "/" + key.Name)
}
