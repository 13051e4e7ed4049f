package metrics

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/pullsecret-injector/pullsecret-injector/internal/ttl"
)

const (
	// reviewTTL is how long a TokenReview's or a SubjectAccessReview's answer, yes or no, is reused: a
	// scrape every 15 s costs the API server two reviews a minute, not eight.
	reviewTTL = time.Minute
	// tokenCacheBytes bounds the answers of TokenReviews that authenticated a token: only real credentials,
	// within the budgets, fill it (a bound ServiceAccount token's answer, with its Pod and node in extra,
	// counts about 1 KiB, so about 1,000 of them: more than the budgets let through in the minute an answer
	// lives).
	tokenCacheBytes = 1 << 20
	// rejectedCacheBytes bounds the tokens a TokenReview rejected, kept apart so that invented tokens
	// cannot push out the answers of real ones (about 850 entries of ttl.EntryOverhead and a digest).
	rejectedCacheBytes = 256 << 10
	// accessCacheBytes bounds each of the allowed and the denied answers of SubjectAccessReviews, kept apart
	// for the same reason (about 850 entries each).
	accessCacheBytes = 256 << 10
	// maxTokenBytes: a longer bearer token is refused without review. ServiceAccount tokens are about
	// 1 KiB, OIDC tokens with many groups some KiB.
	maxTokenBytes = 64 << 10
	// reviewQPS and reviewBurst limit the review client, which is the process's own: a backstop the budgets
	// keep under (every request the budgets let through costs two reviews at most), so that its queue is
	// never reached in practice.
	reviewQPS   = 50
	reviewBurst = 100
	// reviewTimeout bounds one request's reviews.
	reviewTimeout = 10 * time.Second
	// logInterval is the least time between two log lines summing up refusals, or two lines saying that a
	// foreign token could not be reviewed.
	logInterval = time.Minute
)

// The review label values of metricsReviews.
const (
	reviewToken  = "token"
	reviewAccess = "access"
)

// refusal is why a metrics request was refused, the reason label of metricsRefused.
type refusal string

const (
	noToken      refusal = "no_token"
	invalidToken refusal = "invalid_token"
	rejected     refusal = "rejected"
	overBudget   refusal = "over_budget"
	forbidden    refusal = "forbidden"
	reviewFailed refusal = "error"
)

var refusalReasons = []refusal{noToken, invalidToken, rejected, overBudget, forbidden, reviewFailed}

// logKey is the refusal's key in the summary log line.
func (r refusal) logKey() string {
	switch r {
	case noToken:
		return "noToken"
	case invalidToken:
		return "invalidToken"
	case overBudget:
		return "overBudget"
	}
	return string(r)
}

// WithAuthenticationAndAuthorization is a metrics server FilterProvider with the model of
// controller-runtime's filters.WithAuthenticationAndAuthorization: a scrape must carry a bearer token that
// the API server authenticates (TokenReview), and its user must be allowed the request's verb on the
// non-resource URL of its path, such as get on /metrics (SubjectAccessReview). It is built on client-go
// alone: controller-runtime's filter links k8s.io/apiserver, which added 20 MiB to the process's RSS.
//
// Before any review, a token is checked locally against the keys the API server publishes for its
// ServiceAccount issuer (OIDC discovery, read with the process's credentials): one that claims the issuer
// but fails the check is refused (401) at no cost. Reviews are spent from budgets that never wait: a
// ServiceAccount token from its namespace's, any other token from one shared budget; over it, 429. It
// answers 401 to a missing or rejected token, 403 to a user not allowed, and 500 only when the API server
// cannot be asked about a token that passed the local check, or about an authenticated user. Answers are
// cached for a minute.
func WithAuthenticationAndAuthorization(cfg *rest.Config, httpClient *http.Client) (metricsserver.Filter, error) {
	reviewConfig := rest.CopyConfig(cfg)
	reviewConfig.QPS, reviewConfig.Burst = reviewQPS, reviewBurst
	reviewConfig.RateLimiter = nil
	cs, err := kubernetes.NewForConfigAndClient(reviewConfig, httpClient)
	if err != nil {
		return nil, fmt.Errorf("create review client: %w", err)
	}
	return NewReviewFilter(cs, cs.Discovery().RESTClient()), nil
}

// NewReviewFilter returns the filter of WithAuthenticationAndAuthorization asking reviews for the reviews
// and reading the issuer's discovery document and keys through issuer, a client of the API server's root
// path. A nil issuer checks no token locally: every token is reviewed within the shared budget.
func NewReviewFilter(reviews kubernetes.Interface, issuer rest.Interface) metricsserver.Filter {
	var keys *issuerKeys
	if issuer != nil {
		keys = newIssuerKeys(issuer, time.Now)
	}
	return newReviewFilter(reviews, keys, defaultBudgets, time.Now).filter
}

