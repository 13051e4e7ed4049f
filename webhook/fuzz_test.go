package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	admissionv1beta1 "k8s.io/api/admission/v1beta1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	sigsjson "sigs.k8s.io/json"

	"github.com/pullsecret-injector/pullsecret-injector/config"
)

// fuzzNamespaces are the namespaces a fuzzed request can name: opted in with a copy already cached, opted
// in with the label the ECR entry's selector needs, the sources' own, not opted in, and absent.
var fuzzNamespaces = []string{"team", "payments", "psi", "off", "absent"}

// newFuzzInjector returns a function that makes a fresh injector for each input, over clients built once:
// building the fake clients takes several milliseconds, which would otherwise bound the fuzzer to a hundred
// or so inputs a second. The injector's writer stores nothing, so every input meets the same cluster and a failure
// reproduces from its input alone.
func newFuzzInjector(tb testing.TB) func() *Injector {
	tb.Helper()
	payments := maps.Clone(optIn)
	payments["team"] = "payments"
	// A Secret of a copy's name that someone else made, so that creates also meet AlreadyExists.
	unmanaged := source("team-a-regcred", corev1.SecretTypeDockerConfigJson)
	unmanaged.Namespace = "payments"
	objs := []client.Object{
		namespace("team", optIn), namespace("payments", payments), namespace("psi", optIn), namespace("off", nil),
		managedCopy("team", "quay-regcred"), unmanaged,
	}
	fx := newFixture(tb, append(sources(), objs...), append(sources(), objs...))
	shared := fx.injector
	return func() *Injector {
		return &Injector{
			Config:    shared.Config,
			Sources:   shared.Sources,
			Cache:     shared.Cache,
			APIReader: shared.APIReader,
			Writer:    dryWriter{fx.writer.Client},
		}
	}
}

// dryWriter answers a create as the API server would, AlreadyExists for an object it holds, but stores
// nothing.
type dryWriter struct {
	client.Client
}

func (w dryWriter) Create(ctx context.Context, obj client.Object, _ ...client.CreateOption) error {
	existing, ok := obj.DeepCopyObject().(client.Object)
	if !ok {
		return fmt.Errorf("create %T: not a client.Object", obj)
	}
	if err := w.Get(ctx, client.ObjectKeyFromObject(obj), existing); err == nil {
		return apierrors.NewAlreadyExists(schema.GroupResource{Resource: "secrets"}, obj.GetName())
	}
	return nil
}

