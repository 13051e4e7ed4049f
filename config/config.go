// Package config holds the pullsecret-injector configuration schema, its
// loading and validation, and the kubelet-compatible matcher that decides
// which registries' pull secrets an image needs.
package config

import (
	"errors"
	"fmt"
	"os"
	"slices"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

const (
	// InjectLabel is the namespace label the default namespaceSelector
	// looks at.
	InjectLabel = "pullsecret-injector.io/inject"
	// InjectEnabled is the InjectLabel value that opts a namespace in.
	InjectEnabled = "enabled"
	// InjectDisabled is the InjectLabel value that opts a namespace out.
	InjectDisabled = "disabled"
	// DefaultPath is where the configuration file is mounted by the chart.
	DefaultPath = "/etc/pullsecret-injector/config.yaml"
)

// Config is the configuration file.
type Config struct {
	// NamespaceSelector selects the namespaces whose pods are mutated at
	// all. Default sets it to matchLabels {InjectLabel: InjectEnabled}; an
	// explicit empty selector ({}) selects every namespace.
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	// Registries maps registries to the pull secret each one needs.
	Registries []Registry `json:"registries"`
}

// Registry is one registry and the pull secret its images need.
type Registry struct {
	// Registry is a kubelet credential key, [scheme://]host[:port][/path],
	// with optional '*' globs in host labels. It matches an image exactly
	// when the kubelet would offer a credential stored under this key.
	Registry string `json:"registry"`
	// Secret is the kubernetes.io/dockerconfigjson Secret copied into the
	// pod's namespace and referenced from the pod.
	Secret SecretRef `json:"secret"`
	// NamespaceSelector further restricts, on top of the global selector,
	// the namespaces this entry applies to.
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
}

// SecretRef names a Secret.
type SecretRef struct {
	// Namespace is the namespace the source Secret lives in.
	Namespace string `json:"namespace"`
	// Name is the Secret's name, kept for the copy in the pod's namespace.
	Name string `json:"name"`
}

// String returns the reference as "namespace/name".
func (r SecretRef) String() string {
	return r.Namespace + "/" + r.Name
}

// Load reads the configuration file at path and parses it with Parse.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config file %q: %w", path, err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("parse config file %q: %w", path, err)
	}
	return c, nil
}

// Parse decodes a YAML or JSON configuration strictly, applies Default and
// returns an error listing every validation problem, if any.
//
// Decoding is case-sensitive and rejects unknown and duplicate fields, as
// the kube-apiserver does for its own config files: a misspelt
// "namespaceSelector" silently ignored would widen injection to more
// namespaces than intended.
func Parse(data []byte) (*Config, error) {
	jsonData, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, fmt.Errorf("convert config YAML to JSON: %w", err)
	}
	c := &Config{}
	strictErrs, err := sigsjson.UnmarshalStrict(jsonData, c)
	if err != nil {
		return nil, fmt.Errorf("decode config: %w", err)
	}
	// Strict errors leave the known fields decoded, so validation still
	// runs and the operator sees every problem in one pass.
	var problems []error
	if len(strictErrs) > 0 {
		problems = append(problems, fmt.Errorf("decode config: %w", errors.Join(strictErrs...)))
	}
	c.Default()
	if errs := c.Validate(); len(errs) > 0 {
		problems = append(problems, fmt.Errorf("validate config: %w", errs.ToAggregate()))
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	return c, nil
}

// defaultNamespaceSelector is the opt-in selector used when the
// configuration has none, so that installing the webhook changes nothing
// until a namespace is labelled.
func defaultNamespaceSelector() *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: map[string]string{InjectLabel: InjectEnabled}}
}

// Default fills NamespaceSelector with the InjectLabel opt-in selector when
// it is nil.
func (c *Config) Default() {
	if c.NamespaceSelector == nil {
		c.NamespaceSelector = defaultNamespaceSelector()
	}
}

