// Package reconciler keeps managed copies in step with their sources and with the configuration: it
// updates copies when a source rotates, restores edited copies, recreates deleted ones, fills placeholders
// when their source appears, and deletes copies whose namespace no longer gets them. Only the leader runs it.
package reconciler

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/internal/events"
	"github.com/pullsecret-injector/pullsecret-injector/internal/managed"
	"github.com/pullsecret-injector/pullsecret-injector/internal/metrics"
	"github.com/pullsecret-injector/pullsecret-injector/internal/sources"
)

// notSyncedRetry is how soon a copy is looked at again when its source's informer has not listed yet,
// which happens for a few hundred milliseconds after a reload adds a source.
const notSyncedRetry = time.Second

// conflictRetry is how soon a write that lost a race with another writer is retried: the watch event of
// the other write usually comes first and makes the retry a no-op.
const conflictRetry = time.Second

// Reconciler reconciles one copy, named by its namespace and name, per call.
type Reconciler struct {
	// Config is the configuration in force.
	Config *config.Store
	// Sources answers reads of the source Secrets.
	Sources sources.Reader
	// Cache is the manager's cache: copies and namespaces as metadata.
	Cache client.Reader
	// APIReader reads copies, namespaces and Pods from the API server, with the reconciler's rate limits.
	APIReader client.Reader
	// Client writes copies, with the reconciler's rate limits.
	Client client.Writer
	// RevocationRecheck is how often a copy that no longer applies is looked at again while Pods still
	// use it, and how old a copy must be before it is deleted at all (replicas see a new configuration a
	// little apart, and a copy made by a replica that saw it first must not be deleted by one that did not).
	RevocationRecheck time.Duration
	// Events records Events on the copies written; nil records none.
	Events *events.Recorder

	mu sync.Mutex
	// verified remembers, per copy, the resourceVersion at which the copy was last seen to hold a source's
	// bytes, and which bytes. A copy whose resourceVersion has not moved since still holds them (etcd bumps
	// it on every write), so an unchanged copy costs no API call, however often it is looked at.
	verified map[types.NamespacedName]verifiedCopy
	// podUse remembers, per namespace, which Secrets its unfinished Pods reference, for podUseTTL: the Secrets
	// in the form of a copy in one namespace, however many a tenant makes, cost one Pod list per namespace
	// per TTL, not one each at every recheck.
	podUse map[string]podUse
}

type podUse struct {
	listed time.Time
	// users maps a Secret name to one unfinished Pod that references it.
	users map[string]string
}

type verifiedCopy struct {
	resourceVersion string
	digest          [sha256.Size]byte
	// keys are the data keys the copy holds, so an update can remove the ones the source dropped without
	// reading the copy.
	keys []string
}

// Action is what a copy needs, decided from what is known of it without an API call.
type Action int

const (
	// Forget means there is no copy and none is wanted.
	Forget Action = iota
	// Create means the copy is missing from a namespace that gets it (it was deleted).
	Create
	// Sync means the copy exists where it belongs; its data must match its source.
	Sync
	// Revoke means the copy exists where it no longer belongs.
	Revoke
	// Ignore means the object is not a copy this project may write.
	Ignore
)

// Decide returns what the copy key needs. exists and isManaged describe the Secret at key (isManaged: it has
// the form of a copy, see managed.IsCopy), isSource whether
// key is a configured source, hasEntry whether the configuration names a Secret of key's name, and
// selected whether key's namespace gets that Secret (opted in, selected by the entry, not terminating).
func Decide(exists, isManaged, isSource, hasEntry, selected bool) Action {
	switch {
	case isSource:
		return Ignore // sources are only ever read
	case exists && !isManaged:
		return Ignore // never write a Secret that is not ours, whatever its name
	case !exists && hasEntry && selected:
		return Create
	case !exists:
		return Forget
	case hasEntry && selected:
		return Sync
	default:
		return Revoke
	}
}

