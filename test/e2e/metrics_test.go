package e2e

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/pullsecret-injector/pullsecret-injector/internal/metrics"
	"github.com/pullsecret-injector/pullsecret-injector/test/testenv"
)

const (
	// metricsNamespace holds the Pod the metrics test counts and the ServiceAccounts it scrapes as.
	metricsNamespace = "e2e-metrics"
	// metricsLabel opts metricsNamespace in for the metrics test's own webhook alone: the shared webhook's
	// configuration selects namespaces by the default opt-in label, which metricsNamespace lacks, so that
	// only the process under test injects, and its counter moves.
	metricsLabel = "e2e.pullsecret-injector.io/metrics"
	// metricsReader is the ClusterRole (and binding) that lets the reader ServiceAccounts scrape.
	metricsReader = "pullsecret-injector-e2e-metrics-reader"
	// floodNamespace and randomFloodNamespace hold the reader ServiceAccounts that scrape during the
	// floods, each in a namespace of its own: a namespace's tokens share one review budget, and each of
	// these subtests mints several.
	floodNamespace       = "e2e-metrics-flood"
	randomFloodNamespace = "e2e-metrics-random-flood"
)

// metricsConfig opts in the namespaces labelled metricsLabel and copies quay-regcred there.
var metricsConfig = fmt.Sprintf(`
namespaceSelector:
  matchLabels: {%q: "enabled"}
registries:
  - registry: quay.io
    secret: {namespace: %s, name: quay-regcred}
  - registry: never.example.com
    secret: {namespace: %s, name: never-created-regcred}
`, metricsLabel, sourceNamespace, sourceNamespace)

var (
	admissionsInjected = fmt.Sprintf("%s_admissions_total{outcome=%q}", metrics.Namespace, metrics.Injected)
	certificateExpiry  = metrics.Namespace + "_certificate_expiry_timestamp_seconds"
)

