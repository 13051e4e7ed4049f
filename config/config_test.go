package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/pullsecret-injector/pullsecret-injector/test/fixtures"
)

// validYAML is the example of docs/configuration.md, which validConfig decodes.
const validYAML = fixtures.DocsExample

func validConfig() *Config {
	return &Config{
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{InjectLabel: InjectEnabled}},
		Registries: []Registry{
			{
				Registry: "registry.example.com:5000/team-a",
				Secret:   SecretRef{Namespace: "pullsecret-injector", Name: "team-a-regcred"},
			},
			{
				Registry:          "*.dkr.ecr.eu-west-1.amazonaws.com",
				Secret:            SecretRef{Namespace: "pullsecret-injector", Name: "ecr-regcred"},
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "payments"}},
			},
		},
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		data string
		want *Config
	}{
		{
			name: "full yaml decodes every field",
			data: validYAML,
			want: validConfig(),
		},
		{
			name: "json is accepted",
			data: `{"registries": [{"registry": "docker.io", "secret": {"namespace": "ops", "name": "hub"}}]}`,
			want: &Config{
				NamespaceSelector: defaultNamespaceSelector(),
				Registries:        []Registry{{Registry: "docker.io", Secret: SecretRef{Namespace: "ops", Name: "hub"}}},
			},
		},
		{
			name: "missing namespace selector defaults to the inject label",
			data: "registries:\n- registry: docker.io\n  secret: {namespace: ops, name: hub}\n",
			want: &Config{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"pullsecret-injector.io/inject": "enabled"}},
				Registries:        []Registry{{Registry: "docker.io", Secret: SecretRef{Namespace: "ops", Name: "hub"}}},
			},
		},
		{
			name: "null namespace selector defaults to the inject label",
			data: "namespaceSelector: null\nregistries:\n- registry: docker.io\n  secret: {namespace: ops, name: hub}\n",
			want: &Config{
				NamespaceSelector: defaultNamespaceSelector(),
				Registries:        []Registry{{Registry: "docker.io", Secret: SecretRef{Namespace: "ops", Name: "hub"}}},
			},
		},
		{
			name: "empty namespace selector is kept and selects everything",
			data: "namespaceSelector: {}\nregistries:\n- registry: docker.io\n  secret: {namespace: ops, name: hub}\n",
			want: &Config{
				NamespaceSelector: &metav1.LabelSelector{},
				Registries:        []Registry{{Registry: "docker.io", Secret: SecretRef{Namespace: "ops", Name: "hub"}}},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse([]byte(tc.data))
			if err != nil {
				t.Fatalf("Parse returned error: %v", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Parse mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct {
		name string
		data string
		// wantErr are substrings the error must contain, so that one
		// message reports every problem with its location.
		wantErr []string
	}{
		{
			name:    "unknown top-level field is rejected",
			data:    "registry: docker.io\nregistries:\n- registry: docker.io\n  secret: {namespace: ops, name: hub}\n",
			wantErr: []string{`unknown field "registry"`},
		},
		{
			name:    "unknown registry field is rejected",
			data:    "registries:\n- registry: docker.io\n  selector: {}\n  secret: {namespace: ops, name: hub}\n",
			wantErr: []string{`unknown field "registries[0].selector"`},
		},
		{
			name:    "unknown secret field is rejected",
			data:    "registries:\n- registry: docker.io\n  secret: {namespace: ops, name: hub, key: .dockerconfigjson}\n",
			wantErr: []string{`unknown field "registries[0].secret.key"`},
		},
		{
			name:    "unknown selector field is rejected",
			data:    "namespaceSelector: {matchLabel: {a: b}}\nregistries:\n- registry: docker.io\n  secret: {namespace: ops, name: hub}\n",
			wantErr: []string{`unknown field "namespaceSelector.matchLabel"`},
		},
		{
			name:    "field with wrong case is rejected",
			data:    "namespaceselector: {}\nregistries:\n- registry: docker.io\n  secret: {namespace: ops, name: hub}\n",
			wantErr: []string{`unknown field "namespaceselector"`},
		},
		{
			name:    "every unknown field is reported",
			data:    "extra: 1\nregistries:\n- registry: docker.io\n  extra: 2\n  secret: {namespace: ops, name: hub}\n",
			wantErr: []string{`unknown field "extra"`, `unknown field "registries[0].extra"`},
		},
		{
			name:    "unknown field and validation problems are reported together",
			data:    "extra: 1\nregistries:\n- registry: r..io\n  secret: {namespace: ops, name: hub}\n",
			wantErr: []string{`unknown field "extra"`, "registries[0].registry: Invalid value"},
		},
		{
			name:    "duplicate key is rejected",
			data:    "registries: []\nregistries:\n- registry: docker.io\n  secret: {namespace: ops, name: hub}\n",
			wantErr: []string{`"registries"`, "already set"},
		},
		{
			name:    "wrong type is rejected",
			data:    "registries: docker.io\n",
			wantErr: []string{"decode config"},
		},
		{
			name:    "malformed yaml is rejected",
			data:    "registries: [\n",
			wantErr: []string{"convert config YAML to JSON"},
		},
		{
			name:    "empty file has no registries",
			data:    "",
			wantErr: []string{"validate config", "registries: Required value"},
		},
		{
			name: "invalid file reports every problem with its field path",
			data: `
namespaceSelector:
  matchExpressions: [{key: team, operator: Bogus}]
registries:
  - registry: ""
    secret: {namespace: Bad_NS, name: ""}
  - registry: "index.docker.io/myorg"
    secret: {namespace: ops, name: hub}
    namespaceSelector: {matchLabels: {"bad key!": x}}
  - registry: "r.io?x"
    secret: {namespace: "", name: "Not_A_Name"}
`,
			wantErr: []string{
				"namespaceSelector.matchExpressions[0].operator",
				"registries[0].registry: Required value",
				"registries[0].secret.namespace: Invalid value",
				"registries[0].secret.name: Required value",
				"registries[1].registry: Invalid value",
				`use "docker.io/myorg"`,
				"registries[1].namespaceSelector.matchLabels",
				"registries[2].registry: Invalid value",
				"registries[2].secret.namespace: Required value",
				"registries[2].secret.name: Invalid value",
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse([]byte(tc.data))
			if err == nil {
				t.Fatalf("Parse = %+v, want error", got)
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Parse error does not contain %q:\n%v", want, err)
				}
			}
		})
	}
}

// errorSummary reduces errs to "path: type" so tests pin down which
// problems are found without depending on message wording.
func errorSummary(errs field.ErrorList) []string {
	var out []string
	for _, e := range errs {
		out = append(out, e.Field+": "+string(e.Type))
	}
	return out
}

func TestValidate(t *testing.T) {
	hub := func(ns, name string) Registry {
		return Registry{Registry: "docker.io", Secret: SecretRef{Namespace: ns, Name: name}}
	}
	withRegistry := func(r Registry, registry string) Registry {
		r.Registry = registry
		return r
	}
	tests := []struct {
		name   string
		config Config
		want   []string
	}{
		{
			name:   "valid config has no errors",
			config: *validConfig(),
		},
		{
			name:   "nil namespace selector is valid because default fills it",
			config: Config{Registries: []Registry{hub("ops", "hub")}},
		},
		{
			name:   "no registries is an error",
			config: Config{},
			want:   []string{"registries: " + string(field.ErrorTypeRequired)},
		},
		{
			name:   "empty registry is required",
			config: Config{Registries: []Registry{withRegistry(hub("ops", "hub"), "")}},
			want:   []string{"registries[0].registry: " + string(field.ErrorTypeRequired)},
		},
		{
			name:   "unparsable registry is invalid",
			config: Config{Registries: []Registry{withRegistry(hub("ops", "hub"), "r.io/team#a")}},
			want:   []string{"registries[0].registry: " + string(field.ErrorTypeInvalid)},
		},
		{
			name:   "index.docker.io with a path is invalid",
			config: Config{Registries: []Registry{withRegistry(hub("ops", "hub"), "index.docker.io/myorg")}},
			want:   []string{"registries[0].registry: " + string(field.ErrorTypeInvalid)},
		},
		{
			name:   "index.docker.io without a path is valid",
			config: Config{Registries: []Registry{withRegistry(hub("ops", "hub"), "https://index.docker.io/v1/")}},
		},
		{
			name:   "missing secret namespace and name are required",
			config: Config{Registries: []Registry{hub("", "")}},
			want: []string{
				"registries[0].secret.namespace: " + string(field.ErrorTypeRequired),
				"registries[0].secret.name: " + string(field.ErrorTypeRequired),
			},
		},
		{
			name:   "secret namespace must be a dns label",
			config: Config{Registries: []Registry{hub("team.a", "hub")}},
			want:   []string{"registries[0].secret.namespace: " + string(field.ErrorTypeInvalid)},
		},
		{
			name:   "secret name may be a dns subdomain",
			config: Config{Registries: []Registry{hub("ops", "hub.regcred")}},
		},
		{
			name:   "secret name must be a dns subdomain",
			config: Config{Registries: []Registry{hub("ops", "Hub_Regcred")}},
			want:   []string{"registries[0].secret.name: " + string(field.ErrorTypeInvalid)},
		},
		{
			name: "invalid global selector is an error",
			config: Config{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"bad key!": "x"}},
				Registries:        []Registry{hub("ops", "hub")},
			},
			want: []string{"namespaceSelector.matchLabels: " + string(field.ErrorTypeInvalid)},
		},
		{
			name: "selector operator needing values without values is an error",
			config: Config{
				NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: "team", Operator: metav1.LabelSelectorOpIn},
				}},
				Registries: []Registry{hub("ops", "hub")},
			},
			want: []string{"namespaceSelector.matchExpressions[0].values: " + string(field.ErrorTypeRequired)},
		},
		{
			name: "invalid entry selector is an error",
			config: Config{Registries: []Registry{{
				Registry:          "docker.io",
				Secret:            SecretRef{Namespace: "ops", Name: "hub"},
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "not valid!"}},
			}}},
			want: []string{"registries[0].namespaceSelector.matchLabels: " + string(field.ErrorTypeInvalid)},
		},
		{
			name: "valid expression selectors are accepted",
			config: Config{
				NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: InjectLabel, Operator: metav1.LabelSelectorOpNotIn, Values: []string{InjectDisabled}},
				}},
				Registries: []Registry{{
					Registry:          "docker.io",
					Secret:            SecretRef{Namespace: "ops", Name: "hub"},
					NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "team", Operator: metav1.LabelSelectorOpExists}}},
				}},
			},
		},
		{
			name:   "same name from different namespaces collides",
			config: Config{Registries: []Registry{hub("ops", "regcred"), withRegistry(hub("team-a", "regcred"), "quay.io")}},
			want:   []string{"registries[1].secret.name: " + string(field.ErrorTypeInvalid)},
		},
		{
			name: "every later entry colliding with the first is reported",
			config: Config{Registries: []Registry{
				hub("ops", "regcred"),
				withRegistry(hub("team-a", "regcred"), "quay.io"),
				withRegistry(hub("team-b", "regcred"), "ghcr.io"),
			}},
			want: []string{
				"registries[1].secret.name: " + string(field.ErrorTypeInvalid),
				"registries[2].secret.name: " + string(field.ErrorTypeInvalid),
			},
		},
		{
			name:   "same source for two registries is fine",
			config: Config{Registries: []Registry{hub("ops", "regcred"), withRegistry(hub("ops", "regcred"), "quay.io")}},
		},
		{
			name: "same source with different selectors is refused",
			config: Config{Registries: []Registry{
				{Registry: "docker.io", Secret: SecretRef{Namespace: "ops", Name: "regcred"},
					NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "payments"}}},
				withRegistry(hub("ops", "regcred"), "quay.io"),
			}},
			want: []string{"registries[1].namespaceSelector: " + string(field.ErrorTypeInvalid)},
		},
		{
			name: "same source with equal selectors is fine",
			config: Config{Registries: []Registry{
				{Registry: "docker.io", Secret: SecretRef{Namespace: "ops", Name: "regcred"},
					NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "payments"}}},
				{Registry: "quay.io", Secret: SecretRef{Namespace: "ops", Name: "regcred"},
					NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "payments"}}},
			}},
		},
		{
			name:   "different names in one namespace are fine",
			config: Config{Registries: []Registry{hub("ops", "hub"), withRegistry(hub("ops", "quay"), "quay.io")}},
		},
		{
			name: "problems in several entries are all reported",
			config: Config{Registries: []Registry{
				withRegistry(hub("ops", "hub"), "r..io"),
				hub("", "hub"),
				withRegistry(hub("ops", "UPPER"), ""),
			}},
			want: []string{
				"registries[0].registry: " + string(field.ErrorTypeInvalid),
				"registries[1].secret.namespace: " + string(field.ErrorTypeRequired),
				"registries[2].registry: " + string(field.ErrorTypeRequired),
				"registries[2].secret.name: " + string(field.ErrorTypeInvalid),
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := errorSummary(tc.config.Validate())
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Validate mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestValidateCollisionNamesBothEntries(t *testing.T) {
	c := Config{Registries: []Registry{
		{Registry: "docker.io", Secret: SecretRef{Namespace: "ops", Name: "regcred"}},
		{Registry: "quay.io", Secret: SecretRef{Namespace: "team-a", Name: "regcred"}},
	}}
	errs := c.Validate()
	if len(errs) != 1 {
		t.Fatalf("Validate returned %d errors, want 1: %v", len(errs), errs)
	}
	for _, want := range []string{"registries[0]", "ops/regcred", "collide"} {
		if !strings.Contains(errs[0].Error(), want) {
			t.Errorf("collision error %q does not mention %q", errs[0].Error(), want)
		}
	}
}

func TestDefault(t *testing.T) {
	tests := []struct {
		name string
		in   *metav1.LabelSelector
		want *metav1.LabelSelector
	}{
		{
			name: "nil selector becomes the inject label opt-in",
			in:   nil,
			want: &metav1.LabelSelector{MatchLabels: map[string]string{InjectLabel: InjectEnabled}},
		},
		{
			name: "empty selector is kept",
			in:   &metav1.LabelSelector{},
			want: &metav1.LabelSelector{},
		},
		{
			name: "custom selector is kept",
			in:   &metav1.LabelSelector{MatchLabels: map[string]string{"team": "payments"}},
			want: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "payments"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &Config{NamespaceSelector: tc.in}
			c.Default()
			if diff := cmp.Diff(tc.want, c.NamespaceSelector); diff != "" {
				t.Errorf("Default mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	valid := filepath.Join(dir, "valid.yaml")
	invalid := filepath.Join(dir, "invalid.yaml")
	missing := filepath.Join(dir, "missing.yaml")
	if err := os.WriteFile(valid, []byte(validYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(invalid, []byte("registries: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("valid file is parsed", func(t *testing.T) {
		got, err := Load(valid)
		if err != nil {
			t.Fatalf("Load returned error: %v", err)
		}
		if diff := cmp.Diff(validConfig(), got); diff != "" {
			t.Errorf("Load mismatch (-want +got):\n%s", diff)
		}
	})
	t.Run("missing file error names the path and wraps the cause", func(t *testing.T) {
		_, err := Load(missing)
		if err == nil {
			t.Fatal("Load returned no error for a missing file")
		}
		if !strings.Contains(err.Error(), missing) {
			t.Errorf("Load error %q does not name %q", err, missing)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Load error %q does not wrap fs.ErrNotExist", err)
		}
	})
	t.Run("invalid file error names the path and the problem", func(t *testing.T) {
		_, err := Load(invalid)
		if err == nil {
			t.Fatal("Load returned no error for an invalid file")
		}
		for _, want := range []string{invalid, "registries: Required value"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("Load error %q does not contain %q", err, want)
			}
		}
	})
}

func TestSourceNamespaces(t *testing.T) {
	ref := func(ns string) Registry {
		return Registry{Registry: "docker.io", Secret: SecretRef{Namespace: ns, Name: "x"}}
	}
	tests := []struct {
		name       string
		registries []Registry
		want       []string
	}{
		{name: "no registries have no namespaces", want: []string{}},
		{name: "one namespace is returned", registries: []Registry{ref("ops")}, want: []string{"ops"}},
		{name: "namespaces are sorted and unique", registries: []Registry{ref("zeta"), ref("ops"), ref("zeta"), ref("alpha"), ref("ops")}, want: []string{"alpha", "ops", "zeta"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &Config{Registries: tc.registries}
			if diff := cmp.Diff(tc.want, c.SourceNamespaces()); diff != "" {
				t.Errorf("SourceNamespaces mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSecretRefString(t *testing.T) {
	if got, want := (SecretRef{Namespace: "ops", Name: "regcred"}).String(), "ops/regcred"; got != want {
		t.Errorf("SecretRef.String() = %q, want %q", got, want)
	}
}

func TestValidateSharedSourceSelectorsSayHowToSplit(t *testing.T) {
	c := Config{Registries: []Registry{
		{Registry: "docker.io", Secret: SecretRef{Namespace: "ops", Name: "regcred"},
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "payments"}}},
		{Registry: "quay.io", Secret: SecretRef{Namespace: "ops", Name: "regcred"}},
	}}
	errs := c.Validate()
	if len(errs) != 1 {
		t.Fatalf("Validate returned %d errors, want 1: %v", len(errs), errs)
	}
	for _, want := range []string{"registries[0]", "ops/regcred", "team=payments", "same namespaceSelector", "another name"} {
		if !strings.Contains(errs[0].Error(), want) {
			t.Errorf("error %q does not mention %q", errs[0].Error(), want)
		}
	}
}
