// Package policy compiles the configuration into a MutatingAdmissionPolicy and its binding, with which the
// API server itself adds the pull secret references to Pods, in process, as the webhook would: the same
// images (those of image volumes too), the same normalisation, the same kubelet matching rules, the same
// namespace selectors, the same order, and the same injected annotation. Making the copies the references
// name is left to whoever provisions them ahead of the Pods.
package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"

	"github.com/pullsecret-injector/pullsecret-injector/config"
)

// InjectedAnnotation is the annotation the policy sets on the Pods it changes, as the webhook does: a JSON
// list of {"secret": name, "registries": [pattern, ...]}, one item per Secret added.
const InjectedAnnotation = "pullsecret-injector.io/injected"

// Options names the objects and says which namespaces are never mutated.
type Options struct {
	// PolicyName names the MutatingAdmissionPolicy.
	PolicyName string
	// BindingName names the MutatingAdmissionPolicyBinding; empty means PolicyName.
	BindingName string
	// ExcludedNamespaces are never mutated whatever their labels, such as the release namespace and
	// kube-system.
	ExcludedNamespaces []string
}

// Build returns the policy and the binding that do, for Pods, what the webhook does with m: the binding
// applies m's opt-in namespace selector, minus opts.ExcludedNamespaces and minus Pods labelled
// config.InjectLabel=config.InjectDisabled; the policy adds the references and the annotation. It fails
// when an entry's pattern has no exact regular expression (config.Matcher.Regexps names it).
func Build(m *config.Matcher, opts Options) (*admissionregistrationv1.MutatingAdmissionPolicy, *admissionregistrationv1.MutatingAdmissionPolicyBinding, error) {
	if opts.PolicyName == "" {
		return nil, nil, errors.New("build mutating admission policy: no policy name")
	}
	bindingName := opts.BindingName
	if bindingName == "" {
		bindingName = opts.PolicyName
	}
	regexps, err := m.Regexps()
	if err != nil {
		return nil, nil, fmt.Errorf("compile registry patterns: %w", err)
	}
	nsSelector, err := namespaceSelector(m.NamespaceSelector(), opts.ExcludedNamespaces)
	if err != nil {
		return nil, nil, err
	}
	variables, mutation, err := expressions(m.Entries(), regexps)
	if err != nil {
		return nil, nil, err
	}
	return newPolicy(opts.PolicyName, variables, mutation), newBinding(bindingName, opts.PolicyName, nsSelector), nil
}

// newPolicy returns the MutatingAdmissionPolicy called name that matches every Pod CREATE and applies
// mutation with variables; which Pods it applies to is the binding's business.
func newPolicy(name string, variables []admissionregistrationv1.Variable, mutation string) *admissionregistrationv1.MutatingAdmissionPolicy {
	return &admissionregistrationv1.MutatingAdmissionPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: admissionregistrationv1.SchemeGroupVersion.String(), Kind: "MutatingAdmissionPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: admissionregistrationv1.MutatingAdmissionPolicySpec{
			MatchConstraints: &admissionregistrationv1.MatchResources{
				NamespaceSelector: &metav1.LabelSelector{},
				ObjectSelector:    &metav1.LabelSelector{},
				ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
					RuleWithOperations: admissionregistrationv1.RuleWithOperations{
						Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
						Rule: admissionregistrationv1.Rule{
							APIGroups:   []string{""},
							APIVersions: []string{"v1"},
							Resources:   []string{"pods"},
							Scope:       ptr.To(admissionregistrationv1.NamespacedScope),
						},
					},
				}},
				MatchPolicy: ptr.To(admissionregistrationv1.Equivalent),
			},
			Variables: variables,
			Mutations: []admissionregistrationv1.Mutation{{
				PatchType: admissionregistrationv1.PatchTypeJSONPatch,
				JSONPatch: &admissionregistrationv1.JSONPatch{Expression: mutation},
			}},
			// A Pod the policy cannot evaluate is refused rather than admitted without its secrets, as
			// the webhook's registration does.
			FailurePolicy: ptr.To(admissionregistrationv1.Fail),
			// Another admission plugin may add a container after this policy ran.
			ReinvocationPolicy: admissionregistrationv1.IfNeededReinvocationPolicy,
		},
	}
}

