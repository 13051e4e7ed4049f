package policy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"
	rbacv1client "k8s.io/client-go/kubernetes/typed/rbac/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/internal/managed"
)

// Check reports whether Build can compile m, with the reason when it cannot. It is the condition a
// configuration must meet to be loaded in policy mode (config.WithCheck).
func Check(m *config.Matcher) error {
	_, _, err := Build(m, Options{PolicyName: "check"})
	return err
}

// FieldManager is the field manager of the policy objects' writes.
const FieldManager = "pullsecret-injector"

// Syncer keeps the MutatingAdmissionPolicy and the binding named by Options, the two objects this process
// owns, in step with the configuration in force (Enabled), or deletes them (not Enabled: the webhook mode,
// to which a cluster may have gone back from the policy mode). It runs on the leader only. It watches the
// two objects by name, so an object edited or deleted by someone else is put back at once, and writes
// only when what is stored differs from what the configuration compiles to.
//
// It writes only objects that carry the label managed.ManagedByLabel=managed.ManagedByValue (or that it
// creates, with that label): an object of the same name without it is someone else's, left alone and
// reported.
type Syncer struct {
	// Client writes the two objects.
	Client kubernetes.Interface
	// Config is the configuration in force.
	Config *config.Store
	// Options name the objects and the namespaces they leave out.
	Options Options
	// Enabled keeps the objects in step; false deletes them.
	Enabled bool
	// Owner, when not nil, returns the object that owns the two objects: deleting it (the chart's
	// ClusterRole, on helm uninstall) makes the garbage collector delete them. It is called when the syncer
	// starts; an error there leaves the objects without an owner, and is logged.
	Owner func(context.Context) (*metav1.OwnerReference, error)
	// Log is where the syncer reports what it writes and why it cannot.
	Log logr.Logger

	wake chan struct{}
	// passes counts the comparisons made, for tests that check a pass wrote nothing.
	passes atomic.Int64
}

// NewSyncer returns a Syncer; set its fields before Start.
func NewSyncer() *Syncer {
	return &Syncer{wake: make(chan struct{}, 1), Log: logr.Discard()}
}

// NeedLeaderElection is true: one writer at a time.
func (*Syncer) NeedLeaderElection() bool { return true }

// Trigger asks for a comparison of the objects with the configuration in force. It never blocks, on a
// replica that leads or not; triggers coalesce.
func (s *Syncer) Trigger() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

const (
	// retryMin and retryMax bound the back-off after a failed write: the API server unreachable, a
	// conflict with another writer, an object of the same name that is not ours.
	retryMin = time.Second
	retryMax = time.Minute
	// resyncPeriod is how often the objects are compared without an event, behind the watches. A
	// comparison reads the informers' caches only.
	resyncPeriod = 10 * time.Minute
)

// Start watches the two objects and keeps them in step until ctx ends, in policy mode; in webhook mode
// it deletes them if they are ours and returns. It implements manager.Runnable.
func (s *Syncer) Start(ctx context.Context) error {
	policies, bindings := s.kinds()
	if !s.Enabled {
		s.removeAll(ctx, policies, bindings)
		return nil
	}
	// The informers start here, on the leader, in policy mode only.
	policies.informer, bindings.informer = policies.newInformer(), bindings.newInformer()
	for _, inf := range []toolscache.SharedIndexInformer{policies.informer, bindings.informer} {
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { s.Trigger() },
			UpdateFunc: func(any, any) { s.Trigger() },
			DeleteFunc: func(any) { s.Trigger() },
		}); err != nil {
			return fmt.Errorf("watch the policy objects: %w", err)
		}
		go inf.RunWithContext(ctx)
	}
	if !toolscache.WaitForCacheSync(ctx.Done(), policies.informer.HasSynced, bindings.informer.HasSynced) {
		return nil // ctx ended
	}
	var owner *metav1.OwnerReference
	if s.Owner != nil {
		var err error
		if owner, err = s.Owner(ctx); err != nil {
			s.Log.Error(err, "Cannot read the owner of the policy objects; they are written without one, and helm uninstall leaves them")
		}
	}

	retry := time.Duration(0)
	for {
		err := s.sync(ctx, policies, bindings, owner)
		s.passes.Add(1)
		var next time.Duration
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			retry = min(max(2*retry, retryMin), retryMax)
			next = retry
			if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
				s.Log.V(1).Info("Policy object changed under the write; trying again", "error", err.Error())
			} else {
				s.Log.Error(err, "Cannot bring the policy objects in step; trying again", "retryAfter", retry.String())
			}
		default:
			retry = 0
			next = resyncPeriod
		}
		timer := time.NewTimer(next)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-s.wake:
			timer.Stop()
		case <-timer.C:
		}
	}
}

