package metrics

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
)

var served = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("metrics")) })

// newTestFilter returns the filter asking api, with budgets b and the clock clk.
func newTestFilter(t *testing.T, api *fakeAPIServer, clk *clock, b budgetSettings) http.Handler {
	t.Helper()
	cs := api.clientset(t)
	f := newReviewFilter(cs, newIssuerKeys(cs.Discovery().RESTClient(), clk.Now), b, clk.Now)
	h, err := f.filter(logr.Discard(), served)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// scrape sends GET /metrics with the Authorization header authorization (none when empty).
func scrape(ctx context.Context, h http.Handler, authorization string) int {
	req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/metrics", nil)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code
}

func randomString(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// signed returns the Authorization header of a token of monitoring/prometheus signed by key, naming kid,
// with ID id, valid for an hour from at; the API server authenticates it when known.
func signed(t *testing.T, api *fakeAPIServer, key *signingKey, kid, id string, at time.Time, known bool) string {
	t.Helper()
	token := key.sign(t, kid, saClaims("monitoring", "prometheus", id, at))
	if known {
		api.authenticate(token, saUser("monitoring", "prometheus", id))
	}
	return bearer(token)
}

func TestReviewFilter(t *testing.T) {
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for name, tc := range map[string]struct {
		// token returns the Authorization header, registering with api what the API server authenticates.
		token       func(t *testing.T, api *fakeAPIServer) string
		want        int
		wantReviews map[string]int
	}{
		"a ServiceAccount token signed with the issuer's RSA key, allowed the metrics": {
			token: func(t *testing.T, api *fakeAPIServer) string {
				return bearer(api.serviceAccountToken(t, "monitoring", "prometheus", "a", start))
			},
			want: http.StatusOK, wantReviews: map[string]int{"token": 1, "access": 1},
		},
		"a ServiceAccount token signed with the issuer's ECDSA key": {
			token: func(t *testing.T, api *fakeAPIServer) string {
				return signed(t, api, api.ecKey, api.ecKey.kid, "b", start, true)
			},
			want: http.StatusOK, wantReviews: map[string]int{"token": 1, "access": 1},
		},
		"a ServiceAccount whose user may not get /metrics is forbidden": {
			token: func(t *testing.T, api *fakeAPIServer) string {
				return bearer(api.serviceAccountToken(t, "tenant", "app", "c", start))
			},
			want: http.StatusForbidden, wantReviews: map[string]int{"token": 1, "access": 1},
		},
		"a token the issuer signed but the API server revoked is reviewed and refused": {
			token: func(t *testing.T, api *fakeAPIServer) string {
				return signed(t, api, api.rsaKey, api.rsaKey.kid, "deleted-pod", start, false)
			},
			want: http.StatusUnauthorized, wantReviews: map[string]int{"token": 1, "access": 0},
		},
		"an invented token claiming the issuer, signed by another key under the issuer's key ID, costs no review": {
			token: func(t *testing.T, api *fakeAPIServer) string {
				return signed(t, api, newSigningKey(t, api.rsaKey.kid, jose.RS256), api.rsaKey.kid, "d", start, true)
			},
			want: http.StatusUnauthorized, wantReviews: map[string]int{"token": 0, "access": 0},
		},
		"an invented token naming a key the issuer does not have costs no review": {
			token: func(t *testing.T, api *fakeAPIServer) string {
				return signed(t, api, newSigningKey(t, "forged", jose.ES256), "forged", "e", start, true)
			},
			want: http.StatusUnauthorized, wantReviews: map[string]int{"token": 0, "access": 0},
		},
		"a token of the issuer naming no key costs no review": {
			token: func(t *testing.T, api *fakeAPIServer) string { return signed(t, api, api.rsaKey, "", "f", start, true) },
			want:  http.StatusUnauthorized, wantReviews: map[string]int{"token": 0, "access": 0},
		},
		"an expired token of the issuer costs no review": {
			token: func(t *testing.T, api *fakeAPIServer) string {
				return signed(t, api, api.rsaKey, api.rsaKey.kid, "g", start.Add(-2*time.Hour), true)
			},
			want: http.StatusUnauthorized, wantReviews: map[string]int{"token": 0, "access": 0},
		},
		"a token of the issuer not valid yet costs no review": {
			token: func(t *testing.T, api *fakeAPIServer) string {
				return signed(t, api, api.rsaKey, api.rsaKey.kid, "h", start.Add(time.Hour), true)
			},
			want: http.StatusUnauthorized, wantReviews: map[string]int{"token": 0, "access": 0},
		},
		"a token expired less than the API server's leeway ago is still reviewed": {
			token: func(t *testing.T, api *fakeAPIServer) string {
				return signed(t, api, api.rsaKey, api.rsaKey.kid, "i", start.Add(-time.Hour-30*time.Second), true)
			},
			want: http.StatusOK, wantReviews: map[string]int{"token": 1, "access": 1},
		},
		"an OIDC token of another issuer is reviewed": {
			token: func(t *testing.T, api *fakeAPIServer) string {
				idp := newSigningKey(t, "idp", jose.RS256)
				token := idp.sign(t, "idp", jwt.Claims{Issuer: "https://idp.example", Subject: "alice", Expiry: jwt.NewNumericDate(start.Add(time.Hour))})
				api.authenticate(token, authenticationv1.UserInfo{Username: "system:serviceaccount:monitoring:prometheus"})
				return bearer(token)
			},
			want: http.StatusOK, wantReviews: map[string]int{"token": 1, "access": 1},
		},
		"a static token the API server knows is reviewed": {
			token: func(t *testing.T, api *fakeAPIServer) string {
				api.authenticate("static-token", authenticationv1.UserInfo{Username: "system:serviceaccount:monitoring:prometheus"})
				return bearer("static-token")
			},
			want: http.StatusOK, wantReviews: map[string]int{"token": 1, "access": 1},
		},
		"a random string is reviewed within the shared budget and refused": {
			token:       func(t *testing.T, _ *fakeAPIServer) string { return bearer(randomString(t, 32)) },
			want:        http.StatusUnauthorized,
			wantReviews: map[string]int{"token": 1, "access": 0},
		},
		"a token longer than any credential costs no review": {
			token:       func(t *testing.T, _ *fakeAPIServer) string { return bearer(strings.Repeat("a", maxTokenBytes+1)) },
			want:        http.StatusUnauthorized,
			wantReviews: map[string]int{"token": 0, "access": 0},
		},
		"no token": {
			token: func(*testing.T, *fakeAPIServer) string { return "" }, want: http.StatusUnauthorized,
			wantReviews: map[string]int{"token": 0, "access": 0},
		},
		"a credential that is not a bearer": {
			token: func(*testing.T, *fakeAPIServer) string { return "Basic dTpw" }, want: http.StatusUnauthorized,
			wantReviews: map[string]int{"token": 0, "access": 0},
		},
		"an empty bearer token": {
			token: func(*testing.T, *fakeAPIServer) string { return "Bearer  " }, want: http.StatusUnauthorized,
			wantReviews: map[string]int{"token": 0, "access": 0},
		},
	} {
		t.Run(name, func(t *testing.T) {
			api := newFakeAPIServer(t)
			clk := &clock{t: start}
			h := newTestFilter(t, api, clk, defaultBudgets)
			authorization := tc.token(t, api)
			if got := scrape(t.Context(), h, authorization); got != tc.want {
				t.Errorf("status %d, want %d", got, tc.want)
			}
			if diff := cmp.Diff(tc.wantReviews, api.reviews()); diff != "" {
				t.Errorf("reviews (-want +got):\n%s", diff)
			}
			// The answer is reused: the same request again asks the API server nothing, and gets the same.
			before := api.reviews()
			if got := scrape(t.Context(), h, authorization); got != tc.want {
				t.Errorf("again: status %d, want %d", got, tc.want)
			}
			if diff := cmp.Diff(before, api.reviews()); diff != "" {
				t.Errorf("again: reviews (-before +after):\n%s", diff)
			}
		})
	}
}

// TestInventedTokensDoNotDelayAServiceAccount floods the filter, built as main.go builds it (with its review
// client and that client's rate limit), with invented tokens from many connections while the API server is
// slow to answer reviews, then scrapes with a real ServiceAccount token.
func TestInventedTokensDoNotDelayAServiceAccount(t *testing.T) {
	api := newFakeAPIServer(t)
	hold := make(chan struct{})
	api.mu.Lock()
	api.holdTokenReviews = hold
	api.mu.Unlock()
	t.Cleanup(func() { close(hold) })
	filter, err := WithAuthenticationAndAuthorization(api.config(), http.DefaultClient)
	if err != nil {
		t.Fatal(err)
	}
	h, err := filter(logr.Discard(), served)
	if err != nil {
		t.Fatal(err)
	}
	var entered sync.WaitGroup
	var mu sync.Mutex
	statuses := map[int]int{}
	counting := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered.Done()
		h.ServeHTTP(w, r)
	})
	now := time.Now()
	forger := newSigningKey(t, api.rsaKey.kid, jose.RS256)
	const flood = 200
	entered.Add(flood)
	var done sync.WaitGroup
	floodCtx, stopFlood := context.WithCancel(t.Context())
	defer stopFlood()
	for i := range flood {
		var token string
		switch i % 3 {
		case 0: // claims the issuer, signed by another key under the issuer's key ID
			token = forger.sign(t, api.rsaKey.kid, saClaims("monitoring", "prometheus", fmt.Sprint(i), now))
		case 1: // claims the issuer, names a key it does not have
			token = forger.sign(t, fmt.Sprint("kid-", i), saClaims("monitoring", "prometheus", fmt.Sprint(i), now))
		case 2: // claims the issuer, signed with the issuer's key ID but by the attacker's ECDSA key
			token = newSigningKey(t, api.ecKey.kid, jose.ES256).sign(t, api.ecKey.kid, saClaims("monitoring", "prometheus", fmt.Sprint(i), now))
		}
		done.Add(1)
		go func() {
			defer done.Done()
			code := scrape(floodCtx, counting, bearer(token))
			mu.Lock()
			statuses[code]++
			mu.Unlock()
		}()
	}
	entered.Wait()

	valid := api.serviceAccountToken(t, "monitoring", "prometheus", "real", now)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	began := time.Now()
	if got := scrape(ctx, h, bearer(valid)); got != http.StatusOK {
		t.Errorf("the ServiceAccount's scrape during the flood: status %d, want 200", got)
	}
	t.Logf("the ServiceAccount's scrape took %v during a flood of %d invented tokens", time.Since(began), flood)
	if got := api.count("token:" + valid); got != 1 {
		t.Errorf("the ServiceAccount's token was reviewed %d times, want 1", got)
	}
	stopFlood()
	done.Wait()
	if got := api.count("token") - api.count("token:"+valid); got != 0 {
		t.Errorf("the invented tokens cost %d TokenReviews, want 0", got)
	}
	if diff := cmp.Diff(map[int]int{http.StatusUnauthorized: flood}, statuses); diff != "" {
		t.Errorf("answers to the invented tokens by status (-want +got):\n%s", diff)
	}
}

