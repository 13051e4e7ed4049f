// Package managed says what a managed copy is: the Secret this project creates in a Pod's namespace from a
// configured source Secret. The admission webhook creates copies and the reconciler keeps them in step;
// both tell a copy, build one and compare one through this package only.
package managed

import (
	"crypto/sha256"
	"encoding/binary"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pullsecret-injector/pullsecret-injector/config"
)

const (
	// ManagedByLabel marks the Secrets this project created; only those are ever written to again.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	// ManagedByValue is the value of ManagedByLabel on the Secrets this project created.
	ManagedByValue = "pullsecret-injector"
	// SourceAnnotation records "namespace/name" of the Secret a copy was made from. It is informative
	// only: the reconciler finds a copy's source through the configuration, by the copy's name, because a
	// tenant can write any annotation on a Secret in its namespace.
	SourceAnnotation = "pullsecret-injector.io/source"
	// Selector is ManagedByLabel=ManagedByValue as a label selector string, for List calls and kubectl.
	Selector = ManagedByLabel + "=" + ManagedByValue
)

// SecretGVK is the kind of every object this package talks about.
var SecretGVK = corev1.SchemeGroupVersion.WithKind("Secret")

// placeholderConfig is the data of a copy whose source does not exist yet or cannot be copied: an empty
// but valid Docker config, so the kubelet finds the Secret the Pod names and pulls anonymously until the
// reconciler fills it in.
var placeholderConfig = []byte(`{"auths":{}}`)

// IsManaged reports whether obj carries the label that makes it a copy this project may write.
func IsManaged(obj metav1.Object) bool {
	return obj.GetLabels()[ManagedByLabel] == ManagedByValue
}

// IsCopy reports whether obj has the form of a copy this project made: the managed-by label and the source
// annotation. The reconciler updates and deletes only such Secrets; a Secret that merely carries the label
// (another tool's convention, a tenant's mistake) is left alone.
func IsCopy(obj metav1.Object) bool {
	_, annotated := obj.GetAnnotations()[SourceAnnotation]
	return IsManaged(obj) && annotated
}

// PartialSecret returns an empty metadata-only Secret, the form in which copies are cached: their data is
// never held in memory, so a tenant who labels large Secrets as managed cannot grow the process.
func PartialSecret() *metav1.PartialObjectMetadata {
	s := &metav1.PartialObjectMetadata{}
	s.SetGroupVersionKind(SecretGVK)
	return s
}

// PartialServiceAccount returns an empty metadata-only ServiceAccount.
func PartialServiceAccount() *metav1.PartialObjectMetadata {
	sa := &metav1.PartialObjectMetadata{}
	sa.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("ServiceAccount"))
	return sa
}

// TrimServiceAccountMetadata is a cache transform for metadata-only ServiceAccounts: the webhook needs to
// know only whether one enforces mountable secrets, so that is all that is kept, as a map every enforcing
// ServiceAccount shares: a cached ServiceAccount holds its name, namespace, UID and resourceVersion, and no
// string its author chose besides its name, whatever the size of its annotations.
func TrimServiceAccountMetadata(obj any) (any, error) {
	m, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return obj, nil
	}
	trimmed := &metav1.PartialObjectMetadata{TypeMeta: m.TypeMeta, ObjectMeta: metav1.ObjectMeta{
		Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion,
	}}
	if EnforcesMountableSecrets(m) {
		trimmed.Annotations = enforcing
	}
	return trimmed, nil
}

// enforcing is the annotations map of every cached ServiceAccount that enforces mountable secrets.
var enforcing = map[string]string{EnforceMountableSecretsAnnotation: "true"}

// EnforcesMountableSecrets reports whether sa enforces mountable secrets, as the ServiceAccount admission
// plugin reads the annotation.
func EnforcesMountableSecrets(sa metav1.Object) bool {
	enforce, _ := strconv.ParseBool(sa.GetAnnotations()[EnforceMountableSecretsAnnotation])
	return enforce
}

// EnforceMountableSecretsAnnotation is the ServiceAccount admission plugin's opt-in annotation: a Pod of
// a ServiceAccount that carries it as "true" may reference only the pull secrets the ServiceAccount lists.
const EnforceMountableSecretsAnnotation = "kubernetes.io/enforce-mountable-secrets"

