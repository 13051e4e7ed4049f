package managed

import (
	"fmt"
	"maps"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/test/fixtures"
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
		"a copy without the digest annotation is out": {edit: func(s *corev1.Secret) { delete(s.Annotations, DigestAnnotation) }},
		"a copy whose digest annotation is not its data's is out": {edit: func(s *corev1.Secret) {
			s.Annotations[DigestAnnotation] = PlaceholderDigest
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
	got, err := TrimCopyMetadataFunc(nil, nil)(in)
	if err != nil {
		t.Fatal(err)
	}
	out := got.(*metav1.PartialObjectMetadata)
	if len(out.Labels) != 1 || len(out.Annotations) != 1 || out.ManagedFields != nil || out.UID != "" || out.ResourceVersion != "7" ||
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
		Name: "regcred", Namespace: "team", UID: "uid",
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
	transform := TrimCopyMetadataFunc(func() *config.Matcher { return current }, nil)
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
	transform := TrimCopyMetadataFunc(func() *config.Matcher { return matcher(t, configured) }, nil)
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
	out, err := transform(&metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "team", UID: "uid"}})
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
	transform := TrimCopyMetadataFunc(func() *config.Matcher { return nil }, nil)
	const objects = 2000
	large := func(i, size int) string { return fmt.Sprintf("%08d", i) + strings.Repeat("x", size) }

	before := fixtures.HeapAlloc()
	for i := range objects {
		trimWith(t, transform, large(i, 256<<10))
	}
	retained := fixtures.HeapAlloc() - before
	t.Logf("churned: %d bytes retained", retained)
	if retained > 1<<20 {
		t.Errorf("%d Secrets with unique 256 KiB annotations, created and deleted, left %d bytes behind, want under 1 MiB",
			objects, retained)
	}

	before = fixtures.HeapAlloc()
	kept := make([]*metav1.PartialObjectMetadata, objects)
	for i := range kept {
		kept[i] = trimWith(t, transform, large(i, 64<<10))
	}
	retained = fixtures.HeapAlloc() - before
	runtime.KeepAlive(kept)
	t.Logf("kept: %d bytes retained, %d per object", retained, retained/objects)
	if perObject := retained / objects; perObject > 1<<10 {
		t.Errorf("%d cached Secrets with unique 64 KiB annotations hold %d bytes, %d each, want at most 1 KiB each",
			objects, retained, perObject)
	}

	// Unique well-formed digests, kept as they are while the source's digest is not known, and unique
	// source annotations of the longest a source can be: still about 1 KiB at most.
	unknown := TrimCopyMetadataFunc(func() *config.Matcher { return matcher(t, "psi/regcred") },
		func(config.SecretRef) (string, bool) { return "", false })
	before = fixtures.HeapAlloc()
	for i := range kept {
		in := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{
			Name: "regcred", Namespace: "team", UID: "uid",
			Labels: map[string]string{ManagedByLabel: ManagedByValue},
			Annotations: map[string]string{
				SourceAnnotation: large(i, maxSourceLen-8),
				DigestAnnotation: DigestString(corev1.SecretTypeOpaque, map[string][]byte{"k": []byte(fmt.Sprint(i))}),
				"big":            large(i, 64<<10),
			},
		}}
		out, err := unknown(in)
		if err != nil {
			t.Fatal(err)
		}
		kept[i] = out.(*metav1.PartialObjectMetadata)
	}
	retained = fixtures.HeapAlloc() - before
	runtime.KeepAlive(kept)
	t.Logf("kept with digests: %d bytes retained, %d per object", retained, retained/objects)
	if perObject := retained / objects; perObject > 1<<10 {
		t.Errorf("%d cached Secrets with unique digests and sources hold %d bytes, %d each, want at most 1 KiB each",
			objects, retained, perObject)
	}
}