// TestForeignTokensSpendTheirOwnBudget floods the filter with random strings, which only a TokenReview
// can tell from a static token: they are reviewed within the shared budget and then refused at once (429),
// while a ServiceAccount's scrape is reviewed and served.
func TestForeignTokensSpendTheirOwnBudget(t *testing.T) {
	api := newFakeAPIServer(t)
	clk := &clock{t: time.Now()}
	h := newTestFilter(t, api, clk, defaultBudgets)
	statuses := map[int]int{}
	const flood = 100
	for range flood {
		statuses[scrape(t.Context(), h, bearer(randomString(t, 24)))]++
	}
	want := map[int]int{http.StatusUnauthorized: defaultBudgets.otherBurst, http.StatusTooManyRequests: flood - defaultBudgets.otherBurst}
	if diff := cmp.Diff(want, statuses); diff != "" {
		t.Errorf("answers to random strings by status (-want +got):\n%s", diff)
	}
	if got := api.count("token"); got != defaultBudgets.otherBurst {
		t.Errorf("random strings cost %d TokenReviews, want the shared budget's burst, %d", got, defaultBudgets.otherBurst)
	}
	valid := api.serviceAccountToken(t, "monitoring", "prometheus", "real", clk.Now())
	if got := scrape(t.Context(), h, bearer(valid)); got != http.StatusOK {
		t.Errorf("the ServiceAccount's scrape after the flood: status %d, want 200", got)
	}
}

