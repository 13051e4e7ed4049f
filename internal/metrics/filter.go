package metrics

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"strings"
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
	// maxCachedReviews bounds each cache. Anyone who reaches the port can send tokens; ever new ones only
	// make the cache start over.
	maxCachedReviews = 1024
	// reviewQPS and reviewBurst limit the reviews the endpoint asks for, on a client of its own: a flood of
	// invented tokens waits in its own queue, not in front of the admission path's API calls.
	reviewQPS   = 5
	reviewBurst = 10
	// reviewTimeout bounds one review.
	reviewTimeout = 10 * time.Second
)

// WithAuthenticationAndAuthorization is a metrics server FilterProvider with the model of
// controller-runtime's filters.WithAuthenticationAndAuthorization: a scrape must carry a bearer token that
// the API server authenticates (TokenReview), and its user must be allowed the request's verb on the
// non-resource URL of its path, such as get on /metrics (SubjectAccessReview). It is built on client-go
// alone: controller-runtime's filter links k8s.io/apiserver, which added 20 MiB to the process's RSS. It
// answers 401 to a missing or rejected token (controller-runtime's answers 500 to a rejected one), 403 to
// a user not allowed, and 500 only when the API server cannot be asked. Answers are cached for a minute.
func WithAuthenticationAndAuthorization(cfg *rest.Config, httpClient *http.Client) (metricsserver.Filter, error) {
	reviewConfig := rest.CopyConfig(cfg)
	reviewConfig.QPS, reviewConfig.Burst = reviewQPS, reviewBurst
	reviewConfig.RateLimiter = nil
	cs, err := kubernetes.NewForConfigAndClient(reviewConfig, httpClient)
	if err != nil {
		return nil, fmt.Errorf("create review client: %w", err)
	}
	return NewReviewFilter(cs), nil
}

// NewReviewFilter returns the filter of WithAuthenticationAndAuthorization asking cs for the reviews.
func NewReviewFilter(cs kubernetes.Interface) metricsserver.Filter {
	f := &reviewFilter{
		reviews: cs,
		tokens:  &ttl.Cache[tokenAnswer]{TTL: reviewTTL, Max: maxCachedReviews},
		access:  &ttl.Cache[bool]{TTL: reviewTTL, Max: maxCachedReviews},
	}
	return func(log logr.Logger, next http.Handler) (http.Handler, error) {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			f.serve(log, next, w, req)
		}), nil
	}
}

type reviewFilter struct {
	reviews kubernetes.Interface
	tokens  *ttl.Cache[tokenAnswer]
	access  *ttl.Cache[bool]
}

type tokenAnswer struct {
	authenticated bool
	user          authenticationv1.UserInfo
}

func (f *reviewFilter) serve(log logr.Logger, next http.Handler, w http.ResponseWriter, req *http.Request) {
	token, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
	if !ok || strings.TrimSpace(token) == "" {
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return
	}
	ctx, cancel := context.WithTimeout(req.Context(), reviewTimeout)
	defer cancel()
	who, err := f.authenticate(ctx, strings.TrimSpace(token))
	if err != nil {
		log.Error(err, "Cannot authenticate a metrics request")
		http.Error(w, "Authentication failed", http.StatusInternalServerError)
		return
	}
	if !who.authenticated {
		log.V(1).Info("Metrics request with a token the API server rejects")
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return
	}
	verb := strings.ToLower(req.Method)
	allowed, err := f.authorize(ctx, who.user, verb, req.URL.Path)
	if err != nil {
		log.Error(err, "Cannot authorize a metrics request", "user", who.user.Username)
		http.Error(w, "Authorization failed", http.StatusInternalServerError)
		return
	}
	if !allowed {
		log.V(1).Info("Metrics request denied", "user", who.user.Username, "verb", verb, "path", req.URL.Path)
		http.Error(w, fmt.Sprintf("user %s may not %s %s", who.user.Username, verb, req.URL.Path), http.StatusForbidden)
		return
	}
	next.ServeHTTP(w, req)
}

func (f *reviewFilter) authenticate(ctx context.Context, token string) (tokenAnswer, error) {
	// The cache keeps a hash of the token, never the token.
	sum := sha256.Sum256([]byte(token))
	key := string(sum[:])
	if a, ok := f.tokens.Get(key); ok {
		return a, nil
	}
	review, err := f.reviews.AuthenticationV1().TokenReviews().Create(ctx,
		&authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil {
		return tokenAnswer{}, fmt.Errorf("create token review: %w", err)
	}
	a := tokenAnswer{authenticated: review.Status.Authenticated, user: review.Status.User}
	f.tokens.Put(key, a)
	return a, nil
}

func (f *reviewFilter) authorize(ctx context.Context, user authenticationv1.UserInfo, verb, path string) (bool, error) {
	key := strings.Join([]string{user.Username, user.UID, strings.Join(user.Groups, ","), verb, path}, "\x00")
	if allowed, ok := f.access.Get(key); ok {
		return allowed, nil
	}
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
		return false, fmt.Errorf("create subject access review: %w", err)
	}
	f.access.Put(key, review.Status.Allowed)
	return review.Status.Allowed, nil
}
