package testenv

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// MetricsPath is the path the binary serves its metrics on, and the non-resource URL a scraper must be
// allowed to get when metrics are served securely.
const MetricsPath = "/metrics"

// MetricsReaderRules are the rules of the chart's `<full name>-metrics-reader` ClusterRole: what a user
// needs to scrape the binary's secure metrics endpoint. The chart tests check that the chart renders
// exactly these; the e2e tests bind them to the scrapers they authorize.
func MetricsReaderRules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{{NonResourceURLs: []string{MetricsPath}, Verbs: []string{"get"}}}
}

// ServiceAccountToken creates the ServiceAccount namespace/name unless it exists and returns a token for it
// from the TokenRequest API, valid for ten minutes.
func ServiceAccountToken(ctx context.Context, cs kubernetes.Interface, namespace, name string) (string, error) {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := cs.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("create service account %s/%s: %w", namespace, name, err)
	}
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](600)}}
	got, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, tr, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("request a token for service account %s/%s: %w", namespace, name, err)
	}
	return got.Status.Token, nil
}

// Scrape GETs url, with token as a bearer token unless it is empty, and returns the status code and body.
// It does not verify the server's certificate: the binary's metrics endpoint serves a self-signed one
// unless given its own.
func Scrape(ctx context.Context, url, token string) (int, string, error) {
	client := &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{
			InsecureSkipVerify: true, //nolint:gosec // A self-signed endpoint, sent only a short-lived test token.
		}},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", fmt.Errorf("build request for %s: %w", url, err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("get %s: %w", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, "", fmt.Errorf("read %s: %w", url, err)
	}
	return resp.StatusCode, string(body), nil
}

// SampleValue returns the value of series in a Prometheus text exposition, where series is written as
// the exposition writes it: the metric name, then its labels in braces (`name{outcome="injected"}`), or
// the name alone for a metric without labels. It reports false when the exposition has no such sample.
func SampleValue(exposition, series string) (float64, bool) {
	sc := bufio.NewScanner(strings.NewReader(exposition))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), series+" ")
		if !ok {
			continue
		}
		// A sample line is the series, its value, and an optional timestamp.
		value, _, _ := strings.Cut(rest, " ")
		v, err := strconv.ParseFloat(value, 64)
		return v, err == nil
	}
	return 0, false
}

// WaitMetricsServing polls url until the metrics endpoint answers at all, whatever the status: the
// binary's /readyz does not wait for the metrics server, which starts listening once the manager has set
// up its filters.
func WaitMetricsServing(ctx context.Context, url string) error {
	var last error
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, _, last = Scrape(ctx, url, "")
		return last == nil, nil
	})
	if err != nil {
		return fmt.Errorf("wait for the metrics endpoint %s: %w", url, errors.Join(err, last))
	}
	return nil
}