type (
	policyKind  = kind[*admissionregistrationv1.MutatingAdmissionPolicy, *admissionregistrationv1.MutatingAdmissionPolicyList]
	bindingKind = kind[*admissionregistrationv1.MutatingAdmissionPolicyBinding, *admissionregistrationv1.MutatingAdmissionPolicyBindingList]
)

// kinds returns the two objects the syncer keeps.
func (s *Syncer) kinds() (*policyKind, *bindingKind) {
	bindingName := s.Options.BindingName
	if bindingName == "" {
		bindingName = s.Options.PolicyName
	}
	policies := newKind("MutatingAdmissionPolicy", s.Options.PolicyName, s.Client,
		objectClient[*admissionregistrationv1.MutatingAdmissionPolicy, *admissionregistrationv1.MutatingAdmissionPolicyList](
			s.Client.AdmissionregistrationV1().MutatingAdmissionPolicies()),
		&admissionregistrationv1.MutatingAdmissionPolicy{},
		func(dst, src *admissionregistrationv1.MutatingAdmissionPolicy) bool {
			changed := !apiequality.Semantic.DeepEqual(dst.Spec, src.Spec)
			dst.Spec = src.Spec
			return changed
		})
	bindings := newKind("MutatingAdmissionPolicyBinding", bindingName, s.Client,
		objectClient[*admissionregistrationv1.MutatingAdmissionPolicyBinding, *admissionregistrationv1.MutatingAdmissionPolicyBindingList](
			s.Client.AdmissionregistrationV1().MutatingAdmissionPolicyBindings()),
		&admissionregistrationv1.MutatingAdmissionPolicyBinding{},
		func(dst, src *admissionregistrationv1.MutatingAdmissionPolicyBinding) bool {
			changed := !apiequality.Semantic.DeepEqual(dst.Spec, src.Spec)
			dst.Spec = src.Spec
			return changed
		})
	return policies, bindings
}

// removeAttempts bounds the tries of removeAll.
const removeAttempts = 6

// removeAll deletes the binding, then the policy, where they exist and are ours: the webhook mode's one
// pass, on a new leader. An API server that does not serve the kinds, or RBAC that does not let this
// process read them (a chart that grants nothing of the policy mode), means there is nothing of ours to
// delete. Other errors are tried again, removeAttempts times in all.
func (s *Syncer) removeAll(ctx context.Context, policies *policyKind, bindings *bindingKind) {
	retry := retryMin
	for attempt := 1; ; attempt++ {
		err := errors.Join(bindings.remove(ctx, s.Log), policies.remove(ctx, s.Log))
		s.passes.Add(1)
		if err == nil || ctx.Err() != nil {
			return
		}
		if attempt == removeAttempts {
			s.Log.Error(err, "Cannot delete the policy objects of the policy mode; giving up until the next leader")
			return
		}
		s.Log.V(1).Info("Cannot delete the policy objects of the policy mode; trying again", "error", err.Error(), "retryAfter", retry.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(retry):
		}
		retry = min(2*retry, retryMax)
	}
}

