package metrics

import (
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"
)

const (
	// discoveryPath and jwksPath are where the API server publishes its ServiceAccount issuer and the keys
	// that verify its tokens. Both are read from the API server with the process's own credentials; the
	// jwks_uri of the discovery document is not followed, since it may name another host (a bucket that
	// republishes the keys), which would be sent the process's token. The API server serves its keys at
	// jwksPath whatever jwks_uri says.
	discoveryPath = "/.well-known/openid-configuration"
	jwksPath      = "/openid/v1/jwks"
	// maxDocumentBytes bounds what is read of either document: the discovery document is a few hundred
	// bytes, and a key a few hundred more.
	maxDocumentBytes = 256 << 10
	// maxKeys bounds the keys kept from the set.
	maxKeys = 64
	// keysMinInterval is the least time between two reads of the keys: a token that names a key the process
	// does not know makes it read them again, at most this often, so invented key IDs cost the API server two
	// small GETs every 10 seconds at most.
	keysMinInterval = 10 * time.Second
	// keysMaxAge is how long keys are used before they are read again in the background, so that a key the
	// API server dropped stops verifying.
	keysMaxAge = 10 * time.Minute
	// fetchTimeout bounds one read of both documents.
	fetchTimeout = 10 * time.Second
	// clockLeeway is the leeway on exp, nbf and iat, the API server's own (go-jose's default): a token it
	// still accepts is never refused here.
	clockLeeway = jwt.DefaultLeeway
)

// signatureAlgorithms are the algorithms a ServiceAccount token may be signed with: those of RSA and ECDSA
// keys, which is what the API server and external signers use. Never a symmetric one.
var signatureAlgorithms = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512,
	jose.ES256, jose.ES384, jose.ES512,
	jose.PS256, jose.PS384, jose.PS512,
}

// verdict is what the local check says of a bearer token.
type verdict int

const (
	// foreign: not a JWT of the cluster's ServiceAccount issuer (an OIDC or static token, anything that
	// does not parse), or the issuer's keys could not be read. Only a TokenReview can tell.
	foreign verdict = iota
	// invalid: claims the cluster's issuer, but no key of the issuer signed it, or it has expired or is
	// not valid yet. The API server would refuse it.
	invalid
	// valid: signed by the issuer and within its validity. It may still have been revoked (its Pod or
	// ServiceAccount deleted), which only a TokenReview tells.
	valid
)

// checked is the local check's answer.
type checked struct {
	verdict verdict
	// namespace is the ServiceAccount's namespace of a valid token ("" when its subject names none).
	namespace string
	// why says why a token is invalid or foreign, for a V(1) log line. It never holds the token.
	why string
}

// issuerKeys checks ServiceAccount tokens against the keys the API server publishes for its issuer. It holds
// one key set: at most maxKeys public keys read from a document of at most maxDocumentBytes, replaced when
// read again. It is safe for concurrent use.
type issuerKeys struct {
	// get reads a path of the API server, at most limit bytes.
	get func(ctx context.Context, path string, limit int64) ([]byte, error)
	now func() time.Time

	mu       sync.Mutex
	log      logr.Logger
	set      *keySet
	attempt  time.Time     // when the last read started
	failing  bool          // whether the last read failed, to log changes only
	fetching chan struct{} // non-nil while a read runs; closed when it ends
}

type keySet struct {
	issuer  string
	keys    []jose.JSONWebKey
	fetched time.Time
}

// newIssuerKeys reads the documents through c, a client of the API server's root path.
func newIssuerKeys(c rest.Interface, now func() time.Time) *issuerKeys {
	return &issuerKeys{now: now, log: logr.Discard(), get: func(ctx context.Context, path string, limit int64) ([]byte, error) {
		body, err := c.Get().AbsPath(path).SetHeader("Accept", "application/json, application/jwk-set+json").Stream(ctx)
		if err != nil {
			return nil, fmt.Errorf("get %s: %w", path, err)
		}
		defer func() { _ = body.Close() }()
		b, err := io.ReadAll(io.LimitReader(body, limit+1))
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		if int64(len(b)) > limit {
			return nil, fmt.Errorf("read %s: larger than %d bytes", path, limit)
		}
		return b, nil
	}}
}

func (k *issuerKeys) setLogger(log logr.Logger) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.log = log
}

