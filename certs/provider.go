// Package certs provides the webhook server's serving certificate: either read from files that something
// else renews (external mode), or a CA and certificate the process keeps in a Secret, renews ahead of
// expiry and injects into the webhook configuration's caBundle (self mode). In both modes the readiness
// check fails until a valid certificate is served.
package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// ReadyzCheckName is the name of the readiness check SetupWithManager adds.
const ReadyzCheckName = "certificate"

// Provider hands the webhook server its serving certificate and reports whether it is ready to be served.
type Provider struct {
	opts Options
	log  logr.Logger
	// now is time.Now outside tests.
	now func() time.Time

	// current is the certificate to serve; in external mode certwatcher holds it instead.
	current atomic.Pointer[tls.Certificate]
	// watcher returns the external mode's certificate; nil until the files have been read once.
	watcher atomic.Pointer[func() *tls.Certificate]
	// caBundleCheck reports, in self mode, whether every webhook trusts the served certificate.
	caBundleCheck func(ctx context.Context, leaf *x509.Certificate) error

	statusMu sync.Mutex
	status   string
}

// New validates o and returns a Provider for it. Call SetupWithManager before the manager starts.
func New(o Options) (*Provider, error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("validate certificate flags: %w", err)
	}
	if o.Mode == ModeExternal && o.CertDir == "" {
		// What controller-runtime's webhook server uses when it reads the files itself.
		o.CertDir = filepath.Join(os.TempDir(), "k8s-webhook-server", "serving-certs")
	}
	return &Provider{opts: o, log: ctrl.Log.WithName("certs"), now: time.Now}, nil
}

// TLSOpt makes the webhook server take its certificate from p; pass it in the server's TLSOpts.
func (p *Provider) TLSOpt(c *tls.Config) {
	c.GetCertificate = p.GetCertificate
}

// GetCertificate returns the certificate to serve. It fails, and so does the handshake, while there is no
// certificate or the certificate is outside its validity period: an invalid certificate is never served.
func (p *Provider) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	cert := p.certificate()
	if _, err := p.usable(cert); err != nil {
		return nil, err
	}
	return cert, nil
}

func (p *Provider) certificate() *tls.Certificate {
	if get := p.watcher.Load(); get != nil {
		return (*get)()
	}
	return p.current.Load()
}

// usable returns cert's leaf, or why cert must not be served.
func (p *Provider) usable(cert *tls.Certificate) (*x509.Certificate, error) {
	if cert == nil || len(cert.Certificate) == 0 {
		return nil, errors.New("no serving certificate loaded yet")
	}
	leaf := cert.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("parse serving certificate: %w", err)
		}
	}
	if now := p.now(); !validAt(leaf, now) {
		return nil, fmt.Errorf("serving certificate %s is valid only from %s to %s", serial(leaf),
			leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return leaf, nil
}

// NotAfter returns the expiry time of the certificate served now; false while there is none.
func (p *Provider) NotAfter() (time.Time, bool) {
	cert := p.certificate()
	if cert == nil || len(cert.Certificate) == 0 {
		return time.Time{}, false
	}
	leaf := cert.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return time.Time{}, false
		}
	}
	return leaf.NotAfter, true
}

// Ready is the readiness check: it fails until a valid certificate is served and, in self mode, every
// webhook in the webhook configuration trusts it.
func (p *Provider) Ready(req *http.Request) error {
	leaf, err := p.usable(p.certificate())
	if err != nil {
		return err
	}
	if p.caBundleCheck != nil {
		return p.caBundleCheck(req.Context(), leaf)
	}
	return nil
}

// SetupWithManager adds what keeps the certificate current to mgr, and the readiness check.
func (p *Provider) SetupWithManager(mgr ctrl.Manager) error {
	var r manager.Runnable
	switch p.opts.Mode {
	case ModeExternal:
		r = &external{p: p}
	case ModeSelf:
		s, err := newSelfManaged(p, mgr.GetConfig())
		if err != nil {
			return err
		}
		r = s
	}
	if err := mgr.Add(r); err != nil {
		return fmt.Errorf("add %s certificate source: %w", p.opts.Mode, err)
	}
	if err := mgr.AddReadyzCheck(ReadyzCheckName, p.Ready); err != nil {
		return fmt.Errorf("add certificate readiness check: %w", err)
	}
	return nil
}

// reportReadiness logs when readiness changes, with the reason, so that a replica that stays unready says
// why once rather than on every probe.
func (p *Provider) reportReadiness(ctx context.Context) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "/readyz", nil)
	err := p.Ready(req)
	status := "ready"
	if err != nil {
		status = err.Error()
	}
	p.statusMu.Lock()
	defer p.statusMu.Unlock()
	if status == p.status {
		return
	}
	p.status = status
	if err != nil {
		p.log.Info("Serving certificate not ready", "mode", p.opts.Mode, "reason", status)
		return
	}
	leaf, _ := p.usable(p.certificate())
	p.log.Info("Serving certificate ready", "mode", p.opts.Mode, "serial", serial(leaf),
		"notAfter", leaf.NotAfter.UTC().Format(time.RFC3339), "dnsNames", leaf.DNSNames, "ipAddresses", leaf.IPAddresses)
}