// Reconcile implements reconcile.Reconciler.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	key := req.NamespacedName
	m := r.Config.Matcher()
	cp := managed.PartialSecret()
	exists := true
	if err := r.Cache.Get(ctx, key, cp); apierrors.IsNotFound(err) {
		exists = false
	} else if err != nil {
		return reconcile.Result{}, fmt.Errorf("read copy %s from cache: %w", key, err)
	}
	entry := m.EntryForSecret(key.Name)
	selected := false
	if entry != nil {
		ns, err := r.namespace(ctx, r.Cache, key.Namespace)
		if err != nil {
			return reconcile.Result{}, err
		}
		selected = selects(m, entry, ns)
	}
	switch Decide(exists, exists && managed.IsCopy(cp), m.IsSource(key.Namespace, key.Name), entry != nil, selected) {
	case Create:
		return r.create(ctx, entry, key)
	case Sync:
		return r.sync(ctx, entry, cp)
	case Revoke:
		return r.revoke(ctx, m, entry, cp)
	case Ignore:
		logf.FromContext(ctx).V(1).Info("Not a copy this project may write, left alone")
		r.forget(key)
		return reconcile.Result{}, nil
	default:
		r.forget(key)
		return reconcile.Result{}, nil
	}
}

// selects reports whether ns (nil when it does not exist) gets entry's Secret.
func selects(m *config.Matcher, entry *config.Entry, ns *metav1.PartialObjectMetadata) bool {
	return ns != nil && ns.DeletionTimestamp == nil && m.Selects(entry, labels.Set(ns.Labels))
}

func (r *Reconciler) namespace(ctx context.Context, reader client.Reader, name string) (*metav1.PartialObjectMetadata, error) {
	ns := managed.PartialNamespace()
	if err := reader.Get(ctx, types.NamespacedName{Name: name}, ns); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("read namespace %q: %w", name, err)
	}
	return ns, nil
}

// create recreates a copy that was deleted from a namespace that still gets it.
func (r *Reconciler) create(ctx context.Context, entry *config.Entry, key types.NamespacedName) (reconcile.Result, error) {
	log := logf.FromContext(ctx)
	src, synced := r.Sources.Get(entry.Registry.Secret)
	if !synced {
		return reconcile.Result{RequeueAfter: notSyncedRetry}, nil
	}
	cp := managed.Placeholder(entry.Registry.Secret, key.Namespace)
	if src != nil && managed.Usable(src) {
		cp = managed.Copy(src, key.Namespace)
	}
	source := entry.Registry.Secret.String()
	if err := r.Client.Create(ctx, cp); err != nil {
		if apierrors.IsAlreadyExists(err) || apierrors.IsNotFound(err) {
			// Created meanwhile (its event follows), or the namespace is gone.
			return reconcile.Result{}, nil
		}
		metrics.CopyOperation(source, metrics.Failed)
		return reconcile.Result{}, fmt.Errorf("recreate copy %s: %w", key, err)
	}
	r.remember(cp)
	metrics.CopyOperation(source, metrics.Created)
	r.Events.Normal(cp, events.ReasonCopyCreated, events.ActionCreate, "Recreated from %s after it was deleted", source)
	log.Info("Recreated deleted copy", "source", source, "placeholder", src == nil || !managed.Usable(src))
	return reconcile.Result{}, nil
}