// FuzzServeAdmission drives the whole HTTP path, controller-runtime's admission webhook around the
// injector, with arbitrary request bodies. It never panics (panic recovery is off, so a panic fails the
// input) and always answers with an AdmissionReview, never with a 5xx. A body that does not decode as an
// AdmissionReview is refused with a 4xx and never patched; one that does is answered as checkResponse
// requires. The decoder is lenient: "null", "{}" or YAML decode as a review, an empty one being allowed
// untouched as not a Pod create. Without -fuzz it runs only the seeds, here and in
// testdata/fuzz/FuzzServeAdmission.
func FuzzServeAdmission(f *testing.F) {
	for _, body := range [][]byte{
		review(f, "admission.k8s.io/v1", podRequest(f, "team", pod("quay.io/org/app:1", "registry.example.com:5000/team-a/api"))),
		review(f, "admission.k8s.io/v1beta1", podRequest(f, "payments", pod("123456789012.dkr.ecr.eu-west-1.amazonaws.com/app"))),
		review(f, "admission.k8s.io/v1", podRequest(f, "team", pod("nginx"), func(r *admissionv1.AdmissionRequest) { r.DryRun = ptr.To(true) })),
		review(f, "admission.k8s.io/v1", podRequest(f, "team", pod("quay.io/a/b"), func(r *admissionv1.AdmissionRequest) { r.Operation = admissionv1.Update })),
		review(f, "admission.k8s.io/v1", ephemeralRequest(f, "team", pod("nginx"), withEphemeral(pod("nginx"), "quay.io/org/debug:1"), false)),
		review(f, "admission.k8s.io/v1", ephemeralRequest(f, "payments", pod("nginx"),
			withEphemeral(pod("nginx"), "123456789012.dkr.ecr.eu-west-1.amazonaws.com/debug", "registry.example.com:5000/team-a/x"), true)),
	} {
		f.Add(body)
	}
	newInjector := newFuzzInjector(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		injector := newInjector()
		wh := &ctrlwebhook.Admission{
			Handler:        injector,
			RecoverPanic:   ptr.To(false),
			LogConstructor: func(logr.Logger, *admission.Request) logr.Logger { return logr.Discard() },
		}
		r := httptest.NewRequest(http.MethodPost, Path, bytes.NewReader(body))
		if len(body) == 0 {
			// As net/http's server hands a handler a request without a body; httptest would not.
			r.Body = http.NoBody
		}
		r.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		wh.ServeHTTP(rec, r)

		if rec.Code != http.StatusOK && !is4xx(int32(rec.Code)) {
			t.Fatalf("HTTP status %d, want 200 or 4xx", rec.Code)
		}
		var out admissionv1.AdmissionReview
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
			t.Fatalf("answer %q is not an AdmissionReview with a response (error %v)", rec.Body.Bytes(), err)
		}
		got := *out.Response
		req, err := decodeReview(body)
		if err != nil {
			if got.Allowed || len(got.Patch) > 0 || got.Result == nil || !is4xx(got.Result.Code) {
				t.Fatalf("body the server cannot decode (%v) answered with allowed=%v, %d patch bytes, result %+v; want a 4xx refusal",
					err, got.Allowed, len(got.Patch), got.Result)
			}
			return
		}
		if got.UID != req.UID {
			t.Errorf("response UID %q, want the request's %q", got.UID, req.UID)
		}
		if len(got.Patch) > 0 && (got.PatchType == nil || *got.PatchType != admissionv1.PatchTypeJSONPatch) {
			t.Errorf("patch type %v, want JSONPatch", got.PatchType)
		}
		checkResponse(t, injector, req, got.Allowed, got.Result, got.Patch)
	})
}