func newReviewFilter(reviews kubernetes.Interface, keys *issuerKeys, b budgetSettings, now func() time.Time) *reviewFilter {
	return &reviewFilter{
		reviews:  reviews,
		keys:     keys,
		budgets:  newBudgets(b, now),
		now:      now,
		tokens:   newAnswerCache(tokenCacheBytes, tokenAnswer.size, now),
		rejected: newAnswerCache[struct{}](rejectedCacheBytes, nil, now),
		allowed:  newAnswerCache[struct{}](accessCacheBytes, nil, now),
		denied:   newAnswerCache[struct{}](accessCacheBytes, nil, now),
	}
}

type reviewFilter struct {
	reviews kubernetes.Interface
	keys    *issuerKeys
	budgets *budgets
	now     func() time.Time
	// tokens and rejected are keyed by the SHA-256 of the token, never the token.
	tokens   *ttl.Cache[tokenAnswer]
	rejected *ttl.Cache[struct{}]
	// allowed and denied are keyed by accessKey.
	allowed *ttl.Cache[struct{}]
	denied  *ttl.Cache[struct{}]

	refusals limitedLog
	failures limitedLog
	mu       sync.Mutex
	// refused counts the refusals since the last summary line: one entry per reason, six at most.
	refused map[refusal]int
}

// tokenAnswer is what an authenticated token's TokenReview said, and whose budget its reviews spend.
type tokenAnswer struct {
	user authenticationv1.UserInfo
	lane lane
}

// size counts the bytes of the strings a tokenAnswer refers to, 16 more for each string's header.
func (a tokenAnswer) size() int {
	n := len(a.user.Username) + len(a.user.UID) + len(a.lane.namespace) + 48
	for _, g := range a.user.Groups {
		n += len(g) + 16
	}
	for k, v := range a.user.Extra {
		n += len(k) + 16 + 24
		for _, s := range v {
			n += len(s) + 16
		}
	}
	return n
}

func (f *reviewFilter) filter(log logr.Logger, next http.Handler) (http.Handler, error) {
	if f.keys != nil {
		f.keys.setLogger(log)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		f.serve(log, next, w, req)
	}), nil
}

func (f *reviewFilter) serve(log logr.Logger, next http.Handler, w http.ResponseWriter, req *http.Request) {
	token, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
	token = strings.TrimSpace(token)
	if !ok || token == "" {
		f.refuse(log, w, noToken, http.StatusUnauthorized, "Unauthorized")
		return
	}
	ctx, cancel := context.WithTimeout(req.Context(), reviewTimeout)
	defer cancel()
	verb := strings.ToLower(req.Method)
	who, spent, why, err := f.authenticate(ctx, log, token)
	authenticated := why == ""
	if authenticated {
		var allowed bool
		allowed, why, err = f.authorize(ctx, who, spent, verb, req.URL.Path)
		if why == "" && !allowed {
			why = forbidden
		}
	}
	if why != "" {
		f.deny(log, w, req, why, err, who, authenticated)
		return
	}
	if who.lane.serviceAccount {
		f.budgets.trust(who.lane.namespace)
	}
	next.ServeHTTP(w, req)
}

// deny answers a refused request. Only a caller whose token passed the local check, or whom the API server
// authenticated, can get a 5xx, and only when the API server could not be asked.
func (f *reviewFilter) deny(log logr.Logger, w http.ResponseWriter, req *http.Request, why refusal, err error, who tokenAnswer, authenticated bool) {
	switch {
	case why == reviewFailed && authenticated:
		log.Error(err, "Cannot authorize a metrics request", "user", who.user.Username)
		f.refuse(log, w, why, http.StatusInternalServerError, "Authorization failed")
	case why == reviewFailed && who.lane.serviceAccount:
		// A token the issuer signed, so a caller with a real credential: worth an error, and bounded by its
		// namespace's budget.
		log.Error(err, "Cannot authenticate a metrics request", "namespace", who.lane.namespace)
		f.refuse(log, w, why, http.StatusInternalServerError, "Authentication failed")
	case why == reviewFailed:
		if f.failures.due(f.now()) {
			log.Error(err, "Cannot authenticate a metrics request with a token that is not a ServiceAccount's; answering 401")
		}
		f.refuse(log, w, why, http.StatusUnauthorized, "Unauthorized")
	case why == overBudget:
		w.Header().Set("Retry-After", "1")
		f.refuse(log, w, why, http.StatusTooManyRequests, "Too many reviews, retry later")
	case why == forbidden:
		verb := strings.ToLower(req.Method)
		log.V(1).Info("Metrics request denied", "user", who.user.Username, "verb", verb, "path", req.URL.Path)
		f.refuse(log, w, why, http.StatusForbidden, fmt.Sprintf("user %s may not %s %s", who.user.Username, verb, req.URL.Path))
	default:
		f.refuse(log, w, why, http.StatusUnauthorized, "Unauthorized")
	}
}

