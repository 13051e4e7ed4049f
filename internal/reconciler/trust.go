package reconciler

import (
	"context"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// writes is what the leader knows of the writes to copies beyond what its cache shows. A copy's digest
// annotation (managed.DigestAnnotation) says which bytes the copy was written with, and the cache shows it:
// the leader trusts it, without reading the copy, unless someone other than the leader itself has written
// the copy since the leader started watching it (a tenant can write the annotation with other data, or keep
// it while changing the data). Those writes are the watch events the leader did not cause: a create after
// the cache's first list, an update that moves the resourceVersion to one the leader's own write did not
// return. Such a copy is read once, and repaired if it differs.
//
// A write made while no leader runs has no event for the next leader to see: the copy is trusted as it is
// cached, and an edit that kept a current digest annotation stands until the copy is next written (the
// source rotates), someone writes it again while a leader runs, or the sweep a resync period after the
// leader starts reads it (see verifyPass).
//
// Both maps hold at most one entry per copy, of about 100 bytes, and are empty between rotations: own from
// the leader's write until its watch event (milliseconds) or the copy's next reconcile, foreign from
// another's write until the copy's next reconcile reads or writes it. A copy's delete removes both.
type writes struct {
	mu sync.Mutex
	// own maps a copy to the resourceVersion that the leader's last write to it returned.
	own map[types.NamespacedName]string
	// foreign holds the copies someone else wrote since the leader last read or wrote them.
	foreign map[types.NamespacedName]struct{}
}

// wrote records that the leader's write left the copy at key at resourceVersion: the copy holds what the
// write sent, whatever anyone wrote before.
func (w *writes) wrote(key types.NamespacedName, resourceVersion string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.own == nil {
		w.own = map[types.NamespacedName]string{}
	}
	w.own[key] = resourceVersion
	delete(w.foreign, key)
}

// observed records a watch event that shows the copy at key at resourceVersion: initial is true for the
// objects of the cache's first list (and their replay to a controller that starts on a new leader),
// which are what the leader starts from, not writes it saw happen.
func (w *writes) observed(key types.NamespacedName, resourceVersion string, initial bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if rv, ok := w.own[key]; ok && rv == resourceVersion {
		delete(w.own, key)
		return
	}
	if initial {
		return
	}
	if w.foreign == nil {
		w.foreign = map[types.NamespacedName]struct{}{}
	}
	w.foreign[key] = struct{}{}
}

// trusted reports whether the copy at key, cached at resourceVersion, holds what its digest annotation
// says: nobody but the leader wrote it since the leader started watching it. A watch event seen before the
// leader's write returned is the leader's own when the versions match.
func (w *writes) trusted(key types.NamespacedName, resourceVersion string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if rv, ok := w.own[key]; ok && rv == resourceVersion {
		delete(w.own, key)
		delete(w.foreign, key)
		return true
	}
	_, foreign := w.foreign[key]
	return !foreign
}

// distrust makes the copy at key be read before it is next written: a write to it was refused as invalid,
// as for a copy made immutable or retyped, which only a read tells.
func (w *writes) distrust(key types.NamespacedName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.foreign == nil {
		w.foreign = map[types.NamespacedName]struct{}{}
	}
	w.foreign[key] = struct{}{}
}

// forget drops what is known of key: the copy was deleted, read in step, or is not a copy.
func (w *writes) forget(key types.NamespacedName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.own, key)
	delete(w.foreign, key)
}

// size returns the number of entries, for tests.
func (w *writes) size() (own, foreign int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.own), len(w.foreign)
}

// copyEvents enqueues every event on a copy, as handler.EnqueueRequestForObject does, and tells w which
// ones are writes the leader did not make.
func copyEvents(w *writes) handler.TypedEventHandler[*metav1.PartialObjectMetadata, reconcile.Request] {
	type queue = workqueue.TypedRateLimitingInterface[reconcile.Request]
	enqueue := func(q queue, obj *metav1.PartialObjectMetadata) {
		q.Add(reconcile.Request{NamespacedName: client.ObjectKeyFromObject(obj)})
	}
	return handler.TypedFuncs[*metav1.PartialObjectMetadata, reconcile.Request]{
		CreateFunc: func(_ context.Context, e event.TypedCreateEvent[*metav1.PartialObjectMetadata], q queue) {
			w.observed(client.ObjectKeyFromObject(e.Object), e.Object.ResourceVersion, e.IsInInitialList)
			enqueue(q, e.Object)
		},
		UpdateFunc: func(_ context.Context, e event.TypedUpdateEvent[*metav1.PartialObjectMetadata], q queue) {
			if e.ObjectOld.ResourceVersion != e.ObjectNew.ResourceVersion {
				w.observed(client.ObjectKeyFromObject(e.ObjectNew), e.ObjectNew.ResourceVersion, false)
			}
			enqueue(q, e.ObjectNew)
		},
		DeleteFunc: func(_ context.Context, e event.TypedDeleteEvent[*metav1.PartialObjectMetadata], q queue) {
			w.forget(client.ObjectKeyFromObject(e.Object))
			enqueue(q, e.Object)
		},
		GenericFunc: func(_ context.Context, e event.TypedGenericEvent[*metav1.PartialObjectMetadata], q queue) {
			enqueue(q, e.Object)
		},
	}
}
