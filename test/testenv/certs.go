package testenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// Running reports whether the process has not exited.
func (w *Webhook) Running() bool {
	select {
	case <-w.done:
		return false
	default:
		return true
	}
}

// Readyz returns the status code and body of GET /readyz?verbose, or an error if the probe server does not
// answer.
func (w *Webhook) Readyz(ctx context.Context) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+w.ProbeAddr+"/readyz?verbose", nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// ServedCertificate returns the leaf certificate the TLS server on 127.0.0.1:port presents, without
// verifying it.
func ServedCertificate(port int) (*x509.Certificate, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		&tls.Config{InsecureSkipVerify: true}) //nolint:gosec // The caller inspects the certificate itself.
	if err != nil {
		return nil, fmt.Errorf("dial webhook on port %d: %w", port, err)
	}
	defer func() { _ = conn.Close() }()
	certs := conn.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return nil, fmt.Errorf("webhook on port %d presented no certificate", port)
	}
	return certs[0], nil
}