// TestTenantTokensDoNotStarveAnotherNamespace: a tenant mints real tokens for its own ServiceAccounts, in
// one namespace and then in many, each a new token that passes the local check. The scraper's namespace
// keeps its budget.
func TestTenantTokensDoNotStarveAnotherNamespace(t *testing.T) {
	api := newFakeAPIServer(t)
	clk := &clock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	b := defaultBudgets
	h := newTestFilter(t, api, clk, b)
	statuses := map[int]int{}
	for i := range 50 {
		token := api.serviceAccountToken(t, "tenant", fmt.Sprint("sa-", i%5), fmt.Sprint(i), clk.Now())
		statuses[scrape(t.Context(), h, bearer(token))]++
	}
	want := map[int]int{http.StatusForbidden: b.namespaceBurst, http.StatusTooManyRequests: 50 - b.namespaceBurst}
	if diff := cmp.Diff(want, statuses); diff != "" {
		t.Errorf("one tenant namespace's tokens by status (-want +got):\n%s", diff)
	}
	prometheus := func(id string) int {
		return scrape(t.Context(), h, bearer(api.serviceAccountToken(t, "monitoring", "prometheus", id, clk.Now())))
	}
	if got := prometheus("first"); got != http.StatusOK {
		t.Fatalf("the scraper after one tenant namespace's flood: status %d, want 200", got)
	}

	// Tenant namespaces together spend the ceiling; a namespace never allowed is then refused, the scraper's
	// (allowed a moment ago) is not.
	for n := range b.serviceAccountBurst {
		for i := range b.namespaceBurst {
			scrape(t.Context(), h, bearer(api.serviceAccountToken(t, fmt.Sprint("tenant-", n), "app", fmt.Sprint(n, "-", i), clk.Now())))
		}
	}
	if got := scrape(t.Context(), h, bearer(api.serviceAccountToken(t, "newcomer", "app", "x", clk.Now()))); got != http.StatusTooManyRequests {
		t.Errorf("a namespace never allowed, with the ceiling spent: status %d, want 429", got)
	}
	if got := prometheus("second"); got != http.StatusOK {
		t.Errorf("the scraper with the ceiling spent: status %d, want 200", got)
	}
	// Budgets come back with time.
	clk.Add(time.Duration(float64(time.Second) * float64(b.serviceAccountBurst) / float64(b.serviceAccountRate)))
	if got := scrape(t.Context(), h, bearer(api.serviceAccountToken(t, "newcomer", "app", "y", clk.Now()))); got != http.StatusForbidden {
		t.Errorf("a namespace never allowed, once the ceiling refilled: status %d, want 403", got)
	}
}

