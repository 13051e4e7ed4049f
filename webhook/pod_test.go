package webhook

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// schemeDecoder decodes a Pod the way the handler did before it decoded only podFields: in full, through
// the scheme. It is the reference the tests below hold decodePod and addPullSecrets to.
var schemeDecoder = func() admission.Decoder {
	s, err := Scheme()
	if err != nil {
		panic(err)
	}
	return admission.NewDecoder(s)
}()

// diffPatch is the reference patch: the Pod marshalled before and after appending the references, diffed
// by admission.PatchResponseFromRaw, as the handler did before it built the patch directly.
func diffPatch(t testing.TB, pod *corev1.Pod, added []string, injected []Injection) admission.Response {
	t.Helper()
	mutated := pod.DeepCopy()
	for _, name := range added {
		mutated.Spec.ImagePullSecrets = append(mutated.Spec.ImagePullSecrets, corev1.LocalObjectReference{Name: name})
	}
	if len(added) > 0 {
		value, err := json.Marshal(injected)
		if err != nil {
			t.Fatal(err)
		}
		metav1.SetMetaDataAnnotation(&mutated.ObjectMeta, InjectedAnnotation, string(value))
	}
	before, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	after, err := json.Marshal(mutated)
	if err != nil {
		t.Fatal(err)
	}
	return admission.PatchResponseFromRaw(before, after)
}

// checkEquivalent decodes raw both ways and, when the scheme decodes it, requires decodePod to decode it too,
// to the same fields, and podPatch to answer exactly as the diff of the marshalled Pods does. The
// annotation names claimed, or added when claimed is nil (a reinvocation names earlier additions too).
func checkEquivalent(t testing.TB, raw []byte, added, claimed []string) {
	t.Helper()
	var full corev1.Pod
	if err := schemeDecoder.DecodeRaw(runtime.RawExtension{Raw: raw}, &full); err != nil || !json.Valid(raw) {
		return // not a Pod an API server sends: the API server sends JSON of a typed Pod
	}
	got, err := decodePod(raw)
	if err != nil {
		t.Fatalf("decodePod refused %s, which the scheme decodes as a Pod: %v", raw, err)
	}
	if !hasMember(raw, "metadata") {
		// The scheme's Pod always has metadata, decodePod's only when the document does (an API server's
		// always does): podPatch then adds the whole of it, where the diff of the typed Pods cannot apply.
		return
	}
	if diff := cmp.Diff(fieldsOf(&full), got); diff != "" {
		t.Fatalf("decodePod(%s) mismatch with the scheme's Pod (-want +got):\n%s", raw, diff)
	}
	if claimed == nil {
		claimed = added
	}
	injected := make([]Injection, len(claimed))
	for i, name := range claimed {
		injected[i] = Injection{Secret: name, Registries: []string{"quay.io", name + ".example.com"}}
	}
	want := diffPatch(t, &full, added, injected)
	direct, err := podPatch(got, added, injected)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(opsJSON(t, want), opsJSON(t, direct)); diff != "" {
		t.Fatalf("patch for %v on %s mismatch with the diff (-want +got):\n%s", added, raw, diff)
	}
	if diff := cmp.Diff(want.AdmissionResponse, direct.AdmissionResponse); diff != "" {
		t.Fatalf("response for %v on %s mismatch with the diff's (-want +got):\n%s", added, raw, diff)
	}
}

// fieldsOf is what decodePod should make of the Pod.
func fieldsOf(p *corev1.Pod) *podFields {
	f := &podFields{APIVersion: p.APIVersion, Kind: p.Kind}
	f.Metadata = &podMetadata{UID: p.UID, Labels: p.Labels, Annotations: p.Annotations}
	f.Spec.ServiceAccountName = p.Spec.ServiceAccountName
	f.Spec.ImagePullSecrets = p.Spec.ImagePullSecrets
	for _, c := range p.Spec.InitContainers {
		f.Spec.InitContainers = append(f.Spec.InitContainers, containerImage{Name: c.Name, Image: c.Image})
	}
	for _, c := range p.Spec.Containers {
		f.Spec.Containers = append(f.Spec.Containers, containerImage{Name: c.Name, Image: c.Image})
	}
	for _, c := range p.Spec.EphemeralContainers {
		f.Spec.EphemeralContainers = append(f.Spec.EphemeralContainers, containerImage{Name: c.Name, Image: c.Image})
	}
	for _, v := range p.Spec.Volumes {
		var pv podVolume
		if v.Image != nil {
			pv.Image = &struct {
				Reference string `json:"reference"`
			}{Reference: v.Image.Reference}
		}
		f.Spec.Volumes = append(f.Spec.Volumes, pv)
	}
	return f
}

