package sources

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/internal/dockerconfig"
	"github.com/pullsecret-injector/pullsecret-injector/internal/events"
	"github.com/pullsecret-injector/pullsecret-injector/internal/metrics"
)

// reasonMissing is the health reason of a source Secret that does not exist.
const reasonMissing = "missing"

// Health checks every configured source Secret when it changes and when the configuration does: whether
// it exists, has the right type, and holds a credential the kubelet would use for the images of the
// entries that name it (package dockerconfig). It keeps the source_invalid gauge, logs each change of a
// source's health once, and, on the leader, records an Event on the source. The webhook asks it for the
// credential problems to warn about, from memory.
//
// It runs on the source informers' event goroutines: a check reads the informer's copy of the Secret and
// costs no API call.
type Health struct {
	config  *config.Store
	sources Reader
	events  *events.Recorder
	log     logr.Logger

	// leader is set when this replica leads: only the leader records Events, so that a release of three
	// replicas does not say everything three times.
	leader atomic.Bool

	mu   sync.Mutex
	last map[config.SecretRef]health
	// problems maps a source whose credential cannot work to what is wrong with it; the webhook reads it on
	// every admission, so it is replaced whole, never changed in place.
	problems atomic.Pointer[map[config.SecretRef]string]
}

type health struct {
	invalid bool
	reason  string
	message string
	// uid is the source's, for the Events: kubectl describe finds an object's Events by its uid.
	uid types.UID
}

// NewHealth returns a Health for the sources of store's configuration, read through sources.
func NewHealth(store *config.Store, sources Reader, recorder *events.Recorder, log logr.Logger) *Health {
	h := &Health{config: store, sources: sources, events: recorder, log: log, last: map[config.SecretRef]health{}}
	h.problems.Store(&map[config.SecretRef]string{})
	return h
}

// Problem returns what is wrong with the credential of ref, a Secret that exists with the right type but
// that the kubelet cannot use for its entries' images; "" when there is nothing to say. A missing source
// or one of the wrong type is not a problem here: the webhook says so on its own when it copies.
func (h *Health) Problem(ref config.SecretRef) string {
	if h == nil {
		return ""
	}
	return (*h.problems.Load())[ref]
}

// CheckAll checks every configured source and forgets the ones no longer configured. Call it after a
// reload.
func (h *Health) CheckAll() {
	m := h.config.Matcher()
	configured := map[config.SecretRef]bool{}
	for _, ref := range m.Sources() {
		configured[ref] = true
		h.check(m, ref)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	problems := maps.Clone(*h.problems.Load())
	for ref := range h.last {
		if !configured[ref] {
			delete(h.last, ref)
			delete(problems, ref)
			metrics.ForgetSource(ref.String())
		}
	}
	h.problems.Store(&problems)
}

// Check checks one source; it is a Handler for the Tracker.
func (h *Health) Check(ref config.SecretRef) {
	h.check(h.config.Matcher(), ref)
}

func (h *Health) check(m *config.Matcher, ref config.SecretRef) {
	patterns := dockerconfig.PatternsFor(m, ref)
	if len(patterns) == 0 {
		return // no longer configured; CheckAll forgets it
	}
	secret, synced := h.sources.Get(ref)
	if !synced {
		return // the informer's first list calls again
	}
	now := health{invalid: true, reason: reasonMissing,
		message: fmt.Sprintf("source secret %s does not exist; the copies are placeholders or keep their last good data", ref)}
	credentialProblem := false
	if secret != nil {
		r := dockerconfig.Check(secret.Type, secret.Data, patterns)
		now = health{invalid: !r.OK, reason: string(r.Reason), message: r.Message, uid: secret.UID}
		credentialProblem = !r.OK && r.Reason != dockerconfig.ReasonWrongType
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	before, seen := h.last[ref]
	h.last[ref] = now
	problems := *h.problems.Load()
	if _, had := problems[ref]; had != credentialProblem || (credentialProblem && problems[ref] != now.message) {
		problems = maps.Clone(problems)
		if credentialProblem {
			problems[ref] = now.message
		} else {
			delete(problems, ref)
		}
		h.problems.Store(&problems)
	}
	metrics.SourceInvalid(ref.String(), now.invalid)
	if seen && before == now {
		return
	}
	switch {
	case now.invalid:
		// The message names the entry patterns and the Secret's auths keys, never a credential.
		h.log.Info("Source secret cannot give the kubelet a credential for its registries",
			"source", ref.String(), "reason", now.reason, "problem", now.message)
	case seen && before.invalid:
		h.log.Info("Source secret is usable again", "source", ref.String(), "reason", now.reason)
	default:
		return // usable, and it was never said otherwise
	}
	if h.leader.Load() {
		h.record(ref, now)
	}
}

func (h *Health) record(ref config.SecretRef, s health) {
	regarding := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ref.Namespace, Name: ref.Name, UID: s.uid}}
	if s.invalid {
		// The reason first: a long message is cut to the Event limit from its end.
		h.events.Warning(regarding, events.ReasonSourceInvalid, events.ActionCheck, "%s: %s", s.reason, s.message)
		return
	}
	h.events.Normal(regarding, events.ReasonSourceValid, events.ActionCheck, "The source secret gives a credential for its registries again")
}

// CheckWhenSynced returns a runnable, for every replica, that checks every source once the informers of
// synced have listed: a source that does not exist makes no informer event, so nothing else would count
// it as missing until the next reload.
func (h *Health) CheckWhenSynced(synced func() bool) manager.Runnable {
	return &initialCheck{health: h, synced: synced}
}

type initialCheck struct {
	health *Health
	synced func() bool
}

// NeedLeaderElection is false: every replica keeps its own gauge.
func (*initialCheck) NeedLeaderElection() bool { return false }

func (c *initialCheck) Start(ctx context.Context) error {
	if err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) {
		return c.synced(), nil
	}); err != nil {
		return nil // stopped before the informers listed
	}
	c.health.CheckAll()
	return nil
}

// NeedLeaderElection is true: Start runs when this replica becomes the leader, from which point it
// records Events.
func (*Health) NeedLeaderElection() bool { return true }

// Start marks this replica as the leader and records an Event for every source that is invalid now, which
// the previous leader may not have lived to record. It implements manager.Runnable.
func (h *Health) Start(ctx context.Context) error {
	h.leader.Store(true)
	h.mu.Lock()
	for ref, s := range h.last {
		if s.invalid {
			h.record(ref, s)
		}
	}
	h.mu.Unlock()
	<-ctx.Done()
	return nil
}
