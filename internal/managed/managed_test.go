package managed

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/pullsecret-injector/pullsecret-injector/config"
)

func source() *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ops", Name: "regcred", Labels: map[string]string{"team": "ops"}},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"quay.io":{"auth":"eDp5"}}}`)},
	}
}

func TestCopy(t *testing.T) {
	src := source()
	cp := Copy(src, "team")
	if cp.Namespace != "team" || cp.Name != "regcred" || !IsManaged(cp) || cp.Annotations[SourceAnnotation] != "ops/regcred" {
		t.Errorf("copy metadata = %+v", cp.ObjectMeta)
	}
	if cp.Labels["team"] != "" {
		t.Error("the source's own labels were copied")
	}
	cp.Data[corev1.DockerConfigJsonKey][0] = 'X'
	if src.Data[corev1.DockerConfigJsonKey][0] == 'X' {
		t.Error("the copy shares its data map with the source")
	}
}

func TestInSync(t *testing.T) {
	src := source()
	for name, tc := range map[string]struct {
		edit func(*corev1.Secret)
		want bool
	}{
		"a fresh copy is in sync":          {edit: func(*corev1.Secret) {}, want: true},
		"other labels do not matter":       {edit: func(s *corev1.Secret) { s.Labels["x"] = "y" }, want: true},
		"other data is out of sync":        {edit: func(s *corev1.Secret) { s.Data[corev1.DockerConfigJsonKey] = []byte("{}") }},
		"an extra key is out of sync":      {edit: func(s *corev1.Secret) { s.Data["extra"] = nil }},
		"another type is out of sync":      {edit: func(s *corev1.Secret) { s.Type = corev1.SecretTypeOpaque }},
		"immutable is out of sync":         {edit: func(s *corev1.Secret) { s.Immutable = ptr.To(true) }},
		"a wrong source annotation is out": {edit: func(s *corev1.Secret) { s.Annotations[SourceAnnotation] = "x/y" }},
		"a copy without the label is out":  {edit: func(s *corev1.Secret) { delete(s.Labels, ManagedByLabel) }},
		"a placeholder is out of sync": {edit: func(s *corev1.Secret) {
			s.Data = Placeholder(config.SecretRef{Namespace: "ops", Name: "regcred"}, "team").Data
		}},
		"an empty value differs from absent": {edit: func(s *corev1.Secret) { s.Data = map[string][]byte{corev1.DockerConfigJsonKey: nil} }},
	} {
		t.Run(name, func(t *testing.T) {
			cp := Copy(src, "team")
			tc.edit(cp)
			if got := InSync(cp, src); got != tc.want {
				t.Errorf("InSync = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestDigestTellsKeyFromValueBoundaries(t *testing.T) {
	a := Digest(corev1.SecretTypeOpaque, map[string][]byte{"ab": []byte("c")})
	b := Digest(corev1.SecretTypeOpaque, map[string][]byte{"a": []byte("bc")})
	if a == b {
		t.Error("two different maps have the same digest")
	}
}

func TestTrimCopyMetadataKeepsOnlyWhatCopiesNeed(t *testing.T) {
	in := PartialSecret()
	in.Namespace, in.Name, in.UID, in.ResourceVersion = "team", "regcred", "uid", "7"
	in.Labels = map[string]string{ManagedByLabel: ManagedByValue, "big": string(make([]byte, 1000))}
	in.Annotations = map[string]string{SourceAnnotation: "ops/regcred", "big": string(make([]byte, 1000))}
	in.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}
	got, err := TrimCopyMetadata(in)
	if err != nil {
		t.Fatal(err)
	}
	out := got.(*metav1.PartialObjectMetadata)
	if len(out.Labels) != 1 || len(out.Annotations) != 1 || out.ManagedFields != nil || out.UID != "uid" || out.ResourceVersion != "7" ||
		!IsManaged(out) || out.GroupVersionKind() != SecretGVK {
		t.Errorf("trimmed = %+v", out)
	}
}

func TestTrimCopyMetadataSharesItsMaps(t *testing.T) {
	trim := func(source string) *metav1.PartialObjectMetadata {
		t.Helper()
		out, err := TrimCopyMetadata(&metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{
			Name: "regcred", Namespace: "team",
			Labels:      map[string]string{ManagedByLabel: ManagedByValue, "other": "x"},
			Annotations: map[string]string{SourceAnnotation: source, "note": "y"},
		}})
		if err != nil {
			t.Fatal(err)
		}
		return out.(*metav1.PartialObjectMetadata)
	}
	a, b := trim("psi/regcred"), trim("psi/regcred")
	if diff := cmp.Diff(map[string]string{ManagedByLabel: ManagedByValue}, a.Labels); diff != "" {
		t.Errorf("labels (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{SourceAnnotation: "psi/regcred"}, a.Annotations); diff != "" {
		t.Errorf("annotations (-want +got):\n%s", diff)
	}
	if reflect.ValueOf(a.Labels).Pointer() != reflect.ValueOf(b.Labels).Pointer() ||
		reflect.ValueOf(a.Annotations).Pointer() != reflect.ValueOf(b.Annotations).Pointer() {
		t.Error("two copies of one source got maps of their own, want the shared ones")
	}
	// Tenant-chosen annotation values never grow the shared maps past their bound.
	for i := range 2 * maxSharedMaps {
		trim(fmt.Sprintf("tenant/%d", i))
	}
	if n := len(copyAnnotations.maps); n > maxSharedMaps {
		t.Errorf("%d shared annotation maps, bound %d", n, maxSharedMaps)
	}
}