// TestMetricsEndpoint runs the binary with its metrics endpoint on, served securely (the default) and, in a
// second process, over plain HTTP. The secure endpoint, which asks the API server through TokenReviews and
// SubjectAccessReviews, serves a ServiceAccount bound to the chart's metrics-reader rules, refuses (403) one
// that is not, and refuses (401) a scrape without a token or with a token the API server rejects.
// What it serves counts a Pod it injected, and gives the serving certificate's expiry. The plain endpoint
// serves anyone.
func TestMetricsEndpoint(t *testing.T) {
	ctx := context.Background()
	ports, err := testenv.FreePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	secureAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	plainAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
	// Both start at once and wait for each other's readiness: each start syncs its caches.
	secure, err := cp.StartWebhookNoWait(binary, []byte(metricsConfig), "--metrics-bind-address", secureAddr)
	if err != nil {
		t.Fatal(err)
	}
	stopAfterTest(t, secure)
	plain, err := cp.StartWebhookNoWait(binary, []byte(metricsConfig), "--metrics-bind-address", plainAddr, "--metrics-secure=false")
	if err != nil {
		t.Fatal(err)
	}
	stopAfterTest(t, plain)
	for _, w := range []*testenv.Webhook{secure, plain} {
		if err := w.WaitReady(ctx, time.Minute); err != nil {
			t.Fatal(err)
		}
	}

	secureURL := "https://" + secureAddr + testenv.MetricsPath
	plainURL := "http://" + plainAddr + testenv.MetricsPath
	for _, url := range []string{secureURL, plainURL} {
		if err := testenv.WaitMetricsServing(ctx, url); err != nil {
			t.Fatal(err)
		}
	}

	if err := createNamespace(ctx, metricsNamespace, map[string]string{metricsLabel: "enabled"}); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{floodNamespace, randomFloodNamespace} {
		if err := createNamespace(ctx, ns, nil); err != nil {
			t.Fatal(err)
		}
	}
	readerToken, otherToken := scraperTokens(ctx, t)

	t.Run("secure: a bound ServiceAccount's token is served the metrics", func(t *testing.T) {
		before := scrapeOK(ctx, t, secureURL, readerToken)
		// Sent to the process under test alone, which copies quay-regcred and adds it.
		mwc := cp.MutatingWebhookConfiguration(webhookName+"-metrics", secure.Port, &metav1.LabelSelector{
			MatchLabels: map[string]string{metricsLabel: "enabled"},
		})
		registerWebhook(t, admin, mwc)
		// A dry run counts too: it waits until the API server calls the process, then one real Pod.
		if err := testenv.WaitForMutation(ctx, admin, metricsNamespace, "quay.io/team/app", "quay-regcred"); err != nil {
			t.Fatal(err)
		}
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "counted-"},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "quay.io/team/app:1.0"}}},
		}
		if _, _, err := cp.CreatePod(ctx, metricsNamespace, pod); err != nil {
			t.Fatal(err)
		}
		after := scrapeOK(ctx, t, secureURL, readerToken)
		was, _ := testenv.SampleValue(before, admissionsInjected)
		now, ok := testenv.SampleValue(after, admissionsInjected)
		if !ok || now < was+2 {
			t.Errorf("%s went from %v to %v (found: %v), want it up by 2 at least: a dry run and a Pod injected", admissionsInjected, was, now, ok)
		}

		// A source that exists and holds a credential for its registry, and one that was never created,
		// which no informer event announces.
		for name, want := range map[string]float64{"quay-regcred": 0, "never-created-regcred": 1} {
			series := fmt.Sprintf("%s_source_invalid{source=%q}", metrics.Namespace, sourceNamespace+"/"+name)
			if got, ok := testenv.SampleValue(after, series); !ok || got != want {
				t.Errorf("%s = %v (found: %v), want %v", series, got, ok, want)
			}
		}

		expiry, ok := testenv.SampleValue(after, certificateExpiry)
		notAfter := servingCertNotAfter(t)
		if !ok || expiry != float64(notAfter.Unix()) {
			t.Errorf("%s = %v (found: %v), want the serving certificate's notAfter, %d (%s)", certificateExpiry, expiry, ok, notAfter.Unix(), notAfter)
		}
		if expiry <= float64(time.Now().Unix()) {
			t.Errorf("%s = %v, a time in the past", certificateExpiry, expiry)
		}
	})

	for _, tc := range []struct {
		name, token string
		want        int
	}{
		{"secure: a token whose user may not get /metrics is forbidden", otherToken, http.StatusForbidden},
		{"secure: no token is unauthorized", "", http.StatusUnauthorized},
		{"secure: a token the API server rejects is unauthorized", "not-a-token", http.StatusUnauthorized},
		{"secure: a token of the cluster's issuer signed by someone else is unauthorized", forgedTokens(ctx, t)[0], http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body, err := testenv.Scrape(ctx, secureURL, tc.token)
			if err != nil {
				t.Fatal(err)
			}
			if code != tc.want || strings.Contains(body, metrics.Namespace) {
				t.Errorf("got %d with %d bytes (metrics in it: %v), want %d without metrics", code, len(body), strings.Contains(body, metrics.Namespace), tc.want)
			}
		})
	}

	t.Run("any ServiceAccount may read the issuer's discovery documents, by default", func(t *testing.T) {
		// What the binary relies on to check tokens locally; the chart adds no rule for it.
		cs, err := kubernetes.NewForConfig(cp.ImpersonatingConfig(testenv.ServiceAccountUser(metricsNamespace, "other")))
		if err != nil {
			t.Fatal(err)
		}
		for _, path := range []string{"/.well-known/openid-configuration", "/openid/v1/jwks"} {
			if _, err := cs.CoreV1().RESTClient().Get().AbsPath(path).DoRaw(ctx); err != nil {
				t.Errorf("get %s as a ServiceAccount: %v", path, err)
			}
		}
	})

	t.Run("secure: tokens from the TokenRequest API pass the local check", func(t *testing.T) {
		stats := newStatsReader(ctx, t, secureURL, metricsNamespace)
		before := stats.read(ctx, t)
		for i := range 3 {
			token, err := testenv.ServiceAccountToken(ctx, admin, metricsNamespace, "reader")
			if err != nil {
				t.Fatal(err)
			}
			scrapeOK(ctx, t, secureURL, token)
			if i == 0 {
				scrapeOK(ctx, t, secureURL, token) // answered from the cache
			}
		}
		after := stats.read(ctx, t)
		want := map[string]float64{serviceAccountTokenReviews: 3, otherTokenReviews: 0}
		if diff := cmp.Diff(want, diffSamples(before, after, serviceAccountTokenReviews, otherTokenReviews)); diff != "" {
			t.Errorf("TokenReviews by lane (-want +got):\n%s", diff)
		}
	})

	t.Run("secure: a flood of invented tokens costs no TokenReview and does not hold back a scraper", func(t *testing.T) {
		forged := forgedTokens(ctx, t)
		scrapes := scraperTokenList(ctx, t, floodNamespace, 5)
		stats := newStatsReader(ctx, t, secureURL, floodNamespace)
		reviewsBefore := apiserverTokenReviews(ctx, t)
		before := stats.read(ctx, t)

		f := startFlood(ctx, secureURL, floodWorkers, func(i int) string { return forged[i%len(forged)] })
		f.waitStarted(ctx, t)
		latencies := scrapeDuring(ctx, t, secureURL, scrapes)
		elapsed, statuses, errs := f.stop(floodDuration)
		t.Logf("flood of invented ServiceAccount tokens: %d workers for %v, answers by status %v, %d transport errors; "+
			"scrapes by a ServiceAccount allowed the metrics, each with a new token, took %v", floodWorkers, elapsed.Round(time.Millisecond), statuses, errs, latencies)
		checkFloodAnswers(t, statuses, errs)

		reviews := waitTokenReviews(ctx, t, reviewsBefore+float64(len(scrapes)))
		if got := reviews - reviewsBefore; got != float64(len(scrapes)) {
			t.Errorf("the API server answered %v TokenReviews during the flood, want %d: one for each scraper token, none for the flood", got, len(scrapes))
		}
		after := stats.read(ctx, t)
		want := map[string]float64{serviceAccountTokenReviews: float64(len(scrapes)), otherTokenReviews: 0}
		if diff := cmp.Diff(want, diffSamples(before, after, serviceAccountTokenReviews, otherTokenReviews)); diff != "" {
			t.Errorf("the process's TokenReviews by lane (-want +got):\n%s", diff)
		}
		if got := diffSamples(before, after, invalidTokenRefusals)[invalidTokenRefusals]; got < float64(statuses[http.StatusUnauthorized]) {
			t.Errorf("%s went up by %v, fewer than the %d answers 401", invalidTokenRefusals, got, statuses[http.StatusUnauthorized])
		}
	})

	t.Run("secure: a flood of random strings is reviewed within the shared budget only", func(t *testing.T) {
		scrapes := scraperTokenList(ctx, t, randomFloodNamespace, 3)
		stats := newStatsReader(ctx, t, secureURL, randomFloodNamespace)
		reviewsBefore := apiserverTokenReviews(ctx, t)
		before := stats.read(ctx, t)

		f := startFlood(ctx, secureURL, floodWorkers, func(int) string { return rand.Text() })
		f.waitStarted(ctx, t)
		latencies := scrapeDuring(ctx, t, secureURL, scrapes)
		elapsed, statuses, errs := f.stop(floodDuration)
		t.Logf("flood of random strings: %d workers for %v, answers by status %v, %d transport errors; scrapes took %v",
			floodWorkers, elapsed.Round(time.Millisecond), statuses, errs, latencies)
		checkFloodAnswers(t, statuses, errs)

		after := stats.read(ctx, t)
		got := diffSamples(before, after, serviceAccountTokenReviews, otherTokenReviews)
		// The shared budget: a burst of 5, then one a second.
		if bound := 5 + math.Ceil(elapsed.Seconds()); got[otherTokenReviews] > bound {
			t.Errorf("the flood cost %v TokenReviews in %v, over the shared budget's %v", got[otherTokenReviews], elapsed, bound)
		}
		if got[serviceAccountTokenReviews] != float64(len(scrapes)) {
			t.Errorf("%v TokenReviews of ServiceAccount tokens, want %d", got[serviceAccountTokenReviews], len(scrapes))
		}
		want := got[otherTokenReviews] + got[serviceAccountTokenReviews]
		if reviews := waitTokenReviews(ctx, t, reviewsBefore+want) - reviewsBefore; reviews != want {
			t.Errorf("the API server answered %v TokenReviews, the process counts %v", reviews, want)
		}
	})

	t.Run("plain HTTP: served without a token", func(t *testing.T) {
		body := scrapeOK(ctx, t, plainURL, "")
		if _, ok := testenv.SampleValue(body, admissionsInjected); !ok {
			t.Errorf("the plain endpoint serves no %s:\n%s", admissionsInjected, body)
		}
	})
}

