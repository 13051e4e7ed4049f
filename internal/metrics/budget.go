package metrics

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// lane is whose budget a request that needs a review spends.
type lane struct {
	// serviceAccount: the token passed the local check, and namespace is its ServiceAccount's namespace.
	// Otherwise the token is foreign and spends the shared budget of foreign tokens.
	serviceAccount bool
	namespace      string
}

func (l lane) label() string {
	if l.serviceAccount {
		return "serviceaccount"
	}
	return "other"
}

// budgetSettings are the rates of the budgets. Every budget answers at once: a request over it is refused
// (429), never queued.
type budgetSettings struct {
	// namespaceRate and namespaceBurst: the reviews the valid tokens of one namespace may cost, whatever
	// the ServiceAccount, so that a tenant minting tokens (TokenRequest) for its own ServiceAccounts spends
	// its own budget only.
	namespaceRate  rate.Limit
	namespaceBurst int
	// serviceAccountRate and serviceAccountBurst: the ceiling of every namespace's reviews together, which a
	// trusted namespace may pass.
	serviceAccountRate  rate.Limit
	serviceAccountBurst int
	// otherRate and otherBurst: the reviews foreign tokens (OIDC users, static tokens, and anything
	// invented that is not a JWT of the cluster's issuer) may cost together.
	otherRate  rate.Limit
	otherBurst int
	// trustFor is how long a namespace one of whose ServiceAccounts was allowed the metrics is trusted.
	trustFor time.Duration
	// maxNamespaces bounds the namespaces tracked.
	maxNamespaces int
}

// defaultBudgets: a Prometheus replica scraping every 15 seconds with a token the kubelet renews hourly
// costs one TokenReview and one SubjectAccessReview a minute (the answers' lifetime), one unit of
// namespaceRate; a namespace may spend 30 a minute after a burst of 10. The ceiling needs 20 namespaces
// spending at full rate; foreign tokens get one review a second, a scraper among them one a minute.
var defaultBudgets = budgetSettings{
	namespaceRate: 0.5, namespaceBurst: 10,
	serviceAccountRate: 10, serviceAccountBurst: 20,
	otherRate: 1, otherBurst: 5,
	trustFor:      10 * time.Minute,
	maxNamespaces: 1024,
}

// budgets decides, without waiting, whether a request may cost the API server reviews. It tracks at most
// maxNamespaces namespaces: each entry is the namespace's name (at most 63 bytes, from a token the API
// server signed), a rate.Limiter and a time, about 256 bytes with the map's own, so 1,024 entries hold
// about 256 KiB. An entry goes away when the map is full and the entry is idle: its budget is whole again
// and it is not trusted, so that forgetting it changes nothing. When every entry is busy, a namespace not
// tracked yet is refused until one is idle: filling the map takes tokens of 1,024 namespaces spent within
// 20 seconds.
type budgets struct {
	settings budgetSettings
	now      func() time.Time

	mu              sync.Mutex
	namespaces      map[string]*namespaceBudget
	serviceAccounts *rate.Limiter
	other           *rate.Limiter
}

type namespaceBudget struct {
	limiter *rate.Limiter
	// trustedUntil: one of the namespace's ServiceAccounts was allowed the metrics lately. A trusted
	// namespace passes the ceiling, so that tenants spending it together cannot starve the scraper.
	trustedUntil time.Time
}

func newBudgets(s budgetSettings, now func() time.Time) *budgets {
	return &budgets{
		settings:        s,
		now:             now,
		namespaces:      map[string]*namespaceBudget{},
		serviceAccounts: rate.NewLimiter(s.serviceAccountRate, s.serviceAccountBurst),
		other:           rate.NewLimiter(s.otherRate, s.otherBurst),
	}
}

// allow spends one unit of l's budget and reports whether there was one.
func (b *budgets) allow(l lane) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	if !l.serviceAccount {
		return b.other.AllowN(now, 1)
	}
	nb := b.namespace(l.namespace, now)
	if nb == nil || !nb.limiter.AllowN(now, 1) {
		return false
	}
	return b.serviceAccounts.AllowN(now, 1) || now.Before(nb.trustedUntil)
}

// trust marks namespace trusted for trustFor from now.
func (b *budgets) trust(namespace string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	if nb := b.namespace(namespace, now); nb != nil {
		nb.trustedUntil = now.Add(b.settings.trustFor)
	}
}

// namespace returns the entry of ns, made if there is room; nil when the map is full of busy entries.
func (b *budgets) namespace(ns string, now time.Time) *namespaceBudget {
	if nb, ok := b.namespaces[ns]; ok {
		return nb
	}
	if len(b.namespaces) >= b.settings.maxNamespaces {
		for k, nb := range b.namespaces {
			if nb.limiter.TokensAt(now) >= float64(b.settings.namespaceBurst) && !now.Before(nb.trustedUntil) {
				delete(b.namespaces, k)
			}
		}
		if len(b.namespaces) >= b.settings.maxNamespaces {
			return nil
		}
	}
	nb := &namespaceBudget{limiter: rate.NewLimiter(b.settings.namespaceRate, b.settings.namespaceBurst)}
	b.namespaces[ns] = nb
	return nb
}
