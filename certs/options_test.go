package certs

import (
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestBindFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want Options
	}{{
		name: "defaults are external mode with production lifetimes",
		want: Options{Mode: ModeExternal, CAValidity: 365 * 24 * time.Hour, CARenewBefore: 90 * 24 * time.Hour,
			CertValidity: 90 * 24 * time.Hour, CertRenewBefore: 30 * 24 * time.Hour, PropagationDelay: 5 * time.Minute},
	}, {
		name: "self mode with comma-separated extra SANs, spaces and empty items ignored",
		args: []string{"--cert-mode=self", "--service-name=psi", "--service-namespace=system", "--cert-secret-name=psi-tls",
			"--webhook-config-name=psi", "--cert-extra-sans=127.0.0.1, localhost,,::1", "--ca-validity=3m", "--ca-renew-before=2m",
			"--cert-validity=2m", "--cert-renew-before=1m", "--ca-propagation-delay=10s"},
		want: Options{Mode: ModeSelf, ServiceName: "psi", ServiceNamespace: "system", SecretName: "psi-tls", WebhookConfigName: "psi",
			ExtraSANs: []string{"127.0.0.1", "localhost", "::1"}, CAValidity: 3 * time.Minute, CARenewBefore: 2 * time.Minute,
			CertValidity: 2 * time.Minute, CertRenewBefore: time.Minute, PropagationDelay: 10 * time.Second},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			var got Options
			got.BindFlags(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("options (-want +got):\n%s", diff)
			}
			if err := got.Validate(); err != nil && tc.want.Mode == ModeSelf {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

func TestBindFlagsRejectsUnknownMode(t *testing.T) {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(new(strings.Builder))
	var o Options
	o.BindFlags(fs)
	if err := fs.Parse([]string{"--cert-mode=cert-manager"}); err == nil || !strings.Contains(err.Error(), `want "external" or "self"`) {
		t.Errorf("want an error naming the modes, got %v", err)
	}
}

func TestValidate(t *testing.T) {
	valid := testOptions()
	tests := []struct {
		name   string
		modify func(o *Options)
		// want are substrings of the error, one per expected problem; none means valid.
		want []string
	}{{
		name:   "external mode needs no other flag",
		modify: func(o *Options) { *o = Options{Mode: ModeExternal} },
	}, {
		name: "self mode with names and consistent lifetimes is valid",
	}, {
		name: "self mode names every missing flag at once",
		modify: func(o *Options) {
			o.ServiceName, o.ServiceNamespace, o.SecretName, o.WebhookConfigName = "", "", "", ""
		},
		want: []string{"--service-name is required", "--service-namespace is required", "--cert-secret-name is required", "--webhook-config-name is required"},
	}, {
		name:   "extra SAN that is neither an IP nor a DNS name",
		modify: func(o *Options) { o.ExtraSANs = []string{"127.0.0.1", "*.example.com", "not a name"} },
		want:   []string{`"not a name" is neither an IP address nor a DNS name`},
	}, {
		name:   "service name that makes an invalid DNS name",
		modify: func(o *Options) { o.ServiceName = "Bad_Name" },
		want:   []string{`certificate DNS name "Bad_Name.system.svc"`, `"Bad_Name.system.svc.cluster.local"`},
	}, {
		name:   "renew-before not shorter than validity",
		modify: func(o *Options) { o.CARenewBefore, o.CertRenewBefore = o.CAValidity, o.CertValidity+time.Minute },
		want:   []string{"--ca-renew-before (3h0m0s) must be shorter than --ca-validity", "--cert-renew-before (1h1m0s) must be shorter than --cert-validity"},
	}, {
		name:   "CA renewed too late for a capped serving certificate to move to the next CA",
		modify: func(o *Options) { o.CARenewBefore = 35 * time.Minute },
		want:   []string{"--ca-renew-before (35m0s) must be at least --cert-renew-before (30m0s) plus --ca-propagation-delay (10m0s)"},
	}, {
		name:   "non-positive lifetimes and a negative delay",
		modify: func(o *Options) { o.CertValidity, o.PropagationDelay = 0, -time.Second },
		want:   []string{"--cert-validity must be positive", "--ca-propagation-delay must not be negative"},
	}, {
		name:   "unknown mode",
		modify: func(o *Options) { o.Mode = "manual" },
		want:   []string{`unknown certificate mode "manual"`},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := valid
			if tc.modify != nil {
				tc.modify(&o)
			}
			err := o.Validate()
			var got []string
			for _, w := range tc.want {
				if err != nil && strings.Contains(err.Error(), w) {
					got = append(got, w)
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("problems found (-want +got):\n%s\nerror: %v", diff, err)
			}
			if len(tc.want) == 0 && err != nil {
				t.Errorf("want valid, got %v", err)
			}
		})
	}
}

func TestSANs(t *testing.T) {
	tests := []struct {
		name    string
		extra   []string
		wantDNS []string
		wantIPs []string
	}{{
		name:    "service names only",
		wantDNS: []string{"psi.system.svc", "psi.system.svc.cluster.local"},
	}, {
		name:    "extra DNS names and IPs of both families are split, service names first",
		extra:   []string{"localhost", "127.0.0.1", "::1", "webhook.example.com"},
		wantDNS: []string{"psi.system.svc", "psi.system.svc.cluster.local", "localhost", "webhook.example.com"},
		wantIPs: []string{"127.0.0.1", "::1"},
	}, {
		name:    "duplicates of the service names are dropped",
		extra:   []string{"psi.system.svc", "127.0.0.1", "127.0.0.1"},
		wantDNS: []string{"psi.system.svc", "psi.system.svc.cluster.local"},
		wantIPs: []string{"127.0.0.1"},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := Options{ServiceName: "psi", ServiceNamespace: "system", ExtraSANs: tc.extra}
			dns, ips := o.SANs()
			var gotIPs []string
			for _, ip := range ips {
				gotIPs = append(gotIPs, ip.String())
			}
			if diff := cmp.Diff(tc.wantDNS, dns); diff != "" {
				t.Errorf("DNS names (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantIPs, gotIPs); diff != "" {
				t.Errorf("IPs (-want +got):\n%s", diff)
			}
		})
	}
}