// scraperTokens creates two ServiceAccounts in metricsNamespace, binds the first, and the reader
// ServiceAccounts of the flood namespaces, to the chart's metrics-reader rules, and returns a token of each
// of the two.
func scraperTokens(ctx context.Context, t *testing.T) (reader, other string) {
	t.Helper()
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: metricsReader}, Rules: testenv.MetricsReaderRules()}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: metricsReader},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: metricsReader},
		Subjects: []rbacv1.Subject{
			{Kind: rbacv1.ServiceAccountKind, Namespace: metricsNamespace, Name: "reader"},
			{Kind: rbacv1.ServiceAccountKind, Namespace: floodNamespace, Name: "reader"},
			{Kind: rbacv1.ServiceAccountKind, Namespace: randomFloodNamespace, Name: "reader"},
		},
	}
	rbac := admin.RbacV1()
	if _, err := rbac.ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := rbac.ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := rbac.ClusterRoleBindings().Delete(context.Background(), metricsReader, metav1.DeleteOptions{}); err != nil {
			t.Error(err)
		}
		if err := rbac.ClusterRoles().Delete(context.Background(), metricsReader, metav1.DeleteOptions{}); err != nil {
			t.Error(err)
		}
	})
	var err error
	if reader, err = testenv.ServiceAccountToken(ctx, admin, metricsNamespace, "reader"); err != nil {
		t.Fatal(err)
	}
	if other, err = testenv.ServiceAccountToken(ctx, admin, metricsNamespace, "other"); err != nil {
		t.Fatal(err)
	}
	return reader, other
}

