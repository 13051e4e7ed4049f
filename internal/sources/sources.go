// Package sources keeps the configured source Secrets in memory: one informer per source, narrowed to
// that one Secret by a field selector, started and stopped as the configuration changes. Nothing else in
// a source namespace is cached, so a source namespace shared with other workloads costs nothing.
package sources

import (
	"context"
	"sync"
	"time"

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

	// started is closed by Start. startWait bounds how long Digest waits, in all, for the first sync.
	started   chan struct{}
	startWait time.Duration
	waitOnce  sync.Once
	waitUntil time.Time
}

// DigestWait is how long, at most, Digest waits in all for the sources' informers to start and list
// them: the copies' cache lists at the same time as they do, and a digest it cannot compare yet costs
// memory per copy (see managed.TrimCopyMetadataFunc).
const DigestWait = 10 * time.Second

type sourceInformer struct {
	informer toolscache.SharedIndexInformer
	cancel   context.CancelFunc

	// digestRV and digest are the source's DigestString at resourceVersion digestRV, so that every caller
	// gets the same string for the same bytes; guarded by Tracker.mu.
	digestRV, digest string
}

// New returns a Tracker that reads through client.
func New(client kubernetes.Interface, log logr.Logger) *Tracker {
	return &Tracker{client: client, log: log, watched: map[config.SecretRef]*sourceInformer{}, started: make(chan struct{}),
		startWait: DigestWait}
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
	close(t.started)
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

// Digest returns the managed.DigestString of the source ref names, "" when it does not exist or cannot be
// copied, the same string for as long as its bytes do not change; known is false when ref is not tracked or
// its informer has not listed it. It implements managed.SourceDigest. At start it waits for the informers
// to list, DigestWait at most in all, so that the copies' cache, which lists at the same moment, can compare
// the copies' digests with their sources'.
func (t *Tracker) Digest(ref config.SecretRef) (digest string, known bool) {
	t.waitForStart(ref)
	t.mu.Lock()
	si := t.watched[ref]
	t.mu.Unlock()
	if si == nil || !si.informer.HasSynced() {
		return "", false
	}
	obj, exists, err := si.informer.GetStore().GetByKey(ref.String())
	if err != nil {
		return "", false
	}
	s, ok := obj.(*corev1.Secret)
	if !exists || !ok || !managed.Usable(s) {
		return "", true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if si.digestRV != s.ResourceVersion || si.digest == "" {
		si.digestRV, si.digest = s.ResourceVersion, managed.DigestString(s.Type, s.Data)
	}
	return si.digest, true
}

// waitForStart waits, within the tracker's start budget, until Start has run and ref's informer has
// listed, if ref is tracked.
func (t *Tracker) waitForStart(ref config.SecretRef) {
	t.waitOnce.Do(func() { t.waitUntil = time.Now().Add(t.startWait) })
	for time.Now().Before(t.waitUntil) {
		select {
		case <-t.started:
		default:
			time.Sleep(10 * time.Millisecond)
			continue
		}
		t.mu.Lock()
		si := t.watched[ref]
		t.mu.Unlock()
		if si == nil || si.informer.HasSynced() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
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
