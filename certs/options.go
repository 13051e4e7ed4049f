package certs

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Mode says where the webhook server's serving certificate comes from.
type Mode string

const (
	// ModeExternal serves tls.crt and tls.key from a directory that something else (cert-manager, a mounted
	// Secret) keeps up to date.
	ModeExternal Mode = "external"
	// ModeSelf makes the process own a CA and a serving certificate in a Secret, and inject the CA into the
	// webhook configuration's caBundle.
	ModeSelf Mode = "self"
)

// Options configures where the serving certificate comes from. The zero value is not usable; BindFlags
// sets the defaults.
type Options struct {
	// Mode is ModeExternal or ModeSelf.
	Mode Mode
	// CertDir holds tls.crt and tls.key in external mode; empty means controller-runtime's default,
	// <temp dir>/k8s-webhook-server/serving-certs.
	CertDir string

	// ServiceName and ServiceNamespace name the Service the API server calls; the serving certificate is
	// valid for <ServiceName>.<ServiceNamespace>.svc and .svc.cluster.local. The certificate Secret lives in
	// ServiceNamespace.
	ServiceName      string
	ServiceNamespace string
	// SecretName is the Secret holding the CA and the serving pair.
	SecretName string
	// WebhookConfigName is the MutatingWebhookConfiguration whose webhooks get the CA as caBundle.
	WebhookConfigName string
	// ExtraSANs are further DNS names or IP addresses for the serving certificate.
	ExtraSANs []string

	// CAValidity is the lifetime of a new CA, and CARenewBefore how long before its expiry a new one is made.
	CAValidity    time.Duration
	CARenewBefore time.Duration
	// CertValidity is the lifetime of a new serving certificate (capped by its CA's), and CertRenewBefore how
	// long before its expiry a new one is issued.
	CertValidity    time.Duration
	CertRenewBefore time.Duration
	// PropagationDelay is how long a new CA is published in caBundle before serving certificates switch to
	// it, and how long a replaced CA stays published after the switch: the time every API server and every
	// replica needs to see a change.
	PropagationDelay time.Duration
}

// Defaults for the self mode's lifetimes.
const (
	DefaultCAValidity       = 365 * 24 * time.Hour
	DefaultCARenewBefore    = 90 * 24 * time.Hour
	DefaultCertValidity     = 90 * 24 * time.Hour
	DefaultCertRenewBefore  = 30 * 24 * time.Hour
	DefaultPropagationDelay = 5 * time.Minute
)

// BindFlags registers the certificate flags, except --cert-dir, on fs with their defaults.
func (o *Options) BindFlags(fs *flag.FlagSet) {
	o.Mode = ModeExternal
	fs.Func("cert-mode", `Where the serving certificate comes from: "external" (tls.crt and tls.key in --cert-dir, reloaded when they change) or "self" (a CA and certificate the process keeps in a Secret and injects into the webhook configuration). Default "external".`,
		func(s string) error {
			switch m := Mode(s); m {
			case ModeExternal, ModeSelf:
				o.Mode = m
				return nil
			}
			return fmt.Errorf("want %q or %q", ModeExternal, ModeSelf)
		})
	fs.StringVar(&o.ServiceName, "service-name", "", "Self mode: name of the webhook's Service; the certificate is valid for <name>.<namespace>.svc.")
	fs.StringVar(&o.ServiceNamespace, "service-namespace", "", "Self mode: namespace of the webhook's Service and of the certificate Secret.")
	fs.StringVar(&o.SecretName, "cert-secret-name", "", "Self mode: name of the Secret holding the CA and the serving certificate.")
	fs.StringVar(&o.WebhookConfigName, "webhook-config-name", "", "Self mode: name of the MutatingWebhookConfiguration whose caBundle is kept set to the CA.")
	fs.Func("cert-extra-sans", "Self mode: comma-separated extra DNS names or IP addresses for the serving certificate.", func(s string) error {
		o.ExtraSANs = nil
		for _, san := range strings.Split(s, ",") {
			if san = strings.TrimSpace(san); san != "" {
				o.ExtraSANs = append(o.ExtraSANs, san)
			}
		}
		return nil
	})
	fs.DurationVar(&o.CAValidity, "ca-validity", DefaultCAValidity, "Self mode: lifetime of a new CA.")
	fs.DurationVar(&o.CARenewBefore, "ca-renew-before", DefaultCARenewBefore, "Self mode: how long before the CA expires a new one is made and published next to it.")
	fs.DurationVar(&o.CertValidity, "cert-validity", DefaultCertValidity, "Self mode: lifetime of a new serving certificate (never past its CA's).")
	fs.DurationVar(&o.CertRenewBefore, "cert-renew-before", DefaultCertRenewBefore, "Self mode: how long before the serving certificate expires a new one is issued.")
	fs.DurationVar(&o.PropagationDelay, "ca-propagation-delay", DefaultPropagationDelay,
		"Self mode: how long a new CA is in caBundle before serving certificates switch to it, and how long a replaced CA stays there after.")
}