// FuzzHandlePod calls the handler with arbitrary bytes as the Pod in a well-formed CREATE request, in one of
// fuzzNamespaces, as a dry run or not. It never panics; bytes that do not decode as a Pod are refused with
// a 400; anything else is allowed, and any patch only appends references to configured Secrets to
// spec.imagePullSecrets of the object as sent. Without -fuzz it runs only the seeds, here and in
// testdata/fuzz/FuzzHandlePod.
func FuzzHandlePod(f *testing.F) {
	for _, p := range []*corev1.Pod{
		pod("quay.io/org/app:1", "registry.example.com:5000/team-a/api", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/x"),
		pod("missing.example.com/app", "opaque.example.com/app", "nginx"),
		manyContainers(1000),
		withPullSecrets(pod("quay.io/org/app"), "quay-regcred", "", "other"),
		withImageVolumes(pod("ghcr.io/org/app"), "quay.io/org/data:1", "", "Quay.io/UPPER", "busybox"),
		// As on a reinvocation, or as an author may write it: what the annotation says is kept only in part.
		withAnnotation(withPullSecrets(pod("quay.io/org/app", "nginx"), "quay-regcred", "mine"),
			`[{"secret":"quay-regcred","registries":["x"]},{"secret":"mine"},{"secret":"team-a-regcred"}]`),
	} {
		raw, err := json.Marshal(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw, uint8(0), false)
	}
	newInjector := newFuzzInjector(f)
	f.Fuzz(func(t *testing.T, raw []byte, ns uint8, dryRun bool) {
		injector := newInjector()
		req := admissionv1.AdmissionRequest{
			UID:       "uid",
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: fuzzNamespaces[int(ns)%len(fuzzNamespaces)],
			Operation: admissionv1.Create,
			Object:    runtime.RawExtension{Raw: raw},
			DryRun:    ptr.To(dryRun),
		}
		got := injector.Handle(context.Background(), admission.Request{AdmissionRequest: req})
		var patch []byte
		if len(got.Patches) > 0 {
			var err error
			if patch, err = json.Marshal(got.Patches); err != nil {
				t.Fatal(err)
			}
		}
		checkResponse(t, injector, req, got.Allowed, got.Result, patch)
	})
}

// checkResponse checks the answer to a request that decoded as an AdmissionReview: one without a uid is
// refused with a 400; what is not a Pod
// create is allowed untouched; a Pod create without a namespace or with an object that does not decode
// as a Pod is refused with a 400; any other Pod create is allowed, and its patch only appends references
// to configured Secrets to spec.imagePullSecrets.
func checkResponse(t *testing.T, injector *Injector, req admissionv1.AdmissionRequest, allowed bool, result *metav1.Status, patch []byte) {
	t.Helper()
	if req.UID == "" {
		// Not from an API server, which names every request.
		if allowed || len(patch) > 0 || result == nil || result.Code != http.StatusBadRequest {
			t.Fatalf("request without a uid answered allowed=%v, result %+v, patch %s; want a 400", allowed, result, patch)
		}
		return
	}
	pods := req.Resource.Group == "" && req.Resource.Resource == "pods"
	if pods && req.Operation == admissionv1.Update && req.SubResource == "ephemeralcontainers" {
		// Never patched; refused with a 400 only when the request is malformed.
		_, newErr := decodePod(req.Object.Raw)
		_, oldErr := decodePod(req.OldObject.Raw)
		malformed := req.Namespace == "" || newErr != nil
		if len(patch) > 0 || (malformed && (allowed || result == nil || result.Code != http.StatusBadRequest)) ||
			(!malformed && oldErr == nil && !allowed) {
			t.Fatalf("ephemeralcontainers update (namespace %q, new object error %v, old object error %v) answered allowed=%v, "+
				"result %+v, patch %s; want a 400 when malformed, otherwise allowed, and never a patch",
				req.Namespace, newErr, oldErr, allowed, result, patch)
		}
		return
	}
	if req.Operation != admissionv1.Create || req.SubResource != "" || !pods {
		if !allowed || len(patch) > 0 {
			t.Fatalf("request for %s %v/%s answered allowed=%v with patch %s, want allowed untouched", req.Operation, req.Resource, req.SubResource, allowed, patch)
		}
		return
	}
	_, decodeErr := decodePod(req.Object.Raw)
	if req.Namespace == "" || decodeErr != nil {
		if allowed || len(patch) > 0 || result == nil || result.Code != http.StatusBadRequest {
			t.Fatalf("pod create in namespace %q whose object does not decode (%v) answered allowed=%v, result %+v, patch %s; want a 400",
				req.Namespace, decodeErr, allowed, result, patch)
		}
		return
	}
	if !allowed {
		t.Fatalf("pod create refused with %+v, want allowed", result)
	}
	if len(patch) == 0 {
		return
	}
	checkPatch(t, injector.Config.Matcher(), req.Object.Raw, patch)
}

// checkPatch applies patch to the object as the API server sent it and checks that it only appended
// references, each to a configured Secret the Pod did not name yet, to spec.imagePullSecrets.
func checkPatch(t *testing.T, matcher *config.Matcher, raw, patch []byte) {
	t.Helper()
	original := raw
	if hasDuplicateKeys(original) {
		// Go's decoder merges repeated keys and a JSON patch addresses the last one, so the two disagree
		// on what the object is. The API server re-encodes every object it sends from a typed struct, so a
		// webhook never receives one; the other properties still hold for it.
		return
	}
	p, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		t.Fatalf("patch %s does not decode: %v", patch, err)
	}
	patched, err := p.Apply(original)
	if err != nil {
		t.Fatalf("patch %s does not apply to the object %s: %v", patch, original, err)
	}
	before, beforeRefs := splitPullSecrets(t, original)
	after, afterRefs := splitPullSecrets(t, patched)
	prior := priorInjected(before)
	injected := splitInjected(t, before, after)
	// reflect.DeepEqual rather than cmp.Diff: cmp takes minutes on the deeply nested values fuzzing makes.
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("patch %s changed more than spec.imagePullSecrets and the %s annotation of %s", patch, InjectedAnnotation, original)
	}
	if len(afterRefs) <= len(beforeRefs) {
		t.Fatalf("patch %s added no reference: %v before, %v after", patch, beforeRefs, afterRefs)
	}
	if len(beforeRefs) > 0 && !reflect.DeepEqual(beforeRefs, afterRefs[:len(beforeRefs)]) {
		t.Fatalf("patch %s changed the Pod's own references: %v before, %v after", patch, beforeRefs, afterRefs)
	}
	configured := map[string]bool{}
	for _, s := range matcher.Sources() {
		configured[s.Name] = true
	}
	named := map[string]bool{}
	for _, ref := range beforeRefs {
		if m, ok := ref.(map[string]any); ok {
			if name, ok := m["name"].(string); ok {
				named[name] = true
			}
		}
	}
	for _, ref := range afterRefs[len(beforeRefs):] {
		m, ok := ref.(map[string]any)
		name, isString := m["name"].(string)
		if !ok || len(m) != 1 || !isString || !configured[name] || named[name] {
			t.Fatalf("patch %s added %v, want one {\"name\": ...} per configured Secret the Pod does not name yet (named: %v)", patch, ref, named)
		}
		named[name] = true
	}
	var added []string
	for _, ref := range afterRefs[len(beforeRefs):] {
		added = append(added, ref.(map[string]any)["name"].(string))
	}
	// The annotation names every Secret added and, besides, only configured Secrets the Pod referenced and
	// its own annotation named already (an earlier call's additions, on a reinvocation).
	says := map[string]bool{}
	for _, inj := range injected {
		if len(inj.Registries) == 0 {
			t.Fatalf("annotation %s names %q without the registries that matched", InjectedAnnotation, inj.Secret)
		}
		wasNamed := slices.ContainsFunc(beforeRefs, func(ref any) bool {
			m, _ := ref.(map[string]any)
			return m["name"] == inj.Secret
		})
		earlier := configured[inj.Secret] && wasNamed && prior[inj.Secret]
		if says[inj.Secret] || (!slices.Contains(added, inj.Secret) && !earlier) {
			t.Fatalf("annotation %s names %q, which was neither added (%v) nor referenced and named before", InjectedAnnotation, inj.Secret, added)
		}
		says[inj.Secret] = true
	}
	for _, name := range added {
		if !says[name] {
			t.Fatalf("annotation %s lacks %q, which was added", InjectedAnnotation, name)
		}
	}
}

