package webhook

import (
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/internal/ttl"
)

const (
	// liveConfirmTTL is how long a live answer about a namespace or a copy's name answers for the requests
	// that follow it. The cache lags by milliseconds; without this, every Pod of a namespace that an
	// entry's selector leaves out would cost a live read, at a rate any tenant sets, out of the admission
	// path's client budget.
	liveConfirmTTL = time.Second
	// namespaceMemoBytes bounds the memo of namespaces read live, keyed by name, holding the labels. A
	// namespace's labels are at most what the API server stores for an object, so the memo holds at least
	// a dozen of the largest possible and thousands of usual ones; past the bound the oldest go first.
	namespaceMemoBytes = 4 << 20
	// copyMemoBytes bounds the memo of what a live answer said about a Secret at a copy's name, keyed by
	// "namespace/name" (at most 317 bytes) and holding one byte: at least 1,800 names, a few seconds' worth
	// at any rate of Pods the admission path can answer.
	copyMemoBytes = 1 << 20
	// serviceAccountMemoTTL bounds how long an enforcing ServiceAccount read live is remembered; the memo
	// answers only while the cache shows the same resourceVersion, so the TTL only makes sure an entry goes
	// away even when its ServiceAccount never changes.
	serviceAccountMemoTTL = 10 * time.Minute
	// serviceAccountMemoBytes bounds the memo of enforcing ServiceAccounts. An entry is the key (at most
	// 317 bytes), a resourceVersion and one string header per configured Secret the ServiceAccount lists,
	// whose bytes are the configuration's: at least 1,500 entries, whatever the ServiceAccounts list.
	serviceAccountMemoBytes = 1 << 20
)

// labelsBytes is what a namespace's labels hold, for the namespace memo's bound: each label's strings and
// their headers, and a map slot.
func labelsBytes(l labels.Set) int {
	n := 48 // the map header
	for k, v := range l {
		n += len(k) + len(v) + 48
	}
	return n
}

// copyState is what a live answer said about the Secret at a copy's name.
type copyState uint8

const (
	// foreignSecret: a Secret someone else made has the copy's name; a create would answer AlreadyExists.
	foreignSecret copyState = iota + 1
	// dryRunClear: a dry-run create of the copy succeeded (the copy is missing and can be made) or met the
	// copy made meanwhile. Dry runs answer as the Pods after a real create do, with no warning; real
	// requests do not read this and create the copy.
	dryRunClear
)

// enforcingServiceAccount is what the handler keeps of a ServiceAccount that enforces mountable secrets:
// which configured Secrets it lists, and what patching it needs. Its other pull secrets, any number of
// names its author chose, are not kept.
type enforcingServiceAccount struct {
	namespace, name string
	// resourceVersion is the one the facts were read at; a patch tests it.
	resourceVersion string
	// hasPullSecrets says its imagePullSecrets is not empty: an append adds to the list rather than
	// creating it.
	hasPullSecrets bool
	// lists holds the configured Secret names its imagePullSecrets lists, as the configuration's strings.
	lists []string
}

// newEnforcingServiceAccount keeps of sa what the handler needs under configuration m.
func newEnforcingServiceAccount(sa *corev1.ServiceAccount, m *config.Matcher) *enforcingServiceAccount {
	out := &enforcingServiceAccount{
		namespace: sa.Namespace, name: sa.Name, resourceVersion: sa.ResourceVersion,
		hasPullSecrets: len(sa.ImagePullSecrets) > 0,
	}
	for _, ref := range sa.ImagePullSecrets {
		if e := m.EntryForSecret(ref.Name); e != nil && !slices.Contains(out.lists, ref.Name) {
			out.lists = append(out.lists, e.Registry.Secret.Name)
		}
	}
	return out
}

// listsPullSecret reports whether the ServiceAccount lists the configured Secret name.
func (sa *enforcingServiceAccount) listsPullSecret(name string) bool {
	return slices.Contains(sa.lists, name)
}

func (sa *enforcingServiceAccount) bytes() int {
	return len(sa.namespace) + len(sa.name) + len(sa.resourceVersion) + 96 + 16*len(sa.lists)
}

// serviceAccountReads remembers, per ServiceAccount, what a live read of an enforcing ServiceAccount said,
// and the resourceVersion it said it at. While the metadata cache shows that same resourceVersion, the
// ServiceAccount has not changed: no second read. Entries are what enforcingServiceAccount keeps, counted
// by its bytes, within serviceAccountMemoBytes; one goes away after serviceAccountMemoTTL, when newer
// ones need its room, or with every entry when the configuration changes (what an entry lists depends on
// it).
type serviceAccountReads struct {
	mu      sync.Mutex
	matcher *config.Matcher
	memo    ttl.Cache[*enforcingServiceAccount]
}

// forConfig clears the memo when the configuration is not the one its entries were kept under. r.mu is held.
func (r *serviceAccountReads) forConfig(m *config.Matcher) {
	if r.matcher != m {
		r.memo.Clear()
		r.memo.TTL, r.memo.MaxBytes, r.memo.Size = serviceAccountMemoTTL, serviceAccountMemoBytes, (*enforcingServiceAccount).bytes
		r.matcher = m
	}
}

func (r *serviceAccountReads) get(m *config.Matcher, key, resourceVersion string) *enforcingServiceAccount {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.forConfig(m)
	sa, ok := r.memo.Get(key)
	if !ok || sa.resourceVersion != resourceVersion {
		return nil
	}
	// A copy: appending to the ServiceAccount changes the handler's.
	c := *sa
	c.lists = slices.Clone(sa.lists)
	return &c
}

func (r *serviceAccountReads) put(m *config.Matcher, key string, sa *enforcingServiceAccount) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.forConfig(m)
	c := *sa
	c.lists = slices.Clone(sa.lists)
	r.memo.Put(key, &c)
}