// TestAccessAnswersAreKeyedByTheWholeUser: an answer for one user is never reused for another that differs
// only in its extra or in how its groups split.
func TestAccessAnswersAreKeyedByTheWholeUser(t *testing.T) {
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	base := authenticationv1.UserInfo{Username: "alice", UID: "1", Groups: []string{"a", "b"}}
	scoped := *base.DeepCopy()
	scoped.Extra = map[string]authenticationv1.ExtraValue{"scopes.example.com": {"read-nothing"}}
	joined := *base.DeepCopy()
	joined.Groups = []string{"a,b"}
	for name, tc := range map[string]struct{ first, second authenticationv1.UserInfo }{
		"a scoped token after an unscoped one of the same user": {base, scoped},
		"a group with a comma after the groups it joins":        {base, joined},
	} {
		t.Run(name, func(t *testing.T) {
			api := newFakeAPIServer(t)
			api.allow = func(s authorizationv1.SubjectAccessReviewSpec) bool {
				// RBAC grants group b; a scoped token is limited to what its scopes say.
				return len(s.Extra) == 0 && len(s.Groups) == 2 && s.Groups[1] == "b"
			}
			api.authenticate("first", tc.first)
			api.authenticate("second", tc.second)
			h := newTestFilter(t, api, &clock{t: start}, defaultBudgets)
			if got := scrape(t.Context(), h, bearer("first")); got != http.StatusOK {
				t.Errorf("first user: status %d, want 200", got)
			}
			if got := scrape(t.Context(), h, bearer("second")); got != http.StatusForbidden {
				t.Errorf("second user: status %d, want 403", got)
			}
			if got := api.count("access"); got != 2 {
				t.Errorf("%d SubjectAccessReviews, want 2", got)
			}
		})
	}
}

