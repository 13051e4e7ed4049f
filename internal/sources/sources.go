// Package sources keeps the configured source Secrets in memory: one informer per source, narrowed to
// that one Secret by a field selector, started and stopped as the configuration changes. Nothing else in
// a source namespace is cached, so a source namespace shared with other workloads costs nothing.
package sources

import (
	"context"
	"sync"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/internal/managed"
	"github.com/pullsecret-injector/pullsecret-injector/internal/redact"
)

// Reader answers reads of the configured source Secrets from memory. synced is false when it cannot answer
// (the source is not tracked, or its informer has not listed it yet): the caller then reads the API server.
type Reader interface {
	Get(ref config.SecretRef) (secret *corev1.Secret, synced bool)
}

// Static is a Reader over a fixed set of sources, synced from the start: for tools and tests.
type Static map[config.SecretRef]*corev1.Secret

// Get implements Reader.
func (s Static) Get(ref config.SecretRef) (*corev1.Secret, bool) { return s[ref], true }

// Handler is told about every change to a source Secret, including its creation and deletion.
type Handler func(ref config.SecretRef)

// Tracker caches the configured source Secrets. It is safe for concurrent use.
type Tracker struct {
	client kubernetes.Interface
	log    logr.Logger

	mu       sync.Mutex
	ctx      context.Context // set by Start; informers of sources added later run under it
	watched  map[config.SecretRef]*sourceInformer
	handlers []Handler
}

type sourceInformer struct {
	informer toolscache.SharedIndexInformer
	cancel   context.CancelFunc
}

// New returns a Tracker that reads through client.
func New(client kubernetes.Interface, log logr.Logger) *Tracker {
	return &Tracker{client: client, log: log, watched: map[config.SecretRef]*sourceInformer{}}
}

// OnChange registers h. Register before Start: events are not replayed for late handlers.
func (t *Tracker) OnChange(h Handler) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.handlers = append(t.handlers, h)
}

// Set makes the tracked sources exactly refs: informers start for new ones (at once when the Tracker runs,
// otherwise at Start) and stop for the ones no longer configured.
func (t *Tracker) Set(refs []config.SecretRef) {
	t.mu.Lock()
	defer t.mu.Unlock()
	want := make(map[config.SecretRef]bool, len(refs))
	for _, ref := range refs {
		want[ref] = true
		if _, ok := t.watched[ref]; !ok {
			t.watched[ref] = t.newInformer(ref)
			if t.ctx != nil {
				t.run(t.watched[ref])
			}
		}
	}
	for ref, si := range t.watched {
		if !want[ref] {
			if si.cancel != nil {
				si.cancel()
			}
			delete(t.watched, ref)
		}
	}
}

// NeedLeaderElection is false: every replica answers admissions from these informers.
func (*Tracker) NeedLeaderElection() bool { return false }

// Start runs the informers until ctx ends. It implements manager.Runnable.
func (t *Tracker) Start(ctx context.Context) error {
	t.mu.Lock()
	t.ctx = ctx
	for _, si := range t.watched {
		t.run(si)
	}
	t.mu.Unlock()
	<-ctx.Done()
	return nil
}

func (t *Tracker) run(si *sourceInformer) {
	ctx, cancel := context.WithCancel(t.ctx)
	si.cancel = cancel
	go si.informer.RunWithContext(ctx)
}

// Get returns the source Secret ref names, nil when it does not exist. synced is false while the informer
// of ref has not finished its first list, or ref is not tracked: the answer then means nothing and the
// caller reads the API server instead. The Secret belongs to the cache and must not be modified.
func (t *Tracker) Get(ref config.SecretRef) (secret *corev1.Secret, synced bool) {
	t.mu.Lock()
	si := t.watched[ref]
	t.mu.Unlock()
	if si == nil || !si.informer.HasSynced() {
		return nil, false
	}
	obj, exists, err := si.informer.GetStore().GetByKey(ref.String())
	if err != nil || !exists {
		return nil, err == nil
	}
	s, ok := obj.(*corev1.Secret)
	return s, ok
}

// HasSynced reports whether every tracked source's informer has finished its first list.
func (t *Tracker) HasSynced() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, si := range t.watched {
		if !si.informer.HasSynced() {
			return false
		}
	}
	return true
}

func (t *Tracker) newInformer(ref config.SecretRef) *sourceInformer {
	lw := toolscache.NewFilteredListWatchFromClient(t.client.CoreV1().RESTClient(), "secrets", ref.Namespace,
		func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", ref.Name).String()
		})
	inf := toolscache.NewSharedIndexInformer(lw, &corev1.Secret{}, 0, toolscache.Indexers{})
	_ = inf.SetTransform(func(obj any) (any, error) {
		if s, ok := obj.(*corev1.Secret); ok {
			s.ManagedFields = nil
		}
		return obj, nil
	})
	log := t.log.WithValues("source", ref.String())
	_, _ = inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			t.report(log, obj)
			t.notify(ref)
		},
		UpdateFunc: func(oldObj, newObj any) {
			o, n := oldObj.(*corev1.Secret), newObj.(*corev1.Secret)
			if o.ResourceVersion == n.ResourceVersion {
				return // a resync, not a change
			}
			if o.Type != n.Type {
				t.report(log, n)
			}
			t.notify(ref)
		},
		DeleteFunc: func(any) {
			log.Info("Source secret deleted; its copies are kept for the Pods that use them")
			t.notify(ref)
		},
	})
	return &sourceInformer{informer: inf}
}

// report logs a source that cannot be copied, once per change that makes it so.
func (t *Tracker) report(log logr.Logger, obj any) {
	s, ok := obj.(*corev1.Secret)
	if !ok || managed.Usable(s) {
		return
	}
	log.Info("Source secret has the wrong type; it is not copied and copies keep their last good data",
		"type", redact.Text(string(s.Type)), "want", string(corev1.SecretTypeDockerConfigJson))
}

func (t *Tracker) notify(ref config.SecretRef) {
	t.mu.Lock()
	handlers := t.handlers
	t.mu.Unlock()
	for _, h := range handlers {
		h(ref)
	}
}