// newBinding returns the binding called name of policyName to the namespaces nsSelector selects, minus the
// Pods labelled config.InjectLabel=config.InjectDisabled.
func newBinding(name, policyName string, nsSelector *metav1.LabelSelector) *admissionregistrationv1.MutatingAdmissionPolicyBinding {
	return &admissionregistrationv1.MutatingAdmissionPolicyBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: admissionregistrationv1.SchemeGroupVersion.String(), Kind: "MutatingAdmissionPolicyBinding"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: admissionregistrationv1.MutatingAdmissionPolicyBindingSpec{
			PolicyName: policyName,
			MatchResources: &admissionregistrationv1.MatchResources{
				NamespaceSelector: nsSelector,
				ObjectSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
					Key: config.InjectLabel, Operator: metav1.LabelSelectorOpNotIn, Values: []string{config.InjectDisabled},
				}}},
				MatchPolicy: ptr.To(admissionregistrationv1.Equivalent),
			},
		},
	}
}

// namespaceSelector returns global as a label selector, with the excluded namespaces left out by name.
func namespaceSelector(global labels.Selector, excluded []string) (*metav1.LabelSelector, error) {
	selector, err := metav1.ParseToLabelSelector(global.String())
	if err != nil {
		return nil, fmt.Errorf("convert namespace selector %q: %w", global.String(), err)
	}
	// The round trip through text must not change what is selected.
	back, err := metav1.LabelSelectorAsSelector(selector)
	if err != nil {
		return nil, fmt.Errorf("convert namespace selector %q back: %w", global.String(), err)
	}
	if back.String() != global.String() {
		return nil, fmt.Errorf("convert namespace selector %q: it reads back as %q", global.String(), back)
	}
	for i := range selector.MatchExpressions {
		// As the API server stores it: no values is no field.
		if len(selector.MatchExpressions[i].Values) == 0 {
			selector.MatchExpressions[i].Values = nil
		}
	}
	if len(excluded) > 0 {
		values := slices.Clone(excluded)
		slices.Sort(values)
		selector.MatchExpressions = append(selector.MatchExpressions, metav1.LabelSelectorRequirement{
			Key: corev1.LabelMetadataName, Operator: metav1.LabelSelectorOpNotIn, Values: slices.Compact(values),
		})
	}
	// As the API server stores it: no labels or expressions is no field.
	if len(selector.MatchLabels) == 0 {
		selector.MatchLabels = nil
	}
	if len(selector.MatchExpressions) == 0 {
		selector.MatchExpressions = nil
	}
	return selector, nil
}

// Variable names. The per-entry and per-Secret variables are numbered: match0 is entries[0].
const (
	varImages       = "images"
	varReferences   = "references"
	varRepositories = "repositories"
	varExisting     = "existing"
	varPrevious     = "previous"
	varLabels       = "namespaceLabels"
	varAdded        = "added"
	varInjected     = "injected"
)

func matchVar(i int) string { return fmt.Sprintf("match%d", i) }