func TestAccessKey(t *testing.T) {
	u := func(name, uid string, groups []string, extra map[string]authenticationv1.ExtraValue) authenticationv1.UserInfo {
		return authenticationv1.UserInfo{Username: name, UID: uid, Groups: groups, Extra: extra}
	}
	type question struct {
		user       authenticationv1.UserInfo
		verb, path string
	}
	for name, tc := range map[string]struct{ a, b question }{
		"groups joined by a comma": {
			question{u("alice", "1", []string{"a,b"}, nil), "get", "/metrics"},
			question{u("alice", "1", []string{"a", "b"}, nil), "get", "/metrics"},
		},
		"extra set and unset": {
			question{u("alice", "1", nil, nil), "get", "/metrics"},
			question{u("alice", "1", nil, map[string]authenticationv1.ExtraValue{"scopes": {"x"}}), "get", "/metrics"},
		},
		"extra values joined by a comma": {
			question{u("alice", "1", nil, map[string]authenticationv1.ExtraValue{"scopes": {"x,y"}}), "get", "/metrics"},
			question{u("alice", "1", nil, map[string]authenticationv1.ExtraValue{"scopes": {"x", "y"}}), "get", "/metrics"},
		},
		"an extra value moved to another key": {
			question{u("alice", "1", nil, map[string]authenticationv1.ExtraValue{"a": {"x"}, "b": nil}), "get", "/metrics"},
			question{u("alice", "1", nil, map[string]authenticationv1.ExtraValue{"a": nil, "b": {"x"}}), "get", "/metrics"},
		},
		"a separator inside the name": {
			question{u("a\x00b", "c", nil, nil), "get", "/metrics"},
			question{u("a", "b\x00c", nil, nil), "get", "/metrics"},
		},
		"a group moved into the UID": {
			question{u("alice", "1", []string{"g"}, nil), "get", "/metrics"},
			question{u("alice", "1\x00g", nil, nil), "get", "/metrics"},
		},
		"verbs": {
			question{u("alice", "1", nil, nil), "get", "/metrics"},
			question{u("alice", "1", nil, nil), "post", "/metrics"},
		},
		"paths": {
			question{u("alice", "1", nil, nil), "get", "/metrics"},
			question{u("alice", "1", nil, nil), "get", "/metrics/extra"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			if accessKey(tc.a.user, tc.a.verb, tc.a.path) == accessKey(tc.b.user, tc.b.verb, tc.b.path) {
				t.Errorf("%+v and %+v share a key", tc.a, tc.b)
			}
		})
	}
	// The same question has the same key, whatever the order extra's keys come in.
	ascending, descending := map[string]authenticationv1.ExtraValue{}, map[string]authenticationv1.ExtraValue{}
	for i := range 20 {
		ascending[fmt.Sprint("k", i)] = authenticationv1.ExtraValue{fmt.Sprint(i)}
		descending[fmt.Sprint("k", 19-i)] = authenticationv1.ExtraValue{fmt.Sprint(19 - i)}
	}
	if accessKey(u("alice", "1", nil, ascending), "get", "/metrics") != accessKey(u("alice", "1", nil, descending), "get", "/metrics") {
		t.Error("the same question has two keys")
	}
}

