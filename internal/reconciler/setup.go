package reconciler

import (
	"context"
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/internal/events"
	"github.com/pullsecret-injector/pullsecret-injector/internal/managed"
	"github.com/pullsecret-injector/pullsecret-injector/internal/sources"
)

// Name is the controller's name in logs and metrics.
const Name = "copies"

// copyNameIndex indexes cached copies by name: a source's copies all carry the source's name.
const copyNameIndex = "name"

// Options are what SetupWithManager wires the reconciler to, and how it is tuned.
type Options struct {
	// Config is the configuration in force.
	Config *config.Store
	// Sources reads the source Secrets.
	Sources sources.Reader
	// Client is the reconciler's own client, with its own rate limits: every write goes through it, and
	// the reads made for a write (see Reconciler.APIReader).
	Client client.Client
	// Workers is the number of copies reconciled at once.
	Workers int
	// ResyncPeriod is how often every copy is looked at again, behind the watch events, and how often the
	// unfinished Pods are listed for the copies they name that are missing (see Reconciler.FindMissing);
	// 0 looks at copies from events alone and lists the Pods once, when this replica starts leading. A
	// copy whose digest annotation says it is in step costs no API call. It is also how long after it
	// starts leading a leader reads every copy once, to find those edited while no leader ran (see
	// Reconciler.FindUntruthful); 0 never does.
	ResyncPeriod time.Duration
	// RevocationRecheck: see Reconciler.RevocationRecheck.
	RevocationRecheck time.Duration
	// Events records Events on the copies written; nil records none.
	Events *events.Recorder
	// Provision makes each entry's copy in every namespace the entry selects, as soon as it is selected,
	// rather than leaving the first copy in a namespace to the admission of a Pod that needs it (see
	// provisioner).
	Provision bool
	// Pods is a core/v1 REST client with the reconciler's rate limits, for Pod lists read a Pod at a
	// time (see Reconciler.Pods); nil reads them through Client, a page at a time.
	Pods rest.Interface
}

// Trigger is how the sources and the configuration tell the reconciler to look at copies.
type Trigger interface {
	// SourceChanged asks for every copy of the named Secret.
	SourceChanged(ref config.SecretRef)
	// All asks for every copy.
	All()
}

// SetupWithManager adds the reconciler to mgr: it runs on the leader only, reads through mgr's cache and
// reader for metadata and writes through opts.Client. The returned Trigger never blocks, whether or not
// this replica leads.
func SetupWithManager(ctx context.Context, mgr ctrl.Manager, opts Options) (Trigger, error) {
	index, err := indexCopiesByName(ctx, mgr)
	if err != nil {
		return nil, err
	}
	r := &Reconciler{
		Config:            opts.Config,
		Sources:           opts.Sources,
		Cache:             mgr.GetCache(),
		APIReader:         opts.Client,
		Client:            opts.Client,
		RevocationRecheck: opts.RevocationRecheck,
		Events:            opts.Events,
		Provision:         opts.Provision,
		Pods:              opts.Pods,
	}
	ctl, err := controller.New(Name, mgr, controller.Options{
		Reconciler:              r,
		MaxConcurrentReconciles: opts.Workers,
		// One copy's failure is retried on its own schedule; it must not hold the others back.
		RateLimiter: workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](100*time.Millisecond, 5*time.Minute),
	})
	if err != nil {
		return nil, fmt.Errorf("create controller %q: %w", Name, err)
	}
	t := &triggers{config: opts.Config, cache: mgr.GetCache(), index: index, names: map[string]bool{}, wake: make(chan struct{}, 1)}
	if opts.Provision {
		if t.provision, err = newProvisioner(ctx, mgr, opts.Config, index); err != nil {
			return nil, err
		}
	}
	if err := watch(ctl, mgr, r, t, opts.ResyncPeriod); err != nil {
		return nil, err
	}
	if opts.ResyncPeriod > 0 {
		if err := mgr.Add(&resync{period: opts.ResyncPeriod, trigger: t}); err != nil {
			return nil, fmt.Errorf("add resync: %w", err)
		}
	}
	return t, nil
}

// indexCopiesByName adds an index of the copies' informer's own, on the name alone, and returns it:
// controller-runtime's IndexField also keys every value by namespace, which is one more set per copy, and
// a source's copies are wanted in every namespace at once.
func indexCopiesByName(ctx context.Context, mgr ctrl.Manager) (toolscache.Indexer, error) {
	inf, err := mgr.GetCache().GetInformer(ctx, managed.PartialSecret())
	if err != nil {
		return nil, fmt.Errorf("get the copies' informer: %w", err)
	}
	indexed, ok := inf.(toolscache.SharedIndexInformer)
	if !ok {
		return nil, fmt.Errorf("the copies' informer (%T) cannot be indexed", inf)
	}
	if err := indexed.AddIndexers(toolscache.Indexers{copyNameIndex: func(obj any) ([]string, error) {
		m, err := meta.Accessor(obj)
		if err != nil {
			return nil, err
		}
		return []string{m.GetName()}, nil
	}}); err != nil {
		return nil, fmt.Errorf("index copies by name: %w", err)
	}
	return indexed.GetIndexer(), nil
}