// sync brings a copy's data in line with its source, reading the copy only when it may have changed since
// it was last seen in step.
func (r *Reconciler) sync(ctx context.Context, entry *config.Entry, cached *metav1.PartialObjectMetadata) (reconcile.Result, error) {
	log := logf.FromContext(ctx)
	key := types.NamespacedName{Namespace: cached.Namespace, Name: cached.Name}
	src, synced := r.Sources.Get(entry.Registry.Secret)
	switch {
	case !synced:
		return reconcile.Result{RequeueAfter: notSyncedRetry}, nil
	case src == nil:
		// A deleted source deletes no copies: running Pods still need them. The source informer logs it.
		log.V(1).Info("Source secret missing, copy kept as it is", "source", entry.Registry.Secret.String())
		return reconcile.Result{}, nil
	case !managed.Usable(src):
		log.V(1).Info("Source secret has the wrong type, copy keeps its last good data", "source", entry.Registry.Secret.String())
		return reconcile.Result{}, nil
	}
	// The pass over an unchanged copy, the common one, computes a digest and allocates nothing else.
	wantDigest := managed.Digest(src.Type, src.Data)
	if v, ok := r.lookup(key); ok && v.resourceVersion == cached.ResourceVersion {
		if v.digest == wantDigest && cached.Annotations[managed.SourceAnnotation] == entry.Registry.Secret.String() {
			return reconcile.Result{}, nil
		}
		// Unchanged since it was verified: the source rotated. Update without reading the copy.
		return r.update(ctx, key, cached.ResourceVersion, v.keys, managed.Copy(src, key.Namespace), "source changed")
	}
	want := managed.Copy(src, key.Namespace)

	live := &corev1.Secret{}
	if err := r.APIReader.Get(ctx, key, live); err != nil {
		if apierrors.IsNotFound(err) {
			return reconcile.Result{}, nil // its delete event follows
		}
		return reconcile.Result{}, fmt.Errorf("read copy %s: %w", key, err)
	}
	switch {
	case !managed.IsCopy(live):
		r.forget(key)
		return reconcile.Result{}, nil
	case managed.InSync(live, src):
		r.remember(live)
		return reconcile.Result{}, nil
	case live.Type != want.Type || (live.Immutable != nil && *live.Immutable):
		// Neither can be changed in place.
		return r.replace(ctx, live, want)
	}
	return r.update(ctx, key, live.ResourceVersion, slices.Collect(maps.Keys(live.Data)), want, "copy differs from its source")
}

// update writes want's data and source annotation over the copy at key, which must still be at
// resourceVersion, removing the data keys in oldKeys that want does not have. A merge patch leaves the
// labels and annotations other tools put on the copy alone.
func (r *Reconciler) update(ctx context.Context, key types.NamespacedName, resourceVersion string, oldKeys []string,
	want *corev1.Secret, reason string) (reconcile.Result, error) {
	data := make(map[string]any, len(want.Data)+len(oldKeys))
	for _, k := range oldKeys {
		data[k] = nil
	}
	for k, v := range want.Data {
		data[k] = v // []byte marshals as base64, as the API expects
	}
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{
			// A precondition: the patch fails with a conflict if the copy changed since it was read.
			"resourceVersion": resourceVersion,
			"labels":          want.Labels,
			"annotations":     want.Annotations,
		},
		"data": data,
	})
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("build patch for copy %s: %w", key, err)
	}
	target := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
	if err := r.Client.Patch(ctx, target, client.RawPatch(types.MergePatchType, patch)); err != nil {
		r.forget(key)
		switch {
		case apierrors.IsConflict(err):
			return reconcile.Result{RequeueAfter: conflictRetry}, nil
		case apierrors.IsNotFound(err):
			return reconcile.Result{}, nil
		case apierrors.IsInvalid(err):
			// Made immutable since it was read: the next pass reads it and replaces it.
			return reconcile.Result{RequeueAfter: conflictRetry}, nil
		}
		metrics.CopyOperation(want.Annotations[managed.SourceAnnotation], metrics.Failed)
		r.Events.Warning(target, events.ReasonCopyFailed, events.ActionUpdate, "Cannot update from %s: %v",
			want.Annotations[managed.SourceAnnotation], err)
		return reconcile.Result{}, fmt.Errorf("update copy %s: %w", key, err)
	}
	r.remember(target)
	metrics.CopyOperation(want.Annotations[managed.SourceAnnotation], metrics.Updated)
	r.Events.Normal(target, events.ReasonCopyUpdated, events.ActionUpdate, "Updated from %s: %s", want.Annotations[managed.SourceAnnotation], reason)
	logf.FromContext(ctx).Info("Updated copy from its source", "reason", reason, "source", want.Annotations[managed.SourceAnnotation])
	return reconcile.Result{}, nil
}