// Validate returns every problem with o at once.
func (o *Options) Validate() error {
	var errs []error
	switch o.Mode {
	case ModeExternal:
		return nil
	case ModeSelf:
	default:
		return fmt.Errorf("unknown certificate mode %q", o.Mode)
	}
	for _, f := range []struct{ flag, value string }{
		{"--service-name", o.ServiceName},
		{"--service-namespace", o.ServiceNamespace},
		{"--cert-secret-name", o.SecretName},
		{"--webhook-config-name", o.WebhookConfigName},
	} {
		if f.value == "" {
			errs = append(errs, fmt.Errorf("%s is required in self certificate mode", f.flag))
		}
	}
	if o.ServiceName != "" && o.ServiceNamespace != "" {
		for _, name := range o.dnsNames() {
			if msgs := validation.IsDNS1123Subdomain(name); len(msgs) > 0 {
				errs = append(errs, fmt.Errorf("certificate DNS name %q: %s", name, strings.Join(msgs, "; ")))
			}
		}
	}
	for _, san := range o.ExtraSANs {
		if net.ParseIP(san) == nil && len(validation.IsDNS1123Subdomain(strings.TrimPrefix(san, "*."))) > 0 {
			errs = append(errs, fmt.Errorf("--cert-extra-sans: %q is neither an IP address nor a DNS name", san))
		}
	}
	positive := func(flag string, d time.Duration) {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %s", flag, d))
		}
	}
	positive("--ca-validity", o.CAValidity)
	positive("--ca-renew-before", o.CARenewBefore)
	positive("--cert-validity", o.CertValidity)
	positive("--cert-renew-before", o.CertRenewBefore)
	if o.PropagationDelay < 0 {
		errs = append(errs, fmt.Errorf("--ca-propagation-delay must not be negative, got %s", o.PropagationDelay))
	}
	if o.CARenewBefore >= o.CAValidity {
		errs = append(errs, fmt.Errorf("--ca-renew-before (%s) must be shorter than --ca-validity (%s)", o.CARenewBefore, o.CAValidity))
	}
	if o.CertRenewBefore >= o.CertValidity {
		errs = append(errs, fmt.Errorf("--cert-renew-before (%s) must be shorter than --cert-validity (%s)", o.CertRenewBefore, o.CertValidity))
	}
	// A serving certificate never outlives its CA. For a certificate cut short by its CA to be renewed under
	// the next CA rather than again under the old one, the next CA must exist and be published by then.
	if o.CARenewBefore < o.CertRenewBefore+o.PropagationDelay {
		errs = append(errs, fmt.Errorf("--ca-renew-before (%s) must be at least --cert-renew-before (%s) plus --ca-propagation-delay (%s)",
			o.CARenewBefore, o.CertRenewBefore, o.PropagationDelay))
	}
	return errors.Join(errs...)
}

// dnsNames returns the Service's in-cluster DNS names.
func (o *Options) dnsNames() []string {
	svc := o.ServiceName + "." + o.ServiceNamespace + ".svc"
	return []string{svc, svc + ".cluster.local"}
}

// SANs returns the DNS names and IP addresses the serving certificate must carry: the Service's names
// followed by the extra SANs, without duplicates.
func (o *Options) SANs() (dnsNames []string, ips []net.IP) {
	seen := map[string]bool{}
	for _, name := range append(o.dnsNames(), o.ExtraSANs...) {
		if seen[name] {
			continue
		}
		seen[name] = true
		if ip := net.ParseIP(name); ip != nil {
			ips = append(ips, ip)
		} else {
			dnsNames = append(dnsNames, name)
		}
	}
	return dnsNames, ips
}