// PartialNamespace returns an empty metadata-only Namespace.
func PartialNamespace() *metav1.PartialObjectMetadata {
	ns := &metav1.PartialObjectMetadata{}
	ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	return ns
}

// Copy returns the copy of source for namespace: the source's type and data under the source's name, with
// the managed-by label and the source annotation.
func Copy(source *corev1.Secret, namespace string) *corev1.Secret {
	return build(config.SecretRef{Namespace: source.Namespace, Name: source.Name}, namespace, source.Type, source.Data)
}

// Placeholder returns the copy of src for namespace while src does not exist or cannot be copied: a Pod
// that references it is admitted with the reference, and the reconciler fills it in when the source is
// usable.
func Placeholder(src config.SecretRef, namespace string) *corev1.Secret {
	return build(src, namespace, corev1.SecretTypeDockerConfigJson,
		map[string][]byte{corev1.DockerConfigJsonKey: slices.Clone(placeholderConfig)})
}

func build(src config.SecretRef, namespace string, typ corev1.SecretType, data map[string][]byte) *corev1.Secret {
	return &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: SecretGVK.GroupVersion().String(), Kind: SecretGVK.Kind},
		ObjectMeta: metav1.ObjectMeta{
			Name:        src.Name,
			Namespace:   namespace,
			Labels:      map[string]string{ManagedByLabel: ManagedByValue},
			Annotations: map[string]string{SourceAnnotation: src.String()},
		},
		Type: typ,
		Data: cloneData(data),
	}
}

// cloneData copies the values too: the source usually belongs to an informer's cache, which must never
// share memory with an object that a client call decodes a response into.
func cloneData(data map[string][]byte) map[string][]byte {
	out := make(map[string][]byte, len(data))
	for k, v := range data {
		out[k] = slices.Clone(v)
	}
	return out
}

// Usable reports whether source may be copied: only kubernetes.io/dockerconfigjson Secrets are, so the
// copy is a pull secret whatever the source's owner turns the source into.
func Usable(source *corev1.Secret) bool {
	return source.Type == corev1.SecretTypeDockerConfigJson
}

