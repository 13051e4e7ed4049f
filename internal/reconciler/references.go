package reconciler

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/internal/managed"
)

// referenceRetry is how soon a reference pass that failed (the API server unreachable, a continue token
// expired) is tried again, rather than waiting a whole resync period.
const referenceRetry = 30 * time.Second

// ReferenceStats is what a reference pass saw.
type ReferenceStats struct {
	// Pages and Pods count the Pod list's pages and the unfinished Pods in them.
	Pages, Pods int
	// Missing counts the copies asked for: named by an unfinished Pod in a namespace selected for their
	// entry, and not in the cache.
	Missing int
}

// FindMissing lists every unfinished Pod in the cluster, 500 a page, and calls add for each copy that one of
// them names in imagePullSecrets but that the cache does not hold, in a namespace selected for that copy's
// entry. Reconciling such a request recreates the copy (Decide returns Create).
//
// A deleted copy is recreated from its delete event, which only a running leader sees: this pass is how a
// new leader learns of the copies deleted while none ran. It holds one page of Pods at a time and keeps no
// set of its own (the controller's queue removes duplicates); the requests added carry the configured
// Secret name, never a string of the Pod's but its namespace.
func (r *Reconciler) FindMissing(ctx context.Context, add func(reconcile.Request)) (ReferenceStats, error) {
	m := r.Config.Matcher()
	var stats ReferenceStats
	// Pods come sorted by namespace (the storage's key order): what was decided for a name in the namespace
	// at hand is remembered until the next namespace, at most one entry per configured Secret name. Out of
	// order, it would only save fewer cache reads.
	namespace, decided := "", map[string]bool{}
	pages, err := r.eachUnfinishedPod(ctx, "", func(p *corev1.Pod) error {
		stats.Pods++
		if p.Namespace != namespace {
			namespace = p.Namespace
			clear(decided)
		}
		for _, ref := range p.Spec.ImagePullSecrets {
			entry := m.EntryForSecret(ref.Name)
			if entry == nil || m.IsSource(p.Namespace, ref.Name) {
				continue
			}
			name := entry.Registry.Secret.Name // the configuration's string, not the Pod's
			if _, seen := decided[name]; seen {
				continue
			}
			key := types.NamespacedName{Namespace: p.Namespace, Name: name}
			want, err := r.missing(ctx, m, entry, key)
			if err != nil {
				return err
			}
			decided[name] = want
			if want {
				stats.Missing++
				add(reconcile.Request{NamespacedName: key})
			}
		}
		return nil
	})
	stats.Pages = pages
	if err != nil {
		return stats, fmt.Errorf("find the copies unfinished pods reference: %w", err)
	}
	return stats, nil
}

// missing reports whether the cache lacks the copy at key while key's namespace gets entry's Secret.
func (r *Reconciler) missing(ctx context.Context, m *config.Matcher, entry *config.Entry, key types.NamespacedName) (bool, error) {
	if err := r.Cache.Get(ctx, key, managed.PartialSecret()); err == nil {
		return false, nil
	} else if !apierrors.IsNotFound(err) {
		return false, fmt.Errorf("read copy %s from cache: %w", key, err)
	}
	ns, err := r.namespace(ctx, r.Cache, key.Namespace)
	if err != nil {
		return false, err
	}
	return selects(m, entry, ns), nil
}

// referencePass runs FindMissing once the cache has synced, when the reconciler starts on a new leader,
// then every period (never again when period is 0).
type referencePass struct {
	r      *Reconciler
	period time.Duration
	synced func(context.Context) bool
}

// run is the controller's source: it adds what each pass finds to the controller's queue until ctx ends.
func (p *referencePass) run(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
	go func() {
		if !p.synced(ctx) {
			return
		}
		log := logger()
		for {
			start := time.Now()
			stats, err := p.r.FindMissing(ctx, q.Add)
			next := p.period
			switch {
			case ctx.Err() != nil:
				return
			case err != nil:
				log.Error(err, "Cannot check the copies unfinished Pods reference; trying again", "retryAfter", referenceRetry)
				next = referenceRetry
			case stats.Missing > 0:
				log.Info("Unfinished Pods reference missing copies; recreating them",
					"missing", stats.Missing, "pods", stats.Pods, "pages", stats.Pages, "took", time.Since(start))
			default:
				log.V(1).Info("Checked the copies unfinished Pods reference",
					"missing", 0, "pods", stats.Pods, "pages", stats.Pages, "took", time.Since(start))
			}
			if next <= 0 {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(next):
			}
		}
	}()
	return nil
}
