package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"k8s.io/apimachinery/pkg/util/wait"
)

// pairFiles returns a PEM serving pair valid from start for validity, signed by a new CA.
func pairFiles(t *testing.T, start time.Time, validity time.Duration) (certPEM, keyPEM []byte, leaf *x509.Certificate) {
	t.Helper()
	ca, caKey, err := newCA(start, 2*validity)
	if err != nil {
		t.Fatal(err)
	}
	leaf, key, err := newServing(start, validity, ca, caKey, []string{"localhost"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return encodeCerts(leaf), keyPEM, leaf
}

// writeAtomically replaces dir/name the way a kubelet Secret volume or cert-manager's csi driver does.
func writeAtomically(t *testing.T, dir, name string, data []byte) {
	t.Helper()
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

func ready(p *Provider) error {
	req, _ := http.NewRequest(http.MethodGet, "/readyz", nil)
	return p.Ready(req)
}

func servedSerial(p *Provider) string {
	c, err := p.GetCertificate(&tls.ClientHelloInfo{})
	if err != nil {
		return ""
	}
	leaf, _ := x509.ParseCertificate(c.Certificate[0])
	return serial(leaf)
}

// eventually polls cond for up to 30 seconds; certwatcher notices file changes through inotify, and at
// the latest through its 10-second poll.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return cond(), nil
	})
	if err != nil {
		t.Fatalf("waiting until %s: %v", what, err)
	}
}

func TestExternalModeFollowsTheFiles(t *testing.T) {
	dir := t.TempDir()
	p, err := New(Options{Mode: ModeExternal, CertDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	p.log = testr.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		_ = (&external{p: p}).Start(ctx)
	}()

	now := time.Now()
	if err := ready(p); err == nil || !strings.Contains(err.Error(), "no serving certificate") {
		t.Errorf("without files: want not ready, got %v", err)
	}
	if _, err := p.GetCertificate(&tls.ClientHelloInfo{}); err == nil {
		t.Error("without files: GetCertificate served something")
	}

	// A mismatched pair is never loaded.
	certA, _, _ := pairFiles(t, now, time.Hour)
	_, keyB, _ := pairFiles(t, now, time.Hour)
	writeAtomically(t, dir, "tls.crt", certA)
	writeAtomically(t, dir, "tls.key", keyB)
	time.Sleep(2 * externalRetry) // Nothing to wait for: this checks that nothing happens.
	if err := ready(p); err == nil {
		t.Error("mismatched pair: want not ready")
	}

	certPEM, keyPEM, leaf := pairFiles(t, now, time.Hour)
	writeAtomically(t, dir, "tls.key", keyPEM)
	writeAtomically(t, dir, "tls.crt", certPEM)
	eventually(t, "the first valid pair is served", func() bool { return ready(p) == nil && servedSerial(p) == serial(leaf) })

	certPEM, keyPEM, renewed := pairFiles(t, now, time.Hour)
	writeAtomically(t, dir, "tls.key", keyPEM)
	writeAtomically(t, dir, "tls.crt", certPEM)
	eventually(t, "the renewed pair is served", func() bool { return servedSerial(p) == serial(renewed) })

	certPEM, keyPEM, _ = pairFiles(t, now.Add(-3*time.Hour), time.Hour)
	writeAtomically(t, dir, "tls.key", keyPEM)
	writeAtomically(t, dir, "tls.crt", certPEM)
	eventually(t, "an expired pair makes the process unready", func() bool {
		err := ready(p)
		return err != nil && strings.Contains(err.Error(), "is valid only from")
	})
	if _, err := p.GetCertificate(&tls.ClientHelloInfo{}); err == nil {
		t.Error("an expired certificate was served")
	}
}

func TestGetCertificateNeverServesAnInvalidCertificate(t *testing.T) {
	certPEM, keyPEM, _ := pairFiles(t, t0, time.Hour)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		now     time.Time
		wantErr string
	}{
		{name: "before its validity", now: t0.Add(-time.Hour), wantErr: "is valid only from"},
		{name: "within its validity", now: t0.Add(30 * time.Minute)},
		{name: "at its expiry", now: t0.Add(time.Hour), wantErr: "is valid only from"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := New(Options{Mode: ModeExternal, CertDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			p.now = func() time.Time { return tc.now }
			p.current.Store(&pair)
			_, err = p.GetCertificate(&tls.ClientHelloInfo{})
			gotErr := ""
			if err != nil {
				gotErr = err.Error()
			}
			if (tc.wantErr == "") != (gotErr == "") || !strings.Contains(gotErr, tc.wantErr) {
				t.Errorf("GetCertificate error %q, want one containing %q", gotErr, tc.wantErr)
			}
			if rerr := ready(p); (rerr == nil) != (tc.wantErr == "") {
				t.Errorf("Ready %v disagrees with GetCertificate %v", rerr, err)
			}
		})
	}
}