func TestCopyRecordsTheDigestOfItsData(t *testing.T) {
	src := source()
	want := DigestString(src.Type, src.Data)
	if got := Copy(src, "team").Annotations[DigestAnnotation]; got != want {
		t.Errorf("copy's digest annotation %q, want %q", got, want)
	}
	ph := Placeholder(config.SecretRef{Namespace: "ops", Name: "regcred"}, "team")
	if got := ph.Annotations[DigestAnnotation]; got != PlaceholderDigest || got != DigestString(ph.Type, ph.Data) {
		t.Errorf("placeholder's digest annotation %q, want %q", got, PlaceholderDigest)
	}
	if n := len(want); n != digestLen || !strings.HasPrefix(want, "sha256:") {
		t.Errorf("digest %q: %d bytes, want sha256: and 64 hex digits", want, n)
	}
}

// digestTrim trims a copy named regcred in namespace ns, of source psi/regcred, with digest annotation
// digest, through transform.
func digestTrim(t testing.TB, transform func(any) (any, error), ns, digest string) *metav1.PartialObjectMetadata {
	t.Helper()
	out, err := transform(&metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{
		Name: strings.Clone("regcred"), Namespace: ns, UID: "uid", ResourceVersion: "5",
		Labels:      map[string]string{ManagedByLabel: ManagedByValue},
		Annotations: map[string]string{SourceAnnotation: "psi/regcred", DigestAnnotation: digest},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return out.(*metav1.PartialObjectMetadata)
}

// The cache keeps a digest annotation as the reconciler needs it: equal to the source's current digest
// or not, shared by every copy in step, and never a tenant's string once the current digest is known.
func TestTrimCopyMetadataKeepsTheDigestOnlyWhenCurrent(t *testing.T) {
	m := matcher(t, "psi/regcred")
	src := source()
	current := DigestString(src.Type, src.Data)
	ref := config.SecretRef{Namespace: "psi", Name: "regcred"}
	known := func(r config.SecretRef) (string, bool) {
		if r != ref {
			t.Errorf("current digest asked for %v, want the copy's source %v", r, ref)
		}
		return current, true
	}
	missing := func(config.SecretRef) (string, bool) { return "", true }
	unknown := func(config.SecretRef) (string, bool) { return "", false }
	other := DigestString(corev1.SecretTypeDockerConfigJson, map[string][]byte{corev1.DockerConfigJsonKey: []byte("{}")})
	for name, tc := range map[string]struct {
		current SourceDigest
		digest  string
		want    string
		// shared: two copies share the annotations map.
		shared bool
	}{
		"the current digest is kept and shared":              {current: known, digest: strings.Clone(current), want: current, shared: true},
		"an older digest is stale":                           {current: known, digest: other, want: StaleDigest, shared: true},
		"a placeholder's digest is kept and shared":          {current: known, digest: strings.Clone(PlaceholderDigest), want: PlaceholderDigest, shared: true},
		"a tenant's value is stale":                          {current: known, digest: "x" + strings.Repeat("y", 64<<10), want: StaleDigest, shared: true},
		"any digest is stale when the source is missing":     {current: missing, digest: other, want: StaleDigest, shared: true},
		"a digest is kept as it is until the source is read": {current: unknown, digest: other, want: other},
		"a malformed value is stale even before":             {current: unknown, digest: other + " ", want: StaleDigest, shared: true},
		"a long value is stale even before":                  {current: unknown, digest: strings.Repeat("s", 1<<20), want: StaleDigest, shared: true},
	} {
		t.Run(name, func(t *testing.T) {
			transform := TrimCopyMetadataFunc(func() *config.Matcher { return m }, tc.current)
			a, b := digestTrim(t, transform, "team-a", tc.digest), digestTrim(t, transform, "team-b", tc.digest)
			want := map[string]string{SourceAnnotation: "psi/regcred", DigestAnnotation: tc.want}
			if diff := cmp.Diff(want, a.Annotations); diff != "" {
				t.Errorf("annotations (-want +got):\n%s", diff)
			}
			if got := sameMap(a.Annotations, b.Annotations); got != tc.shared {
				t.Errorf("two copies share their annotations map: %v, want %v", got, tc.shared)
			}
			if unsafe.StringData(a.Name) != unsafe.StringData(m.EntryForSecret("regcred").Registry.Secret.Name) {
				t.Error("a copy of a configured name keeps a name string of its own, want the configuration's")
			}
		})
	}
}

// After a rotation, the copies written with the new bytes share the new digest's map, and the copies
// cached before keep theirs: the reconciler tells them apart by value.
func TestTrimCopyMetadataFollowsRotations(t *testing.T) {
	m := matcher(t, "psi/regcred")
	digest := DigestString(corev1.SecretTypeDockerConfigJson, map[string][]byte{corev1.DockerConfigJsonKey: []byte("v1")})
	transform := TrimCopyMetadataFunc(func() *config.Matcher { return m }, func(config.SecretRef) (string, bool) { return digest, true })
	before := digestTrim(t, transform, "team", digest)
	for i := range 2 * maxSharedMaps {
		digest = DigestString(corev1.SecretTypeDockerConfigJson, map[string][]byte{corev1.DockerConfigJsonKey: []byte(fmt.Sprint(i))})
		a, b := digestTrim(t, transform, "team", digest), digestTrim(t, transform, "other", digest)
		if a.Annotations[DigestAnnotation] != digest || !sameMap(a.Annotations, b.Annotations) {
			t.Fatalf("rotation %d: annotations %v, want the new digest in a shared map", i, a.Annotations)
		}
	}
	if before.Annotations[DigestAnnotation] == digest {
		t.Error("a copy cached before the rotations changed")
	}
}

func TestTrimNamespaceMetadata(t *testing.T) {
	for name, tc := range map[string]struct {
		labels map[string]string
		// want is what the cache keeps; shared, whether two namespaces share it.
		want   map[string]string
		shared bool
	}{
		"opted in only: the shared map": {
			labels: map[string]string{corev1.LabelMetadataName: "team", config.InjectLabel: config.InjectEnabled},
			want:   map[string]string{config.InjectLabel: config.InjectEnabled}, shared: true,
		},
		"only its name: no map": {labels: map[string]string{corev1.LabelMetadataName: "team"}},
		"other labels: a map of its own without the name": {
			labels: map[string]string{corev1.LabelMetadataName: "team", config.InjectLabel: config.InjectEnabled, "team": "payments"},
			want:   map[string]string{config.InjectLabel: config.InjectEnabled, "team": "payments"},
		},
		"opted out: a map of its own": {
			labels: map[string]string{corev1.LabelMetadataName: "team", config.InjectLabel: config.InjectDisabled},
			want:   map[string]string{config.InjectLabel: config.InjectDisabled},
		},
		"a name label that is not the name is kept": {
			labels: map[string]string{corev1.LabelMetadataName: "other"},
			want:   map[string]string{corev1.LabelMetadataName: "other"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			trim := func() *metav1.PartialObjectMetadata {
				in := PartialNamespace()
				in.Name, in.UID, in.ResourceVersion, in.Labels = "team", "uid", "3", maps.Clone(tc.labels)
				in.Annotations = map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{}"}
				out, err := TrimNamespaceMetadata(in)
				if err != nil {
					t.Fatal(err)
				}
				return out.(*metav1.PartialObjectMetadata)
			}
			a, b := trim(), trim()
			if diff := cmp.Diff(tc.want, a.Labels); diff != "" {
				t.Errorf("cached labels (-want +got):\n%s", diff)
			}
			if got := len(a.Labels) > 0 && sameMap(a.Labels, b.Labels); got != tc.shared {
				t.Errorf("two namespaces share their labels map: %v, want %v", got, tc.shared)
			}
			if a.Annotations != nil || a.UID != "" || a.ResourceVersion != "3" {
				t.Errorf("trimmed = %+v", a.ObjectMeta)
			}
			// What a reader gets (a deep copy, as from the cache) has every label the namespace has.
			if diff := cmp.Diff(labels.Set(tc.labels), NamespaceLabels(a.DeepCopy())); diff != "" {
				t.Errorf("NamespaceLabels (-want +got):\n%s", diff)
			}
		})
	}
}

// A selector on the namespace's name label, as kubectl users write to exclude namespaces, matches the
// cached namespace through NamespaceLabels as it matches the namespace.
func TestNamespaceLabelsAnswerSelectorsOnTheName(t *testing.T) {
	in := PartialNamespace()
	in.Name, in.UID, in.Labels = "team", "uid", map[string]string{corev1.LabelMetadataName: "team", config.InjectLabel: config.InjectEnabled}
	out, err := TrimNamespaceMetadata(in)
	if err != nil {
		t.Fatal(err)
	}
	sel, err := metav1.LabelSelectorAsSelector(&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: corev1.LabelMetadataName, Operator: metav1.LabelSelectorOpIn, Values: []string{"team"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !sel.Matches(NamespaceLabels(out.(*metav1.PartialObjectMetadata).DeepCopy())) {
		t.Error("a selector on the name label does not match the cached namespace")
	}
}

// client-go's streaming list passes each object through the transform twice: the second pass returns the
// first's object, and allocates nothing.
func TestTransformsReturnWhatTheyTrimmed(t *testing.T) {
	m := matcher(t, "psi/regcred")
	digest := DigestString(corev1.SecretTypeDockerConfigJson, map[string][]byte{corev1.DockerConfigJsonKey: []byte("x")})
	transforms := map[string]struct {
		transform func(any) (any, error)
		obj       func() *metav1.PartialObjectMetadata
	}{
		"copies": {
			transform: TrimCopyMetadataFunc(func() *config.Matcher { return m }, func(config.SecretRef) (string, bool) { return digest, true }),
			obj: func() *metav1.PartialObjectMetadata {
				return &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "regcred", Namespace: "team", UID: "uid",
					Labels:      map[string]string{ManagedByLabel: ManagedByValue},
					Annotations: map[string]string{SourceAnnotation: "psi/regcred", DigestAnnotation: digest}}}
			},
		},
		"namespaces": {
			transform: TrimNamespaceMetadata,
			obj: func() *metav1.PartialObjectMetadata {
				return &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "team", UID: "uid",
					Labels: map[string]string{corev1.LabelMetadataName: "team", "a": "b"}}}
			},
		},
		"service accounts": {
			transform: TrimServiceAccountMetadata,
			obj: func() *metav1.PartialObjectMetadata {
				return &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: "team", UID: "uid"}}
			},
		},
	}
	for name, tc := range transforms {
		t.Run(name, func(t *testing.T) {
			first, err := tc.transform(tc.obj())
			if err != nil {
				t.Fatal(err)
			}
			if first.(*metav1.PartialObjectMetadata).UID != "" {
				t.Fatal("the trimmed object keeps its UID")
			}
			var second any
			allocs := testing.AllocsPerRun(100, func() { second, err = tc.transform(first) })
			if err != nil || second != first {
				t.Errorf("second pass returned %p (%v), want the first's %p", second, err, first)
			}
			if allocs != 0 {
				t.Errorf("second pass allocated %v times, want 0", allocs)
			}
		})
	}
}

func TestNewInformerHasNoNamespaceIndex(t *testing.T) {
	inf := NewInformer(&toolscache.ListWatch{}, PartialSecret(), 0, toolscache.Indexers{
		toolscache.NamespaceIndex: toolscache.MetaNamespaceIndexFunc,
		"name":                    func(any) ([]string, error) { return nil, nil },
	})
	if diff := cmp.Diff([]string{"name"}, slices.Sorted(maps.Keys(inf.GetIndexer().GetIndexers()))); diff != "" {
		t.Errorf("indexes (-want +got):\n%s", diff)
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
			in.Namespace, in.Name, in.UID, in.ResourceVersion, in.Annotations = "team", "sa", "uid", "3", tc.annotations
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
