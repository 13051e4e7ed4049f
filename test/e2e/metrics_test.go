package e2e

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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
	// metricsReader is the ClusterRole (and binding) that lets the reader ServiceAccount scrape.
	metricsReader = "pullsecret-injector-e2e-metrics-reader"
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

	t.Run("plain HTTP: served without a token", func(t *testing.T) {
		body := scrapeOK(ctx, t, plainURL, "")
		if _, ok := testenv.SampleValue(body, admissionsInjected); !ok {
			t.Errorf("the plain endpoint serves no %s:\n%s", admissionsInjected, body)
		}
	})
}

// scraperTokens creates two ServiceAccounts in metricsNamespace, binds the first to the chart's
// metrics-reader rules, and returns a token of each.
func scraperTokens(ctx context.Context, t *testing.T) (reader, other string) {
	t.Helper()
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: metricsReader}, Rules: testenv.MetricsReaderRules()}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: metricsReader},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: metricsReader},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: metricsNamespace, Name: "reader"}},
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
