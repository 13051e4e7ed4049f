package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"

	"github.com/pullsecret-injector/pullsecret-injector/test/testenv"
)

// The certificate tests run their own webhook processes with a registry no other test uses, so that a Pod
// referencing certsSecret proves that the apiserver called them, not the shared webhook.
const (
	certsRegistry = "certs.example.com"
	certsSecret   = "certs-regcred"
	certsImage    = certsRegistry + "/app:1"
	certsService  = "pullsecret-injector"
	certsTLSName  = "pullsecret-injector-tls"
	certsLabel    = "e2e-certs"
	certsConfig   = `
registries:
  - registry: certs.example.com
    secret: {namespace: pullsecret-injector, name: certs-regcred}
`
)

var certsSourceOnce sync.Once

// certsFixture is one certificate test's namespaces and webhook configuration. Its configuration selects
// only namespaces labelled certsLabel=<name>, so it never sees other tests' Pods.
type certsFixture struct {
	name      string
	serviceNS string
	podNS     string
	mwcName   string
}

func newCertsFixture(t *testing.T, name string) *certsFixture {
	t.Helper()
	certsSourceOnce.Do(func() {
		_, err := admin.CoreV1().Secrets(sourceNamespace).Create(context.Background(), pullSecret(certsSecret, certsRegistry), metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("create source secret %q: %v", certsSecret, err)
		}
	})
	return &certsFixture{
		name:      name,
		serviceNS: newNamespace(t, "certs-"+name, nil),
		podNS:     newNamespace(t, "certs-"+name+"-pods", merge(optIn(), map[string]string{certsLabel: name})),
		mwcName:   "pullsecret-injector-certs-" + name,
	}
}

// selfArgs are the flags for self mode in the fixture's namespace; the webhook is called on 127.0.0.1.
func (f *certsFixture) selfArgs(extra ...string) []string {
	return append([]string{
		"--cert-mode", "self",
		"--service-name", certsService,
		"--service-namespace", f.serviceNS,
		"--cert-secret-name", certsTLSName,
		"--webhook-config-name", f.mwcName,
		"--cert-extra-sans", "127.0.0.1",
	}, extra...)
}

// start runs the binary TestMain built, without waiting for it to be ready, and stops it after the test.
func (f *certsFixture) start(t *testing.T, args ...string) *testenv.Webhook {
	t.Helper()
	w, err := cp.StartWebhookNoWait(binary, []byte(certsConfig), args...)
	if err != nil {
		t.Fatal(err)
	}
	stopAfterTest(t, w)
	return w
}

// createMWC registers one webhook per port, all with caBundle, and deletes the registration after the test.
func (f *certsFixture) createMWC(t *testing.T, caBundle []byte, ports ...int) {
	t.Helper()
	mwc := cp.MutatingWebhookConfiguration(f.mwcName, ports[0], &metav1.LabelSelector{MatchLabels: map[string]string{certsLabel: f.name}})
	base := mwc.Webhooks[0]
	mwc.Webhooks = nil
	for i, port := range ports {
		w := *base.DeepCopy()
		url := fmt.Sprintf("https://127.0.0.1:%d/mutate-v1-pod", port)
		w.ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: caBundle}
		w.Name = fmt.Sprintf("replica-%d.%s", i+1, base.Name)
		mwc.Webhooks = append(mwc.Webhooks, w)
	}
	ctx := context.Background()
	if _, err := admin.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, mwc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("register webhook %q: %v", f.mwcName, err)
	}
	t.Cleanup(func() {
		err := admin.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(ctx, f.mwcName, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete webhook configuration %q: %v", f.mwcName, err)
		}
	})
}

func (f *certsFixture) secret(ctx context.Context) (*corev1.Secret, error) {
	return admin.CoreV1().Secrets(f.serviceNS).Get(ctx, certsTLSName, metav1.GetOptions{})
}

func (f *certsFixture) mwc(ctx context.Context) (*admissionregistrationv1.MutatingWebhookConfiguration, error) {
	return admin.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, f.mwcName, metav1.GetOptions{})
}

