package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/pullsecret-injector/pullsecret-injector/internal/managed"
	"github.com/pullsecret-injector/pullsecret-injector/test/testenv"
)

// warningClient returns an admin client that collects the API server's warnings in w.
func warningClient(t *testing.T, w *testenv.Warnings) kubernetes.Interface {
	t.Helper()
	cfg := rest.CopyConfig(cp.Config)
	cfg.WarningHandlerWithContext = w
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// A dry run takes the real path, its create a dry-run create: beside someone else's Secret of a copy's
// name, the API server answers AlreadyExists and the dry run gets the warning a real Pod gets; where the
// copy is missing, it is not made.
func TestDryRunAnswersAsARealPod(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t, "dryrun-theirs", optIn())
	theirs := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "conflict-regcred"},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: dockerConfig("their-own.example.com")},
	}
	before, err := admin.CoreV1().Secrets(ns).Create(ctx, theirs, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		var w testenv.Warnings
		got, err := warningClient(t, &w).CoreV1().Pods(ns).Create(ctx, podWith("app", "conflict.example.com/app:1", "quay.io/org/app"),
			metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"quay-regcred", "conflict-regcred"}, refNames(got)); diff != "" {
			t.Errorf("dry run %d: imagePullSecrets (-want +got):\n%s", i, diff)
		}
		if !containsAll(w.List(), `secret "conflict-regcred"`, "not managed by pullsecret-injector") {
			t.Errorf("dry run %d: warnings %q lack the unmanaged Secret's", i, w.List())
		}
	}
	after, err := admin.CoreV1().Secrets(ns).Get(ctx, "conflict-regcred", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("their Secret changed (-before +after):\n%s", diff)
	}
	if _, err := admin.CoreV1().Secrets(ns).Get(ctx, "quay-regcred", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("copy after dry runs: err = %v, want NotFound", err)
	}
}

// The copies' cache keeps a source annotation that is not configured as it is, or, when it is longer than
// any namespace/name, as a marker: either way the reconciler sees the copy differ from its source and
// restores the annotation, as it did when the cache kept every value.
func TestEditedSourceAnnotationIsRestored(t *testing.T) {
	const name = "drift-regcred"
	ns := newNamespace(t, "annotation", optIn())
	cp.MustCreatePod(t, ns, podWith("app", "drift.example.com/app:1"))
	want := sourceNamespace + "/" + name
	for what, value := range map[string]string{
		"another source":              "elsewhere/" + name,
		"a tenant's 200 KiB of bytes": strings.Repeat("x", 200<<10),
	} {
		cp := getSecret(t, ns, name)
		cp.Annotations[managed.SourceAnnotation] = value
		if _, err := admin.CoreV1().Secrets(ns).Update(context.Background(), cp, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		took := eventually(t, syncBound, what+" restored", func() (bool, error) {
			got, err := admin.CoreV1().Secrets(ns).Get(context.Background(), name, metav1.GetOptions{})
			return err == nil && got.Annotations[managed.SourceAnnotation] == want, nil
		}, func() string {
			return fmt.Sprintf("annotation %.40q", getSecret(t, ns, name).Annotations[managed.SourceAnnotation])
		})
		t.Logf("source annotation set to %s restored after %v", what, took)
	}
}
