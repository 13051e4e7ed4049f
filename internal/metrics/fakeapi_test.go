package metrics

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// testIssuerURL is the issuer the fake API server publishes.
const testIssuerURL = "https://kubernetes.default.svc.cluster.local"

// fakeAPIServer answers what the filter asks the API server: the issuer's discovery document and keys, and
// TokenReviews and SubjectAccessReviews, counting each. Tokens it authenticates are registered with
// authenticate; SubjectAccessReviews are answered by allow.
type fakeAPIServer struct {
	*httptest.Server
	rsaKey, ecKey *signingKey

	mu     sync.Mutex
	users  map[string]authenticationv1.UserInfo
	allow  func(authorizationv1.SubjectAccessReviewSpec) bool
	counts map[string]int // "token:<token>", "token", "access", "jwks", "discovery"
	// published are the public keys the key set serves; discoveryStatus, when not 0, answers the discovery
	// document; jwksBody, when set, replaces the key set.
	published       []jose.JSONWebKey
	discoveryStatus int
	jwksBody        []byte
	// holdTokenReviews, when set, makes a TokenReview of a token it does not know wait until it is closed:
	// an API server slow to answer.
	holdTokenReviews chan struct{}
}

type signingKey struct {
	kid string
	alg jose.SignatureAlgorithm
	key crypto.Signer
}

func newSigningKey(t *testing.T, kid string, alg jose.SignatureAlgorithm) *signingKey {
	t.Helper()
	var key crypto.Signer
	var err error
	if alg == jose.ES256 {
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	} else {
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	}
	if err != nil {
		t.Fatal(err)
	}
	return &signingKey{kid: kid, alg: alg, key: key}
}

func (k *signingKey) public() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.key.Public(), KeyID: k.kid, Algorithm: string(k.alg), Use: "sig"}
}

// sign returns a compact JWT of claims signed by k, naming kid in its header ("" names none).
func (k *signingKey) sign(t *testing.T, kid string, claims any) string {
	t.Helper()
	jwk := jose.JSONWebKey{Key: k.key, KeyID: kid}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: jwk}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// saClaims are the claims of a ServiceAccount token of namespace/name valid from now for an hour, with a
// token ID of its own, as TokenRequest makes them.
func saClaims(namespace, name, id string, now time.Time) jwt.Claims {
	return jwt.Claims{
		Issuer:    testIssuerURL,
		Subject:   "system:serviceaccount:" + namespace + ":" + name,
		Audience:  jwt.Audience{testIssuerURL},
		ID:        id,
		IssuedAt:  jwt.NewNumericDate(now),
		NotBefore: jwt.NewNumericDate(now),
		Expiry:    jwt.NewNumericDate(now.Add(time.Hour)),
	}
}

func saUser(namespace, name, id string) authenticationv1.UserInfo {
	return authenticationv1.UserInfo{
		Username: "system:serviceaccount:" + namespace + ":" + name, UID: namespace + "-" + name + "-uid",
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"},
		Extra:  map[string]authenticationv1.ExtraValue{"authentication.kubernetes.io/credential-id": {"JTI=" + id}},
	}
}

func newFakeAPIServer(t *testing.T) *fakeAPIServer {
	t.Helper()
	f := &fakeAPIServer{
		rsaKey: newSigningKey(t, "rsa-1", jose.RS256),
		ecKey:  newSigningKey(t, "ec-1", jose.ES256),
		users:  map[string]authenticationv1.UserInfo{},
		counts: map[string]int{},
		allow: func(s authorizationv1.SubjectAccessReviewSpec) bool {
			return s.User == "system:serviceaccount:monitoring:prometheus" && s.NonResourceAttributes != nil &&
				s.NonResourceAttributes.Verb == "get" && s.NonResourceAttributes.Path == "/metrics"
		},
	}
	f.published = []jose.JSONWebKey{f.rsaKey.public(), f.ecKey.public()}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+discoveryPath, func(w http.ResponseWriter, _ *http.Request) {
		f.mu.Lock()
		f.counts["discovery"]++
		status := f.discoveryStatus
		f.mu.Unlock()
		if status != 0 {
			http.Error(w, "no", status)
			return
		}
		writeJSON(w, map[string]any{"issuer": testIssuerURL, "jwks_uri": "https://elsewhere.example/keys"})
	})
	mux.HandleFunc("GET "+jwksPath, func(w http.ResponseWriter, _ *http.Request) {
		f.mu.Lock()
		f.counts["jwks"]++
		body, set := f.jwksBody, jose.JSONWebKeySet{Keys: f.published}
		f.mu.Unlock()
		if body != nil {
			_, _ = w.Write(body)
			return
		}
		writeJSON(w, set)
	})
	mux.HandleFunc("POST /apis/authentication.k8s.io/v1/tokenreviews", func(w http.ResponseWriter, r *http.Request) {
		var review authenticationv1.TokenReview
		if !decode(w, r, &review) {
			return
		}
		f.mu.Lock()
		f.counts["token"]++
		f.counts["token:"+review.Spec.Token]++
		user, ok := f.users[review.Spec.Token]
		hold := f.holdTokenReviews
		f.mu.Unlock()
		if !ok && hold != nil {
			select {
			case <-hold:
			case <-r.Context().Done():
				return
			}
		}
		review.Status = authenticationv1.TokenReviewStatus{Authenticated: ok, User: user}
		writeJSON(w, review)
	})
	mux.HandleFunc("POST /apis/authorization.k8s.io/v1/subjectaccessreviews", func(w http.ResponseWriter, r *http.Request) {
		var review authorizationv1.SubjectAccessReview
		if !decode(w, r, &review) {
			return
		}
		f.mu.Lock()
		f.counts["access"]++
		review.Status.Allowed = f.allow(review.Spec)
		f.mu.Unlock()
		writeJSON(w, review)
	})
	f.Server = httptest.NewServer(mux)
	t.Cleanup(f.Close)
	return f
}

// decode reads the request's JSON body into v, answering 400 when it cannot.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// config is a client configuration of the fake API server, speaking JSON.
func (f *fakeAPIServer) config() *rest.Config {
	return &rest.Config{Host: f.URL, ContentConfig: rest.ContentConfig{ContentType: "application/json", AcceptContentTypes: "application/json"}}
}

func (f *fakeAPIServer) clientset(t *testing.T) *kubernetes.Clientset {
	t.Helper()
	cfg := f.config()
	cfg.QPS, cfg.Burst = -1, 0 // no client-side limit: the budgets under test are the limit
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// authenticate makes the API server authenticate token as user.
func (f *fakeAPIServer) authenticate(token string, user authenticationv1.UserInfo) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.users[token] = user
}

// serviceAccountToken signs a token for namespace/name with the RSA key, ID id, and makes the API server
// authenticate it.
func (f *fakeAPIServer) serviceAccountToken(t *testing.T, namespace, name, id string, now time.Time) string {
	t.Helper()
	token := f.rsaKey.sign(t, f.rsaKey.kid, saClaims(namespace, name, id, now))
	f.authenticate(token, saUser(namespace, name, id))
	return token
}

func (f *fakeAPIServer) count(what string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts[what]
}

// reviews returns the TokenReviews and SubjectAccessReviews answered so far.
func (f *fakeAPIServer) reviews() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return map[string]int{"token": f.counts["token"], "access": f.counts["access"]}
}

// clock is a settable time.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// bearer returns an Authorization header value.
func bearer(token string) string {
	if token == "" {
		return ""
	}
	if strings.HasPrefix(token, "Basic ") {
		return token
	}
	return "Bearer " + token
}
