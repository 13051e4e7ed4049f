package webhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	sigsjson "sigs.k8s.io/json"
)

// podFields is the part of a Pod the handler decides on. Decoding only these fields, rather than the whole
// Pod through the scheme, is most of what keeps an admission close to the cost of a no-op webhook: the
// decoder skips the rest of the document without building it.
type podFields struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	// Metadata is nil when the document has none; the API server always sends it.
	Metadata *podMetadata `json:"metadata"`
	Spec     struct {
		ServiceAccountName  string                        `json:"serviceAccountName"`
		ImagePullSecrets    []corev1.LocalObjectReference `json:"imagePullSecrets"`
		InitContainers      []containerImage              `json:"initContainers"`
		Containers          []containerImage              `json:"containers"`
		EphemeralContainers []containerImage              `json:"ephemeralContainers"`
		Volumes             []podVolume                   `json:"volumes"`
	} `json:"spec"`
}

type podMetadata struct {
	// UID is the Pod's, for an Event about it; empty on a create, which runs before the UID is set.
	UID         types.UID         `json:"uid"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

type containerImage struct {
	// Name tells an ephemeral container added by an update from the ones the Pod had.
	Name  string `json:"name"`
	Image string `json:"image"`
}

// podVolume is a volume; only an image volume (Kubernetes 1.31 and later) matters, whose reference the
// kubelet pulls with the Pod's pull secrets, like a container's image.
type podVolume struct {
	Image *struct {
		Reference string `json:"reference"`
	} `json:"image"`
}

// decodePod decodes the fields the handler needs from a Pod as the API server sends it: JSON, with field
// names matched case-sensitively and repeated keys resolved last-wins, as the API server's own decoder
// does. Every document that decodes as a v1 Pod through the scheme decodes here too (a test holds it to
// that); a document that does not, but is no Pod an API server could send (YAML, a mistyped field the
// handler never reads), is not refused for it.
func decodePod(raw []byte) (*podFields, error) {
	if len(raw) == 0 {
		return nil, errors.New("there is no content to decode")
	}
	p := &podFields{}
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(raw, p); err != nil {
		return nil, err
	}
	// The scheme's decoder fills in a missing apiVersion or kind from the type it decodes into, and
	// refuses any other.
	if (p.APIVersion != "" && p.APIVersion != "v1") || (p.Kind != "" && p.Kind != "Pod") {
		return nil, fmt.Errorf("object is %s %s, not a v1 Pod", p.APIVersion, p.Kind)
	}
	return p, nil
}

// InjectedAnnotation is set on every Pod the webhook changes. Its value is a JSON list of Injection, one per
// Secret added: `[{"secret":"quay-regcred","registries":["quay.io"]}]`.
const InjectedAnnotation = "pullsecret-injector.io/injected"

// Injection is one Secret the webhook added to a Pod, with the configured registries (entry patterns) its
// images matched.
type Injection struct {
	Secret     string   `json:"secret"`
	Registries []string `json:"registries"`
}

const (
	// pullSecretsPath is where the references go, as a JSON pointer.
	pullSecretsPath = "/spec/imagePullSecrets"
	// annotationsPath is the Pod's annotations.
	annotationsPath = "/metadata/annotations"
)

// injectedPath is InjectedAnnotation among the Pod's annotations, escaped as a JSON pointer (RFC 6901).
var injectedPath = annotationsPath + "/" + strings.NewReplacer("~", "~0", "/", "~1").Replace(InjectedAnnotation)

// podPatch returns the response that appends references to added, in order, to the Pod, and sets
// InjectedAnnotation to what was added: the JSON patch admission.PatchResponseFromRaw would compute from the
// Pod marshalled before and after, built directly (a test holds the two equal). An empty or null list or map
// is absent from the marshalled Pod, so it is added whole; otherwise each reference is added by index, and
// the annotation added or replaced by key.
func podPatch(pod *podFields, added []string, injected []Injection) (admission.Response, error) {
	if len(added) == 0 {
		return admission.Response{AdmissionResponse: admissionv1.AdmissionResponse{Allowed: true}}, nil
	}
	value, err := json.Marshal(injected)
	if err != nil {
		return admission.Response{}, fmt.Errorf("marshal %s annotation: %w", InjectedAnnotation, err)
	}
	ops := make([]jsonpatch.JsonPatchOperation, 0, len(added)+1)
	var annotations map[string]string
	if pod.Metadata != nil {
		annotations = pod.Metadata.Annotations
	}
	switch old, ok := annotations[InjectedAnnotation]; {
	case pod.Metadata == nil:
		// Only a document that did not come from an API server lacks metadata; the patch still applies.
		ops = append(ops, jsonpatch.JsonPatchOperation{Operation: "add", Path: "/metadata",
			Value: map[string]any{"annotations": map[string]string{InjectedAnnotation: string(value)}}})
	case len(annotations) == 0:
		ops = append(ops, jsonpatch.JsonPatchOperation{Operation: "add", Path: annotationsPath,
			Value: map[string]string{InjectedAnnotation: string(value)}})
	case !ok:
		ops = append(ops, jsonpatch.JsonPatchOperation{Operation: "add", Path: injectedPath, Value: string(value)})
	case old != string(value):
		ops = append(ops, jsonpatch.JsonPatchOperation{Operation: "replace", Path: injectedPath, Value: string(value)})
	}
	existing := len(pod.Spec.ImagePullSecrets)
	if existing == 0 {
		refs := make([]corev1.LocalObjectReference, len(added))
		for i, name := range added {
			refs[i].Name = name
		}
		ops = append(ops, jsonpatch.JsonPatchOperation{Operation: "add", Path: pullSecretsPath, Value: refs})
	} else {
		for i, name := range added {
			ops = append(ops, jsonpatch.JsonPatchOperation{
				Operation: "add",
				Path:      pullSecretsPath + "/" + strconv.Itoa(existing+i),
				Value:     corev1.LocalObjectReference{Name: name},
			})
		}
	}
	patchType := admissionv1.PatchTypeJSONPatch
	return admission.Response{
		Patches:           ops,
		AdmissionResponse: admissionv1.AdmissionResponse{Allowed: true, PatchType: &patchType},
	}, nil
}

// injected returns the Pod's InjectedAnnotation, "" when it has none. The value is the Pod author's to write:
// see claimed for what is made of it.
func (p *podFields) injected() string {
	if p.Metadata == nil {
		return ""
	}
	return p.Metadata.Annotations[InjectedAnnotation]
}

// injectedBefore reports whether annotation, a Pod's InjectedAnnotation, names secret the way this project
// writes an injection: the text {"secret":<secret as a JSON string>, somewhere in it. It reads the text
// rather than parsing it because the MutatingAdmissionPolicy (internal/policy), whose CEL cannot parse
// JSON, reads it so, and a Pod must come out the same whichever of the two admits it. Both write the
// annotation in that form; only a value the Pod's author wrote some other way reads differently from a
// JSON parse, and what is made of it is bounded by claimed either way.
func injectedBefore(annotation, secret string) bool {
	name, err := json.Marshal(secret)
	if err != nil {
		return false
	}
	return strings.Contains(annotation, `{"secret":`+string(name)+`,`)
}

// images returns every image reference the kubelet pulls for the Pod with its pull secrets: the init,
// regular and ephemeral containers' images and the image volumes' references.
func (p *podFields) images() []string {
	var out []string
	for _, containers := range [...][]containerImage{p.Spec.InitContainers, p.Spec.Containers, p.Spec.EphemeralContainers} {
		for _, c := range containers {
			out = append(out, c.Image)
		}
	}
	for _, v := range p.Spec.Volumes {
		if v.Image != nil {
			out = append(out, v.Image.Reference)
		}
	}
	return out
}

// addedEphemeralImages returns the images of the ephemeral containers p has and old, the Pod before an
// update of its ephemeralcontainers subresource, does not: ephemeral containers are never changed or
// removed, so a name old does not have is a container the update adds.
func (p *podFields) addedEphemeralImages(old *podFields) []string {
	var out []string
	for _, c := range p.Spec.EphemeralContainers {
		if !slices.ContainsFunc(old.Spec.EphemeralContainers, func(o containerImage) bool { return o.Name == c.Name }) {
			out = append(out, c.Image)
		}
	}
	return out
}

// references reports whether the Pod's imagePullSecrets names name.
func (p *podFields) references(name string) bool {
	return slices.ContainsFunc(p.Spec.ImagePullSecrets, func(r corev1.LocalObjectReference) bool { return r.Name == name })
}

// labels returns the Pod's labels, nil when it has none.
func (p *podFields) labels() map[string]string {
	if p.Metadata == nil {
		return nil
	}
	return p.Metadata.Labels
}
