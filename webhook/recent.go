package webhook

import (
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
)

const (
	// liveConfirmTTL is how long a namespace's live read answers for the requests that follow it. The
	// cache lags by milliseconds; without this, every Pod of a namespace that an entry's selector leaves
	// out would cost a live read, at a rate any tenant sets, out of the admission path's client budget.
	liveConfirmTTL = time.Second
	// maxRecentReads bounds each memo of live reads: namespaces and ServiceAccounts are many, and a tenant
	// can create ServiceAccounts. A full memo starts over.
	maxRecentReads = 4096
	// maxRememberedPullSecrets keeps a ServiceAccount with a long imagePullSecrets list, which a tenant can
	// write, out of the memo: it is read live each time instead.
	maxRememberedPullSecrets = 64
)

// serviceAccountReads remembers, per ServiceAccount, the imagePullSecrets a live read returned and the
// resourceVersion it returned them at. While the metadata cache shows that same resourceVersion, the
// ServiceAccount has not changed and the remembered list is its list: no second read.
type serviceAccountReads struct {
	mu      sync.Mutex
	entries map[string]*corev1.ServiceAccount
}

func (r *serviceAccountReads) get(key, resourceVersion string) *corev1.ServiceAccount {
	r.mu.Lock()
	defer r.mu.Unlock()
	sa, ok := r.entries[key]
	if !ok || sa.ResourceVersion != resourceVersion {
		return nil
	}
	return sa.DeepCopy()
}

func (r *serviceAccountReads) put(key string, sa *corev1.ServiceAccount) {
	if len(sa.ImagePullSecrets) > maxRememberedPullSecrets {
		return
	}
	// Only what the handler reads: name, resourceVersion (for the patch's test) and the list.
	kept := &corev1.ServiceAccount{ImagePullSecrets: append([]corev1.LocalObjectReference(nil), sa.ImagePullSecrets...)}
	kept.Namespace, kept.Name, kept.ResourceVersion = sa.Namespace, sa.Name, sa.ResourceVersion
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.entries == nil || len(r.entries) >= maxRecentReads {
		r.entries = map[string]*corev1.ServiceAccount{}
	}
	r.entries[key] = kept
}
