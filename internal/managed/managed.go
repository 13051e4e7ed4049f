// Package managed says what a managed copy is: the Secret this project creates in a Pod's namespace from a
// configured source Secret. The admission webhook creates copies and the reconciler keeps them in step;
// both tell a copy, build one and compare one through this package only.
package managed

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	toolscache "k8s.io/client-go/tools/cache"

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
	// DigestAnnotation records the digest (DigestString) of the type and data a copy was written with, in
	// the same write as the data. The metadata cache keeps it when it equals the current digest of the
	// copy's source, so that a new leader tells from its cache alone, without reading a copy, which copies
	// hold their source's current bytes. A tenant can write it too: see the reconciler for what it trusts.
	DigestAnnotation = "pullsecret-injector.io/digest"
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

// TrimServiceAccountMetadata is a transform for metadata-only ServiceAccounts: the webhook needs to know
// only whether one enforces mountable secrets, so that is all that is kept, as a map every enforcing
// ServiceAccount shares: a trimmed ServiceAccount holds its name (every namespace's "default" one shares a
// constant), namespace and resourceVersion, and no string its author chose besides its name, whatever the
// size of its annotations. The webhook's cache of ServiceAccounts keeps less still, but holds every
// ServiceAccount in this form while its first list streams in.
func TrimServiceAccountMetadata(obj any) (any, error) {
	m, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok || trimmedAlready(m) {
		return obj, nil
	}
	trimmed := &metav1.PartialObjectMetadata{TypeMeta: m.TypeMeta, ObjectMeta: metav1.ObjectMeta{
		Name: m.Name, Namespace: m.Namespace, ResourceVersion: m.ResourceVersion,
	}}
	if m.Name == defaultServiceAccount {
		trimmed.Name = defaultServiceAccount
	}
	if EnforcesMountableSecrets(m) {
		trimmed.Annotations = enforcing
	}
	return trimmed, nil
}

// defaultServiceAccount is the name of the ServiceAccount the API server's controllers make in every namespace.
const defaultServiceAccount = "default"