// scrapeOK scrapes url with token and fails the test unless the answer is 200.
func scrapeOK(ctx context.Context, t *testing.T, url, token string) string {
	t.Helper()
	code, body, err := testenv.Scrape(ctx, url, token)
	if err != nil {
		t.Fatal(err)
	}
	if code != http.StatusOK {
		t.Fatalf("scrape %s: got %d, want 200:\n%s", url, code, body)
	}
	return body
}

// servingCertNotAfter returns the expiry of the webhook serving certificate StartWebhook gives the binary.
func servingCertNotAfter(t *testing.T) time.Time {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(cp.CertDir, "tls.crt"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatal("tls.crt holds no PEM block")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert.NotAfter
}

const (
	// floodWorkers send invented tokens at once, each over a connection of its own.
	floodWorkers = 50
	// floodDuration is how long a flood lasts at least.
	floodDuration = 3 * time.Second
	// scrapeBound is a generous bound on a scrape during a flood: the goal is under 2 s, and the queue of
	// the review client this replaced held a scraper past Prometheus' 10 s timeout.
	scrapeBound = 10 * time.Second
)

var (
	serviceAccountTokenReviews = fmt.Sprintf("%s_metrics_reviews_total{lane=%q,review=%q}", metrics.Namespace, "serviceaccount", "token")
	otherTokenReviews          = fmt.Sprintf("%s_metrics_reviews_total{lane=%q,review=%q}", metrics.Namespace, "other", "token")
	invalidTokenRefusals       = fmt.Sprintf("%s_metrics_requests_refused_total{reason=%q}", metrics.Namespace, "invalid_token")
)

// statsReader reads the process's own counters with a token of its own, reviewed once when it is made and
// answered from the process's cache (for a minute) after, so that reading costs no review.
type statsReader struct{ url, token string }

// newStatsReader reads url's counters with a token of the reader ServiceAccount of namespace.
func newStatsReader(ctx context.Context, t *testing.T, url, namespace string) *statsReader {
	t.Helper()
	token, err := testenv.ServiceAccountToken(ctx, admin, namespace, "reader")
	if err != nil {
		t.Fatal(err)
	}
	scrapeOK(ctx, t, url, token)
	return &statsReader{url: url, token: token}
}

func (s *statsReader) read(ctx context.Context, t *testing.T) map[string]float64 {
	t.Helper()
	body := scrapeOK(ctx, t, s.url, s.token)
	samples := map[string]float64{}
	for _, series := range []string{serviceAccountTokenReviews, otherTokenReviews, invalidTokenRefusals} {
		v, ok := testenv.SampleValue(body, series)
		if !ok {
			t.Fatalf("the process serves no %s", series)
		}
		samples[series] = v
	}
	return samples
}

// diffSamples returns how much each of series went up from before to after.
func diffSamples(before, after map[string]float64, series ...string) map[string]float64 {
	d := map[string]float64{}
	for _, s := range series {
		d[s] = after[s] - before[s]
	}
	return d
}

// apiserverTokenReviews returns the TokenReviews the API server has answered, from its own
// apiserver_request_total: an exact count no client can fake. Nothing but the metrics test's processes asks
// for TokenReviews on the shared control plane.
func apiserverTokenReviews(ctx context.Context, t *testing.T) float64 {
	t.Helper()
	b, err := admin.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		t.Fatalf("read the API server's metrics: %v", err)
	}
	sum := 0.0
	for line := range strings.Lines(string(b)) {
		if !strings.HasPrefix(line, "apiserver_request_total{") || !strings.Contains(line, `resource="tokenreviews"`) {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(line[strings.LastIndexByte(line, ' ')+1:]), 64)
		if err != nil {
			t.Fatalf("parse %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// waitTokenReviews waits until the API server counts want TokenReviews at least (it counts a request once
// its answer is written) and returns its count.
func waitTokenReviews(ctx context.Context, t *testing.T, want float64) float64 {
	t.Helper()
	var got float64
	_ = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		got = apiserverTokenReviews(ctx, t)
		return got >= want, nil
	})
	return got
}

// forgedTokens returns JWTs as an attacker who read the cluster's public discovery documents would make
// them: the cluster's issuer, the reader ServiceAccount as subject, valid times, and the issuer's real key
// ID or an invented one, signed with RSA and ECDSA keys of the attacker's.
func forgedTokens(ctx context.Context, t *testing.T) []string {
	t.Helper()
	var discovery struct {
		Issuer string `json:"issuer"`
	}
	var keys jose.JSONWebKeySet
	for path, into := range map[string]any{"/.well-known/openid-configuration": &discovery, "/openid/v1/jwks": &keys} {
		b, err := admin.CoreV1().RESTClient().Get().AbsPath(path).DoRaw(ctx)
		if err != nil {
			t.Fatalf("read %s: %v", path, err)
		}
		if err := json.Unmarshal(b, into); err != nil {
			t.Fatalf("decode %s: %v", path, err)
		}
	}
	if discovery.Issuer == "" || len(keys.Keys) == 0 {
		t.Fatalf("the API server publishes issuer %q and %d keys", discovery.Issuer, len(keys.Keys))
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	var tokens []string
	for i := range 30 {
		kid := keys.Keys[0].KeyID
		if i%3 == 1 {
			kid = rand.Text()
		}
		alg := jose.RS256
		var key crypto.Signer = rsaKey
		if i%2 == 1 {
			alg, key = jose.ES256, ecKey
		}
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: kid}},
			(&jose.SignerOptions{}).WithType("JWT"))
		if err != nil {
			t.Fatal(err)
		}
		token, err := jwt.Signed(signer).Claims(jwt.Claims{
			Issuer: discovery.Issuer, Subject: "system:serviceaccount:" + metricsNamespace + ":reader",
			Audience: jwt.Audience{discovery.Issuer}, ID: rand.Text(),
			IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(time.Hour)),
		}).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		tokens = append(tokens, token)
	}
	return tokens
}