// authenticate answers who token is, from the cache or a TokenReview. spent says whether the request
// already spent its budget; why is set when the request is refused.
func (f *reviewFilter) authenticate(ctx context.Context, log logr.Logger, token string) (who tokenAnswer, spent bool, why refusal, err error) {
	if len(token) > maxTokenBytes {
		log.V(1).Info("Metrics request with a token too long to review", "bytes", len(token))
		return tokenAnswer{}, false, invalidToken, nil
	}
	sum := sha256.Sum256([]byte(token))
	key := string(sum[:])
	if a, ok := f.tokens.Get(key); ok {
		return a, false, "", nil
	}
	if _, ok := f.rejected.Get(key); ok {
		return tokenAnswer{}, false, rejected, nil
	}
	l := lane{}
	if f.keys != nil {
		switch c := f.keys.check(ctx, token); c.verdict {
		case invalid:
			log.V(1).Info("Metrics request with a token that fails the check against the ServiceAccount issuer's keys", "why", c.why)
			return tokenAnswer{}, false, invalidToken, nil
		case valid:
			l = lane{serviceAccount: true, namespace: c.namespace}
		}
	}
	if !f.budgets.allow(l) {
		log.V(1).Info("Metrics request over its review budget", "lane", l.label(), "namespace", l.namespace)
		return tokenAnswer{lane: l}, false, overBudget, nil
	}
	metricsReviews.WithLabelValues(reviewToken, l.label()).Inc()
	review, err := f.reviews.AuthenticationV1().TokenReviews().Create(ctx,
		&authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil {
		return tokenAnswer{lane: l}, true, reviewFailed, fmt.Errorf("create token review: %w", err)
	}
	if !review.Status.Authenticated {
		f.rejected.Put(key, struct{}{})
		log.V(1).Info("Metrics request with a token the API server rejects", "lane", l.label())
		return tokenAnswer{lane: l}, true, rejected, nil
	}
	a := tokenAnswer{user: review.Status.User, lane: l}
	f.tokens.Put(key, a)
	return a, true, "", nil
}

// authorize answers whether who may verb path, from the cache or a SubjectAccessReview, spending who's
// budget unless the request has already.
func (f *reviewFilter) authorize(ctx context.Context, who tokenAnswer, spent bool, verb, path string) (bool, refusal, error) {
	key := accessKey(who.user, verb, path)
	if _, ok := f.allowed.Get(key); ok {
		return true, "", nil
	}
	if _, ok := f.denied.Get(key); ok {
		return false, "", nil
	}
	if !spent && !f.budgets.allow(who.lane) {
		return false, overBudget, nil
	}
	metricsReviews.WithLabelValues(reviewAccess, who.lane.label()).Inc()
	user := who.user
	extra := make(map[string]authorizationv1.ExtraValue, len(user.Extra))
	for k, v := range user.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	review, err := f.reviews.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{
			User: user.Username, UID: user.UID, Groups: user.Groups, Extra: extra,
			NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: path, Verb: verb},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return false, reviewFailed, fmt.Errorf("create subject access review: %w", err)
	}
	if review.Status.Allowed {
		f.allowed.Put(key, struct{}{})
	} else {
		f.denied.Put(key, struct{}{})
	}
	return review.Status.Allowed, "", nil
}

// accessKey is the cache key of a SubjectAccessReview: the whole user (name, UID, groups, and extra by
// sorted key) and the verb and path, each string and each list preceded by its length, so that no two
// questions share an encoding, then hashed to a fixed size.
func accessKey(u authenticationv1.UserInfo, verb, path string) string {
	h := sha256.New()
	var n [binary.MaxVarintLen64]byte
	count := func(c int) { _, _ = h.Write(n[:binary.PutUvarint(n[:], uint64(c))]) }
	str := func(s string) { count(len(s)); _, _ = io.WriteString(h, s) }
	str(u.Username)
	str(u.UID)
	count(len(u.Groups))
	for _, g := range u.Groups {
		str(g)
	}
	count(len(u.Extra))
	for _, k := range slices.Sorted(maps.Keys(u.Extra)) {
		str(k)
		count(len(u.Extra[k]))
		for _, v := range u.Extra[k] {
			str(v)
		}
	}
	str(verb)
	str(path)
	var d digest
	return string(h.Sum(d[:0]))
}

// refuse answers status with message, counts the refusal, logs it at V(1) and, at most once per
// logInterval, sums up the refusals at V(0): a flood shows in the log as one line a minute.
func (f *reviewFilter) refuse(log logr.Logger, w http.ResponseWriter, why refusal, status int, message string) {
	metricsRefused.WithLabelValues(string(why)).Inc()
	log.V(1).Info("Metrics request refused", "reason", why, "status", status)
	f.mu.Lock()
	if f.refused == nil {
		f.refused = map[refusal]int{}
	}
	f.refused[why]++
	var summary []any
	if f.refusals.due(f.now()) {
		for _, r := range refusalReasons {
			summary = append(summary, r.logKey(), f.refused[r])
		}
		clear(f.refused)
	}
	f.mu.Unlock()
	if summary != nil {
		log.Info("Metrics requests refused since the last report, by reason", summary...)
	}
	http.Error(w, message, status)
}

// limitedLog says when a rate-limited log line is due.
type limitedLog struct {
	mu   sync.Mutex
	last time.Time
}

func (l *limitedLog) due(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() && now.Sub(l.last) < logInterval {
		return false
	}
	l.last = now
	return true
}