// TestIssuerKeys: the keys are read again for a token naming a new key, at a bounded rate; a key set too
// large or a discovery document the process may not read leaves every token to a TokenReview within the
// shared budget.
func TestIssuerKeys(t *testing.T) {
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	t.Run("a token naming a new key makes the keys read again, at most every keysMinInterval", func(t *testing.T) {
		api := newFakeAPIServer(t)
		clk := &clock{t: start}
		h := newTestFilter(t, api, clk, defaultBudgets)
		if got := scrape(t.Context(), h, bearer(api.serviceAccountToken(t, "monitoring", "prometheus", "a", clk.Now()))); got != http.StatusOK {
			t.Fatalf("status %d, want 200", got)
		}
		forger := newSigningKey(t, "forged", jose.RS256)
		for i := range 50 {
			token := forger.sign(t, fmt.Sprint("forged-", i), saClaims("monitoring", "prometheus", fmt.Sprint(i), clk.Now()))
			if got := scrape(t.Context(), h, bearer(token)); got != http.StatusUnauthorized {
				t.Fatalf("a token naming an unknown key: status %d, want 401", got)
			}
		}
		if got := api.count("jwks"); got != 1 {
			t.Errorf("the keys were read %d times, 50 unknown key IDs within %v of the first read, want 1", got, keysMinInterval)
		}
		// The API server starts signing with a new key.
		rotated := newSigningKey(t, "rsa-2", jose.RS256)
		api.mu.Lock()
		api.published = append(api.published, rotated.public())
		api.mu.Unlock()
		clk.Add(keysMinInterval)
		token := rotated.sign(t, rotated.kid, saClaims("monitoring", "prometheus", "b", clk.Now()))
		api.authenticate(token, saUser("monitoring", "prometheus", "b"))
		if got := scrape(t.Context(), h, bearer(token)); got != http.StatusOK {
			t.Errorf("a token of the new key: status %d, want 200", got)
		}
		if got := api.count("jwks"); got != 2 {
			t.Errorf("the keys were read %d times, want 2", got)
		}
		if diff := cmp.Diff(map[string]int{"token": 2, "access": 2}, api.reviews()); diff != "" {
			t.Errorf("reviews (-want +got):\n%s", diff)
		}
	})
	for name, spoil := range map[string]func(api *fakeAPIServer){
		"the discovery document is forbidden": func(api *fakeAPIServer) { api.discoveryStatus = http.StatusForbidden },
		"the key set is larger than its bound": func(api *fakeAPIServer) {
			api.jwksBody = []byte(`{"keys":[],"pad":"` + strings.Repeat("x", maxDocumentBytes) + `"}`)
		},
		"the key set holds no public key": func(api *fakeAPIServer) {
			api.jwksBody = []byte(`{"keys":[{"kty":"oct","kid":"hmac","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI"}]}`)
		},
	} {
		t.Run(name+": every token is reviewed within the shared budget", func(t *testing.T) {
			api := newFakeAPIServer(t)
			spoil(api)
			clk := &clock{t: start}
			h := newTestFilter(t, api, clk, defaultBudgets)
			other := testutil.ToFloat64(metricsReviews.WithLabelValues(reviewToken, "other"))
			if got := scrape(t.Context(), h, bearer(api.serviceAccountToken(t, "monitoring", "prometheus", "a", clk.Now()))); got != http.StatusOK {
				t.Errorf("a real ServiceAccount token: status %d, want 200", got)
			}
			if got := testutil.ToFloat64(metricsReviews.WithLabelValues(reviewToken, "other")) - other; got != 1 {
				t.Errorf("TokenReviews in the shared budget went up by %v, want 1", got)
			}
			forger := newSigningKey(t, api.rsaKey.kid, jose.RS256)
			for i := range defaultBudgets.otherBurst + 5 {
				scrape(t.Context(), h, bearer(forger.sign(t, api.rsaKey.kid, saClaims("monitoring", "prometheus", fmt.Sprint(i), clk.Now()))))
			}
			if got := api.count("token"); got != defaultBudgets.otherBurst {
				t.Errorf("%d TokenReviews, want the shared budget's burst, %d", got, defaultBudgets.otherBurst)
			}
			if got := scrape(t.Context(), h, bearer(api.serviceAccountToken(t, "monitoring", "prometheus", "b", clk.Now()))); got != http.StatusTooManyRequests {
				t.Errorf("a real ServiceAccount token with the shared budget spent: status %d, want 429", got)
			}
			// Not read again before keysMinInterval, whatever the tokens.
			if got := api.count("discovery"); got != 1 {
				t.Errorf("the discovery document was read %d times, want 1", got)
			}
		})
	}
}

