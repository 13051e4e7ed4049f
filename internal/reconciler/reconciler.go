// Package reconciler keeps managed copies in step with their sources and with the configuration: it
// updates copies when a source rotates, restores edited copies, recreates deleted ones, fills placeholders
// when their source appears, and deletes copies whose namespace no longer gets them. Only the leader runs it.
package reconciler

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
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
	// Pods, a core/v1 REST client with the reconciler's rate limits, lists Pods a Pod at a time instead
	// (see streamPods); nil lists them through APIReader, a page at a time.
	Pods rest.Interface
	// Client writes copies, with the reconciler's rate limits.
	Client client.Writer
	// RevocationRecheck is how often a copy that no longer applies is looked at again while Pods still
	// use it, and how old a copy must be before it is deleted at all (replicas see a new configuration a
	// little apart, and a copy made by a replica that saw it first must not be deleted by one that did not).
	RevocationRecheck time.Duration
	// Events records Events on the copies written; nil records none.
	Events *events.Recorder
	// Provision says that copies are made ahead of Pods (see provisioner): a missing copy is then not
	// necessarily one that was deleted, which the Event and the log say.
	Provision bool

	// writes tells the copies whose digest annotation can be trusted without a read (see writes).
	writes writes

	mu sync.Mutex
	// podChecks remembers, per namespace, the Pod lists made to revoke its copies: how many since the
	// current recheck period began (at most podListsPerRecheck), and which copies the last one found in use.
	// An entry goes once both its period and podUseTTL have passed; there is one per namespace that had a
	// revocation candidate in the last RevocationRecheck, each holding at most the configured Secret names and
	// the candidate's, with one Pod name each (at most 253 bytes).
	podChecks map[string]*podCheck
	// now is the clock; nil is time.Now. Tests set it to cross a recheck period.
	now func() time.Time
}