// replace deletes live and creates want in its place, for the changes a Secret cannot take in place.
func (r *Reconciler) replace(ctx context.Context, live, want *corev1.Secret) (reconcile.Result, error) {
	key := client.ObjectKeyFromObject(live)
	r.forget(key)
	if err := r.Client.Delete(ctx, live, client.Preconditions{UID: &live.UID, ResourceVersion: &live.ResourceVersion}); err != nil {
		if apierrors.IsConflict(err) {
			return reconcile.Result{RequeueAfter: conflictRetry}, nil
		}
		if !apierrors.IsNotFound(err) {
			return reconcile.Result{}, fmt.Errorf("delete copy %s to replace it: %w", key, err)
		}
	}
	source := want.Annotations[managed.SourceAnnotation]
	if err := r.Client.Create(ctx, want); err != nil && !apierrors.IsAlreadyExists(err) {
		metrics.CopyOperation(source, metrics.Failed)
		return reconcile.Result{}, fmt.Errorf("create copy %s in place of the old one: %w", key, err)
	}
	r.remember(want)
	metrics.CopyOperation(source, metrics.Updated)
	r.Events.Normal(want, events.ReasonCopyReplaced, events.ActionUpdate,
		"Replaced with a copy of %s: its type or immutability differed from the source's", source)
	logf.FromContext(ctx).Info("Replaced copy whose type or immutability differed from its source")
	return reconcile.Result{}, nil
}

// revoke deletes a copy whose namespace no longer gets it, once no unfinished Pod in the namespace
// references it.
func (r *Reconciler) revoke(ctx context.Context, m *config.Matcher, entry *config.Entry, cached *metav1.PartialObjectMetadata) (reconcile.Result, error) {
	log := logf.FromContext(ctx)
	key := types.NamespacedName{Namespace: cached.Namespace, Name: cached.Name}
	if age := time.Since(cached.CreationTimestamp.Time); age < r.RevocationRecheck {
		return reconcile.Result{RequeueAfter: r.RevocationRecheck - age}, nil
	}
	reason := "no configured entry names this secret"
	// The metric's label comes from the configuration, never from the copy's annotation, which a tenant
	// can edit: a copy no entry names any more is counted under removedSource.
	source := removedSource
	if entry != nil {
		source = entry.Registry.Secret.String()
		// The cache may lag behind a namespace labelled a moment ago; deleting a copy a new Pod needs is
		// worse than a live read on this rare path.
		ns, err := r.namespace(ctx, r.APIReader, key.Namespace)
		if err != nil {
			return reconcile.Result{}, err
		}
		if selects(m, entry, ns) {
			return reconcile.Result{}, nil // the namespace event that says so follows
		}
		reason = "namespace is not selected for its entry"
		if ns == nil || ns.DeletionTimestamp != nil {
			return reconcile.Result{}, nil // the namespace's own deletion removes it
		}
	}
	pod, err := r.podUsing(ctx, key)
	if err != nil {
		return reconcile.Result{}, err
	}
	if pod != "" {
		log.V(1).Info("Copy no longer applies; deleting it waits for the Pods that use it", "reason", reason, "pod", pod)
		return reconcile.Result{RequeueAfter: r.RevocationRecheck}, nil
	}
	cp := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
	// The preconditions make sure the Secret deleted is the one seen carrying the managed-by label.
	if err := r.Client.Delete(ctx, cp, client.Preconditions{UID: &cached.UID, ResourceVersion: &cached.ResourceVersion}); err != nil {
		switch {
		case apierrors.IsNotFound(err):
			return reconcile.Result{}, nil
		case apierrors.IsConflict(err):
			return reconcile.Result{RequeueAfter: conflictRetry}, nil
		}
		metrics.CopyOperation(source, metrics.Failed)
		return reconcile.Result{}, fmt.Errorf("delete copy %s: %w", key, err)
	}
	r.forget(key)
	metrics.CopyOperation(source, metrics.Deleted)
	cp.UID = cached.UID
	r.Events.Normal(cp, events.ReasonCopyDeleted, events.ActionDelete, "Deleted: %s", reason)
	log.Info("Deleted copy that no longer applies", "reason", reason)
	return reconcile.Result{}, nil
}

