package reconciler

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/internal/managed"
)

// provisioner finds the copies that eager provisioning wants and that do not exist yet: one per configured
// Secret name in every namespace its entry selects (opted in, selected by the entry, not terminating),
// except a source's own namespace. Reconciling such a request creates the copy (Decide returns Create),
// from its source, or as a placeholder until the source appears.
//
// It answers from the informers' own stores, without an API call and without copying a cached object:
// a namespace event costs one map lookup per configured Secret name, a pass over the cluster (a reload, a
// source appearing, the resync) one label match and one lookup per namespace and name. What it returns
// goes to the controller's queue, which holds each request once: about 100 bytes per copy still to make,
// so at most namespaces x configured names of them, and only until each is reconciled. The first pass on
// a cluster where nothing was provisioned yet is that bound: 50,000 namespaces and one Secret name queue
// about 5 MB, which drains at --reconciler-qps.
type provisioner struct {
	config *config.Store
	// namespaces is the namespace informer's store, copies the copies' informer's indexer (keys
	// "namespace/name"). Their objects are read, never changed.
	namespaces toolscache.Store
	copies     toolscache.Indexer
}

// newProvisioner returns a provisioner that reads mgr's namespace informer and copies, the copies'
// informer's indexer.
func newProvisioner(ctx context.Context, mgr ctrl.Manager, store *config.Store, copies toolscache.Indexer) (*provisioner, error) {
	inf, err := mgr.GetCache().GetInformer(ctx, managed.PartialNamespace())
	if err != nil {
		return nil, fmt.Errorf("get the namespaces' informer: %w", err)
	}
	shared, ok := inf.(toolscache.SharedIndexInformer)
	if !ok {
		return nil, fmt.Errorf("the namespaces' informer (%T) has no store to read", inf)
	}
	return &provisioner{config: store, namespaces: shared.GetStore(), copies: copies}, nil
}

// inNamespace returns a request for each copy that ns, as cached, gets and lacks; none from a nil p.
func (p *provisioner) inNamespace(ns *metav1.PartialObjectMetadata) []reconcile.Request {
	if p == nil {
		return nil
	}
	m := p.config.Matcher()
	var reqs []reconcile.Request
	for _, src := range m.Sources() {
		if req, ok := p.wanted(m, src.Name, ns); ok {
			reqs = append(reqs, req)
		}
	}
	return reqs
}

// everywhere returns a request for each copy named name (each configured name when name is "") that a
// cached namespace gets and lacks; none from a nil p.
func (p *provisioner) everywhere(name string) []reconcile.Request {
	if p == nil {
		return nil
	}
	m := p.config.Matcher()
	var names []string
	for _, src := range m.Sources() {
		if name == "" || src.Name == name {
			names = append(names, src.Name)
		}
	}
	if len(names) == 0 {
		return nil
	}
	var reqs []reconcile.Request
	for _, obj := range p.namespaces.List() {
		ns, ok := obj.(*metav1.PartialObjectMetadata)
		if !ok {
			continue
		}
		for _, n := range names {
			if req, ok := p.wanted(m, n, ns); ok {
				reqs = append(reqs, req)
			}
		}
	}
	return reqs
}

// wanted returns the request for the copy name in ns, when ns gets it and the cache has none.
func (p *provisioner) wanted(m *config.Matcher, name string, ns *metav1.PartialObjectMetadata) (reconcile.Request, bool) {
	entry := m.EntryForSecret(name)
	if entry == nil || m.IsSource(ns.Name, name) || !selects(m, entry, ns) {
		return reconcile.Request{}, false
	}
	if _, exists, err := p.copies.GetByKey(ns.Name + "/" + name); err != nil || exists {
		return reconcile.Request{}, false
	}
	// The configured name and the cached namespace's name: no string is made per request but the key above.
	return reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ns.Name, Name: entry.Registry.Secret.Name}}, true
}

// createdNote returns the Event note (a format with the source) and the log message of a copy the
// reconciler created.
func (r *Reconciler) createdNote() (note, msg string) {
	if r.Provision {
		return "Created from %s, ahead of the Pods that need it", "Created copy ahead of Pods"
	}
	return "Recreated from %s after it was deleted", "Recreated deleted copy"
}