// podCheck is what the revocation of a namespace's copies knows of its Pods.
type podCheck struct {
	// periodStart and lists count the Pod lists made for the namespace since periodStart.
	periodStart time.Time
	lists       int
	// listed is when the last list was made, and users maps the name of a copy to one unfinished Pod that
	// referenced it then. Only a use is taken from it, never an absence: a copy is deleted only on a list
	// made for that delete.
	listed time.Time
	users  map[string]string
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

// String returns the action's name, for logs and test failures.
func (a Action) String() string {
	switch a {
	case Forget:
		return "Forget"
	case Create:
		return "Create"
	case Sync:
		return "Sync"
	case Revoke:
		return "Revoke"
	case Ignore:
		return "Ignore"
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// Facts are what Decide knows of a copy's key, all read without an API call.
type Facts struct {
	// Exists says a Secret is at the key, and IsManaged that it has the form of a copy (see managed.IsCopy).
	Exists, IsManaged bool
	// IsSource says the key is a configured source.
	IsSource bool
	// HasEntry says the configuration names a Secret of the key's name.
	HasEntry bool
	// Selected says the key's namespace gets that Secret (opted in, selected by the entry, not terminating).
	Selected bool
}

// Decide returns what the copy with facts f needs.
func Decide(f Facts) Action {
	switch {
	case f.IsSource:
		return Ignore // sources are only ever read
	case f.Exists && !f.IsManaged:
		return Ignore // never write a Secret that is not ours, whatever its name
	case !f.Exists && f.HasEntry && f.Selected:
		return Create
	case !f.Exists:
		return Forget
	case f.HasEntry && f.Selected:
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
	switch Decide(Facts{
		Exists:    exists,
		IsManaged: exists && managed.IsCopy(cp),
		IsSource:  m.IsSource(key.Namespace, key.Name),
		HasEntry:  entry != nil,
		Selected:  selected,
	}) {
	case Create:
		return r.create(ctx, entry, key)
	case Sync:
		return r.sync(ctx, entry, cp)
	case Revoke:
		return r.revoke(ctx, m, entry, cp)
	case Ignore:
		logf.FromContext(ctx).V(1).Info("Not a copy this project may write, left alone")
		r.writes.forget(key)
		return reconcile.Result{}, nil
	default:
		r.writes.forget(key)
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
	r.writes.wrote(key, cp.ResourceVersion)
	metrics.CopyOperation(source, metrics.Created)
	note, msg := r.createdNote()
	r.Events.Normal(cp, events.ReasonCopyCreated, events.ActionCreate, note, source)
	log.Info(msg, "source", source, "placeholder", src == nil || !managed.Usable(src))
	return reconcile.Result{}, nil
}

// sync brings a copy's data in line with its source. The digest annotation in the cache says whether the
// copy holds the source's current bytes: a copy in step costs no API call, and one that is not costs one
// write that replaces whatever it holds, without a read, as long as nobody but the leader has written it
// since the leader started watching it (see writes); a copy someone else wrote is read first.
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
	if !r.writes.trusted(key, cached.ResourceVersion) {
		return r.verify(ctx, key, src)
	}
	held := cached.Annotations[managed.DigestAnnotation]
	if held == managed.DigestString(src.Type, src.Data) && cached.Annotations[managed.SourceAnnotation] == entry.Registry.Secret.String() {
		return reconcile.Result{}, nil
	}
	reason := "copy differs from its source"
	if held != "" && held != managed.StaleDigest && held != managed.PlaceholderDigest {
		// A digest that was its source's current one when the copy was cached: the source changed since.
		reason = "source changed"
	}
	return r.update(ctx, key, cached.ResourceVersion, managed.Copy(src, key.Namespace), reason)
}

// verify reads the copy at key, which someone other than the leader wrote, and repairs it unless it holds
// exactly what a copy of src holds.
func (r *Reconciler) verify(ctx context.Context, key types.NamespacedName, src *corev1.Secret) (reconcile.Result, error) {
	live := &corev1.Secret{}
	if err := r.APIReader.Get(ctx, key, live); err != nil {
		if apierrors.IsNotFound(err) {
			return reconcile.Result{}, nil // its delete event follows
		}
		return reconcile.Result{}, fmt.Errorf("read copy %s: %w", key, err)
	}
	want := managed.Copy(src, key.Namespace)
	switch {
	case !managed.IsCopy(live):
		r.writes.forget(key)
		return reconcile.Result{}, nil
	case managed.InSync(live, src):
		// Trusted from now on at this resourceVersion: the next event on it is a write.
		r.writes.forget(key)
		return reconcile.Result{}, nil
	case live.Type != want.Type || (live.Immutable != nil && *live.Immutable):
		// Neither can be changed in place.
		return r.replace(ctx, live, want)
	}
	return r.update(ctx, key, live.ResourceVersion, want, "copy differs from its source")
}

// update writes want's type, data, label and annotations over the copy at key, which must still be at
// resourceVersion. It is a strategic merge patch that replaces the data as a whole, so that no key the
// copy held survives whatever the leader knew of it, and leaves the labels and annotations other tools put
// on the copy alone. Its type is sent too: a copy whose type someone changed (by deleting and creating
// it) refuses the patch as invalid, as an immutable one does, and is read and replaced on the next pass.
func (r *Reconciler) update(ctx context.Context, key types.NamespacedName, resourceVersion string,
	want *corev1.Secret, reason string) (reconcile.Result, error) {
	data := make(map[string]any, len(want.Data)+1)
	data["$patch"] = "replace"
	for k, v := range want.Data {
		data[k] = v // []byte marshals as base64, as the API expects
	}
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{
			// A precondition: the patch fails with a conflict if the copy changed since it was read or cached.
			"resourceVersion": resourceVersion,
			"labels":          want.Labels,
			"annotations":     want.Annotations,
		},
		"type": want.Type,
		"data": data,
	})
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("build patch for copy %s: %w", key, err)
	}
	source := want.Annotations[managed.SourceAnnotation]
	target := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
	if err := r.Client.Patch(ctx, target, client.RawPatch(types.StrategicMergePatchType, patch)); err != nil {
		switch {
		case apierrors.IsConflict(err):
			// Written by someone else since: its watch event says so, and the retry reads it.
			return reconcile.Result{RequeueAfter: conflictRetry}, nil
		case apierrors.IsNotFound(err):
			return reconcile.Result{}, nil
		case apierrors.IsInvalid(err):
			// Made immutable or retyped: the next pass reads it and replaces it.
			r.writes.distrust(key)
			return reconcile.Result{RequeueAfter: conflictRetry}, nil
		}
		metrics.CopyOperation(source, metrics.Failed)
		r.Events.Warning(target, events.ReasonCopyFailed, events.ActionUpdate, "Cannot update from %s: %v", source, err)
		return reconcile.Result{}, fmt.Errorf("update copy %s: %w", key, err)
	}
	r.writes.wrote(key, target.ResourceVersion)
	metrics.CopyOperation(source, metrics.Updated)
	r.Events.Normal(target, events.ReasonCopyUpdated, events.ActionUpdate, "Updated from %s: %s", source, reason)
	logf.FromContext(ctx).Info("Updated copy from its source", "reason", reason, "source", source)
	return reconcile.Result{}, nil
}

// replace deletes live and creates want in its place, for the changes a Secret cannot take in place.
func (r *Reconciler) replace(ctx context.Context, live, want *corev1.Secret) (reconcile.Result, error) {
	key := client.ObjectKeyFromObject(live)
	r.writes.forget(key)
	if err := r.Client.Delete(ctx, live, client.Preconditions{UID: &live.UID, ResourceVersion: &live.ResourceVersion}); err != nil {
		if apierrors.IsConflict(err) {
			return reconcile.Result{RequeueAfter: conflictRetry}, nil
		}
		if !apierrors.IsNotFound(err) {
			return reconcile.Result{}, fmt.Errorf("delete copy %s to replace it: %w", key, err)
		}
	}
	source := want.Annotations[managed.SourceAnnotation]
	if err := r.Client.Create(ctx, want); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return reconcile.Result{}, nil // created meanwhile by someone else: its event says so
		}
		metrics.CopyOperation(source, metrics.Failed)
		return reconcile.Result{}, fmt.Errorf("create copy %s in place of the old one: %w", key, err)
	}
	r.writes.wrote(key, want.ResourceVersion)
	metrics.CopyOperation(source, metrics.Updated)
	r.Events.Normal(want, events.ReasonCopyReplaced, events.ActionUpdate,
		"Replaced with a copy of %s: its type or immutability differed from the source's", source)
	logf.FromContext(ctx).Info("Replaced copy whose type or immutability differed from its source")
	return reconcile.Result{}, nil
}