// trimmedAlready reports whether m is the result of one of this package's transforms, which drop the UID
// that every object from the API server has: client-go's streaming list passes each object through the
// transform twice (into its temporary store, then into the informer's queue), and a second pass that
// made a new object would double the garbage of a cache's first list.
func trimmedAlready(m *metav1.PartialObjectMetadata) bool {
	return m.UID == ""
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
			Annotations: map[string]string{SourceAnnotation: src.String(), DigestAnnotation: DigestString(typ, data)},
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

// DigestString returns Digest as the value of DigestAnnotation: "sha256:" and 64 lowercase hex digits.
func DigestString(typ corev1.SecretType, data map[string][]byte) string {
	sum := Digest(typ, data)
	return digestPrefix + hex.EncodeToString(sum[:])
}

const digestPrefix = "sha256:"

// digestLen is the length of every DigestString.
const digestLen = len(digestPrefix) + 2*sha256.Size

// PlaceholderDigest is the DigestAnnotation of every placeholder.
var PlaceholderDigest = DigestString(corev1.SecretTypeDockerConfigJson, map[string][]byte{corev1.DockerConfigJsonKey: placeholderConfig})

// StaleDigest stands, in the cache, for a DigestAnnotation that is neither the current digest of the copy's
// source nor PlaceholderDigest: the copy does not hold its source's current bytes, whatever it holds, and
// no string a tenant wrote is kept. Having a space, it equals no DigestString.
const StaleDigest = "(not the source's current digest)"

// InSync reports whether cp holds exactly what a copy of source holds: type, data, the label, the source
// annotation and the digest annotation of that data. Other labels and annotations are the cluster's
// business (tools add their own).
func InSync(cp, source *corev1.Secret) bool {
	src := config.SecretRef{Namespace: source.Namespace, Name: source.Name}
	digest := DigestString(source.Type, source.Data)
	return cp.Type == source.Type && DigestString(cp.Type, cp.Data) == digest &&
		IsManaged(cp) && cp.Annotations[SourceAnnotation] == src.String() && cp.Annotations[DigestAnnotation] == digest &&
		(cp.Immutable == nil || !*cp.Immutable)
}

// maxSourceLen is the longest "namespace/name" a configured source can have: a namespace name (63
// bytes), the slash and a Secret name (253). A longer source annotation can never equal a configured one.
const maxSourceLen = 63 + 1 + 253

// overlongSource stands, in the cache, for a source annotation longer than maxSourceLen: it says the
// annotation is there (IsCopy needs that) and, having spaces, equals no configured "namespace/name" (the
// reconciler restores any other value), without keeping a tenant's string of any size.
const overlongSource = "(longer than any namespace/name)"

// managedLabels is the labels map every cached copy with the managed-by label shares. Nothing changes a
// cached object (reads from the cache are deep copies), so sharing is safe.
var managedLabels = map[string]string{ManagedByLabel: ManagedByValue}

// SourceDigest returns the DigestString of the current bytes of the source ref names, or "" when the
// source does not exist or cannot be copied; known is false when that cannot be told yet (the source is
// not tracked, or its informer has not listed it). The same bytes must give the same string, not only an
// equal one: every cached copy in step shares it.
type SourceDigest func(ref config.SecretRef) (digest string, known bool)

// TrimCopyMetadataFunc returns the cache transform for metadata-only Secrets labelled as managed: it keeps
// what telling and reconciling a copy needs and drops the rest, so that a tenant's large labels and
// annotations on Secrets labelled as managed cost no memory. configured returns the configuration in
// force (nil: none) and current the current digest of a source (nil: never known).
//
// What a cached copy keeps: name, namespace, resourceVersion, two timestamps, the managed-by label, the
// source annotation and the digest annotation; not its UID, which no decision reads. A name that is a
// configured Secret name, the label, a source annotation equal to a configured source and a digest
// annotation equal to the current digest of the copy's source (or to PlaceholderDigest) are strings and
// maps every such copy shares: a copy in step costs its struct, its namespace and resourceVersion strings
// and nothing else. A digest annotation that is not current becomes StaleDigest (all the reconciler
// needs to know), unless the current digest is not known yet, at start before the sources are read: then
// a well-formed one (71 bytes) is kept as a string of its own. Another source annotation up to
// maxSourceLen bytes is kept as a string of its own, a longer one becomes overlongSource. So nothing a
// tenant writes outlives its object or costs more than about 1 KiB per object, whatever its size; the
// shared strings and maps are the configuration's and the sources' current digests, and go away with them
// (see annotationMaps).
func TrimCopyMetadataFunc(configured func() *config.Matcher, current SourceDigest) func(any) (any, error) {
	var shared annotationMaps
	return func(obj any) (any, error) {
		m, ok := obj.(*metav1.PartialObjectMetadata)
		if !ok || trimmedAlready(m) {
			return obj, nil
		}
		var matcher *config.Matcher
		if configured != nil {
			matcher = configured()
		}
		var entry *config.Entry
		if matcher != nil {
			entry = matcher.EntryForSecret(m.Name)
		}
		trimmed := &metav1.PartialObjectMetadata{TypeMeta: m.TypeMeta, ObjectMeta: metav1.ObjectMeta{
			Name:              m.Name,
			Namespace:         m.Namespace,
			ResourceVersion:   m.ResourceVersion,
			CreationTimestamp: m.CreationTimestamp,
			DeletionTimestamp: m.DeletionTimestamp,
		}}
		if entry != nil {
			trimmed.Name = entry.Registry.Secret.Name // the configuration's string, shared
		}
		if v, ok := m.Labels[ManagedByLabel]; ok {
			trimmed.Labels = managedLabels
			if v != ManagedByValue {
				// Not from the informer, whose selector asks for the value; a label value is at most 63 bytes.
				trimmed.Labels = map[string]string{ManagedByLabel: strings.Clone(v)}
			}
		}
		source, hasSource := m.Annotations[SourceAnnotation]
		digest, hasDigest := m.Annotations[DigestAnnotation]
		if !hasSource && !hasDigest {
			return trimmed, nil
		}
		k := annotationKey{hasSource: hasSource, hasDigest: hasDigest}
		sharedSource, sharedDigest := true, true
		if hasSource {
			k.source, sharedSource = shared.keptSource(matcher, source)
		}
		if hasDigest {
			k.digest, sharedDigest = keptDigest(entry, current, digest)
		}
		if sharedSource && sharedDigest {
			trimmed.Annotations = shared.get(matcher, k)
		} else {
			trimmed.Annotations = k.annotations()
		}
		return trimmed, nil
	}
}

// keptDigest returns what the cache keeps of digest annotation v on a copy of entry (nil: no entry names
// the copy), and whether that is a string that copies share: see TrimCopyMetadataFunc.
func keptDigest(entry *config.Entry, current SourceDigest, v string) (string, bool) {
	if v == PlaceholderDigest {
		return PlaceholderDigest, true
	}
	if entry == nil || current == nil {
		return StaleDigest, true
	}
	switch cur, known := current(entry.Registry.Secret); {
	case known && cur != "" && v == cur:
		return cur, true
	case !known && len(v) == digestLen && strings.HasPrefix(v, digestPrefix):
		return strings.Clone(v), false
	}
	return StaleDigest, true
}

// annotationKey is the annotations a cached copy keeps.
type annotationKey struct {
	source, digest       string
	hasSource, hasDigest bool
}

func (k annotationKey) annotations() map[string]string {
	a := make(map[string]string, 2)
	if k.hasSource {
		a[SourceAnnotation] = k.source
	}
	if k.hasDigest {
		a[DigestAnnotation] = k.digest
	}
	return a
}

// maxSharedMaps bounds annotationMaps: a handful of maps per configured source (with and without each
// annotation, placeholder, stale, the current digest and a few that were current before a rotation).
const maxSharedMaps = 1024

// annotationMaps holds the annotations maps that cached copies share, and the configured sources' strings,
// for one configuration: every value in a key is the configuration's (a source, overlongSource) or a digest
// that was a source's current one when it was added, never a tenant's string. It starts over when the
// configuration changes or when it holds maxSharedMaps, which rotations reach after many changes: the maps
// it drops stay only as long as the copies cached with them, at most about 300 bytes each. It is safe for
// concurrent use.
type annotationMaps struct {
	mu      sync.Mutex
	matcher *config.Matcher
	// sources maps each configured "namespace/name" to itself, one string per source.
	sources map[string]string
	maps    map[annotationKey]map[string]string
}

// reset starts over for m; the caller holds mu.
func (s *annotationMaps) reset(m *config.Matcher) {
	s.matcher, s.maps, s.sources = m, map[annotationKey]map[string]string{}, map[string]string{}
	if m != nil {
		for _, src := range m.Sources() {
			ref := src.String()
			s.sources[ref] = ref
		}
	}
}

// keptSource returns what the cache keeps of source annotation v, and whether copies share it: the
// configuration's own string when v is a configured source, overlongSource for a value too long to be one,
// and otherwise a copy of v (a substring would keep the whole decoded object alive).
func (s *annotationMaps) keptSource(m *config.Matcher, v string) (string, bool) {
	if len(v) > maxSourceLen {
		return overlongSource, true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.maps == nil || s.matcher != m {
		s.reset(m)
	}
	if ref, ok := s.sources[v]; ok {
		return ref, true
	}
	return strings.Clone(v), false
}

func (s *annotationMaps) get(m *config.Matcher, k annotationKey) map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.maps == nil || s.matcher != m {
		s.reset(m)
	}
	if a, ok := s.maps[k]; ok {
		return a
	}
	if len(s.maps) >= maxSharedMaps {
		s.reset(m)
	}
	a := k.annotations()
	s.maps[k] = a
	return a
}

// TrimNamespaceMetadata is a cache transform for metadata-only Namespaces: selectors need the labels and
// the reconciler needs to know a namespace is terminating; annotations (often a large
// last-applied-configuration), managed fields and the UID are dropped. The kubernetes.io/metadata.name
// label, which the API server sets to the namespace's name on every namespace, is dropped too (NamespaceLabels
// puts it back), so that a namespace whose only other label is the default opt-in shares one labels map
// with every such namespace; other label sets are kept as maps of their own.
func TrimNamespaceMetadata(obj any) (any, error) {
	m, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok || trimmedAlready(m) {
		return obj, nil
	}
	return &metav1.PartialObjectMetadata{TypeMeta: m.TypeMeta, ObjectMeta: metav1.ObjectMeta{
		Name:              m.Name,
		ResourceVersion:   m.ResourceVersion,
		Labels:            namespaceLabels(m),
		DeletionTimestamp: m.DeletionTimestamp,
	}}, nil
}

// optedInLabels is the labels map of every cached namespace whose only label besides its name is the
// default opt-in.
var optedInLabels = map[string]string{config.InjectLabel: config.InjectEnabled}

func namespaceLabels(m *metav1.PartialObjectMetadata) map[string]string {
	n := len(m.Labels)
	named := m.Labels[corev1.LabelMetadataName] == m.Name
	if named {
		n--
	}
	switch {
	case n == 0:
		return nil
	case n == 1 && m.Labels[config.InjectLabel] == config.InjectEnabled:
		return optedInLabels
	case !named:
		return m.Labels
	}
	out := make(map[string]string, n)
	for k, v := range m.Labels {
		if k != corev1.LabelMetadataName {
			out[k] = v
		}
	}
	return out
}

// NamespaceLabels returns the labels of ns, a namespace read from the cache or the API server, with the
// kubernetes.io/metadata.name label that the cache does not keep (see TrimNamespaceMetadata). It sets the
// label in ns's own map: ns must be the caller's, as every client.Reader.Get returns it (the cache returns
// a deep copy).
func NamespaceLabels(ns *metav1.PartialObjectMetadata) labels.Set {
	if ns.Labels == nil {
		ns.Labels = make(map[string]string, 1)
	}
	if _, ok := ns.Labels[corev1.LabelMetadataName]; !ok {
		ns.Labels[corev1.LabelMetadataName] = ns.Name
	}
	return ns.Labels
}

// NewInformer is the informer constructor of the cache that holds copies, namespaces and ServiceAccounts
// (cache.Options.NewInformer): client-go's, without the index by namespace that controller-runtime gives
// every informer. That index holds a set per namespace, one map per copy (about 250 bytes) for a
// namespace's one copy, and nothing reads it: the project reads these objects by key, and by the copies'
// name index. A List with client.InNamespace on this cache fails for want of it.
func NewInformer(lw toolscache.ListerWatcher, obj runtime.Object, resync time.Duration, indexers toolscache.Indexers) toolscache.SharedIndexInformer {
	kept := toolscache.Indexers{}
	for name, f := range indexers {
		if name != toolscache.NamespaceIndex {
			kept[name] = f
		}
	}
	return toolscache.NewSharedIndexInformer(lw, obj, resync, kept)
}