// expressions returns the policy's variables and its JSON patch expression for entries, whose patterns
// compile to regexps.
//
// The shape is what keeps the cost down: the images are gathered, normalised and validated once, as
// lists (each step a variable, so no expression recomputes another's work); each entry is one boolean
// variable, its pattern tried on the normalised repositories until one matches; the mutation only
// assembles constant strings around those booleans. One mutation reads them all.
func expressions(entries []config.Entry, regexps []string) ([]admissionregistrationv1.Variable, string, error) {
	vars := []admissionregistrationv1.Variable{
		{Name: varImages, Expression: imagesExpression},
		{Name: varReferences, Expression: referencesExpression},
		{Name: varRepositories, Expression: repositoriesExpression},
		{Name: varExisting, Expression: `has(object.spec.imagePullSecrets) ? ` +
			`object.spec.imagePullSecrets.map(r, has(r.name) ? string(r.name) : '') : []`},
		{Name: varPrevious, Expression: fmt.Sprintf(`has(object.metadata.annotations) && %s in object.metadata.annotations ? `+
			`string(object.metadata.annotations[%s]) : ''`, quote(InjectedAnnotation), quote(InjectedAnnotation))},
		{Name: varLabels, Expression: `has(namespaceObject.metadata.labels) ? namespaceObject.metadata.labels : {}`},
	}
	for i := range entries {
		vars = append(vars, admissionregistrationv1.Variable{
			Name:       matchVar(i),
			Expression: fmt.Sprintf("variables.%s.exists(r, r.matches(%s))", varRepositories, quote(regexps[i])),
		})
	}

	var added, injected []string
	for i := range entries {
		a, inj, err := entryExpressions(entries, i)
		if err != nil {
			return nil, "", err
		}
		added, injected = append(added, a), append(injected, inj)
	}
	vars = append(vars,
		admissionregistrationv1.Variable{Name: varAdded, Expression: "[" + strings.Join(added, ",\n") + "].filter(x, x != '')"},
		admissionregistrationv1.Variable{Name: varInjected, Expression: "[" + strings.Join(injected, ",\n") + "].filter(x, x != '')"},
	)
	return vars, mutationExpression, nil
}

// entryExpressions returns entries[i]'s items of the added and injected lists: its Secret's name, and its
// annotation fragment {"secret": name, "registries": [...]}, each where entries[i] is the first matching
// entry naming that Secret, else the empty string.
func entryExpressions(entries []config.Entry, i int) (added, injected string, err error) {
	e := entries[i]
	name := e.Registry.Secret.Name
	// first says that entries[i] matches and no earlier entry naming its Secret does: the webhook adds
	// a Secret where its first matching entry comes in config order.
	first := []string{"variables." + matchVar(i)}
	var patterns []string
	for j, other := range entries {
		if other.Registry.Secret.Name != name {
			continue
		}
		if j < i {
			first = append(first, "!variables."+matchVar(j))
		}
		registry, err := json.Marshal(other.Registry.Registry)
		if err != nil {
			return "", "", fmt.Errorf("encode registry %q: %w", other.Registry.Registry, err)
		}
		patterns = append(patterns, fmt.Sprintf("variables.%s ? %s : ''", matchVar(j), quote(string(registry))))
	}
	selected, err := selectorExpression(e.Registry.NamespaceSelector, "variables."+varLabels)
	if err != nil {
		return "", "", fmt.Errorf("compile registries[%d].namespaceSelector: %w", e.Index, err)
	}
	secret, err := json.Marshal(name)
	if err != nil {
		return "", "", fmt.Errorf("encode secret name %q: %w", name, err)
	}
	wanted := strings.Join(append(first, selected), " && ")
	referenced := fmt.Sprintf("%s in variables.%s", quote(name), varExisting)
	added = fmt.Sprintf("%s && !(%s) ? %s : ''", wanted, referenced, quote(name))
	// A Secret the Pod references counts as injected when the annotation it arrived with says so:
	// this policy wrote it in an earlier invocation for the same Pod.
	previously := fmt.Sprintf("variables.%s.contains(%s)", varPrevious, quote(`{"secret":`+string(secret)+`,`))
	fragment := fmt.Sprintf(`%s + [%s].filter(x, x != '').join(',') + ']}'`,
		quote(`{"secret":`+string(secret)+`,"registries":[`), strings.Join(patterns, ", "))
	injected = fmt.Sprintf("%s && (!(%s) || %s) ? %s : ''", wanted, referenced, previously, fragment)
	return added, injected, nil
}

