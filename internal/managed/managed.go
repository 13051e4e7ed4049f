// Package managed says what a managed copy is: the Secret this project creates in a Pod's namespace from a
// configured source Secret. The admission webhook creates copies and the reconciler keeps them in step;
// both tell a copy, build one and compare one through this package only.
package managed

import (
	"crypto/sha256"
	"encoding/binary"
	"maps"
	"slices"
	"sync"

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
// know only whether one enforces mountable secrets, so that annotation is all that is kept.
func TrimServiceAccountMetadata(obj any) (any, error) {
	m, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return obj, nil
	}
	trimmed := &metav1.PartialObjectMetadata{TypeMeta: m.TypeMeta, ObjectMeta: metav1.ObjectMeta{
		Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion,
	}}
	if v, ok := m.Annotations[EnforceMountableSecretsAnnotation]; ok {
		trimmed.Annotations = map[string]string{EnforceMountableSecretsAnnotation: v}
	}
	return trimmed, nil
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

// TrimCopyMetadata is a cache transform for metadata-only Secrets: it keeps what telling and reconciling a
// copy needs and drops the rest, so that a tenant's large labels and annotations on Secrets labelled as
// managed cost no memory either.
func TrimCopyMetadata(obj any) (any, error) {
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
		trimmed.Labels = copyLabels.get(ManagedByLabel, v)
	}
	if v, ok := m.Annotations[SourceAnnotation]; ok {
		trimmed.Annotations = copyAnnotations.get(SourceAnnotation, v)
	}
	return trimmed, nil
}

// copyLabels and copyAnnotations hold the one-entry maps the cached copies share: every copy of a source
// carries the same label and annotation, and a map per copy was a third of what a cached copy costs.
// Nothing changes a cached object (reads from the cache are deep copies), so sharing is safe.
var copyLabels, copyAnnotations = &sharedMaps{}, &sharedMaps{}

// maxSharedMaps bounds the maps shared: the values come from the configuration, but a tenant can label a
// Secret of its own as managed with any annotation value, and those must not grow this without bound.
const maxSharedMaps = 1024

// sharedMaps hands out one immutable single-entry map per key and value.
type sharedMaps struct {
	mu   sync.Mutex
	maps map[[2]string]map[string]string
}

func (s *sharedMaps) get(key, value string) map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m, ok := s.maps[[2]string{key, value}]; ok {
		return m
	}
	m := map[string]string{key: value}
	if s.maps == nil {
		s.maps = map[[2]string]map[string]string{}
	}
	if len(s.maps) < maxSharedMaps {
		s.maps[[2]string{key, value}] = m
	}
	return m
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