// watch connects the controller to what makes a copy worth a look: the copies' and namespaces' events,
// the triggers, and the passes a new leader makes over the Pods and the copies.
func watch(ctl controller.Controller, mgr ctrl.Manager, r *Reconciler, t *triggers, resyncPeriod time.Duration) error {
	if err := ctl.Watch(source.Kind(mgr.GetCache(), managed.PartialSecret(), copyEvents(&r.writes))); err != nil {
		return fmt.Errorf("watch copies: %w", err)
	}
	if err := ctl.Watch(source.Kind(mgr.GetCache(), managed.PartialNamespace(),
		handler.TypedEnqueueRequestsFromMapFunc(t.namespaceChanged))); err != nil {
		return fmt.Errorf("watch namespaces: %w", err)
	}
	if err := ctl.Watch(source.Func(t.run)); err != nil {
		return fmt.Errorf("watch triggers: %w", err)
	}
	// A copy deleted while no leader ran has no delete event for this leader to see: a pass over the
	// unfinished Pods finds the copies they name that are missing, at start and every resync.
	refs := &referencePass{r: r, period: resyncPeriod, synced: mgr.GetCache().WaitForCacheSync}
	if err := ctl.Watch(source.Func(refs.run)); err != nil {
		return fmt.Errorf("watch the copies Pods reference: %w", err)
	}
	// A copy written while no leader ran, its digest annotation kept or forged, is trusted as the cache
	// lists it: a sweep a resync period after the leader starts reads every copy and bounds how long that lasts.
	if err := ctl.Watch(source.Func((&sweep{r: r, period: resyncPeriod}).run)); err != nil {
		return fmt.Errorf("watch the copies' digest annotations: %w", err)
	}
	return nil
}

// triggers collects requests for many copies at once and hands them to the controller's queue. Requests
// coalesce (a source rotated twice is one pass over its copies), and nothing blocks the informer or
// reload goroutine that asks, including on a replica that does not lead and never starts the controller.
type triggers struct {
	config *config.Store
	cache  client.Reader
	// index finds a source's copies by name.
	index toolscache.Indexer

	// provision finds the copies to make ahead of Pods; nil when copies are made at admission.
	provision *provisioner

	mu    sync.Mutex
	all   bool
	names map[string]bool
	wake  chan struct{}
}

func (t *triggers) SourceChanged(ref config.SecretRef) { t.add(ref.Name) }

func (t *triggers) All() { t.add("") }

func (t *triggers) add(name string) {
	t.mu.Lock()
	if name == "" {
		t.all = true
	} else {
		t.names[name] = true
	}
	t.mu.Unlock()
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// run is the controller's source: it enqueues what was asked for until ctx ends.
func (t *triggers) run(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
	go func() {
		for {
			t.mu.Lock()
			all, names := t.all, t.names
			t.all, t.names = false, map[string]bool{}
			t.mu.Unlock()
			var reqs []reconcile.Request
			if all {
				reqs = append(t.copies(ctx), t.provision.everywhere("")...)
			} else {
				for name := range names {
					reqs = append(reqs, t.named(name)...)
					reqs = append(reqs, t.provision.everywhere(name)...)
				}
			}
			for _, req := range reqs {
				q.Add(req)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.wake:
			}
		}
	}()
	return nil
}

// namespaceChanged returns a request for every cached copy of a configured name in ns, whose labels or deletion may change what
// it gets, and, with eager provisioning, for each copy it gets and lacks.
func (t *triggers) namespaceChanged(_ context.Context, ns *metav1.PartialObjectMetadata) []reconcile.Request {
	return append(t.inNamespace(t.config.Matcher(), ns.Name), t.provision.inNamespace(ns)...)
}

// copies returns a request for every cached copy.
func (t *triggers) copies(ctx context.Context) []reconcile.Request {
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(managed.SecretGVK.GroupVersion().WithKind("SecretList"))
	if err := t.cache.List(ctx, list); err != nil {
		logger().Error(err, "Cannot list cached copies")
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for i := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
	}
	return reqs
}

// inNamespace returns a request for each cached copy in namespace that an entry of m names: what a change
// to the namespace's labels can change. The cache has no index by namespace (managed.NewInformer); a copy
// that no entry names is revoked whatever its namespace's labels.
func (t *triggers) inNamespace(m *config.Matcher, namespace string) []reconcile.Request {
	var reqs []reconcile.Request
	for _, e := range m.Entries() {
		key := types.NamespacedName{Namespace: namespace, Name: e.Registry.Secret.Name}
		if _, exists, err := t.index.GetByKey(key.String()); err == nil && exists {
			reqs = append(reqs, reconcile.Request{NamespacedName: key})
		}
	}
	return reqs
}

// named returns the copies called name, in every namespace. The objects are the informer's own: only their
// keys are read.
func (t *triggers) named(name string) []reconcile.Request {
	objs, err := t.index.ByIndex(copyNameIndex, name)
	if err != nil {
		logger().Error(err, "Cannot look up cached copies by name", "name", name)
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(objs))
	for _, o := range objs {
		m, err := meta.Accessor(o)
		if err != nil {
			continue
		}
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: m.GetNamespace(), Name: m.GetName()}})
	}
	return reqs
}

// resync asks for every copy each period, behind the event-driven path, on the leader only.
type resync struct {
	period  time.Duration
	trigger Trigger
}

func (r *resync) Start(ctx context.Context) error {
	wait.UntilWithContext(ctx, func(context.Context) { r.trigger.All() }, r.period)
	return nil
}