// priorInjected returns the Secrets the Pod's own annotation names as an earlier injection: every JSON
// string that follows the text {"secret": and is followed by a comma, wherever it stands (the rule of
// injectedBefore, which the MutatingAdmissionPolicy shares, written here from its documentation: the
// annotation need not be valid JSON as a whole).
func priorInjected(pod map[string]any) map[string]bool {
	meta, _ := pod["metadata"].(map[string]any)
	annotations, _ := meta["annotations"].(map[string]any)
	value, _ := annotations[InjectedAnnotation].(string)
	const marker = `{"secret":`
	out := map[string]bool{}
	for rest := value; ; {
		i := strings.Index(rest, marker)
		if i < 0 {
			return out
		}
		rest = rest[i+len(marker):]
		if !strings.HasPrefix(rest, `"`) {
			continue
		}
		dec := json.NewDecoder(strings.NewReader(rest))
		var name string
		if err := dec.Decode(&name); err != nil {
			continue
		}
		if after := rest[dec.InputOffset():]; strings.HasPrefix(after, ",") {
			out[name] = true
		}
	}
}

// splitInjected removes the webhook's annotation from after (and from before, where the Pod may have come
// with one), with the metadata and annotations maps the patch had to create for it, and returns its value.
func splitInjected(t *testing.T, before, after map[string]any) []Injection {
	t.Helper()
	meta, _ := after["metadata"].(map[string]any)
	annotations, _ := meta["annotations"].(map[string]any)
	value, ok := annotations[InjectedAnnotation].(string)
	if !ok {
		t.Fatalf("patched Pod has no %s annotation: %v", InjectedAnnotation, after["metadata"])
	}
	var injected []Injection
	if err := json.Unmarshal([]byte(value), &injected); err != nil {
		t.Fatalf("annotation %s = %q is not a JSON list of injections: %v", InjectedAnnotation, value, err)
	}
	delete(annotations, InjectedAnnotation)
	beforeMeta, hadMeta := before["metadata"].(map[string]any)
	beforeAnnotations, hadAnnotations := beforeMeta["annotations"].(map[string]any)
	if hadAnnotations {
		delete(beforeAnnotations, InjectedAnnotation)
	}
	// What the patch replaced to hold the annotation (nothing, null) goes back as it was.
	if len(annotations) == 0 && !hadAnnotations {
		delete(meta, "annotations")
		if v, ok := beforeMeta["annotations"]; ok {
			meta["annotations"] = v
		}
	}
	if len(meta) == 0 && !hadMeta {
		delete(after, "metadata")
		if v, ok := before["metadata"]; ok {
			after["metadata"] = v
		}
	}
	return injected
}

