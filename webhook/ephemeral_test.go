package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/internal/events"
)

// eventLog records the Events emitted, as "Kind namespace/name uid: type reason note".
type eventLog struct {
	mu     sync.Mutex
	events []string
}

func (l *eventLog) Eventf(regarding, _ runtime.Object, eventType, reason, _, note string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	o := regarding.(client.Object)
	l.events = append(l.events, fmt.Sprintf("%s %s/%s %s: %s %s %s", regarding.GetObjectKind().GroupVersionKind().Kind,
		o.GetNamespace(), o.GetName(), o.GetUID(), eventType, reason, fmt.Sprintf(note, args...)))
}

func (l *eventLog) about(kind string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, e := range l.events {
		if len(e) > len(kind) && e[:len(kind)+1] == kind+" " {
			out = append(out, e)
		}
	}
	return out
}

// debugged returns the Pod before and after an update of its ephemeralcontainers subresource that adds a
// container with image; the Pod had before runs nginx and, with had, an ephemeral container of its own.
func debugged(image string, had ...string) (before, after *corev1.Pod) {
	before = pod("nginx")
	before.Name, before.UID = "app", types.UID("pod-uid")
	for i, h := range had {
		before.Spec.EphemeralContainers = append(before.Spec.EphemeralContainers, corev1.EphemeralContainer{
			EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: fmt.Sprintf("debugger-%d", i), Image: h}})
	}
	after = before.DeepCopy()
	after.Spec.EphemeralContainers = append(after.Spec.EphemeralContainers, corev1.EphemeralContainer{
		EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debugger-new", Image: image}})
	return before, after
}

// ephemeralRequest is the request the API server sends for an update of the ephemeralcontainers
// subresource from before to after.
func ephemeralRequest(t testing.TB, ns string, before, after *corev1.Pod, dryRun bool) admission.Request {
	t.Helper()
	req := podRequest(t, ns, after, func(r *admissionv1.AdmissionRequest) {
		r.Operation, r.SubResource, r.Name, r.DryRun = admissionv1.Update, "ephemeralcontainers", after.Name, ptr.To(dryRun)
	})
	old, err := json.Marshal(before)
	if err != nil {
		t.Fatal(err)
	}
	req.OldObject = runtime.RawExtension{Raw: old}
	return req
}

// An ephemeral container added to a running Pod (kubectl debug) cannot change the Pod's imagePullSecrets:
// the webhook never patches the update, makes sure the copies its image needs exist, and says, in a warning
// and an Event on the Pod, when the Pod lacks one.
func TestEphemeralContainers(t *testing.T) {
	payments := namespace("team", map[string]string{config.InjectLabel: config.InjectEnabled, "team": "payments"})
	missingWarning := []string{`pull secret "quay-regcred" this Pod does not reference`, "imagePullSecrets cannot change", "fails"}
	missingEvent := `Pod team/app pod-uid: Warning PullSecretMissing An ephemeral container's image pulls from registry "quay.io", ` +
		`whose pull secret "quay-regcred" this Pod does not reference: the kubelet pulls it without credentials, and a private image's pull fails`
	for name, tc := range map[string]struct {
		cached      []client.Object
		image       string
		had         []string
		refs        []string
		labels      map[string]string
		dryRun      bool
		wantCreated []string
		wantWarning []string
		wantEvents  []string
	}{
		"a Secret the Pod lacks: the copy is made, with a warning and an Event on the Pod": {
			image: "quay.io/org/debug:1", wantCreated: []string{"team/quay-regcred"},
			wantWarning: missingWarning, wantEvents: []string{missingEvent},
		},
		"a Secret the Pod references: the copy is made, nothing to say": {
			image: "quay.io/org/debug:1", refs: []string{"quay-regcred"}, wantCreated: []string{"team/quay-regcred"},
		},
		"the copy exists already: nothing written": {
			cached: []client.Object{managedCopy("team", "quay-regcred")},
			image:  "quay.io/org/debug:1", refs: []string{"quay-regcred"},
		},
		"ephemeral containers the Pod had are not looked at": {
			image: "ghcr.io/org/tool", had: []string{"quay.io/org/old-debug:1"},
		},
		"an image from no configured registry": {image: "ghcr.io/org/debug"},
		"a dry run writes nothing and records no Event": {
			image: "quay.io/org/debug:1", dryRun: true, wantWarning: missingWarning,
		},
		"a Pod opted out": {
			image: "quay.io/org/debug:1", labels: map[string]string{config.InjectLabel: config.InjectDisabled},
		},
		"an entry whose selector leaves the namespace out": {
			image: "123456789012.dkr.ecr.eu-west-1.amazonaws.com/debug",
		},
		"an entry whose selector takes the namespace": {
			cached: []client.Object{payments},
			image:  "123456789012.dkr.ecr.eu-west-1.amazonaws.com/debug", wantCreated: []string{"team/ecr-regcred"},
			wantWarning: []string{`pull secret "ecr-regcred" this Pod does not reference`},
			wantEvents: []string{`Pod team/app pod-uid: Warning PullSecretMissing An ephemeral container's image pulls from registry ` +
				`"*.dkr.ecr.eu-west-1.amazonaws.com", whose pull secret "ecr-regcred" this Pod does not reference: the kubelet pulls ` +
				`it without credentials, and a private image's pull fails`},
		},
	} {
		t.Run(name, func(t *testing.T) {
			cached := append(sources(), tc.cached...)
			if tc.cached == nil || tc.cached[0] != payments {
				cached = append(cached, namespace("team", optIn))
			}
			live := sources()
			if tc.cached != nil && tc.cached[0] == payments {
				live = append(live, payments)
			}
			f := newFixture(t, cached, live)
			log := &eventLog{}
			f.injector.Events = events.New(log, 100, 100)
			before, after := debugged(tc.image, tc.had...)
			before.Spec.ImagePullSecrets = nil
			for _, r := range tc.refs {
				before.Spec.ImagePullSecrets = append(before.Spec.ImagePullSecrets, corev1.LocalObjectReference{Name: r})
			}
			after.Spec.ImagePullSecrets = before.Spec.ImagePullSecrets
			before.Labels, after.Labels = tc.labels, tc.labels
			resp := f.injector.Handle(context.Background(), ephemeralRequest(t, "team", before, after, tc.dryRun))
			if !resp.Allowed || len(resp.Patches) != 0 || resp.PatchType != nil {
				t.Fatalf("allowed %v with patches %v, want allowed and never patched", resp.Allowed, resp.Patches)
			}
			var created []string
			for _, s := range f.writer.created {
				created = append(created, s.Namespace+"/"+s.Name)
			}
			if diff := cmp.Diff(tc.wantCreated, created); diff != "" {
				t.Errorf("created secrets (-want +got):\n%s", diff)
			}
			checkWarnings(t, resp, tc.wantWarning)
			if diff := cmp.Diff(tc.wantEvents, log.about("Pod")); diff != "" {
				t.Errorf("Events on the Pod (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEphemeralContainersRefusesMalformedRequests(t *testing.T) {
	before, after := debugged("quay.io/org/debug:1")
	for name, mutate := range map[string]func(*admission.Request){
		"no old object":                func(r *admission.Request) { r.OldObject.Raw = nil },
		"an old object that is no Pod": func(r *admission.Request) { r.OldObject.Raw = []byte(`{"kind":"Secret"}`) },
		"an object that is no Pod":     func(r *admission.Request) { r.Object.Raw = []byte(`{"spec":`) },
		"no namespace":                 func(r *admission.Request) { r.Namespace = "" },
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, append(sources(), namespace("team", optIn)), nil)
			req := ephemeralRequest(t, "team", before, after, false)
			mutate(&req)
			resp := f.injector.Handle(context.Background(), req)
			if resp.Allowed || resp.Result == nil || resp.Result.Code != http.StatusBadRequest {
				t.Errorf("got %+v, want a 400 error", resp.AdmissionResponse)
			}
			if len(f.writer.created) != 0 {
				t.Errorf("created %d Secrets for a malformed request", len(f.writer.created))
			}
		})
	}
}
