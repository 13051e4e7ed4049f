package policy

import (
	"context"
	"encoding/json"
	"sync"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/internal/sources"
	"github.com/pullsecret-injector/pullsecret-injector/test/fixtures"
	"github.com/pullsecret-injector/pullsecret-injector/webhook"
)

// webhookScheme is the types the webhook reads and writes (core/v1), built once: building it is most of
// what a fake client costs.
var webhookScheme = sync.OnceValues(func() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	return s, corev1.AddToScheme(s)
})

// webhookPod runs the webhook's own handler on pod created in ns, with every source present and usable,
// and returns the Pod its patch leaves: the decision the policy must reproduce. The handler gets a fresh
// fake API server each time, so nothing it remembers carries over from one Pod to the next.
func webhookPod(t testing.TB, m *config.Matcher, pod *corev1.Pod, ns *corev1.Namespace) *corev1.Pod {
	t.Helper()
	scheme, err := webhookScheme()
	if err != nil {
		t.Fatal(err)
	}
	srcs := sources.Static{}
	for _, ref := range m.Sources() {
		srcs[ref] = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ref.Namespace, Name: ref.Name},
			Type:       corev1.SecretTypeDockerConfigJson,
			Data:       map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{}}`)},
		}
	}
	api := fake.NewClientBuilder().WithScheme(scheme).WithObjects(ns.DeepCopy()).Build()
	h := &webhook.Injector{Config: config.NewStaticStore(m), Sources: srcs, Cache: api, APIReader: api, Writer: api}

	req := fixtures.PodCreateRequest(t, ns.Name, pod)
	raw := req.Object.Raw
	resp := h.Handle(context.Background(), req)
	// The review the webhook server sends, whose patch the API server applies.
	if err := resp.Complete(req); err != nil {
		t.Fatal(err)
	}
	if !resp.Allowed {
		t.Fatalf("webhook refused the Pod: %+v", resp.Result)
	}
	if resp.Patch != nil {
		patch, err := jsonpatch.DecodePatch(resp.Patch)
		if err == nil {
			raw, err = patch.Apply(raw)
		}
		if err != nil {
			t.Fatalf("apply webhook patch %s: %v", resp.Patch, err)
		}
	}
	out := &corev1.Pod{}
	if err := json.Unmarshal(raw, out); err != nil {
		t.Fatal(err)
	}
	return out
}
