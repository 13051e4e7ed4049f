package e2e

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/pullsecret-injector/pullsecret-injector/internal/events"
	"github.com/pullsecret-injector/pullsecret-injector/internal/managed"
	"github.com/pullsecret-injector/pullsecret-injector/test/testenv"
)

// The kubelet pulls an image volume's reference with the Pod's pull secrets: a Pod whose only private
// image is an image volume gets its reference and its copy, as the API server stores it (image volumes
// are served by default from Kubernetes 1.35, GA in 1.36).
func TestImageVolumeGetsReferenceAndCopy(t *testing.T) {
	ns := newNamespace(t, "imagevolume", optIn())
	p := podWith("app", "ghcr.io/org/app:1")
	p.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
		Image: &corev1.ImageVolumeSource{Reference: "quay.io/org/data:1", PullPolicy: corev1.PullIfNotPresent}}}}
	p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	stored, _ := cp.MustCreatePod(t, ns, p)
	if len(stored.Spec.Volumes) != 1 || stored.Spec.Volumes[0].Image == nil {
		t.Fatalf("the API server did not keep the image volume: %+v", stored.Spec.Volumes)
	}
	if diff := cmp.Diff([]string{"quay-regcred"}, refNames(stored)); diff != "" {
		t.Errorf("imagePullSecrets (-want +got):\n%s", diff)
	}
	cp := getSecret(t, ns, "quay-regcred")
	if !managed.IsCopy(cp) || !cmp.Equal(sourceSecret(t, "quay-regcred").Data, cp.Data) {
		t.Errorf("copy has labels %v, annotations %v and the source's data: %v", cp.Labels, cp.Annotations,
			cmp.Equal(sourceSecret(t, "quay-regcred").Data, cp.Data))
	}
}

// kubectl debug adds an ephemeral container through the ephemeralcontainers subresource, when the Pod's
// imagePullSecrets can no longer change: the webhook makes the copy the new image needs, warns that the
// Pod lacks it, records an Event on the Pod, and patches nothing.
func TestEphemeralContainerNeedingASecretThePodLacks(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t, "debug", optIn())
	created, _ := cp.MustCreatePod(t, ns, podWith("app", "ghcr.io/org/app:1"))
	if len(created.Spec.ImagePullSecrets) != 0 {
		t.Fatalf("the Pod got %v at create, want none", refNames(created))
	}
	debug := created.DeepCopy()
	debug.Spec.EphemeralContainers = append(debug.Spec.EphemeralContainers, corev1.EphemeralContainer{
		EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debugger", Image: "quay.io/org/debug:1",
			ImagePullPolicy: corev1.PullIfNotPresent, TerminationMessagePolicy: corev1.TerminationMessageReadFile}})
	var w testenv.Warnings
	if _, err := warningClient(t, &w).CoreV1().Pods(ns).UpdateEphemeralContainers(ctx, "app", debug, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if !containsAll(w.List(), `pull secret "quay-regcred" this Pod does not reference`, "imagePullSecrets cannot change") {
		t.Errorf("warnings %q lack the missing quay-regcred", w.List())
	}
	stored, err := admin.CoreV1().Pods(ns).Get(ctx, "app", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(stored.Spec.EphemeralContainers) != 1 || len(stored.Spec.ImagePullSecrets) != 0 {
		t.Errorf("stored Pod has %d ephemeral containers and imagePullSecrets %v, want 1 and none",
			len(stored.Spec.EphemeralContainers), refNames(stored))
	}
	if cp := getSecret(t, ns, "quay-regcred"); !managed.IsCopy(cp) {
		t.Errorf("quay-regcred is not a copy: labels %v, annotations %v", cp.Labels, cp.Annotations)
	}
	var got []eventsv1.Event
	eventually(t, syncBound, "Event on the Pod", func() (bool, error) {
		list, err := admin.EventsV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: fields.Set{
			"regarding.kind": "Pod", "regarding.name": "app", "reason": events.ReasonPullSecretMissing}.String()})
		if err != nil {
			return false, err
		}
		got = list.Items
		return len(got) > 0, nil
	}, func() string { return "no PullSecretMissing Event on the Pod" })
	e := got[0]
	if e.Type != corev1.EventTypeWarning || e.Regarding.UID != created.UID || !containsAll([]string{e.Note}, `"quay-regcred"`, `"quay.io"`) {
		t.Errorf("Event %s %s about %s (uid %s): %q", e.Type, e.Reason, e.Regarding.Name, e.Regarding.UID, e.Note)
	}
}
