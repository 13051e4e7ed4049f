// Package policytest computes, from a config.Matcher, what the webhook does to a Pod, so that tests of the
// MutatingAdmissionPolicy (unit, fuzz and end-to-end) compare what the API server stores with the
// webhook's decision rather than with hard-coded answers.
package policytest

import (
	"encoding/json"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/pullsecret-injector/pullsecret-injector/config"
)

// Injection is one item of the injected annotation, as the webhook writes it.
type Injection struct {
	Secret     string   `json:"secret"`
	Registries []string `json:"registries"`
}

// Images returns every image the kubelet pulls for pod, in the order the webhook reads them (init,
// regular, ephemeral containers), followed by the references of image volumes, which the policy reads
// too.
func Images(pod *corev1.Pod) []string {
	var out []string
	for _, c := range pod.Spec.InitContainers {
		out = append(out, c.Image)
	}
	for _, c := range pod.Spec.Containers {
		out = append(out, c.Image)
	}
	for _, c := range pod.Spec.EphemeralContainers {
		out = append(out, c.Image)
	}
	for _, v := range pod.Spec.Volumes {
		if v.Image != nil {
			out = append(out, v.Image.Reference)
		}
	}
	return out
}

// Want returns pod as the webhook's decision leaves it when it is created in a namespace with nsLabels:
// the references it adds after the Pod's own, in order, and the injected annotation (key annotation)
// listing them; pod itself, unchanged, when nothing is added. It decides as the webhook's handler does,
// with the ServiceAccount check left out (the policy has none), over Images(pod).
func Want(m *config.Matcher, pod *corev1.Pod, nsLabels labels.Set, annotation string) *corev1.Pod {
	if pod.Labels[config.InjectLabel] == config.InjectDisabled || !m.NamespaceSelector().Matches(nsLabels) {
		return pod
	}
	var candidates []*config.Entry
	for _, image := range Images(pod) {
		entries, err := m.MatchImage(image)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if !slices.Contains(candidates, e) {
				candidates = append(candidates, e)
			}
		}
	}
	slices.SortFunc(candidates, func(a, b *config.Entry) int { return a.Index - b.Index })

	var added []string
	for i, e := range candidates {
		name := e.Registry.Secret.Name
		if slices.ContainsFunc(candidates[:i], func(c *config.Entry) bool { return c.Registry.Secret.Name == name }) ||
			!e.NamespaceSelector.Matches(nsLabels) {
			continue
		}
		if slices.Contains(added, name) ||
			slices.ContainsFunc(pod.Spec.ImagePullSecrets, func(r corev1.LocalObjectReference) bool { return r.Name == name }) {
			continue
		}
		added = append(added, name)
	}
	if len(added) == 0 {
		return pod
	}
	injected := make([]Injection, len(added))
	for i, name := range added {
		injected[i].Secret = name
		for _, e := range candidates {
			if e.Registry.Secret.Name == name {
				injected[i].Registries = append(injected[i].Registries, e.Registry.Registry)
			}
		}
	}
	value, err := json.Marshal(injected)
	if err != nil {
		panic(err) // strings only
	}
	out := pod.DeepCopy()
	for _, name := range added {
		out.Spec.ImagePullSecrets = append(out.Spec.ImagePullSecrets, corev1.LocalObjectReference{Name: name})
	}
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	out.Annotations[annotation] = string(value)
	return out
}