// createPod creates a Pod that only the fixture's webhooks mutate, and fails unless they did.
func (f *certsFixture) createPod(ctx context.Context) error {
	pod := podWith("", certsImage)
	pod.GenerateName = "certs-"
	got, err := admin.CoreV1().Pods(f.podNS).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	if !slices.Contains(refNames(got), certsSecret) {
		return fmt.Errorf("pod %s/%s was not mutated: imagePullSecrets %v", f.podNS, got.Name, refNames(got))
	}
	return nil
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	var last error
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		ok, err := cond(ctx)
		if err != nil {
			last = err
		}
		return ok, nil
	})
	if err != nil {
		t.Fatalf("wait until %s (last error: %v): %v", what, last, err)
	}
}

// logLine reports whether a line of the process's log contains every one of parts.
func logLine(w *testenv.Webhook, parts ...string) bool {
	for _, line := range strings.Split(w.Log(), "\n") {
		if !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(line, p) }) {
			return true
		}
	}
	return false
}

// cas returns the certificates in a PEM bundle, skipping anything else.
func cas(bundle []byte) []*x509.Certificate {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, bundle = pem.Decode(bundle)
		if block == nil {
			return out
		}
		if c, err := x509.ParseCertificate(block.Bytes); err == nil {
			out = append(out, c)
		}
	}
}

// verifyServed checks that the process on port serves a certificate for 127.0.0.1 that bundle trusts.
func verifyServed(port int, bundle []byte) (*x509.Certificate, error) {
	leaf, err := testenv.ServedCertificate(port)
	if err != nil {
		return nil, err
	}
	return verifyServedLeaf(leaf, bundle)
}

// verifyServedLeaf checks that leaf is valid for 127.0.0.1 and that bundle trusts it.
func verifyServedLeaf(leaf *x509.Certificate, bundle []byte) (*x509.Certificate, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(bundle) {
		return nil, fmt.Errorf("caBundle holds no certificate")
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "127.0.0.1"}); err != nil {
		return nil, fmt.Errorf("served certificate %x: %w", leaf.SerialNumber, err)
	}
	return leaf, nil
}