// opsJSON returns the response's operations as JSON values ordered by path: the diff emits them in an order
// of its own, and what the API server applies is the set.
func opsJSON(t testing.TB, resp admission.Response) []any {
	t.Helper()
	raw, err := json.Marshal(resp.Patches)
	if err != nil {
		t.Fatal(err)
	}
	var ops []map[string]any
	if err := json.Unmarshal(raw, &ops); err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(ops, func(a, b map[string]any) int { return strings.Compare(a["path"].(string), b["path"].(string)) })
	out := make([]any, len(ops))
	for i, op := range ops {
		out[i] = op
	}
	return out
}

func TestDirectPatchEqualsDiff(t *testing.T) {
	withSA := pod("quay.io/org/app")
	withSA.Spec.ServiceAccountName = "builder"
	withSA.Labels = map[string]string{"app": "web"}
	withSA.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "busybox"}}
	tests := []struct {
		name    string
		raw     string
		added   []string
		claimed []string
	}{
		{name: "pod without references gets the whole list", raw: mustJSON(t, pod("quay.io/org/app")), added: []string{"quay-regcred"}},
		{name: "several references keep their order", raw: mustJSON(t, pod("quay.io/org/app")), added: []string{"b", "a", "c"}},
		{name: "pod with references gets each appended by index",
			raw: mustJSON(t, withPullSecrets(pod("quay.io/org/app"), "own", "other")), added: []string{"quay-regcred", "hub-regcred"}},
		{name: "references with an empty name count", raw: mustJSON(t, withPullSecrets(pod("quay.io/org/app"), "")), added: []string{"x"}},
		{name: "null list is replaced whole", raw: `{"spec":{"imagePullSecrets":null,"containers":[{"name":"c","image":"nginx"}]}}`, added: []string{"x"}},
		{name: "empty list is replaced whole", raw: `{"spec":{"imagePullSecrets":[]}}`, added: []string{"x"}},
		{name: "no spec at all", raw: `{}`, added: []string{"x"}},
		{name: "apiVersion and kind may be absent", raw: `{"metadata":{"labels":{"a":"b"}}}`, added: []string{"x"}},
		{name: "fields the handler reads", raw: mustJSON(t, withSA), added: []string{"quay-regcred"}},
		{name: "repeated keys decode last-wins both ways",
			raw: `{"spec":{"containers":[{"image":"a"}],"containers":[{"image":"b"}],"imagePullSecrets":[{"name":"p"}]}}`, added: []string{"x"}},
		{name: "field names are case-sensitive both ways", raw: `{"Spec":{"Containers":[{"Image":"a"}]},"spec":{"containers":[{"IMAGE":"b"}]}}`, added: []string{"x"}},
		{name: "a thousand containers", raw: mustJSON(t, manyContainers(1000)), added: []string{"x"}},
		{name: "nothing added", raw: mustJSON(t, pod("quay.io/org/app")), added: nil},
		{name: "annotations of the Pod's own are kept", raw: `{"metadata":{"annotations":{"a":"b"}}}`, added: []string{"x"}},
		{name: "empty annotations are replaced whole", raw: `{"metadata":{"annotations":{}}}`, added: []string{"x"}},
		{name: "an injected annotation the Pod came with is replaced",
			raw: `{"metadata":{"annotations":{"` + InjectedAnnotation + `":"lie"}}}`, added: []string{"x"}},
		{name: "an injected annotation that already says it all stays",
			raw:   `{"metadata":{"annotations":{"` + InjectedAnnotation + `":"[{\"secret\":\"x\",\"registries\":[\"quay.io\",\"x.example.com\"]}]"}}}`,
			added: []string{"x"}},
		{name: "image volumes, and volumes of other kinds", raw: mustJSON(t, withImageVolumes(pod("nginx"), "quay.io/org/data", "")), added: []string{"quay-regcred"}},
		{name: "an image volume without a reference or with a null image",
			raw: `{"spec":{"volumes":[{"name":"a","image":{}},{"name":"b","image":null},{"name":"c","emptyDir":{}}]}}`, added: []string{"x"}},
		{name: "ephemeral containers with their names", raw: mustJSON(t, withEphemeral(pod("nginx"), "quay.io/org/debug")), added: []string{"quay-regcred"}},
		{name: "a reinvocation replaces the annotation with every Secret added",
			raw:   mustJSON(t, withAnnotation(withPullSecrets(pod("quay.io/org/app", "nginx"), "quay-regcred"), `[{"secret":"quay-regcred","registries":["quay.io"]}]`)),
			added: []string{"hub-regcred"}, claimed: []string{"quay-regcred", "hub-regcred"}},
		{name: "a reinvocation after a later webhook removed the annotation adds it back",
			raw:   mustJSON(t, withPullSecrets(pod("quay.io/org/app", "nginx"), "quay-regcred")),
			added: []string{"hub-regcred"}, claimed: []string{"quay-regcred", "hub-regcred"}},
		{name: "a reinvocation with other annotations of the Pod's own",
			raw:   `{"metadata":{"annotations":{"a":"b","` + InjectedAnnotation + `":"[]"}},"spec":{"imagePullSecrets":[{"name":"x"}]}}`,
			added: []string{"y"}, claimed: []string{"x", "y"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var full corev1.Pod
			if err := schemeDecoder.DecodeRaw(runtime.RawExtension{Raw: []byte(tc.raw)}, &full); err != nil {
				t.Fatalf("case is not a Pod the scheme decodes: %v", err)
			}
			checkEquivalent(t, []byte(tc.raw), tc.added, tc.claimed)
		})
	}
}

