// Package webhook holds the Pod admission handler: decode the Pod, decide which configured registries its
// images pull from, make sure the matching pull secrets exist in the Pod's namespace, and patch their
// references into spec.imagePullSecrets.
package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"

	"golang.org/x/sync/singleflight"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/pullsecret-injector/pullsecret-injector/config"
)

const (
	// Path is the URL path the Pod mutating webhook is served on.
	Path = "/mutate-v1-pod"

	// ManagedByLabel marks the Secrets this project created; only those are ever written to again.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	// ManagedByValue is the value of ManagedByLabel on the Secrets this project created.
	ManagedByValue = "pullsecret-injector"
	// SourceAnnotation records "namespace/name" of the Secret a copy was made from.
	SourceAnnotation = "pullsecret-injector.io/source"
)

// Injector is the admission handler for Pod CREATE requests.
type Injector struct {
	// Matcher decides which configured registries an image pulls from.
	Matcher *config.Matcher
	// Cache answers reads on the hot path: namespaces (metadata), source Secrets and managed copies.
	Cache client.Reader
	// APIReader reads from the API server directly, to confirm what a lagging cache does not show.
	APIReader client.Reader
	// Writer creates the copies.
	Writer client.Writer
	// Decoder decodes the Pod from the request.
	Decoder admission.Decoder

	// creates coalesces concurrent creates of the same copy within this process: a Deployment scaled to 50
	// in a new namespace sends 50 requests at once, and one Create is enough.
	creates singleflight.Group
}

var _ admission.Handler = (*Injector)(nil)

// Handle implements admission.Handler.
func (h *Injector) Handle(ctx context.Context, req admission.Request) admission.Response {
	if req.Operation != admissionv1.Create || req.SubResource != "" ||
		req.Resource.Group != "" || req.Resource.Resource != "pods" {
		return admission.Allowed("not a pod create")
	}
	if req.Namespace == "" {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("pod create request has no namespace"))
	}
	pod := &corev1.Pod{}
	if err := h.Decoder.Decode(req, pod); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decode pod: %w", err))
	}
	log := logf.FromContext(ctx).WithValues("namespace", req.Namespace)
	if pod.Labels[config.InjectLabel] == config.InjectDisabled {
		log.V(1).Info("Pod opted out by label")
		return admission.Allowed("pod opted out")
	}

	candidates, warnings := h.matchImages(pod)
	if len(candidates) == 0 {
		return withWarnings(admission.Allowed("no configured registry"), warnings)
	}

	nsLabels, warning, err := h.namespaceLabels(ctx, req.Namespace, candidates)
	if warning != "" {
		warnings = append(warnings, warning)
	}
	if err != nil {
		log.Error(err, "Cannot read namespace, admitting Pod unchanged")
		return withWarnings(admission.Allowed("namespace unreadable"), warnings)
	}
	if nsLabels == nil || !h.Matcher.NamespaceSelector().Matches(nsLabels) {
		log.V(1).Info("Namespace not opted in")
		return withWarnings(admission.Allowed("namespace not opted in"), warnings)
	}

	mutated := pod.DeepCopy()
	referenced := make(map[string]bool, len(pod.Spec.ImagePullSecrets))
	for _, ref := range pod.Spec.ImagePullSecrets {
		referenced[ref.Name] = true
	}
	for _, e := range candidates {
		name := e.Registry.Secret.Name
		if referenced[name] || !e.NamespaceSelector.Matches(nsLabels) {
			continue
		}
		reference, warning := h.ensureCopy(ctx, e, req.Namespace, isDryRun(req))
		if warning != "" {
			warnings = append(warnings, warning)
		}
		if reference {
			mutated.Spec.ImagePullSecrets = append(mutated.Spec.ImagePullSecrets, corev1.LocalObjectReference{Name: name})
			referenced[name] = true
		}
	}
	if len(mutated.Spec.ImagePullSecrets) == len(pod.Spec.ImagePullSecrets) {
		return withWarnings(admission.Allowed("nothing to add"), warnings)
	}
	if log.V(1).Enabled() {
		log.V(1).Info("Adding image pull secrets", "added", names(mutated.Spec.ImagePullSecrets[len(pod.Spec.ImagePullSecrets):]))
	}
	return withWarnings(patch(pod, mutated), warnings)
}