// Validate returns every problem in c, each with its field path. A nil
// NamespaceSelector is valid because Default fills it.
func (c *Config) Validate() field.ErrorList {
	var errs field.ErrorList
	errs = append(errs, validateSelector(c.NamespaceSelector, field.NewPath("namespaceSelector"))...)

	registriesPath := field.NewPath("registries")
	if len(c.Registries) == 0 {
		errs = append(errs, field.Required(registriesPath, "at least one registry is required"))
	}
	// sourceByName finds entries whose different sources would be copied
	// under the same name into a pod's namespace, where only one can exist.
	sourceByName := map[string]int{}
	for i, r := range c.Registries {
		p := registriesPath.Index(i)
		if r.Registry == "" {
			errs = append(errs, field.Required(p.Child("registry"), ""))
		} else if _, err := ParsePattern(r.Registry); err != nil {
			errs = append(errs, field.Invalid(p.Child("registry"), r.Registry, err.Error()))
		}
		secretErrs := validateSecretRef(r.Secret, p.Child("secret"))
		errs = append(errs, secretErrs...)
		errs = append(errs, validateSelector(r.NamespaceSelector, p.Child("namespaceSelector"))...)

		// A collision involving an invalid reference would only repeat
		// the problem already reported for it.
		if len(secretErrs) > 0 {
			continue
		}
		first, seen := sourceByName[r.Secret.Name]
		if !seen {
			sourceByName[r.Secret.Name] = i
			continue
		}
		if other := c.Registries[first].Secret; other != r.Secret {
			errs = append(errs, field.Invalid(p.Child("secret", "name"), r.Secret.Name,
				fmt.Sprintf("registries[%d] uses a different source %s with the same name; the copies would collide in the pod's namespace", first, other)))
			continue
		}
		// One Secret is one copy per namespace, so it has one set of namespaces it belongs in: an entry
		// without the selector of another one naming the same Secret would hand the copy to namespaces that
		// the other entry keeps it out of.
		if !apiequality.Semantic.DeepEqual(c.Registries[first].NamespaceSelector, r.NamespaceSelector) {
			errs = append(errs, field.Invalid(p.Child("namespaceSelector"), selectorString(r.NamespaceSelector),
				fmt.Sprintf("registries[%d] names the same secret %s with namespaceSelector %s; entries sharing a secret must "+
					"have the same namespaceSelector: give them the same one, or copy the secret to another name for the "+
					"other namespaces", first, r.Secret, selectorString(c.Registries[first].NamespaceSelector))))
		}
	}
	return errs
}

func selectorString(s *metav1.LabelSelector) string {
	if s == nil {
		return "(none)"
	}
	return metav1.FormatLabelSelector(s)
}

func validateSecretRef(r SecretRef, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if r.Namespace == "" {
		errs = append(errs, field.Required(p.Child("namespace"), ""))
	} else {
		for _, msg := range validation.IsDNS1123Label(r.Namespace) {
			errs = append(errs, field.Invalid(p.Child("namespace"), r.Namespace, msg))
		}
	}
	if r.Name == "" {
		errs = append(errs, field.Required(p.Child("name"), ""))
	} else {
		for _, msg := range validation.IsDNS1123Subdomain(r.Name) {
			errs = append(errs, field.Invalid(p.Child("name"), r.Name, msg))
		}
	}
	return errs
}

func validateSelector(s *metav1.LabelSelector, p *field.Path) field.ErrorList {
	if s == nil {
		return nil
	}
	errs := metav1validation.ValidateLabelSelector(s, metav1validation.LabelSelectorValidationOptions{}, p)
	if len(errs) > 0 {
		// Conversion would only repeat the same problems.
		return errs
	}
	if _, err := metav1.LabelSelectorAsSelector(s); err != nil {
		errs = append(errs, field.Invalid(p, s.String(), err.Error()))
	}
	return errs
}

// SourceNamespaces returns the sorted, unique namespaces of all Secret
// references, the namespaces the webhook needs read access to.
func (c *Config) SourceNamespaces() []string {
	namespaces := make([]string, 0, len(c.Registries))
	for _, r := range c.Registries {
		namespaces = append(namespaces, r.Secret.Namespace)
	}
	slices.Sort(namespaces)
	return slices.Compact(namespaces)
}
