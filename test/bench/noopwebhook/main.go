// Command noopwebhook is the benchmark's baseline: a mutating webhook that answers every Pod admission with
// one fixed JSON patch (spec.imagePullSecrets set to one name) and makes no API call. It is served as
// pullsecret-injector serves: controller-runtime's webhook server and admission decoding, certificates
// read from --cert-dir (tls.crt, tls.key) as in the project's external certificate mode, TLS 1.2 at least,
// HTTP/1.1 only. What pullsecret-injector costs above it is its own handler, informers and reconciler.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"github.com/go-logr/logr"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/pullsecret-injector/pullsecret-injector/webhook"
)

func main() {
	certDir := flag.String("cert-dir", "", "Directory holding tls.crt and tls.key.")
	host := flag.String("webhook-host", "127.0.0.1", "Address the webhook server listens on.")
	port := flag.Int("webhook-port", 9443, "Port the webhook server listens on.")
	probeAddr := flag.String("health-probe-bind-address", "127.0.0.1:8081", "Address /readyz is served on.")
	secret := flag.String("secret-name", "", "Name of the pull secret the fixed patch references.")
	registry := flag.String("registry", "", "Configured registry the fixed patch's annotation names.")
	// The project's logger and defaults (production encoding, info level): controller-runtime builds a
	// logger for every request, and without one set it queues them as promises for the first 30 s.
	var zapOpts zap.Options
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, *certDir, *host, *port, *probeAddr, *secret, *registry)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "noopwebhook: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, certDir, host string, port int, probeAddr, secret, registry string) error {
	if certDir == "" || secret == "" {
		return errors.New("--cert-dir and --secret-name are required")
	}
	// The same answer whatever the Pod: what the project answers for a Pod without imagePullSecrets or
	// annotations, so that the API server does the same work with either answer and the difference is the
	// webhook's alone.
	injected, err := json.Marshal([]webhook.Injection{{Secret: secret, Registries: []string{registry}}})
	if err != nil {
		return err
	}
	patch := []jsonpatch.JsonPatchOperation{
		jsonpatch.NewOperation("add", "/metadata/annotations", map[string]string{webhook.InjectedAnnotation: string(injected)}),
		jsonpatch.NewOperation("add", "/spec/imagePullSecrets", []corev1.LocalObjectReference{{Name: secret}}),
	}
	handler := admission.HandlerFunc(func(context.Context, admission.Request) admission.Response {
		return admission.Patched("", patch...)
	})
	srv := ctrlwebhook.NewServer(ctrlwebhook.Options{
		Host:    host,
		Port:    port,
		CertDir: certDir,
		TLSOpts: []func(*tls.Config){func(c *tls.Config) {
			c.MinVersion = tls.VersionTLS12
			c.NextProtos = []string{"http/1.1"}
		}},
	})
	// The least a controller-runtime webhook can do per request: no request fields added to a logger that
	// writes nothing (the default constructor encodes them with zap twice per request).
	srv.Register(webhook.Path, &ctrlwebhook.Admission{Handler: handler,
		LogConstructor: func(base logr.Logger, _ *admission.Request) logr.Logger { return base }})

	started := srv.StartedChecker()
	mux := http.NewServeMux()
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := started(r); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	probe := &http.Server{Addr: probeAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	probeErr := make(chan error, 1)
	go func() { probeErr <- probe.ListenAndServe() }()
	defer func() { _ = probe.Close() }()

	select {
	case err := <-startServer(ctx, srv):
		return err
	case err := <-probeErr:
		return fmt.Errorf("serve probes on %s: %w", probeAddr, err)
	}
}

func startServer(ctx context.Context, srv ctrlwebhook.Server) <-chan error {
	done := make(chan error, 1)
	go func() {
		if err := srv.Start(ctx); err != nil && !errors.Is(err, context.Canceled) {
			done <- fmt.Errorf("serve webhook: %w", err)
			return
		}
		done <- nil
	}()
	return done
}