// removedSource is the source label of the copies of an entry that was removed from the configuration.
const removedSource = "removed"

// podListPage bounds the memory a revocation check takes in a namespace with many Pods.
const podListPage = 500

// podUseTTL is how long a namespace's Pod list answers for all its revocation candidates. It is short
// beside the recheck, which bounds how late a copy goes after its last Pod.
func (r *Reconciler) podUseTTL() time.Duration {
	return min(r.RevocationRecheck/2, 5*time.Second)
}

// podUsing returns the name of an unfinished Pod in key's namespace whose imagePullSecrets name key's
// Secret, or "" when there is none.
func (r *Reconciler) podUsing(ctx context.Context, key types.NamespacedName) (string, error) {
	now := time.Now()
	r.mu.Lock()
	use, ok := r.podUse[key.Namespace]
	r.mu.Unlock()
	if ok && now.Sub(use.listed) < r.podUseTTL() {
		return use.users[key.Name], nil
	}
	// Only the names of copies in the namespace are kept: the Pods' other references are theirs to choose,
	// as many as they like.
	copies := &metav1.PartialObjectMetadataList{}
	copies.SetGroupVersionKind(managed.SecretGVK.GroupVersion().WithKind("SecretList"))
	if err := r.Cache.List(ctx, copies, client.InNamespace(key.Namespace)); err != nil {
		return "", fmt.Errorf("list cached copies in namespace %q: %w", key.Namespace, err)
	}
	names := make(map[string]bool, len(copies.Items)+1)
	names[key.Name] = true
	for i := range copies.Items {
		names[copies.Items[i].Name] = true
	}
	users := map[string]string{}
	opts := []client.ListOption{client.InNamespace(key.Namespace), client.Limit(podListPage)}
	for {
		pods := &corev1.PodList{}
		if err := r.APIReader.List(ctx, pods, opts...); err != nil {
			return "", fmt.Errorf("list pods in namespace %q: %w", key.Namespace, err)
		}
		for i := range pods.Items {
			p := &pods.Items[i]
			if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
				continue
			}
			for _, ref := range p.Spec.ImagePullSecrets {
				if names[ref.Name] {
					users[ref.Name] = p.Name
				}
			}
		}
		if pods.Continue == "" {
			break
		}
		opts = []client.ListOption{client.InNamespace(key.Namespace), client.Limit(podListPage), client.Continue(pods.Continue)}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.podUse == nil {
		r.podUse = map[string]podUse{}
	}
	for ns, u := range r.podUse { // keep only what can still answer
		if now.Sub(u.listed) >= r.podUseTTL() {
			delete(r.podUse, ns)
		}
	}
	r.podUse[key.Namespace] = podUse{listed: now, users: users}
	return users[key.Name], nil
}

func (r *Reconciler) lookup(key types.NamespacedName) (verifiedCopy, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.verified[key]
	return v, ok
}

// remember records that cp, as returned by the API server, holds its data.
func (r *Reconciler) remember(cp *corev1.Secret) {
	if cp.ResourceVersion == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.verified == nil {
		r.verified = map[types.NamespacedName]verifiedCopy{}
	}
	r.verified[client.ObjectKeyFromObject(cp)] = verifiedCopy{
		resourceVersion: cp.ResourceVersion,
		digest:          managed.Digest(cp.Type, cp.Data),
		keys:            internKeys(slices.Sorted(maps.Keys(cp.Data))),
	}
}

// dockerConfigKeys is the data keys of almost every copy, shared by their verified entries.
var dockerConfigKeys = []string{corev1.DockerConfigJsonKey}

// internKeys returns keys, or the shared slice when it holds the same: a slice and a string per copy add up
// over 10,000 copies.
func internKeys(keys []string) []string {
	if slices.Equal(keys, dockerConfigKeys) {
		return dockerConfigKeys
	}
	return keys
}

func (r *Reconciler) forget(key types.NamespacedName) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.verified, key)
}

// logger is the reconciler's logger outside a reconcile.
func logger() logr.Logger { return logf.Log.WithName("reconciler") }
