package app

import (
	"bytes"
	"flag"
	"io"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// newFlagSet binds the options' flags on a fresh set, as main does.
func newFlagSet() (*Options, *flag.FlagSet) {
	o := &Options{}
	fs := flag.NewFlagSet("pullsecret-injector", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	o.BindFlags(fs)
	return o, fs
}

// flagLine matches a flag's first line in flag.PrintDefaults' output.
var flagLine = regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`)

// listedFlags returns the groups of a help text and the flags listed under each, in order.
func listedFlags(help string) map[string][]string {
	groups := map[string][]string{}
	title := ""
	for _, line := range strings.Split(help, "\n") {
		if strings.HasSuffix(line, ":") && !strings.HasPrefix(line, " ") {
			title = strings.TrimSuffix(line, ":")
			continue
		}
		if m := flagLine.FindStringSubmatch(line); m != nil {
			groups[title] = append(groups[title], m[1])
		}
	}
	return groups
}

func TestUsageListsEveryFlagInOneGroup(t *testing.T) {
	o, fs := newFlagSet()
	var help bytes.Buffer
	o.Usage(fs, &help)
	seen := map[string]string{}
	for title, names := range listedFlags(help.String()) {
		if title == "Other" || title == "Flags" || title == "Usage" {
			t.Errorf("flags %q are listed under %q, in no group: add them in a bind function of BindFlags", names, title)
		}
		for _, name := range names {
			if prev, ok := seen[name]; ok {
				t.Errorf("--%s is listed under %q and %q", name, prev, title)
			}
			seen[name] = title
		}
	}
	fs.VisitAll(func(f *flag.Flag) {
		if _, ok := seen[f.Name]; !ok {
			t.Errorf("--%s is not listed by --help", f.Name)
		}
	})
	// The flags the chart passes, the logger's and the process's own are all there.
	for _, name := range []string{"config", "cert-mode", "cert-dir", "leader-elect", "zap-log-level", "kubeconfig", "version", "metrics-bind-address"} {
		if _, ok := seen[name]; !ok {
			t.Errorf("--%s is not listed by --help", name)
		}
	}
}

func TestUsageListsAStrayFlagUnderOther(t *testing.T) {
	o, fs := newFlagSet()
	fs.Bool("stray", false, "a flag registered outside BindFlags")
	var help bytes.Buffer
	o.Usage(fs, &help)
	if diff := cmp.Diff([]string{"stray"}, listedFlags(help.String())["Other"]); diff != "" {
		t.Errorf("flags under Other (-want +got):\n%s", diff)
	}
}

func TestUsageIntroducesTheProgram(t *testing.T) {
	o, fs := newFlagSet()
	var help bytes.Buffer
	o.Usage(fs, &help)
	first, _, _ := strings.Cut(help.String(), "\n")
	if !strings.HasPrefix(first, "pullsecret-injector is a Kubernetes mutating admission webhook") {
		t.Errorf("--help opens with %q, want what the program is", first)
	}
	if !strings.Contains(help.String(), "pullsecret-injector check [flags] IMAGE...") {
		t.Errorf("--help does not list the check subcommand:\n%s", help.String())
	}
}

func TestValidate(t *testing.T) {
	for name, tc := range map[string]struct {
		args []string
		want string // a part of the error; empty: valid
	}{
		"the defaults are valid":                  {},
		"policy mode with the defaults is valid":  {args: []string{"--injection=policy"}},
		"eager provisioning in webhook mode":      {args: []string{"--provision=eager"}},
		"an unknown injection mode":               {args: []string{"--injection=sidecar"}, want: `--injection="sidecar"`},
		"an unknown provisioning":                 {args: []string{"--provision=sometimes"}, want: `--provision="sometimes"`},
		"lazy provisioning asked for with policy": {args: []string{"--injection=policy", "--provision=lazy"}, want: "policy mode makes copies ahead"},
		"append asked for with policy": {args: []string{"--injection=policy", "--serviceaccount-pull-secrets=append"},
			want: "the policy cannot change ServiceAccounts"},
		"an unknown ServiceAccount mode":                        {args: []string{"--serviceaccount-pull-secrets=maybe"}, want: `--serviceaccount-pull-secrets="maybe"`},
		"self certificates without their names":                 {args: []string{"--cert-mode=self"}, want: "--service-name is required"},
		"self certificate flags are not checked in policy mode": {args: []string{"--injection=policy", "--cert-mode=self"}},
	} {
		t.Run(name, func(t *testing.T) {
			o, fs := newFlagSet()
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			err := o.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Validate() = %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

func TestIgnoredFlags(t *testing.T) {
	for name, tc := range map[string]struct {
		args []string
		want []string
	}{
		"webhook mode uses every flag": {args: []string{"--webhook-port=1", "--cert-mode=self"}},
		"policy mode ignores the webhook server's and certificate's flags": {
			args: []string{"--injection=policy", "--webhook-port=1", "--cert-mode=self", "--resync-period=1m"},
			want: []string{"--cert-mode", "--webhook-port"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			o, fs := newFlagSet()
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, o.ignoredFlags()); diff != "" {
				t.Errorf("ignoredFlags (-want +got):\n%s", diff)
			}
		})
	}
}