func TestCertsSelfModeFromNothing(t *testing.T) {
	ctx := context.Background()
	start := time.Now()
	f := newCertsFixture(t, "self")
	w := f.start(t, f.selfArgs()...)

	// Without its webhook configuration the process creates the Secret, but stays unready and says why.
	waitFor(t, "the certificate Secret exists", time.Minute, func(ctx context.Context) (bool, error) {
		_, err := f.secret(ctx)
		return err == nil, err
	})
	waitFor(t, "the log says the webhook configuration is missing", time.Minute, func(context.Context) (bool, error) {
		return logLine(w, "Serving certificate not ready", f.mwcName, "not found"), nil
	})
	if code, body, err := w.Readyz(ctx); err != nil || code == 200 || !strings.Contains(body, "[-]certificate failed") {
		t.Errorf("without a webhook configuration: /readyz %d %q %v, want the certificate check failing", code, body, err)
	}

	f.createMWC(t, nil, w.Port)
	if err := w.WaitReady(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	secret, err := f.secret(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range secret.Data {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if want := []string{"ca.crt", "ca.key", "tls.crt", "tls.key"}; !slices.Equal(keys, want) {
		t.Errorf("Secret keys %v, want %v", keys, want)
	}
	if n := len(cas(secret.Data["ca.crt"])); n != 1 {
		t.Errorf("want one CA in a new Secret, got %d", n)
	}
	waitFor(t, "every webhook's caBundle is the Secret's ca.crt", time.Minute, func(ctx context.Context) (bool, error) {
		mwc, err := f.mwc(ctx)
		return err == nil && bytes.Equal(mwc.Webhooks[0].ClientConfig.CABundle, secret.Data["ca.crt"]), err
	})
	leaf, err := verifyServed(w.Port, secret.Data["ca.crt"])
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{certsService + "." + f.serviceNS + ".svc", certsService + "." + f.serviceNS + ".svc.cluster.local"} {
		if err := leaf.VerifyHostname(name); err != nil {
			t.Errorf("served certificate: %v", err)
		}
	}
	if err := testenv.WaitForMutation(ctx, admin, f.podNS, certsImage, certsSecret); err != nil {
		t.Fatal(err)
	}
	if err := f.createPod(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("from nothing to a mutated Pod in %s", time.Since(start).Round(time.Millisecond))

	t.Run("caBundle reset by someone else is injected again", func(t *testing.T) {
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			mwc, err := f.mwc(ctx)
			if err != nil {
				return err
			}
			mwc.Webhooks[0].ClientConfig.CABundle = nil
			_, err = admin.AdmissionregistrationV1().MutatingWebhookConfigurations().Update(ctx, mwc, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			t.Fatalf("reset caBundle: %v", err)
		}
		waitFor(t, "the caBundle is back", time.Minute, func(ctx context.Context) (bool, error) {
			mwc, err := f.mwc(ctx)
			return err == nil && bytes.Equal(mwc.Webhooks[0].ClientConfig.CABundle, secret.Data["ca.crt"]), err
		})
		if err := w.WaitReady(ctx, time.Minute); err != nil {
			t.Fatal(err)
		}
		if err := testenv.WaitForMutation(ctx, admin, f.podNS, certsImage, certsSecret); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("corrupt serving certificate in the Secret is repaired under the same CA", func(t *testing.T) {
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			s, err := f.secret(ctx)
			if err != nil {
				return err
			}
			s.Data["tls.crt"] = []byte("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
			_, err = admin.CoreV1().Secrets(f.serviceNS).Update(ctx, s, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			t.Fatalf("corrupt Secret: %v", err)
		}
		waitFor(t, "the Secret is repaired", time.Minute, func(ctx context.Context) (bool, error) {
			s, err := f.secret(ctx)
			if err != nil {
				return false, err
			}
			block, _ := pem.Decode(s.Data["tls.crt"])
			if block == nil {
				return false, nil
			}
			leaf, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return false, nil
			}
			return bytes.Equal(s.Data["ca.crt"], secret.Data["ca.crt"]) && leaf.SerialNumber.Cmp(leafSerial(secret)) != 0, nil
		})
		if !logLine(w, "Repaired certificate Secret", "serving pair is unusable") {
			t.Error("no log line says the Secret was repaired and why")
		}
		waitFor(t, "the repaired certificate is served", time.Minute, func(ctx context.Context) (bool, error) {
			s, err := f.secret(ctx)
			if err != nil {
				return false, err
			}
			served, err := verifyServed(w.Port, s.Data["ca.crt"])
			return err == nil && served.SerialNumber.Cmp(leafSerial(s)) == 0, err
		})
		if err := w.WaitReady(ctx, time.Minute); err != nil {
			t.Fatal(err)
		}
		if err := f.createPod(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

// leafSerial returns the serial of the Secret's serving certificate, or -1 if it has none.
func leafSerial(s *corev1.Secret) *big.Int {
	if c := cas(s.Data["tls.crt"]); len(c) > 0 {
		return c[0].SerialNumber
	}
	return big.NewInt(-1)
}

func TestCertsSelfModeReplicasStartingTogetherShareOneCA(t *testing.T) {
	ctx := context.Background()
	start := time.Now()
	f := newCertsFixture(t, "pair")
	var replicas [2]*testenv.Webhook
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i := range replicas {
		wg.Go(func() {
			<-gate
			w, err := cp.StartWebhookNoWait(binary, []byte(certsConfig), f.selfArgs()...)
			if err != nil {
				t.Error(err)
				return
			}
			replicas[i] = w
		})
	}
	close(gate)
	wg.Wait()
	for _, w := range replicas {
		if w == nil {
			continue
		}
		stopAfterTest(t, w)
	}
	if t.Failed() {
		t.FailNow()
	}
	f.createMWC(t, nil, replicas[0].Port, replicas[1].Port)
	for _, w := range replicas {
		if err := w.WaitReady(ctx, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	secret, err := f.secret(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(cas(secret.Data["ca.crt"])); n != 1 {
		t.Errorf("two replicas starting together made %d CAs, want 1", n)
	}
	created := 0
	for i, w := range replicas {
		leaf, err := verifyServed(w.Port, secret.Data["ca.crt"])
		if err != nil {
			t.Errorf("replica %d: %v", i+1, err)
		} else if leaf.SerialNumber.Cmp(leafSerial(secret)) != 0 {
			t.Errorf("replica %d serves %x, want the Secret's %x", i+1, leaf.SerialNumber, leafSerial(secret))
		}
		if logLine(w, "Created certificate Secret") {
			created++
		}
		if logLine(w, "Certificate Secret created by another replica") {
			t.Logf("replica %d lost the race to create the Secret and adopted the winner's", i+1)
		}
	}
	if created != 1 {
		t.Errorf("%d replicas logged that they created the Secret, want 1", created)
	}
	mwc, err := f.mwc(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, wh := range mwc.Webhooks {
		if !bytes.Equal(wh.ClientConfig.CABundle, secret.Data["ca.crt"]) {
			t.Errorf("webhook %q has a caBundle other than the Secret's ca.crt", wh.Name)
		}
	}
	if err := testenv.WaitForMutation(ctx, admin, f.podNS, certsImage, certsSecret); err != nil {
		t.Fatal(err)
	}
	if err := f.createPod(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("two replicas ready with one CA in %s", time.Since(start).Round(time.Millisecond))
}

// TestCertsSelfModeRotationUnderLoad shortens every lifetime so that the CA rotates every 20 seconds and
// the serving certificate follows 10 seconds later (the propagation delay, kept at 10 s for a loaded API
// server), and creates Pods through two replicas the whole time.
// With failurePolicy Fail, a single certificate the API server does not trust fails a create.
func TestCertsSelfModeRotationUnderLoad(t *testing.T) {
	ctx := context.Background()
	start := time.Now()
	f := newCertsFixture(t, "rotation")
	args := f.selfArgs("--ca-validity=60s", "--ca-renew-before=40s", "--cert-validity=40s", "--cert-renew-before=20s", "--ca-propagation-delay=10s")
	replicas := []*testenv.Webhook{f.start(t, args...), f.start(t, args...)}
	f.createMWC(t, nil, replicas[0].Port, replicas[1].Port)
	for _, w := range replicas {
		if err := w.WaitReady(ctx, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if err := testenv.WaitForMutation(ctx, admin, f.podNS, certsImage, certsSecret); err != nil {
		t.Fatal(err)
	}

	const minCreates, wantCAs, wantServed = 200, 3, 3
	var (
		mu      sync.Mutex
		signers = map[string]bool{}
		// untrusted counts observations of a replica serving a certificate that a webhook's caBundle,
		// read just before, does not trust.
		untrusted []string
		served    = make([]map[string]bool, len(replicas))
		observed  = func() bool {
			mu.Lock()
			defer mu.Unlock()
			for _, s := range served {
				if len(s) < wantServed {
					return false
				}
			}
			return len(signers) >= wantCAs
		}
	)
	for i := range served {
		served[i] = map[string]bool{}
	}
	loadCtx, stop := context.WithTimeout(ctx, 4*time.Minute)
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() {
		// Watch the rotation: the Secret's signing CA, and what each replica serves.
		ticker := time.NewTicker(250 * time.Millisecond)
		defer ticker.Stop()
		for {
			if s, err := f.secret(loadCtx); err == nil {
				if all := cas(s.Data["ca.crt"]); len(all) > 0 {
					mu.Lock()
					signers[all[0].SerialNumber.Text(16)] = true
					mu.Unlock()
				}
			}
			mwc, mwcErr := f.mwc(loadCtx)
			for i, w := range replicas {
				leaf, err := testenv.ServedCertificate(w.Port)
				if err != nil {
					continue
				}
				mu.Lock()
				served[i][leaf.SerialNumber.Text(16)] = true
				if mwcErr == nil {
					for _, wh := range mwc.Webhooks {
						if _, err := verifyServedLeaf(leaf, wh.ClientConfig.CABundle); err != nil {
							untrusted = append(untrusted, fmt.Sprintf("%s: replica %d, webhook %s: %v", time.Since(start).Round(time.Millisecond), i+1, wh.Name, err))
						}
					}
				}
				mu.Unlock()
			}
			select {
			case <-loadCtx.Done():
				return
			case <-ticker.C:
			}
		}
	})
	attempted, failed := 0, 0
	var failures []string
	ticker := time.NewTicker(200 * time.Millisecond)
	for attempted < minCreates || !observed() {
		select {
		case <-loadCtx.Done():
			t.Errorf("rotation not observed within 4 minutes: %d CAs, served serials per replica %v", len(signers), served)
		case <-ticker.C:
		}
		if loadCtx.Err() != nil {
			break
		}
		attempted++
		if err := f.createPod(loadCtx); err != nil {
			failed++
			if len(failures) < 5 {
				failures = append(failures, fmt.Sprintf("%s: %v", time.Since(start).Round(time.Millisecond), err))
			}
		}
	}
	ticker.Stop()
	stop()
	wg.Wait()
	mu.Lock()
	servedCounts := []int{len(served[0]), len(served[1])}
	mu.Unlock()
	t.Logf("Pod creates attempted %d, failed %d; signing CAs seen %d; serving certificates served per replica %v; untrusted observations %d; %s",
		attempted, failed, len(signers), servedCounts, len(untrusted), time.Since(start).Round(time.Millisecond))
	if failed > 0 {
		t.Errorf("%d of %d Pod creates failed across the rotation; first failures:\n%s", failed, attempted, strings.Join(failures, "\n"))
	}
	if len(untrusted) > 0 {
		t.Errorf("%d times a replica served a certificate its webhook's caBundle did not trust; first: %s", len(untrusted), untrusted[0])
	}
	if !logLine(replicas[0], "Rotated certificates") && !logLine(replicas[1], "Rotated certificates") {
		t.Error("no replica logged a rotation")
	}
	for i, w := range replicas {
		if !w.Running() {
			t.Errorf("replica %d exited", i+1)
		}
	}
}

// testPKI is a CA the external-mode test signs serving pairs with, as cert-manager would.
type testPKI struct {
	ca  *x509.Certificate
	key *ecdsa.PrivateKey
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "e2e-external-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testPKI{ca: ca, key: key}
}

func (p *testPKI) caPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.ca.Raw})
}

// writePair writes a new serving pair for 127.0.0.1 with serial into dir the way a Secret volume is
// updated: each file replaced by a rename. It returns the serial.
func (p *testPKI) writePair(t *testing.T, dir string, serial int64) *big.Int {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, key.Public(), p.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range []struct {
		name  string
		block *pem.Block
	}{{"tls.key", &pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}}, {"tls.crt", &pem.Block{Type: "CERTIFICATE", Bytes: der}}} {
		tmp := filepath.Join(dir, "."+file.name+".new")
		if err := os.WriteFile(tmp, pem.EncodeToMemory(file.block), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, file.name)); err != nil {
			t.Fatal(err)
		}
	}
	return big.NewInt(serial)
}

func TestCertsExternalModeReloadsFilesWithoutRestart(t *testing.T) {
	ctx := context.Background()
	f := newCertsFixture(t, "external")
	dir := t.TempDir()
	pki := newTestPKI(t)
	w := f.start(t, "--cert-dir", dir)

	// No files yet: up, unready, and saying why.
	waitFor(t, "the log says the certificate files are missing", time.Minute, func(context.Context) (bool, error) {
		return logLine(w, "Serving certificate files not usable", "tls.crt"), nil
	})
	if code, body, err := w.Readyz(ctx); err != nil || code == 200 || !strings.Contains(body, "[-]certificate failed") {
		t.Errorf("without certificate files: /readyz %d %q %v, want the certificate check failing", code, body, err)
	}

	first := pki.writePair(t, dir, 1001)
	if err := w.WaitReady(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	leaf, err := verifyServed(w.Port, pki.caPEM())
	if err != nil {
		t.Fatal(err)
	}
	if leaf.SerialNumber.Cmp(first) != 0 {
		t.Errorf("serving serial %v, want %v", leaf.SerialNumber, first)
	}
	f.createMWC(t, pki.caPEM(), w.Port)
	if err := testenv.WaitForMutation(ctx, admin, f.podNS, certsImage, certsSecret); err != nil {
		t.Fatal(err)
	}

	replaced := time.Now()
	second := pki.writePair(t, dir, 1002)
	waitFor(t, "the replaced files are served", time.Minute, func(context.Context) (bool, error) {
		leaf, err := verifyServed(w.Port, pki.caPEM())
		return err == nil && leaf.SerialNumber.Cmp(second) == 0, err
	})
	t.Logf("replaced certificate served after %s", time.Since(replaced).Round(time.Millisecond))
	if !w.Running() {
		t.Fatal("the process restarted or exited")
	}
	if err := f.createPod(ctx); err != nil {
		t.Fatal(err)
	}
}