// revoke deletes a copy whose namespace no longer gets it, once no unfinished Pod in the namespace
// references it. The delete is decided on facts read for it: the copy is read, then the namespace's Pods
// are listed, then the copy is deleted with the UID and resourceVersion of that read as preconditions.
func (r *Reconciler) revoke(ctx context.Context, m *config.Matcher, entry *config.Entry, cached *metav1.PartialObjectMetadata) (reconcile.Result, error) {
	log := logf.FromContext(ctx)
	key := types.NamespacedName{Namespace: cached.Namespace, Name: cached.Name}
	if age := r.clock().Sub(cached.CreationTimestamp.Time); age < r.RevocationRecheck {
		return reconcile.Result{RequeueAfter: r.RevocationRecheck - age}, nil
	}
	reason, source, revoke, err := r.revocation(ctx, m, entry, key)
	if err != nil || !revoke {
		return reconcile.Result{}, err
	}
	if wait, ok := r.usedRecently(ctx, key, reason); ok {
		return reconcile.Result{RequeueAfter: wait}, nil
	}
	live, res, err := r.readForDelete(ctx, key)
	if live == nil {
		return res, err
	}
	// Listed after the copy was read, just before the delete: only a Pod created in the round trip between
	// this list and the delete is not seen.
	pod, err := r.listPodUsing(ctx, key)
	if err != nil {
		return reconcile.Result{}, err
	}
	if pod != "" {
		log.V(1).Info("Copy no longer applies; deleting it waits for the Pods that use it", "reason", reason, "pod", pod)
		return reconcile.Result{RequeueAfter: r.RevocationRecheck}, nil
	}
	return r.deleteCopy(ctx, live, source, reason)
}

// revocation says why the copy at key no longer applies, and the source its metric counts it under;
// revoke is false when it applies after all, or when the namespace's own deletion removes it.
func (r *Reconciler) revocation(ctx context.Context, m *config.Matcher, entry *config.Entry, key types.NamespacedName) (reason, source string, revoke bool, err error) {
	// The metric's label comes from the configuration, never from the copy's annotation, which a tenant
	// can edit: a copy no entry names any more is counted under removedSource.
	if entry == nil {
		return "no configured entry names this secret", removedSource, true, nil
	}
	source = entry.Registry.Secret.String()
	// The cache may lag behind a namespace labelled a moment ago; deleting a copy a new Pod needs is
	// worse than a live read on this rare path.
	ns, err := r.namespace(ctx, r.APIReader, key.Namespace)
	if err != nil {
		return "", "", false, err
	}
	if selects(m, entry, ns) {
		return "", "", false, nil // the namespace event that says so follows
	}
	if ns == nil || ns.DeletionTimestamp != nil {
		return "", "", false, nil // the namespace's own deletion removes it
	}
	return "namespace is not selected for its entry", source, true, nil
}