func TestDecodePodRefuses(t *testing.T) {
	for name, raw := range map[string]string{
		"empty object bytes":                ``,
		"not JSON":                          `{"spec":`,
		"another kind":                      `{"apiVersion":"apps/v1","kind":"Deployment"}`,
		"another version":                   `{"apiVersion":"v2","kind":"Pod"}`,
		"a mistyped field read":             `{"spec":{"containers":"nginx"}}`,
		"a mistyped label value":            `{"metadata":{"labels":{"a":1}}}`,
		"a mistyped image volume reference": `{"spec":{"volumes":[{"name":"v","image":{"reference":1}}]}}`,
		"a mistyped volume list":            `{"spec":{"volumes":{"name":"v"}}}`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := decodePod([]byte(raw)); err == nil {
				t.Errorf("decodePod(%q) succeeded, want an error", raw)
			}
			// Every refusal is one the scheme makes too: the handler refuses no Pod it used to accept.
			var full corev1.Pod
			if err := schemeDecoder.DecodeRaw(runtime.RawExtension{Raw: []byte(raw)}, &full); err == nil {
				t.Errorf("the scheme decodes %q as a Pod, so decodePod must too", raw)
			}
		})
	}
}

// FuzzDirectPatch holds decodePod and addPullSecrets to the scheme and the diff for arbitrary Pods,
// arbitrary references to add (names separated by commas) and arbitrary Secrets an earlier call added,
// which the annotation names before them.
func FuzzDirectPatch(f *testing.F) {
	for _, p := range []*corev1.Pod{
		pod("quay.io/org/app:1", "registry.example.com:5000/team-a/api"),
		withPullSecrets(pod("nginx"), "own", ""),
		{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"a": "b"}}, Spec: corev1.PodSpec{ServiceAccountName: "sa"}},
		withImageVolumes(pod("nginx"), "quay.io/org/data:1", ""),
		withEphemeral(pod("nginx"), "quay.io/org/debug:1"),
	} {
		raw, err := json.Marshal(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw, "quay-regcred,hub-regcred", "")
	}
	reinvoked := withAnnotation(withPullSecrets(pod("quay.io/org/app", "nginx"), "quay-regcred"), `[{"secret":"quay-regcred","registries":["quay.io"]}]`)
	raw, err := json.Marshal(reinvoked)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw, "hub-regcred", "quay-regcred")
	f.Fuzz(func(t *testing.T, raw []byte, names, earlier string) {
		split := func(s string) []string {
			var out []string
			for _, n := range strings.Split(s, ",") {
				if n != "" {
					out = append(out, n)
				}
			}
			return out
		}
		added := split(names)
		checkEquivalent(t, raw, added, append(split(earlier), added...))
	})
}

// withImageVolumes adds an image volume per reference to p, and an emptyDir volume, "" standing for a
// volume of another kind.
func withImageVolumes(p *corev1.Pod, refs ...string) *corev1.Pod {
	for i, r := range refs {
		v := corev1.Volume{Name: fmt.Sprintf("v%d", i)}
		if r == "" {
			v.EmptyDir = &corev1.EmptyDirVolumeSource{}
		} else {
			v.Image = &corev1.ImageVolumeSource{Reference: r, PullPolicy: corev1.PullIfNotPresent}
		}
		p.Spec.Volumes = append(p.Spec.Volumes, v)
	}
	return p
}

// withEphemeral adds an ephemeral container per image to p.
func withEphemeral(p *corev1.Pod, images ...string) *corev1.Pod {
	for i, image := range images {
		p.Spec.EphemeralContainers = append(p.Spec.EphemeralContainers, corev1.EphemeralContainer{
			EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: fmt.Sprintf("debugger-%d", i), Image: image}})
	}
	return p
}

func withAnnotation(p *corev1.Pod, value string) *corev1.Pod {
	metav1.SetMetaDataAnnotation(&p.ObjectMeta, InjectedAnnotation, value)
	return p
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

// hasMember reports whether the JSON object raw has a non-null member key (the last one, when repeated).
func hasMember(raw []byte, key string) bool {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return false
	}
	v, ok := obj[key]
	return ok && string(v) != "null"
}