// Digest returns a fingerprint of a Secret's type and data, to tell whether a copy holds a source's bytes
// without keeping the bytes.
func Digest(typ corev1.SecretType, data map[string][]byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write([]byte(typ))
	for _, k := range slices.Sorted(maps.Keys(data)) {
		// Lengths first, so that no two different maps hash the same stream.
		var n [16]byte
		binary.LittleEndian.PutUint64(n[:8], uint64(len(k)))
		binary.LittleEndian.PutUint64(n[8:], uint64(len(data[k])))
		h.Write(n[:])
		h.Write([]byte(k))
		h.Write(data[k])
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

// InSync reports whether cp holds exactly what a copy of source holds: type, data, the label and the source
// annotation. Other labels and annotations are the cluster's business (tools add their own).
func InSync(cp, source *corev1.Secret) bool {
	src := config.SecretRef{Namespace: source.Namespace, Name: source.Name}
	return cp.Type == source.Type && Digest(cp.Type, cp.Data) == Digest(source.Type, source.Data) &&
		IsManaged(cp) && cp.Annotations[SourceAnnotation] == src.String() &&
		(cp.Immutable == nil || !*cp.Immutable)
}

// maxSourceLen is the longest "namespace/name" a configured source can have: a namespace name (63
// bytes), the slash and a Secret name (253). A longer source annotation can never equal a configured one.
const maxSourceLen = 63 + 1 + 253

// overlongSource stands, in the cache, for a source annotation longer than maxSourceLen: it says the
// annotation is there (IsCopy needs that) and, having spaces, equals no configured "namespace/name" (the
// reconciler restores any other value), without keeping a tenant's string of any size.
const overlongSource = "(longer than any namespace/name)"

// managedLabels and overlongAnnotations are the one-entry maps every cached copy with that label, or with
// an overlong annotation, shares. Nothing changes a cached object (reads from the cache are deep copies),
// so sharing is safe.
var (
	managedLabels       = map[string]string{ManagedByLabel: ManagedByValue}
	overlongAnnotations = map[string]string{SourceAnnotation: overlongSource}
)

// TrimCopyMetadataFunc returns the cache transform for metadata-only Secrets labelled as managed: it keeps
// what telling and reconciling a copy needs and drops the rest, so that a tenant's large labels and
// annotations on Secrets labelled as managed cost no memory. configured returns the configuration in
// force; nil means none.
//
// What a cached copy keeps, at most: name (253 bytes), namespace (63), UID, resourceVersion, two
// timestamps, the managed-by label and the source annotation. The source annotation is shared with every
// copy of that source when it is a configured source's "namespace/name" (the common case, the map is then
// not paid per copy); another value up to maxSourceLen bytes is kept as a string of its own that goes away
// with its object (a copy whose source a reload changes, a tenant's Secret); a longer one, which no
// configured source can equal, becomes overlongSource. So nothing a tenant writes outlives its object or
// costs more than about 1 KiB per object, whatever its size; the shared maps hold the configuration's
// sources and are replaced when the configuration changes.
func TrimCopyMetadataFunc(configured func() *config.Matcher) func(any) (any, error) {
	var shared atomic.Pointer[sourceMaps]
	return func(obj any) (any, error) {
		m, ok := obj.(*metav1.PartialObjectMetadata)
		if !ok {
			return obj, nil
		}
		trimmed := &metav1.PartialObjectMetadata{TypeMeta: m.TypeMeta, ObjectMeta: metav1.ObjectMeta{
			Name:              m.Name,
			Namespace:         m.Namespace,
			UID:               m.UID,
			ResourceVersion:   m.ResourceVersion,
			CreationTimestamp: m.CreationTimestamp,
			DeletionTimestamp: m.DeletionTimestamp,
		}}
		if v, ok := m.Labels[ManagedByLabel]; ok {
			trimmed.Labels = managedLabels
			if v != ManagedByValue {
				// Not from the informer, whose selector asks for the value; a label value is at most 63 bytes.
				trimmed.Labels = map[string]string{ManagedByLabel: strings.Clone(v)}
			}
		}
		if v, ok := m.Annotations[SourceAnnotation]; ok {
			trimmed.Annotations = sourceAnnotation(&shared, configured, v)
		}
		return trimmed, nil
	}
}

// sourceMaps holds a one-entry source annotation map per configured source of one configuration.
type sourceMaps struct {
	matcher *config.Matcher
	maps    map[string]map[string]string
}

// sourceAnnotation returns the annotations map a cached copy with source annotation v keeps.
func sourceAnnotation(shared *atomic.Pointer[sourceMaps], configured func() *config.Matcher, v string) map[string]string {
	if len(v) > maxSourceLen {
		return overlongAnnotations
	}
	if configured != nil {
		if m := configured(); m != nil {
			s := shared.Load()
			if s == nil || s.matcher != m {
				// A reload: the old maps stay only as long as copies cached under them.
				s = &sourceMaps{matcher: m, maps: map[string]map[string]string{}}
				for _, src := range m.Sources() {
					ref := src.String()
					s.maps[ref] = map[string]string{SourceAnnotation: ref}
				}
				shared.Store(s)
			}
			if shared, ok := s.maps[v]; ok {
				return shared
			}
		}
	}
	// strings.Clone: a substring would keep the whole decoded object alive.
	return map[string]string{SourceAnnotation: strings.Clone(v)}
}

// TrimNamespaceMetadata is a cache transform for metadata-only Namespaces: selectors need the labels and
// the reconciler needs to know a namespace is terminating; annotations (often a large
// last-applied-configuration) and managed fields are dropped.
func TrimNamespaceMetadata(obj any) (any, error) {
	m, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return obj, nil
	}
	return &metav1.PartialObjectMetadata{TypeMeta: m.TypeMeta, ObjectMeta: metav1.ObjectMeta{
		Name:              m.Name,
		UID:               m.UID,
		ResourceVersion:   m.ResourceVersion,
		Labels:            m.Labels,
		DeletionTimestamp: m.DeletionTimestamp,
	}}, nil
}
