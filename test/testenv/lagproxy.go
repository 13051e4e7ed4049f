package testenv

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// LaggingProxy is a plain-HTTP front for the control plane on loopback that forwards every request with
// the admin's credentials and holds back every read of a watch response by a delay. Informers behind it see
// each change late, as a cache on a busy cluster can, while their reads and writes answer at once.
type LaggingProxy struct {
	// Kubeconfig is a kubeconfig file that points at the proxy.
	Kubeconfig string
	srv        *http.Server
}

// StartLaggingProxy starts a LaggingProxy that delays watch events by delay.
func (cp *ControlPlane) StartLaggingProxy(delay time.Duration) (*LaggingProxy, error) {
	return cp.startProxy(func(next http.RoundTripper) http.RoundTripper { return lagTransport{next: next, delay: delay} })
}

// StartSlowProxy starts a proxy like StartLaggingProxy's that instead holds every request that is not a
// watch for delay before forwarding it, as an API server queueing a client's requests under load does: the
// caches behind it stay current, and every read and write answers late.
func (cp *ControlPlane) StartSlowProxy(delay time.Duration) (*LaggingProxy, error) {
	return cp.startProxy(func(next http.RoundTripper) http.RoundTripper { return slowTransport{next: next, delay: delay} })
}

func (cp *ControlPlane) startProxy(wrap func(http.RoundTripper) http.RoundTripper) (*LaggingProxy, error) {
	target, err := url.Parse(cp.Config.Host)
	if err != nil {
		return nil, fmt.Errorf("parse API server address %q: %w", cp.Config.Host, err)
	}
	transport, err := rest.TransportFor(cp.Config)
	if err != nil {
		return nil, fmt.Errorf("build API server transport: %w", err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = wrap(transport)
	proxy.FlushInterval = -1 // stream watch events as they are released
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen for the lagging proxy: %w", err)
	}
	p := &LaggingProxy{
		Kubeconfig: filepath.Join(cp.Dir, fmt.Sprintf("lagging-proxy-%d.kubeconfig", ln.Addr().(*net.TCPAddr).Port)),
		srv:        &http.Server{Handler: proxy, ReadHeaderTimeout: 10 * time.Second},
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["lagging"] = &clientcmdapi.Cluster{Server: "http://" + ln.Addr().String()}
	kc.AuthInfos["lagging"] = &clientcmdapi.AuthInfo{}
	kc.Contexts["lagging"] = &clientcmdapi.Context{Cluster: "lagging", AuthInfo: "lagging"}
	kc.CurrentContext = "lagging"
	if err := clientcmd.WriteToFile(*kc, p.Kubeconfig); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("write lagging proxy kubeconfig: %w", err)
	}
	go func() { _ = p.srv.Serve(ln) }()
	return p, nil
}

// ImpersonatingKubeconfig writes a kubeconfig that points at the proxy and acts as user (the kubeconfig's
// `as`), and returns its path: the proxy forwards the impersonation with the admin's credentials, so the
// API server authorizes, and API Priority and Fairness classifies, every request as user's.
func (p *LaggingProxy) ImpersonatingKubeconfig(user string) (string, error) {
	kc, err := clientcmd.LoadFromFile(p.Kubeconfig)
	if err != nil {
		return "", fmt.Errorf("load proxy kubeconfig: %w", err)
	}
	for _, auth := range kc.AuthInfos {
		auth.Impersonate = user
	}
	path := strings.TrimSuffix(p.Kubeconfig, ".kubeconfig") + "-as-" + strings.NewReplacer(":", "_", "/", "_").Replace(user) + ".kubeconfig"
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return "", fmt.Errorf("write proxy kubeconfig for %q: %w", user, err)
	}
	return path, nil
}

// Stop closes the proxy and every connection through it.
func (p *LaggingProxy) Stop() error {
	if err := p.srv.Close(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("stop lagging proxy: %w", err)
	}
	return nil
}

type lagTransport struct {
	next  http.RoundTripper
	delay time.Duration
}

func (t lagTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil || !isWatch(req) {
		return resp, err
	}
	resp.Body = &lagBody{ReadCloser: resp.Body, delay: t.delay}
	return resp, nil
}

func isWatch(req *http.Request) bool {
	w := req.URL.Query().Get("watch")
	return w == "true" || w == "1"
}

// lagBody holds back each read, so every event in a watch stream arrives at least delay late.
type lagBody struct {
	io.ReadCloser
	delay time.Duration
}

func (b *lagBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		time.Sleep(b.delay)
	}
	return n, err
}

type slowTransport struct {
	next  http.RoundTripper
	delay time.Duration
}

func (t slowTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !isWatch(req) {
		select {
		case <-time.After(t.delay):
		case <-req.Context().Done():
			return nil, req.Context().Err()
		}
	}
	return t.next.RoundTrip(req)
}