// usedRecently returns how long to wait before the copy at key is looked at again, when what is known
// without a new Pod list says to wait: a Pod seen using the copy a moment ago keeps it (keeping a copy a
// little longer is safe, deleting one in use is not), and the namespace's Pod lists may be used up.
func (r *Reconciler) usedRecently(ctx context.Context, key types.NamespacedName, reason string) (time.Duration, bool) {
	log := logf.FromContext(ctx)
	if pod := r.recentUser(key); pod != "" {
		log.V(1).Info("Copy no longer applies; deleting it waits for the Pods that use it", "reason", reason, "pod", pod)
		return r.RevocationRecheck, true
	}
	if wait := r.takePodList(key.Namespace); wait > 0 {
		log.V(1).Info("Copy no longer applies; this namespace's Pod lists for revocation are used up until the next recheck period",
			"reason", reason, "retryAfter", wait)
		return wait, true
	}
	return 0, false
}

// readForDelete reads the copy at key from the API server, for the delete's preconditions. It returns nil,
// with the result to return, when there is nothing to delete: the Secret is gone, is no longer in the form
// of a copy, or is another one, younger, of the same name.
func (r *Reconciler) readForDelete(ctx context.Context, key types.NamespacedName) (*metav1.PartialObjectMetadata, reconcile.Result, error) {
	live := managed.PartialSecret()
	if err := r.APIReader.Get(ctx, key, live); err != nil {
		if apierrors.IsNotFound(err) {
			r.writes.forget(key)
			return nil, reconcile.Result{}, nil
		}
		return nil, reconcile.Result{}, fmt.Errorf("read copy %s: %w", key, err)
	}
	switch age := r.clock().Sub(live.CreationTimestamp.Time); {
	case !managed.IsCopy(live):
		r.writes.forget(key)
		return nil, reconcile.Result{}, nil // no longer in the form of a copy: not ours to delete
	case age < r.RevocationRecheck:
		// Another Secret of the same name took the cached one's place.
		return nil, reconcile.Result{RequeueAfter: r.RevocationRecheck - age}, nil
	}
	return live, reconcile.Result{}, nil
}

// deleteCopy deletes live, the copy just read, counted under source and explained by reason.
func (r *Reconciler) deleteCopy(ctx context.Context, live *metav1.PartialObjectMetadata, source, reason string) (reconcile.Result, error) {
	key := types.NamespacedName{Namespace: live.Namespace, Name: live.Name}
	cp := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
	// The preconditions make sure the Secret deleted is the one just read in the form of a copy, unchanged.
	if err := r.Client.Delete(ctx, cp, client.Preconditions{UID: &live.UID, ResourceVersion: &live.ResourceVersion}); err != nil {
		switch {
		case apierrors.IsNotFound(err):
			return reconcile.Result{}, nil
		case apierrors.IsConflict(err):
			return reconcile.Result{RequeueAfter: conflictRetry}, nil
		}
		metrics.CopyOperation(source, metrics.Failed)
		return reconcile.Result{}, fmt.Errorf("delete copy %s: %w", key, err)
	}
	r.writes.forget(key)
	metrics.CopyOperation(source, metrics.Deleted)
	cp.UID = live.UID
	r.Events.Normal(cp, events.ReasonCopyDeleted, events.ActionDelete, "Deleted: %s", reason)
	logf.FromContext(ctx).Info("Deleted copy that no longer applies", "reason", reason)
	return reconcile.Result{}, nil
}

// removedSource is the source label of the copies of an entry that was removed from the configuration.
const removedSource = "removed"

// podListPage bounds the memory a Pod list takes in a namespace with many Pods: one page is held at a time.
const podListPage = 500

// podListsPerRecheck bounds the Pod lists that revocation makes in one namespace per RevocationRecheck.
// Every delete takes a list of its own, so without a bound a tenant who makes Secrets in the form of a copy
// in a namespace that gets none would buy one list of the namespace's Pods with each Secret. A legitimate
// namespace has at most one copy per configured Secret name to revoke; past the bound, copies wait for
// the next period, which only keeps a copy that no longer receives rotations a little longer.
const podListsPerRecheck = 10

// unfinishedPods is the field selector that leaves Pods that can no longer pull out of a list on the API
// server's side.
var unfinishedPods = fields.AndSelectors(
	fields.OneTermNotEqualSelector("status.phase", string(corev1.PodSucceeded)),
	fields.OneTermNotEqualSelector("status.phase", string(corev1.PodFailed)),
)