// splitPullSecrets decodes a Pod as JSON and returns it without spec.imagePullSecrets, and that list.
func splitPullSecrets(t *testing.T, raw []byte) (map[string]any, []any) {
	t.Helper()
	var obj map[string]any
	// Numbers as written: the decoder skips unknown fields whatever they hold, 1e700 included.
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if err := d.Decode(&obj); err != nil {
		t.Fatalf("object %q is not a JSON object: %v", raw, err)
	}
	spec, _ := obj["spec"].(map[string]any)
	if spec == nil {
		return obj, nil
	}
	refs, _ := spec["imagePullSecrets"].([]any)
	delete(spec, "imagePullSecrets")
	return obj, refs
}

var reviewCodecs = func() serializer.CodecFactory {
	s := runtime.NewScheme()
	if err := admissionv1.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := admissionv1beta1.AddToScheme(s); err != nil {
		panic(err)
	}
	return serializer.NewCodecFactory(s)
}()

// anyReview is a v1 AdmissionReview that is not registered in reviewCodecs' scheme, so that the decoder
// fills it from a v1 and a v1beta1 review alike, as controller-runtime's webhook server does.
type anyReview struct {
	admissionv1.AdmissionReview
}

// decodeReview decodes body the way controller-runtime's admission webhook does before it calls the
// handler, so that the test can tell a review, however odd, from a body the server must refuse.
func decodeReview(body []byte) (admissionv1.AdmissionRequest, error) {
	if len(body) == 0 {
		return admissionv1.AdmissionRequest{}, errors.New("request body is empty")
	}
	var req admissionv1.AdmissionRequest
	ar := anyReview{}
	ar.Request = &req
	ar.SetGroupVersionKind(admissionv1.SchemeGroupVersion.WithKind("AdmissionReview"))
	if _, _, err := reviewCodecs.UniversalDeserializer().Decode(body, nil, &ar); err != nil {
		return admissionv1.AdmissionRequest{}, err
	}
	return req, nil
}

func review(t testing.TB, apiVersion string, req admission.Request) []byte {
	t.Helper()
	body, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: apiVersion, Kind: "AdmissionReview"},
		Request:  &req.AdmissionRequest,
	})
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// manyContainers returns a Pod with n containers from one registry, the last with a name too long to parse.
func manyContainers(n int) *corev1.Pod {
	images := make([]string, n)
	for i := range images {
		images[i] = fmt.Sprintf("registry.example.com:5000/team-a/app-%d:v%d", i, i)
	}
	images[n-1] = "quay.io/org/" + strings.Repeat("x", 4096)
	return pod(images...)
}

func withPullSecrets(p *corev1.Pod, names ...string) *corev1.Pod {
	for _, n := range names {
		p.Spec.ImagePullSecrets = append(p.Spec.ImagePullSecrets, corev1.LocalObjectReference{Name: n})
	}
	return p
}

func is4xx(code int32) bool {
	return code >= 400 && code < 500
}

// hasDuplicateKeys reports whether any JSON object in data repeats a key, as sigs.k8s.io/json's strict
// decoding (the API server's) reports.
func hasDuplicateKeys(data []byte) bool {
	var v any
	strictErrs, err := sigsjson.UnmarshalStrict(data, &v)
	if err != nil {
		return false
	}
	for _, e := range strictErrs {
		if strings.Contains(e.Error(), "duplicate field") {
			return true
		}
	}
	return false
}