// sync makes one pass of the policy mode: the policy is written before the binding that applies it, so a
// new binding never applies an old policy.
func (s *Syncer) sync(ctx context.Context, policies *policyKind, bindings *bindingKind, owner *metav1.OwnerReference) error {
	p, b, err := Build(s.Config.Matcher(), s.Options)
	if err != nil {
		// The store refuses such a configuration (Check), so this is a bug; the objects stay as they are.
		return fmt.Errorf("compile the configuration in force: %w", err)
	}
	for _, obj := range []metav1.Object{p, b} {
		obj.SetLabels(map[string]string{managed.ManagedByLabel: managed.ManagedByValue})
		if owner != nil {
			obj.SetOwnerReferences([]metav1.OwnerReference{*owner})
		}
	}
	if err := policies.apply(ctx, p, s.Log); err != nil {
		return err
	}
	return bindings.apply(ctx, b, s.Log)
}

// object is either of the two kinds, as a pointer.
type object interface {
	metav1.Object
	runtime.Object
}

// objectClient is what the syncer calls on one kind: the typed clients of both kinds have these methods.
type objectClient[T object, L runtime.Object] interface {
	Create(ctx context.Context, obj T, opts metav1.CreateOptions) (T, error)
	Update(ctx context.Context, obj T, opts metav1.UpdateOptions) (T, error)
	Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error
	Get(ctx context.Context, name string, opts metav1.GetOptions) (T, error)
	List(ctx context.Context, opts metav1.ListOptions) (L, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
}

// kind is one of the two objects: its client, an informer that watches it alone, and how to copy its spec.
type kind[T object, L runtime.Object] struct {
	kind, name string
	client     objectClient[T, L]
	// informer holds the object, if it exists: a list and watch with a metadata.name field selector, which
	// the API server authorizes against RBAC resourceNames. newInformer makes it.
	informer    toolscache.SharedIndexInformer
	newInformer func() toolscache.SharedIndexInformer
	// setSpec copies src's spec into dst and reports whether it differed.
	setSpec func(dst, src T) bool
}

// newKind returns the kind named kindName, of the object called name, read and written through c, a
// client of root (whose fake, in tests, lists and watches without the API server's streaming lists).
func newKind[T object, L runtime.Object](kindName, name string, root any, c objectClient[T, L], example T, setSpec func(dst, src T) bool) *kind[T, L] {
	selector := fields.OneTermEqualSelector("metadata.name", name).String()
	lw := &toolscache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = selector
			return c.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = selector
			return c.Watch(ctx, o)
		},
	}
	return &kind[T, L]{
		kind: kindName, name: name, client: c, setSpec: setSpec,
		newInformer: func() toolscache.SharedIndexInformer {
			return toolscache.NewSharedIndexInformer(toolscache.ToListWatcherWithWatchListSemantics(lw, root), example, 0, toolscache.Indexers{})
		},
	}
}

// cached returns the object as last seen, if it exists.
func (k *kind[T, L]) cached() (T, bool) {
	var zero T
	obj, exists, err := k.informer.GetStore().GetByKey(k.name)
	if err != nil || !exists {
		return zero, false
	}
	t, ok := obj.(T)
	return t, ok
}

// apply creates want, or updates the stored object of its name when its spec, our label or its owner
// differs. Other labels and annotations on the stored object are kept.
func (k *kind[T, L]) apply(ctx context.Context, want T, log logr.Logger) error {
	have, exists := k.cached()
	if !exists {
		if _, err := k.client.Create(ctx, want, metav1.CreateOptions{FieldManager: FieldManager}); err != nil {
			return fmt.Errorf("create %s %q: %w", k.kind, k.name, err)
		}
		log.Info("Created the policy object", "kind", k.kind, "name", k.name)
		k.await(ctx, func(_ T, exists bool) bool { return exists })
		return nil
	}
	if !managed.IsManaged(have) {
		return fmt.Errorf("%s %q exists without the label %s=%s: it is not this project's, left alone",
			k.kind, k.name, managed.ManagedByLabel, managed.ManagedByValue)
	}
	updated, ok := have.DeepCopyObject().(T)
	if !ok {
		return fmt.Errorf("copy %s %q: unexpected type %T", k.kind, k.name, have)
	}
	changed := k.setSpec(updated, want)
	if !apiequality.Semantic.DeepEqual(updated.GetOwnerReferences(), want.GetOwnerReferences()) && len(want.GetOwnerReferences()) > 0 {
		updated.SetOwnerReferences(want.GetOwnerReferences())
		changed = true
	}
	if !changed {
		return nil
	}
	// The update carries the resourceVersion of the object read: a change made since fails as a conflict,
	// and the watch event of that change brings the next comparison.
	if _, err := k.client.Update(ctx, updated, metav1.UpdateOptions{FieldManager: FieldManager}); err != nil {
		return fmt.Errorf("update %s %q: %w", k.kind, k.name, err)
	}
	log.Info("Updated the policy object to the configuration in force", "kind", k.kind, "name", k.name)
	k.await(ctx, func(obj T, exists bool) bool {
		if !exists || obj.GetResourceVersion() != have.GetResourceVersion() {
			return true
		}
		seen, ok := obj.DeepCopyObject().(T)
		r := ok && !k.setSpec(seen, updated)
		return r
	})
	return nil
}

