package webhook

import (
	"errors"
	"fmt"
	"strconv"

	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	sigsjson "sigs.k8s.io/json"
)

// podFields is the part of a Pod the handler decides on. Decoding only these fields, rather than the whole
// Pod through the scheme, is most of what keeps an admission close to the cost of a no-op webhook: the
// decoder skips the rest of the document without building it.
type podFields struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Labels map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		ServiceAccountName  string                        `json:"serviceAccountName"`
		ImagePullSecrets    []corev1.LocalObjectReference `json:"imagePullSecrets"`
		InitContainers      []containerImage              `json:"initContainers"`
		Containers          []containerImage              `json:"containers"`
		EphemeralContainers []containerImage              `json:"ephemeralContainers"`
	} `json:"spec"`
}

type containerImage struct {
	Image string `json:"image"`
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

// pullSecretsPath is where the references go, as a JSON pointer.
const pullSecretsPath = "/spec/imagePullSecrets"

// addPullSecrets returns the response that appends references to added, in order, to a Pod that has
// existing references already: the JSON patch admission.PatchResponseFromRaw would compute from the Pod
// marshalled before and after, built directly (a test holds the two equal). An empty or null list is
// absent from the marshalled Pod, so the whole list is added; otherwise each reference is added by index.
func addPullSecrets(existing int, added []string) admission.Response {
	if len(added) == 0 {
		return admission.Response{AdmissionResponse: admissionv1.AdmissionResponse{Allowed: true}}
	}
	var ops []jsonpatch.JsonPatchOperation
	if existing == 0 {
		refs := make([]corev1.LocalObjectReference, len(added))
		for i, name := range added {
			refs[i].Name = name
		}
		ops = []jsonpatch.JsonPatchOperation{{Operation: "add", Path: pullSecretsPath, Value: refs}}
	} else {
		ops = make([]jsonpatch.JsonPatchOperation, len(added))
		for i, name := range added {
			ops[i] = jsonpatch.JsonPatchOperation{
				Operation: "add",
				Path:      pullSecretsPath + "/" + strconv.Itoa(existing+i),
				Value:     corev1.LocalObjectReference{Name: name},
			}
		}
	}
	patchType := admissionv1.PatchTypeJSONPatch
	return admission.Response{
		Patches:           ops,
		AdmissionResponse: admissionv1.AdmissionResponse{Allowed: true, PatchType: &patchType},
	}
}