func (r *Reconciler) clock() time.Time {
	if r.now != nil {
		return r.now()
	}
	return time.Now()
}

// podUseTTL is how long a Pod seen using a copy keeps it without a new list. It is short beside the
// recheck, which bounds how late a copy goes after its last Pod.
func (r *Reconciler) podUseTTL() time.Duration {
	return min(r.RevocationRecheck/2, 5*time.Second)
}

// recentUser returns an unfinished Pod that the namespace's last list, made less than podUseTTL ago, found
// referencing key's Secret, or "".
func (r *Reconciler) recentUser(key types.NamespacedName) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.podChecks[key.Namespace]
	if c == nil || r.clock().Sub(c.listed) >= r.podUseTTL() {
		return ""
	}
	return c.users[key.Name]
}

// takePodList counts a Pod list in namespace against its bound, and returns 0 when the list may be made,
// or how long until it may.
func (r *Reconciler) takePodList(namespace string) time.Duration {
	now := r.clock()
	r.mu.Lock()
	defer r.mu.Unlock()
	for ns, c := range r.podChecks { // keep only what can still answer or count
		if now.Sub(c.periodStart) >= r.RevocationRecheck && now.Sub(c.listed) >= r.podUseTTL() {
			delete(r.podChecks, ns)
		}
	}
	if r.podChecks == nil {
		r.podChecks = map[string]*podCheck{}
	}
	c := r.podChecks[namespace]
	if c == nil {
		c = &podCheck{periodStart: now}
		r.podChecks[namespace] = c
	}
	if now.Sub(c.periodStart) >= r.RevocationRecheck {
		c.periodStart, c.lists = now, 0
	}
	if c.lists >= podListsPerRecheck {
		return c.periodStart.Add(r.RevocationRecheck).Sub(now)
	}
	c.lists++
	return 0
}

// listPodUsing lists the unfinished Pods of key's namespace now and returns the name of one whose
// imagePullSecrets name key's Secret, or "" when there is none.
func (r *Reconciler) listPodUsing(ctx context.Context, key types.NamespacedName) (string, error) {
	// Only the names of copies the cache holds in the namespace are kept: the Pods' other references are
	// theirs to choose, as many as they like. The cache has no index by namespace (managed.NewInformer), so
	// each name a Pod references is looked up once per list, in a map that goes with the list.
	cached := map[string]bool{key.Name: true}
	isCopy := func(name string) bool {
		held, seen := cached[name]
		if !seen {
			held = r.Cache.Get(ctx, types.NamespacedName{Namespace: key.Namespace, Name: name}, managed.PartialSecret()) == nil
			cached[name] = held
		}
		return held
	}
	listed := r.clock()
	users := map[string]string{}
	if _, err := r.eachUnfinishedPod(ctx, key.Namespace, func(p *corev1.Pod) error {
		for _, ref := range p.Spec.ImagePullSecrets {
			if isCopy(ref.Name) {
				users[ref.Name] = p.Name
			}
		}
		return nil
	}); err != nil {
		return "", fmt.Errorf("list pods in namespace %q: %w", key.Namespace, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.podChecks[key.Namespace]; c != nil {
		c.listed, c.users = listed, users
	}
	return users[key.Name], nil
}

// eachUnfinishedPod lists the unfinished Pods of namespace ("" for every namespace), 500 a page, and calls
// fn with each until fn returns an error. It returns the number of pages read. Through Pods it holds one
// Pod at a time, of which only what a decision needs (see streamPods); without it, a page. The field
// selector leaves finished Pods on the API server; fn is not called with one that a server or a fake left
// in.
func (r *Reconciler) eachUnfinishedPod(ctx context.Context, namespace string, fn func(*corev1.Pod) error) (int, error) {
	unfinished := func(p *corev1.Pod) error {
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			return nil
		}
		return fn(p)
	}
	for pages, cont := 1, ""; ; pages++ {
		var err error
		if r.Pods != nil {
			cont, err = streamPods(ctx, r.Pods, namespace, cont, unfinished)
		} else {
			cont, err = listPodsPage(ctx, r.APIReader, cont, unfinished, client.InNamespace(namespace))
		}
		if err != nil || cont == "" {
			return pages, err
		}
	}
}

// logger is the reconciler's logger outside a reconcile.
func logger() logr.Logger { return logf.Log.WithName("reconciler") }