// remove deletes the object if it exists and is ours, with the UID and resourceVersion read for it as
// preconditions.
func (k *kind[T, L]) remove(ctx context.Context, log logr.Logger) error {
	have, err := k.client.Get(ctx, k.name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err) || apierrors.IsForbidden(err):
		// Not there, or not served (Kubernetes before 1.36), or not ours to read.
		return nil
	case err != nil:
		return fmt.Errorf("read %s %q: %w", k.kind, k.name, err)
	}
	if !managed.IsManaged(have) {
		log.V(1).Info("A policy object of this name is not this project's, left alone", "kind", k.kind, "name", k.name)
		return nil
	}
	err = k.client.Delete(ctx, k.name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{
		UID: ptr.To(have.GetUID()), ResourceVersion: ptr.To(have.GetResourceVersion()),
	}})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete %s %q: %w", k.kind, k.name, err)
	}
	log.Info("Deleted the policy object: injection is by webhook", "kind", k.kind, "name", k.name)
	return nil
}

// awaitTimeout bounds the wait for the watch to show a write: the next pass compares with what the watch
// shows, and would otherwise write again what was just written.
const awaitTimeout = 10 * time.Second

// await waits until seen holds for the object as the informer holds it, awaitTimeout at most.
func (k *kind[T, L]) await(ctx context.Context, seen func(obj T, exists bool) bool) {
	_ = wait.PollUntilContextTimeout(ctx, 5*time.Millisecond, awaitTimeout, true, func(context.Context) (bool, error) {
		obj, exists := k.cached()
		return seen(obj, exists), nil
	})
}

// ClusterRoleOwner returns an Owner for Syncer: the ClusterRole name, read through c.
func ClusterRoleOwner(c rbacv1client.ClusterRolesGetter, name string) func(context.Context) (*metav1.OwnerReference, error) {
	return func(ctx context.Context) (*metav1.OwnerReference, error) {
		role, err := c.ClusterRoles().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("read ClusterRole %q: %w", name, err)
		}
		return &metav1.OwnerReference{
			APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "ClusterRole", Name: role.Name, UID: role.UID,
		}, nil
	}
}

// Served returns an error unless the API server serves MutatingAdmissionPolicy and its binding in
// admissionregistration.k8s.io/v1 (Kubernetes 1.36 and later, where they are GA and on by default).
func Served(d discovery.ServerResourcesInterface) error {
	gv := admissionregistrationv1.SchemeGroupVersion.String()
	list, err := d.ServerResourcesForGroupVersion(gv)
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("discover the resources of %s: %w", gv, err)
	}
	var missing []string
	for _, want := range []string{"mutatingadmissionpolicies", "mutatingadmissionpolicybindings"} {
		if list == nil || !slices.ContainsFunc(list.APIResources, func(r metav1.APIResource) bool { return r.Name == want }) {
			missing = append(missing, want)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("policy mode needs the API server to serve %s %v (Kubernetes 1.36 or later), and it does not", gv, missing)
	}
	return nil
}
