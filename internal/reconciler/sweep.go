package reconciler

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/pullsecret-injector/pullsecret-injector/internal/managed"
)

// sweepPage is the number of copies a sweep reads per request. Small, because a copy's data is its
// namespace's to write, up to 1 MiB: ten of them are the most a page holds.
const sweepPage = 10

// SweepStats is what a sweep saw.
type SweepStats struct {
	// Pages and Copies count the requests and the Secrets in the form of a copy they returned.
	Pages, Copies int
	// Untruthful counts the copies whose digest annotation is not the digest of what they hold.
	Untruthful int
}

// FindUntruthful reads every Secret labelled as managed, sweepPage a request, and calls add for each copy
// whose digest annotation is not the digest of its type and data, after marking it as written by someone
// else (see writes): reconciling it reads and repairs it. Only one page is held at a time.
//
// A leader trusts the digest annotations of the copies as its cache first lists them; this sweep is what
// bounds how long an edit made while no leader ran, one that kept or forged the annotation, stands.
func (r *Reconciler) FindUntruthful(ctx context.Context, add func(reconcile.Request)) (SweepStats, error) {
	var stats SweepStats
	for cont := ""; ; {
		list := &corev1.SecretList{}
		if err := r.APIReader.List(ctx, list, client.MatchingLabels{managed.ManagedByLabel: managed.ManagedByValue},
			client.Limit(sweepPage), client.Continue(cont)); err != nil {
			return stats, fmt.Errorf("list copies: %w", err)
		}
		stats.Pages++
		for i := range list.Items {
			s := &list.Items[i]
			if !managed.IsCopy(s) {
				continue
			}
			stats.Copies++
			if s.Annotations[managed.DigestAnnotation] == managed.DigestString(s.Type, s.Data) {
				continue // what the cache says of it is true, in step or not
			}
			stats.Untruthful++
			key := client.ObjectKeyFromObject(s)
			r.writes.distrust(key)
			add(reconcile.Request{NamespacedName: key})
		}
		if cont = list.Continue; cont == "" {
			return stats, nil
		}
	}
}

// sweep runs FindUntruthful once a leader has led for period, and again after referenceRetry while it
// fails; never when period is 0. Once per leadership is enough: every write made while a leader runs is a
// watch event it sees.
type sweep struct {
	r      *Reconciler
	period time.Duration
}

// run is the controller's source: it adds what the sweep finds to the controller's queue.
func (s *sweep) run(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
	if s.period <= 0 {
		return nil
	}
	go func() {
		log := logger()
		for wait := s.period; ; wait = referenceRetry {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			start := time.Now()
			stats, err := s.r.FindUntruthful(ctx, q.Add)
			switch {
			case ctx.Err() != nil:
				return
			case err != nil:
				log.Error(err, "Cannot check the copies' digest annotations; trying again", "retryAfter", referenceRetry)
				continue
			case stats.Untruthful > 0:
				log.Info("Copies hold other data than their digest annotation says; repairing them",
					"untruthful", stats.Untruthful, "copies", stats.Copies, "pages", stats.Pages, "took", time.Since(start))
			default:
				log.V(1).Info("Checked the copies' digest annotations",
					"untruthful", 0, "copies", stats.Copies, "pages", stats.Pages, "took", time.Since(start))
			}
			return
		}
	}()
	return nil
}
