package managed

import (
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/test/testenv"
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
	got, err := TrimCopyMetadataFunc(nil)(in)
	if err != nil {
		t.Fatal(err)
	}
	out := got.(*metav1.PartialObjectMetadata)
	if len(out.Labels) != 1 || len(out.Annotations) != 1 || out.ManagedFields != nil || out.UID != "uid" || out.ResourceVersion != "7" ||
		!IsManaged(out) || out.GroupVersionKind() != SecretGVK {
		t.Errorf("trimmed = %+v", out)
	}
}

func matcher(t testing.TB, sources ...string) *config.Matcher {
	t.Helper()
	c := &config.Config{}
	for i, src := range sources {
		ns, name, _ := strings.Cut(src, "/")
		c.Registries = append(c.Registries, config.Registry{
			Registry: fmt.Sprintf("r%d.example.com", i), Secret: config.SecretRef{Namespace: ns, Name: name},
		})
	}
	m, err := config.NewMatcher(c)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func trimWith(t testing.TB, transform func(any) (any, error), source string) *metav1.PartialObjectMetadata {
	t.Helper()
	out, err := transform(&metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{
		Name: "regcred", Namespace: "team",
		Labels:      map[string]string{ManagedByLabel: ManagedByValue, "other": "x"},
		Annotations: map[string]string{SourceAnnotation: source, "note": "y"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return out.(*metav1.PartialObjectMetadata)
}

func sameMap(a, b map[string]string) bool {
	return reflect.ValueOf(a).Pointer() == reflect.ValueOf(b).Pointer()
}

// Copies of a configured source share one annotations map; when a reload changes the sources, the new
// ones are shared and the old ones no longer are.
func TestTrimCopyMetadataSharesConfiguredSources(t *testing.T) {
	current := matcher(t, "psi/regcred")
	transform := TrimCopyMetadataFunc(func() *config.Matcher { return current })
	a, b := trimWith(t, transform, "psi/regcred"), trimWith(t, transform, "psi/regcred")
	if diff := cmp.Diff(map[string]string{ManagedByLabel: ManagedByValue}, a.Labels); diff != "" {
		t.Errorf("labels (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{SourceAnnotation: "psi/regcred"}, a.Annotations); diff != "" {
		t.Errorf("annotations (-want +got):\n%s", diff)
	}
	if !sameMap(a.Labels, b.Labels) || !sameMap(a.Annotations, b.Annotations) {
		t.Error("two copies of one configured source got maps of their own, want the shared ones")
	}
	if c, d := trimWith(t, transform, "tenant/x"), trimWith(t, transform, "tenant/x"); sameMap(c.Annotations, d.Annotations) {
		t.Error("a value that is not configured got a shared map, which outlives its objects")
	}

	current = matcher(t, "ops/regcred")
	c, d := trimWith(t, transform, "ops/regcred"), trimWith(t, transform, "ops/regcred")
	if !sameMap(c.Annotations, d.Annotations) {
		t.Error("after a reload, the new source is not shared")
	}
	if e, f := trimWith(t, transform, "psi/regcred"), trimWith(t, transform, "psi/regcred"); sameMap(e.Annotations, f.Annotations) ||
		sameMap(e.Annotations, a.Annotations) {
		t.Error("after a reload, the source it removed is still shared")
	}
}

// The cached copy answers what IsCopy and the reconciler ask (is the annotation there, does it equal the
// configured source) exactly as the Secret itself does, whatever the annotation holds.
func TestTrimCopyMetadataKeepsDecisions(t *testing.T) {
	configured := "psi/regcred"
	transform := TrimCopyMetadataFunc(func() *config.Matcher { return matcher(t, configured) })
	for name, value := range map[string]string{
		"the configured source":                   configured,
		"another source, as after a reload":       "old/regcred",
		"empty":                                   "",
		"the longest namespace/name":              strings.Repeat("n", 63) + "/" + strings.Repeat("s", 253),
		"one byte longer than any namespace/name": strings.Repeat("n", 63) + "/" + strings.Repeat("s", 254),
		"a tenant's 256 KiB":                      strings.Repeat("x", 256<<10),
		"a long value that starts as the source":  configured + strings.Repeat(" ", 1000),
	} {
		t.Run(name, func(t *testing.T) {
			out := trimWith(t, transform, value)
			if !IsCopy(out) {
				t.Error("IsCopy false, want true: the Secret has the label and the annotation")
			}
			if got := out.Annotations[SourceAnnotation] == configured; got != (value == configured) {
				t.Errorf("cached annotation equals the configured source: %v, want %v", got, value == configured)
			}
			if len(value) <= maxSourceLen && out.Annotations[SourceAnnotation] != value {
				t.Errorf("cached annotation %q, want %q kept as it is", out.Annotations[SourceAnnotation], value)
			}
			if n := len(out.Annotations[SourceAnnotation]); n > maxSourceLen {
				t.Errorf("cached annotation of %d bytes, bound %d", n, maxSourceLen)
			}
		})
	}
	out, err := transform(&metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "team"}})
	if err != nil {
		t.Fatal(err)
	}
	if IsCopy(out.(*metav1.PartialObjectMetadata)) || IsManaged(out.(*metav1.PartialObjectMetadata)) {
		t.Error("a Secret without the label and annotation is cached as a copy")
	}
}

// A tenant who creates and deletes Secrets labelled as managed with ever new large source annotations
// leaves nothing behind, and one who keeps them pays a bounded amount per Secret, not the annotation's
// size: the copies' informer sees every labelled Secret, in every namespace.
func TestTrimCopyMetadataRetainsNoTenantString(t *testing.T) {
	transform := TrimCopyMetadataFunc(func() *config.Matcher { return nil })
	const objects = 2000
	large := func(i, size int) string { return fmt.Sprintf("%08d", i) + strings.Repeat("x", size) }

	before := testenv.HeapAlloc()
	for i := range objects {
		trimWith(t, transform, large(i, 256<<10))
	}
	retained := testenv.HeapAlloc() - before
	t.Logf("churned: %d bytes retained", retained)
	if retained > 1<<20 {
		t.Errorf("%d Secrets with unique 256 KiB annotations, created and deleted, left %d bytes behind, want under 1 MiB",
			objects, retained)
	}

	before = testenv.HeapAlloc()
	kept := make([]*metav1.PartialObjectMetadata, objects)
	for i := range kept {
		kept[i] = trimWith(t, transform, large(i, 64<<10))
	}
	retained = testenv.HeapAlloc() - before
	runtime.KeepAlive(kept)
	t.Logf("kept: %d bytes retained, %d per object", retained, retained/objects)
	if perObject := retained / objects; perObject > 1<<10 {
		t.Errorf("%d cached Secrets with unique 64 KiB annotations hold %d bytes, %d each, want at most 1 KiB each",
			objects, retained, perObject)
	}
}

func TestTrimServiceAccountMetadataKeepsOnlyEnforcement(t *testing.T) {
	for name, tc := range map[string]struct {
		annotations map[string]string
		enforcing   bool
	}{
		"enforcing":                       {annotations: map[string]string{EnforceMountableSecretsAnnotation: "true"}, enforcing: true},
		"enforcing as the plugin reads 1": {annotations: map[string]string{EnforceMountableSecretsAnnotation: "1"}, enforcing: true},
		"not enforcing":                   {annotations: map[string]string{EnforceMountableSecretsAnnotation: "false"}},
		"no annotation":                   {annotations: map[string]string{"other": "x"}},
		"a large value is no bool":        {annotations: map[string]string{EnforceMountableSecretsAnnotation: strings.Repeat("t", 64<<10)}},
	} {
		t.Run(name, func(t *testing.T) {
			in := PartialServiceAccount()
			in.Namespace, in.Name, in.ResourceVersion, in.Annotations = "team", "sa", "3", tc.annotations
			got, err := TrimServiceAccountMetadata(in)
			if err != nil {
				t.Fatal(err)
			}
			out := got.(*metav1.PartialObjectMetadata)
			var want map[string]string
			if tc.enforcing {
				want = map[string]string{EnforceMountableSecretsAnnotation: "true"}
			}
			if diff := cmp.Diff(want, out.Annotations); diff != "" {
				t.Errorf("annotations (-want +got):\n%s", diff)
			}
			if EnforcesMountableSecrets(out) != tc.enforcing || out.Name != "sa" || out.ResourceVersion != "3" {
				t.Errorf("trimmed = %+v", out)
			}
		})
	}
}