// TestReviewErrors: a token that passed the local check gets a 500 when the API server cannot be asked; any
// other token a 401.
func TestReviewErrors(t *testing.T) {
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	api := newFakeAPIServer(t)
	clk := &clock{t: start}
	h := newTestFilter(t, api, clk, defaultBudgets)
	sa := api.serviceAccountToken(t, "monitoring", "prometheus", "a", start)
	// Read the keys while the API server answers.
	if got := scrape(t.Context(), h, bearer(api.rsaKey.sign(t, "unknown", saClaims("x", "y", "z", start)))); got != http.StatusUnauthorized {
		t.Fatalf("status %d, want 401", got)
	}
	api.Close()
	for name, tc := range map[string]struct {
		token string
		want  int
	}{
		"a token that passed the local check":    {sa, http.StatusInternalServerError},
		"a token that is not a ServiceAccount's": {"static-token", http.StatusUnauthorized},
	} {
		t.Run(name, func(t *testing.T) {
			if got := scrape(t.Context(), h, bearer(tc.token)); got != tc.want {
				t.Errorf("status %d, want %d", got, tc.want)
			}
		})
	}
}

func TestAnswerCacheIsBoundedInBytes(t *testing.T) {
	clk := &clock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	c := newAnswerCache(64<<10, func(s string) int { return len(s) }, clk.Now)
	key := func(i int) string { d := digest{byte(i), byte(i >> 8), byte(i >> 16)}; return string(d[:]) }
	for i := range 10000 {
		c.Put(key(i), strings.Repeat("v", i%1000))
		if c.Bytes() > c.MaxBytes {
			t.Fatalf("after %d entries: %d bytes, bound %d", i+1, c.Bytes(), c.MaxBytes)
		}
	}
	if v, ok := c.Get(key(9999)); !ok || len(v) != 999 {
		t.Errorf("latest entry: %d bytes, %v; want 999 bytes", len(v), ok)
	}
	if c.Put(key(1), strings.Repeat("v", c.MaxBytes/maxEntryShare)); func() bool { _, ok := c.Get(key(1)); return ok }() {
		t.Error("a value over a sixteenth of the bound was kept")
	}
	clk.Add(time.Minute)
	if _, ok := c.Get(key(9999)); ok {
		t.Error("an entry a TTL old still answers")
	}
}

func TestBudgetsBoundTheNamespaces(t *testing.T) {
	clk := &clock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	s := defaultBudgets
	s.maxNamespaces = 4
	s.serviceAccountBurst = 1000
	b := newBudgets(s, clk.Now)
	for i := range 4 {
		if !b.allow(lane{serviceAccount: true, namespace: fmt.Sprint("ns-", i)}) {
			t.Fatalf("namespace %d refused", i)
		}
	}
	if b.allow(lane{serviceAccount: true, namespace: "ns-4"}) {
		t.Error("a fifth namespace allowed while four are busy")
	}
	b.trust("ns-0")
	// Once idle, every untrusted entry may go; the trusted one stays until its trust ends.
	clk.Add(time.Duration(float64(time.Second) * float64(s.namespaceBurst) / float64(s.namespaceRate)))
	for i := 4; i < 7; i++ {
		if !b.allow(lane{serviceAccount: true, namespace: fmt.Sprint("ns-", i)}) {
			t.Errorf("namespace %d refused with idle entries to drop", i)
		}
	}
	if _, ok := b.namespaces["ns-0"]; !ok {
		t.Error("the trusted namespace's entry was dropped")
	}
	if len(b.namespaces) > s.maxNamespaces {
		t.Errorf("%d namespaces tracked, bound %d", len(b.namespaces), s.maxNamespaces)
	}
}