// scraperTokenList returns n new tokens of the reader ServiceAccount of namespace, each needing reviews of
// its own.
func scraperTokenList(ctx context.Context, t *testing.T, namespace string, n int) []string {
	t.Helper()
	var tokens []string
	for range n {
		token, err := testenv.ServiceAccountToken(ctx, admin, namespace, "reader")
		if err != nil {
			t.Fatal(err)
		}
		tokens = append(tokens, token)
	}
	return tokens
}

// scrapeDuring scrapes url once with each token, in turn, and returns how long each took; each must be
// served (200) within scrapeBound.
func scrapeDuring(ctx context.Context, t *testing.T, url string, tokens []string) []time.Duration {
	t.Helper()
	var latencies []time.Duration
	for _, token := range tokens {
		began := time.Now()
		code, _, err := testenv.Scrape(ctx, url, token)
		took := time.Since(began)
		latencies = append(latencies, took.Round(time.Millisecond))
		if err != nil || code != http.StatusOK || took > scrapeBound {
			t.Errorf("a scrape during the flood: %d, %v, after %v; want 200 within %v", code, err, took, scrapeBound)
		}
	}
	return latencies
}

// flood sends requests to the metrics endpoint from many workers, each over its own connection, until
// stopped.
type flood struct {
	cancel   context.CancelFunc
	started  time.Time
	wg       sync.WaitGroup
	answered atomic.Int64

	mu       sync.Mutex
	statuses map[int]int
	errs     int
}