// imagesExpression lists every image the kubelet pulls for the Pod: init, regular and ephemeral
// containers, and image volumes. A missing image is the empty string, which matches nothing, as the webhook
// skips it.
const imagesExpression = `(has(object.spec.initContainers) ? object.spec.initContainers.map(c, has(c.image) ? string(c.image) : '') : []) +
(has(object.spec.containers) ? object.spec.containers.map(c, has(c.image) ? string(c.image) : '') : []) +
(has(object.spec.ephemeralContainers) ? object.spec.ephemeralContainers.map(c, has(c.image) ? string(c.image) : '') : []) +
(has(object.spec.volumes) ? object.spec.volumes.filter(v, has(v.image)).map(v, has(v.image.reference) ? string(v.image.reference) : '') : [])`

// mutationExpression adds the references in variables.added after the Pod's own and sets the annotation
// to variables.injected; nothing when nothing is added, as the webhook changes nothing then.
var mutationExpression = fmt.Sprintf(`size(variables.added) == 0 ? [] :
(has(object.spec.imagePullSecrets) && size(object.spec.imagePullSecrets) > 0 ?
  variables.added.map(n, JSONPatch{op: 'add', path: '/spec/imagePullSecrets/-', value: {'name': n}}) :
  [JSONPatch{op: 'add', path: '/spec/imagePullSecrets', value: variables.added.map(n, {'name': n})}]) +
[has(object.metadata.annotations) ?
  JSONPatch{op: 'add', path: %s, value: '[' + variables.injected.join(',') + ']'} :
  JSONPatch{op: 'add', path: '/metadata/annotations', value: {%s: '[' + variables.injected.join(',') + ']'}}]`,
	quote("/metadata/annotations/"+strings.NewReplacer("~", "~0", "/", "~1").Replace(InjectedAnnotation)), quote(InjectedAnnotation))

// selectorExpression returns a CEL expression that is true exactly when s selects a namespace whose
// labels are the map labelsVar, as metav1.LabelSelectorAsSelector would; a nil s selects every namespace,
// as an entry without a selector applies everywhere the global one does.
func selectorExpression(s *metav1.LabelSelector, labelsVar string) (string, error) {
	if s == nil {
		return "true", nil
	}
	// The same conversion the matcher uses, so both read the selector alike (and refuse alike).
	sel, err := metav1.LabelSelectorAsSelector(s)
	if err != nil {
		return "", err
	}
	reqs, _ := sel.Requirements()
	terms := []string{"true"}
	for _, r := range reqs {
		key := quote(r.Key())
		has := fmt.Sprintf("%s in %s", key, labelsVar)
		values := make([]string, 0, r.Values().Len())
		for _, v := range r.ValuesUnsorted() {
			values = append(values, quote(v))
		}
		slices.Sort(values)
		in := fmt.Sprintf("(%s && %s[%s] in [%s])", has, labelsVar, key, strings.Join(values, ", "))
		switch op := r.Operator(); op {
		case "=", "==", "in":
			terms = append(terms, in)
		case "!=", "notin":
			terms = append(terms, "!"+in)
		case "exists":
			terms = append(terms, has)
		case "!":
			terms = append(terms, "!("+has+")")
		default:
			return "", fmt.Errorf("operator %q is not supported", op)
		}
	}
	if len(terms) > 1 {
		terms = terms[1:]
	}
	return "(" + strings.Join(terms, " && ") + ")", nil
}

// quote returns s as a CEL string literal.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('\'')
	for _, r := range s {
		switch {
		case r == '\\' || r == '\'':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r >= 0x20 && r < 0x7f:
			b.WriteRune(r)
		case r <= 0xffff:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			fmt.Fprintf(&b, `\U%08x`, r)
		}
	}
	b.WriteByte('\'')
	return b.String()
}
