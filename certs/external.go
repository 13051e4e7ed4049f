package certs

import (
	"context"
	"crypto/tls"
	"path/filepath"
	"time"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
)

// externalRetry is how often missing or unusable files are read again before the first good read.
const externalRetry = time.Second

// statusInterval is how often readiness is re-evaluated for the log, so that an expiring certificate is
// reported even when nothing else happens.
const statusInterval = 5 * time.Second

// external serves tls.crt and tls.key from the cert dir through controller-runtime's certwatcher, which
// reloads them when they change. certwatcher cannot start without a readable pair, so external retries
// until there is one, staying unready meanwhile instead of exiting.
type external struct {
	p *Provider
}

// NeedLeaderElection is false: every replica serves.
func (*external) NeedLeaderElection() bool { return false }

// Start waits for a readable pair, then watches it until ctx ends.
func (e *external) Start(ctx context.Context) error {
	p := e.p
	certPath := filepath.Join(p.opts.CertDir, TLSCertKey)
	keyPath := filepath.Join(p.opts.CertDir, TLSKeyKey)
	log := p.log.WithValues("certFile", certPath, "keyFile", keyPath)
	cw := waitForPair(ctx, log, certPath, keyPath)
	if cw == nil {
		return nil
	}
	get := func() *tls.Certificate {
		c, _ := cw.GetCertificate(nil)
		return c
	}
	p.watcher.Store(&get)
	cw.RegisterCallback(func(c tls.Certificate) {
		if leaf := c.Leaf; leaf != nil {
			log.Info("Loaded serving certificate", "serial", serial(leaf), "notBefore", leaf.NotBefore.UTC().Format(time.RFC3339),
				"notAfter", leaf.NotAfter.UTC().Format(time.RFC3339), "dnsNames", leaf.DNSNames, "ipAddresses", leaf.IPAddresses)
		}
		// certwatcher calls this once with its lock held, which reading the certificate would need too.
		go p.reportReadiness(ctx)
	})
	go watch(ctx, log, cw)
	ticker := time.NewTicker(statusInterval)
	defer ticker.Stop()
	for {
		p.reportReadiness(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

// waitForPair returns a certwatcher for the pair once both files are readable and match, and nil if ctx
// ends first. Each new reason the pair is unusable is logged once.
func waitForPair(ctx context.Context, log logr.Logger, certPath, keyPath string) *certwatcher.CertWatcher {
	var lastErr string
	for {
		cw, err := certwatcher.New(certPath, keyPath)
		if err == nil {
			return cw
		}
		if err.Error() != lastErr {
			lastErr = err.Error()
			log.Error(err, "Serving certificate files not usable; not ready until they are")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(externalRetry):
		}
	}
}

// watch runs cw until ctx ends. certwatcher gives up when it cannot watch the files for 10 seconds; watch
// starts it again.
func watch(ctx context.Context, log logr.Logger, cw *certwatcher.CertWatcher) {
	for {
		err := cw.Start(ctx)
		if ctx.Err() != nil {
			return
		}
		log.Error(err, "Watch serving certificate files; retrying")
		select {
		case <-ctx.Done():
			return
		case <-time.After(statusInterval):
		}
	}
}