// startFlood starts workers that each send GETs of url with the bearer token token(i), i counting that
// worker's requests.
func startFlood(ctx context.Context, url string, workers int, token func(i int) string) *flood {
	ctx, cancel := context.WithCancel(ctx)
	f := &flood{cancel: cancel, started: time.Now(), statuses: map[int]int{}}
	for w := range workers {
		client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // The self-signed endpoint under test.
		}}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer client.CloseIdleConnections()
			for i := w; ctx.Err() == nil; i += workers {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
				if err != nil {
					panic(err)
				}
				req.Header.Set("Authorization", "Bearer "+token(i))
				resp, err := client.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						f.mu.Lock()
						f.errs++
						f.mu.Unlock()
					}
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				f.mu.Lock()
				f.statuses[resp.StatusCode]++
				f.mu.Unlock()
				f.answered.Add(1)
			}
		}()
	}
	return f
}

// waitStarted waits until the flood has had two answers for each worker.
func (f *flood) waitStarted(ctx context.Context, t *testing.T) {
	t.Helper()
	if err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return f.answered.Load() >= 2*floodWorkers, nil
	}); err != nil {
		t.Fatalf("the flood had %d answers: %v", f.answered.Load(), err)
	}
}

// stop ends the flood once it has lasted atLeast, and returns how long it lasted, its answers by status and
// its transport errors.
func (f *flood) stop(atLeast time.Duration) (time.Duration, map[int]int, int) {
	// The flood's length, chosen: not a wait for a condition.
	<-time.After(atLeast - time.Since(f.started))
	f.cancel()
	f.wg.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	return time.Since(f.started), f.statuses, f.errs
}

// checkFloodAnswers fails the test unless every request of the flood was answered, 401 or 429.
func checkFloodAnswers(t *testing.T, statuses map[int]int, errs int) {
	t.Helper()
	if errs != 0 {
		t.Errorf("%d requests of the flood got no answer", errs)
	}
	for code, n := range statuses {
		if code != http.StatusUnauthorized && code != http.StatusTooManyRequests {
			t.Errorf("%d answers %d to the flood, want only 401 and 429", n, code)
		}
	}
}
