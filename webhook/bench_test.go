package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// BenchmarkServeAdmission measures a whole AdmissionReview round trip through controller-runtime's HTTP
// handler (decode, handle, encode), with this handler and with a handler that allows everything at once.
// The ratio is reported by BenchmarkInjectorVsNoop; absolute times here are noisy.
func BenchmarkServeAdmission(b *testing.B) {
	for name, h := range benchHandlers(b) {
		b.Run(name, func(b *testing.B) { serveLoop(b, h.handler, h.body) })
	}
}

// BenchmarkInjectorVsNoop reports how many times longer a warm-path request (copies cached, Pod patched)
// takes than the same request to a no-op handler. The two alternate in one loop, so both see the same
// machine load; the ratio is the figure to compare across runs, not the absolute times.
func BenchmarkInjectorVsNoop(b *testing.B) {
	hs := benchHandlers(b)
	noop, warm := hs["noop"], hs["injector-warm"]
	var noopTime, warmTime time.Duration
	for b.Loop() {
		start := time.Now()
		serveOnce(b, noop.handler, noop.body)
		mid := time.Now()
		serveOnce(b, warm.handler, warm.body)
		warmTime += time.Since(mid)
		noopTime += mid.Sub(start)
	}
	b.ReportMetric(float64(warmTime)/float64(noopTime), "warm/noop")
	b.ReportMetric(float64(warmTime.Nanoseconds())/float64(b.N), "warm-ns/op")
	b.ReportMetric(float64(noopTime.Nanoseconds())/float64(b.N), "noop-ns/op")
}

type benchHandler struct {
	handler http.Handler
	body    []byte
}

func benchHandlers(b *testing.B) map[string]benchHandler {
	b.Helper()
	f := newFixture(b, nil, nil)
	// The fake client converts through the scheme on every read and would dominate the measurement; the
	// informer cache hands out deep copies, as cacheReader does. ServiceAccounts are read as in the
	// process, through serviceAccountReader; none enforces.
	srcs, _ := splitSources(sources())
	f.injector.Sources = srcs
	f.injector.Cache = serviceAccountReader{Reader: cacheReader{
		&metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "team", Labels: optIn}},
		copyMeta("team", "quay-regcred"), copyMeta("team", "team-a-regcred"), copyMeta("team", "hub-regcred"),
	}, sas: &enforcingServiceAccounts{keys: map[string]string{}}}
	p := pod("quay.io/org/app:1", "registry.example.com:5000/team-a/sidecar:2", "ghcr.io/other/tool")
	p.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "busybox:1.36"}}
	review := func(p *corev1.Pod) []byte {
		req := podRequest(b, "team", p)
		body, err := json.Marshal(admissionv1.AdmissionReview{
			TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
			Request:  &req.AdmissionRequest,
		})
		if err != nil {
			b.Fatal(err)
		}
		return body
	}
	// The warm path must be served from the cache alone, without a write, or this benchmark measures something else.
	if resp := f.injector.Handle(context.Background(), podRequest(b, "team", p)); len(resp.Patches) == 0 || f.api.reads.Load() != 0 || len(f.writer.created) != 0 {
		b.Fatalf("warm path: %d patches, %d API reads, %d creates, warnings %q", len(resp.Patches), f.api.reads.Load(), len(f.writer.created), resp.Warnings)
	}
	noop := admission.HandlerFunc(func(context.Context, admission.Request) admission.Response { return admission.Allowed("") })
	return map[string]benchHandler{
		"noop":          {handler: admissionWebhook(noop), body: review(p)},
		"injector-warm": {handler: admissionWebhook(f.injector), body: review(p)},
		"injector-no-match": {handler: admissionWebhook(f.injector),
			body: review(pod("ghcr.io/other/tool", "registry.example.com:5000/team-b/app"))},
	}
}

// copyMeta is a managed copy as the metadata cache holds it.
func copyMeta(ns, name string) *metav1.PartialObjectMetadata {
	c := managedCopy(ns, name)
	return &metav1.PartialObjectMetadata{ObjectMeta: c.ObjectMeta}
}

// cacheReader is an in-memory client.Reader that answers like controller-runtime's informer cache: a deep
// copy of the stored object, or NotFound.
type cacheReader []client.Object

func (c cacheReader) Get(_ context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	_, wantMeta := obj.(*metav1.PartialObjectMetadata)
	for _, o := range c {
		_, isMeta := o.(*metav1.PartialObjectMetadata)
		if isMeta == wantMeta && o.GetName() == key.Name && o.GetNamespace() == key.Namespace {
			reflect.ValueOf(obj).Elem().Set(reflect.ValueOf(o.DeepCopyObject()).Elem())
			return nil
		}
	}
	return apierrors.NewNotFound(schema.GroupResource{}, key.Name)
}

func (c cacheReader) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return errors.New("not implemented")
}

func serveLoop(b *testing.B, h http.Handler, body []byte) {
	b.ReportAllocs()
	for b.Loop() {
		serveOnce(b, h, body)
	}
}

func serveOnce(b *testing.B, h http.Handler, body []byte) {
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, Path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		b.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
}
