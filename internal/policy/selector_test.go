package policy

import (
	"slices"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// FuzzSelectorExpression checks that the CEL of a per-entry namespace selector, evaluated by the API
// server's CEL environment on a namespace's labels, selects exactly the namespaces the webhook's
// labels.Selector does. The selector has matchLabels from matchLabels ("k=v,..."), and one requirement
// of each operator on key with values ("a,b"); the namespace has nsLabels ("k=v,..."). Without -fuzz it
// runs only the seeds.
func FuzzSelectorExpression(f *testing.F) {
	f.Add("team=payments", "tier", "prod,staging", "team=payments,tier=prod")
	f.Add("", "tier", "prod", "")
	f.Add("a=", "b", "x", "a=,b=y")
	f.Add("team=payments", "legacy", "", "team=payments,legacy=yes")
	f.Add("example.com/k=v", "example.com/t", "it's", "example.com/k=v,example.com/t=x")
	f.Fuzz(func(t *testing.T, matchLabels, key, values, nsLabels string) {
		sets := []*metav1.LabelSelector{{MatchLabels: parseLabels(matchLabels)}}
		vals := strings.Split(values, ",")
		for _, op := range []metav1.LabelSelectorOperator{metav1.LabelSelectorOpIn, metav1.LabelSelectorOpNotIn} {
			sets = append(sets, &metav1.LabelSelector{MatchLabels: parseLabels(matchLabels),
				MatchExpressions: []metav1.LabelSelectorRequirement{{Key: key, Operator: op, Values: vals}}})
		}
		for _, op := range []metav1.LabelSelectorOperator{metav1.LabelSelectorOpExists, metav1.LabelSelectorOpDoesNotExist} {
			sets = append(sets, &metav1.LabelSelector{MatchLabels: parseLabels(matchLabels),
				MatchExpressions: []metav1.LabelSelectorRequirement{{Key: key, Operator: op}}})
		}
		sets = append(sets, &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: key, Operator: metav1.LabelSelectorOpNotIn, Values: vals},
			{Key: key + "x", Operator: metav1.LabelSelectorOpExists},
		}}, nil)
		ns := namespace("selector", parseLabels(nsLabels))
		// A policy of the labels variable alone: compiling the whole one for every selector is slow.
		p := fuzzHarness(t).policy.DeepCopy()
		p.Spec.Variables = slices.DeleteFunc(p.Spec.Variables, func(v admissionregistrationv1.Variable) bool { return v.Name != varLabels })
		p.Spec.Mutations[0].JSONPatch.Expression = "[JSONPatch{op: 'test', path: '/kind', value: 'Pod'}]"
		for _, s := range sets {
			if s != nil && len(validation.ValidateLabelSelector(s, validation.LabelSelectorValidationOptions{}, field.NewPath("s"))) > 0 {
				continue // config.Validate refuses it
			}
			want := labels.Everything()
			if s != nil {
				var err error
				if want, err = metav1.LabelSelectorAsSelector(s); err != nil {
					continue
				}
			}
			expr, err := selectorExpression(s, "variables."+varLabels)
			if err != nil {
				t.Fatalf("selectorExpression(%+v): %v", s, err)
			}
			got, _, err := probe[bool](compile(t, p, expr), expr, podOf("x"), ns)
			if err != nil {
				t.Fatalf("evaluate %s: %v", expr, err)
			}
			if w := want.Matches(labels.Set(ns.Labels)); got != w {
				t.Errorf("selector %+v on labels %v: CEL %s = %v, labels.Selector = %v", s, ns.Labels, expr, got, w)
			}
		}
	})
}

// parseLabels reads "k=v,..." into the valid labels it holds.
func parseLabels(s string) map[string]string {
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || len(validation.ValidateLabels(map[string]string{k: v}, field.NewPath("l"))) > 0 {
			continue
		}
		out[k] = v
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