// matchImages returns the configured entries any of the Pod's images pulls from, in config order, without
// applying the entries' namespace selectors yet.
func (h *Injector) matchImages(pod *corev1.Pod) ([]*config.Entry, []string) {
	var warnings []string
	byIndex := map[int]*config.Entry{}
	check := func(image string) {
		entries, err := h.Matcher.MatchImage(image)
		if err != nil {
			warnings = append(warnings, fmt.Sprintf("pullsecret-injector: image %q is not a valid reference, no pull secret added for it: %v", image, err))
			return
		}
		for _, e := range entries {
			byIndex[e.Index] = e
		}
	}
	for _, c := range pod.Spec.InitContainers {
		check(c.Image)
	}
	for _, c := range pod.Spec.Containers {
		check(c.Image)
	}
	for _, c := range pod.Spec.EphemeralContainers {
		check(c.Image)
	}
	matched := slices.SortedFunc(maps.Values(byIndex), func(a, b *config.Entry) int { return a.Index - b.Index })
	return matched, warnings
}

// namespaceLabels returns the labels of the namespace, nil if it does not exist. It trusts the cache only
// when the cache's answer cannot make a Pod miss a secret: a namespace the cache does not show, shows
// without the opt-in label, or shows without a label an entry's selector needs may have been created or
// labelled a moment ago, so those answers are confirmed with a live read.
func (h *Injector) namespaceLabels(ctx context.Context, name string, candidates []*config.Entry) (labels.Set, string, error) {
	cached, err := getNamespace(ctx, h.Cache, name)
	if err != nil {
		logf.FromContext(ctx).V(1).Info("Namespace cache read failed, reading live", "error", err.Error())
	}
	var reason string
	switch {
	case cached == nil:
		reason = "not in cache"
	case !h.Matcher.NamespaceSelector().Matches(cached):
		reason = "cached without the opt-in label"
	case !allSelected(candidates, cached):
		reason = "cached without a label an entry's selector needs"
	default:
		return cached, "", nil
	}
	logf.FromContext(ctx).V(1).Info("Confirming namespace labels with a live read", "namespace", name, "reason", reason)
	live, err := getNamespace(ctx, h.APIReader, name)
	if err != nil {
		if cached != nil {
			return cached, fmt.Sprintf("pullsecret-injector: cannot confirm the labels of namespace %q, used cached ones: %v", name, err), nil
		}
		return nil, fmt.Sprintf("pullsecret-injector: cannot read namespace %q, no pull secret added: %v", name, err),
			fmt.Errorf("read namespace %q: %w", name, err)
	}
	return live, "", nil
}

func allSelected(entries []*config.Entry, nsLabels labels.Set) bool {
	for _, e := range entries {
		if !e.NamespaceSelector.Matches(nsLabels) {
			return false
		}
	}
	return true
}

// getNamespace reads only the namespace's metadata, so the cache holds no namespace specs or statuses.
// It returns nil labels and no error when the namespace does not exist.
func getNamespace(ctx context.Context, r client.Reader, name string) (labels.Set, error) {
	ns := &metav1.PartialObjectMetadata{}
	ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	if err := r.Get(ctx, types.NamespacedName{Name: name}, ns); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	if ns.Labels == nil {
		return labels.Set{}, nil
	}
	return ns.Labels, nil
}

// ensureCopy makes sure the Pod's namespace has the entry's Secret. It reports whether the Pod should
// reference it, and a warning for the user when something is wrong. It never fails the request: a Pod
// admitted with a reference to a Secret that is repaired later pulls on the kubelet's next retry, whereas
// a refused Pod may be a controller's problem for a long time.
func (h *Injector) ensureCopy(ctx context.Context, e *config.Entry, namespace string, dryRun bool) (bool, string) {
	log := logf.FromContext(ctx).WithValues("namespace", namespace, "secret", e.Registry.Secret.Name)
	src := e.Registry.Secret
	source, err := h.source(ctx, src)
	switch {
	case apierrors.IsNotFound(err):
		log.Info("Source secret not found", "source", src.String())
		return false, fmt.Sprintf("pullsecret-injector: source secret %s for registry %q does not exist, %q not added to imagePullSecrets",
			src, e.Registry.Registry, src.Name)
	case err != nil:
		log.Error(err, "Cannot read source secret", "source", src.String())
		return false, fmt.Sprintf("pullsecret-injector: cannot read source secret %s: %v", src, err)
	}
	if namespace == src.Namespace {
		return true, ""
	}
	if source.Type != corev1.SecretTypeDockerConfigJson {
		log.Info("Source secret has the wrong type, not copied", "source", src.String(), "type", string(source.Type))
		return true, fmt.Sprintf("pullsecret-injector: source secret %s has type %q, not %q; it was not copied into namespace %q",
			src, source.Type, corev1.SecretTypeDockerConfigJson, namespace)
	}

	key := types.NamespacedName{Namespace: namespace, Name: src.Name}
	existing := &corev1.Secret{}
	err = h.Cache.Get(ctx, key, existing)
	if err == nil {
		return true, ownership(existing, src, namespace)
	}
	if !apierrors.IsNotFound(err) {
		log.V(1).Info("Copy cache read failed, falling back to the API server", "error", err.Error())
	}
	if dryRun {
		// No write on a dry run, but the same answer as a real request, including the warning for a
		// Secret this project does not own.
		if err := h.APIReader.Get(ctx, key, existing); err == nil {
			return true, ownership(existing, src, namespace)
		}
		return true, ""
	}
	res, _, _ := h.creates.Do(key.String(), func() (any, error) {
		return h.create(ctx, source, namespace), nil
	})
	return true, res.(string)
}