// check verifies token locally. It reads the keys when it has none, when they are old (in the background),
// or when the token names a key it does not know (at most once per keysMinInterval).
func (k *issuerKeys) check(ctx context.Context, token string) checked {
	tok, err := jwt.ParseSigned(token, signatureAlgorithms)
	if err != nil || len(tok.Headers) != 1 {
		return checked{verdict: foreign, why: "not a JWT signed with an RSA or ECDSA key"}
	}
	var claimed jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&claimed); err != nil {
		return checked{verdict: foreign, why: "claims do not decode"}
	}
	set := k.keys(ctx, "")
	if set == nil {
		return checked{verdict: foreign, why: "the issuer's keys are not readable"}
	}
	if claimed.Issuer != set.issuer {
		return checked{verdict: foreign, why: "another issuer"}
	}
	kid := tok.Headers[0].KeyID
	if kid == "" {
		// The API server and external signers always name the key; trying every key for a token that
		// names none would let a caller multiply the work of one request.
		return checked{verdict: invalid, why: "no key ID"}
	}
	if !set.has(kid) {
		// Asked only for tokens of the cluster's issuer: another issuer's key IDs say nothing of its keys.
		set = k.keys(ctx, kid)
	}
	var claims jwt.Claims
	verified := false
	for _, key := range set.keys {
		if key.KeyID == kid && tok.Claims(key.Key, &claims) == nil {
			verified = true
			break
		}
	}
	if !verified {
		return checked{verdict: invalid, why: "not signed by a key of the issuer"}
	}
	if err := claims.ValidateWithLeeway(jwt.Expected{Issuer: set.issuer, Time: k.now()}, clockLeeway); err != nil {
		return checked{verdict: invalid, why: err.Error()}
	}
	ns := ""
	if rest, ok := strings.CutPrefix(claims.Subject, "system:serviceaccount:"); ok {
		ns, _, _ = strings.Cut(rest, ":")
	}
	return checked{verdict: valid, namespace: ns}
}

// keys returns the key set, or nil when none could be read. It starts a read when there is no set yet, when
// the set is older than keysMaxAge, or when kid is not in it, no sooner than keysMinInterval after the last;
// it waits for the read (or ctx) unless the set it has is fresh enough to use.
func (k *issuerKeys) keys(ctx context.Context, kid string) *keySet {
	k.mu.Lock()
	now := k.now()
	set := k.set
	unknown := set == nil || (kid != "" && !set.has(kid))
	stale := set != nil && now.Sub(set.fetched) >= keysMaxAge
	if (unknown || stale) && k.fetching == nil && (k.attempt.IsZero() || now.Sub(k.attempt) >= keysMinInterval) {
		k.attempt = now
		k.fetching = make(chan struct{})
		go k.fetch(k.fetching)
	}
	wait := k.fetching
	k.mu.Unlock()
	if !unknown || wait == nil {
		return set
	}
	select {
	case <-wait:
	case <-ctx.Done():
		return set
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.set
}

// fetch reads both documents and replaces the set; when that fails it keeps the set it had, which the
// API server's TokenReview still backs. It closes done when it ends.
func (k *issuerKeys) fetch(done chan struct{}) {
	// Not the request's context: other requests wait for this read.
	ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
	defer cancel()
	set, err := k.read(ctx)
	k.mu.Lock()
	defer k.mu.Unlock()
	defer close(done)
	k.fetching = nil
	if err != nil {
		if !k.failing {
			k.log.Error(err, "Cannot read the ServiceAccount issuer's keys; tokens are checked by TokenReview alone, within the shared budget",
				"keysKnown", k.set != nil)
		}
		k.failing = true
		return
	}
	if k.failing || k.set == nil {
		k.log.Info("ServiceAccount issuer's keys read; tokens are checked against them first", "issuer", set.issuer, "keys", len(set.keys))
	}
	k.failing = false
	set.fetched = k.now()
	k.set = set
}

func (k *issuerKeys) read(ctx context.Context) (*keySet, error) {
	b, err := k.get(ctx, discoveryPath, maxDocumentBytes)
	if err != nil {
		return nil, err
	}
	var discovery struct {
		Issuer string `json:"issuer"`
	}
	if err := json.Unmarshal(b, &discovery); err != nil {
		return nil, fmt.Errorf("decode %s: %w", discoveryPath, err)
	}
	if discovery.Issuer == "" {
		return nil, fmt.Errorf("decode %s: no issuer", discoveryPath)
	}
	if b, err = k.get(ctx, jwksPath, maxDocumentBytes); err != nil {
		return nil, err
	}
	// Key by key, so that one key of a type go-jose does not know does not hide the others.
	var raw struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("decode %s: %w", jwksPath, err)
	}
	set := &keySet{issuer: discovery.Issuer}
	for _, r := range raw.Keys {
		var key jose.JSONWebKey
		if json.Unmarshal(r, &key) != nil || key.KeyID == "" {
			continue
		}
		switch key.Key.(type) {
		case *rsa.PublicKey, *ecdsa.PublicKey:
		default:
			// A private or symmetric key has no business in the set.
			continue
		}
		if len(set.keys) == maxKeys {
			break
		}
		set.keys = append(set.keys, key)
	}
	if len(set.keys) == 0 {
		return nil, fmt.Errorf("decode %s: no RSA or ECDSA public key", jwksPath)
	}
	return set, nil
}

func (s *keySet) has(kid string) bool {
	for _, k := range s.keys {
		if k.KeyID == kid {
			return true
		}
	}
	return false
}
