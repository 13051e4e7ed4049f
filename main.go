// Command pullsecret-injector is a mutating admission webhook that copies registry pull secrets into the
// namespaces of Pods that need them and adds them to the Pods' imagePullSecrets.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"os"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/pullsecret-injector/pullsecret-injector/certs"
	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/webhook"
)

type options struct {
	configPath  string
	webhookHost string
	webhookPort int
	certDir     string
	metricsAddr string
	probeAddr   string
	enableHTTP2 bool
	certs       certs.Options
	zap         zap.Options
}

func main() {
	var o options
	fs := flag.CommandLine
	fs.StringVar(&o.configPath, "config", config.DefaultPath, "Path of the YAML configuration file.")
	fs.StringVar(&o.webhookHost, "webhook-host", "", "Address the webhook server listens on (empty: all addresses).")
	fs.IntVar(&o.webhookPort, "webhook-port", 9443, "Port the webhook server listens on.")
	fs.StringVar(&o.certDir, "cert-dir", "", "External certificate mode: directory holding tls.crt and tls.key for the webhook server, reloaded when they change.")
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":8080", "Address the metrics endpoint binds to; 0 disables it.")
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "Address the /healthz and /readyz endpoints bind to.")
	fs.BoolVar(&o.enableHTTP2, "enable-http2", false,
		"Serve the webhook over HTTP/2. Off by default because of the HTTP/2 rapid reset attack (CVE-2023-44487).")
	o.certs.BindFlags(fs)
	o.zap.BindFlags(fs)
	flag.Parse()

	if err := run(ctrl.SetupSignalHandler(), o); err != nil {
		fmt.Fprintf(os.Stderr, "pullsecret-injector: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&o.zap)))
	log := ctrl.Log.WithName("setup")

	o.certs.CertDir = o.certDir
	certProvider, err := certs.New(o.certs)
	if err != nil {
		return err
	}
	cfg, err := config.Load(o.configPath)
	if err != nil {
		return err
	}
	matcher, err := config.NewMatcher(cfg)
	if err != nil {
		return err
	}
	scheme, err := webhook.Scheme()
	if err != nil {
		return err
	}
	restConfig, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("load kubeconfig: %w", err)
	}

	tlsOpts := []func(*tls.Config){certProvider.TLSOpt, func(c *tls.Config) {
		c.MinVersion = tls.VersionTLS12
		if !o.enableHTTP2 {
			c.NextProtos = []string{"http/1.1"}
		}
	}}
	mgr, err := ctrl.NewManager(restConfig, ctrl.Options{
		Scheme:                 scheme,
		Cache:                  webhook.CacheOptions(cfg),
		Metrics:                metricsserver.Options{BindAddress: o.metricsAddr},
		HealthProbeBindAddress: o.probeAddr,
		WebhookServer: ctrlwebhook.NewServer(ctrlwebhook.Options{
			Host:    o.webhookHost,
			Port:    o.webhookPort,
			CertDir: o.certDir,
			TLSOpts: tlsOpts,
		}),
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("add health check: %w", err)
	}
	if err := webhook.SetupWithManager(ctx, mgr, matcher); err != nil {
		return err
	}
	if err := certProvider.SetupWithManager(mgr); err != nil {
		return err
	}

	log.Info("Starting", "registries", len(cfg.Registries), "webhookPort", o.webhookPort, "path", webhook.Path)
	if err := mgr.Start(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("run manager: %w", err)
	}
	return nil
}