// source returns the source Secret from the cache, or from the API server when the cache does not have it
// (yet): a source created just before the Pod must not make the Pod miss its secret.
func (h *Injector) source(ctx context.Context, ref config.SecretRef) (*corev1.Secret, error) {
	key := types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}
	s := &corev1.Secret{}
	if err := h.Cache.Get(ctx, key, s); err == nil {
		return s, nil
	}
	logf.FromContext(ctx).V(1).Info("Source secret not in cache, reading it live", "source", ref.String())
	if err := h.APIReader.Get(ctx, key, s); err != nil {
		return nil, err
	}
	return s, nil
}

// create creates the copy of source in namespace and returns a warning for the user, if any.
func (h *Injector) create(ctx context.Context, source *corev1.Secret, namespace string) string {
	log := logf.FromContext(ctx).WithValues("namespace", namespace, "secret", source.Name)
	src := config.SecretRef{Namespace: source.Namespace, Name: source.Name}
	cp := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:        source.Name,
			Namespace:   namespace,
			Labels:      map[string]string{ManagedByLabel: ManagedByValue},
			Annotations: map[string]string{SourceAnnotation: src.String()},
		},
		Type: source.Type,
		Data: source.Data,
	}
	err := h.Writer.Create(ctx, cp)
	switch {
	case err == nil:
		log.Info("Copied pull secret", "source", src.String())
		return ""
	case apierrors.IsAlreadyExists(err):
		// Another replica, or a Secret someone else made: only the label tells which.
		existing := &corev1.Secret{}
		if err := h.APIReader.Get(ctx, client.ObjectKeyFromObject(cp), existing); err != nil {
			log.Error(err, "Cannot read existing secret")
			return fmt.Sprintf("pullsecret-injector: secret %q exists in namespace %q but cannot be read: %v", source.Name, namespace, err)
		}
		return ownership(existing, src, namespace)
	default:
		log.Error(err, "Cannot copy pull secret", "source", src.String())
		return fmt.Sprintf("pullsecret-injector: cannot copy secret %s into namespace %q: %v", src, namespace, err)
	}
}

// ownership returns a warning when an existing Secret of the copy's name is not one this project manages.
func ownership(existing *corev1.Secret, src config.SecretRef, namespace string) string {
	if existing.Labels[ManagedByLabel] == ManagedByValue {
		return ""
	}
	return fmt.Sprintf("pullsecret-injector: secret %q in namespace %q is not managed by pullsecret-injector; "+
		"it is referenced as it is and not replaced with a copy of %s", existing.Name, namespace, src)
}

// patch returns the JSON patch that turns pod into mutated. Both sides are marshalled from the same typed
// struct, so the patch holds only the change made here: the round trip from the request's raw JSON can
// neither add noise nor drop fields this build's Pod type does not know.
func patch(pod, mutated *corev1.Pod) admission.Response {
	original, err := json.Marshal(pod)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("marshal pod: %w", err))
	}
	changed, err := json.Marshal(mutated)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("marshal pod: %w", err))
	}
	return admission.PatchResponseFromRaw(original, changed)
}

func withWarnings(resp admission.Response, warnings []string) admission.Response {
	resp.Warnings = append(resp.Warnings, warnings...)
	return resp
}

func isDryRun(req admission.Request) bool {
	return req.DryRun != nil && *req.DryRun
}

func names(refs []corev1.LocalObjectReference) []string {
	out := make([]string, 0, len(refs))
	for _, r := range refs {
		out = append(out, r.Name)
	}
	return out
}
