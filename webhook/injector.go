// Package webhook holds the Pod admission handler: decode the Pod, decide which configured registries its
// images pull from, make sure the matching pull secrets exist in the Pod's namespace, and patch their
// references into spec.imagePullSecrets.
package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/internal/events"
	"github.com/pullsecret-injector/pullsecret-injector/internal/managed"
	"github.com/pullsecret-injector/pullsecret-injector/internal/metrics"
	sourcecache "github.com/pullsecret-injector/pullsecret-injector/internal/sources"
	"github.com/pullsecret-injector/pullsecret-injector/internal/ttl"
)

// Path is the URL path the Pod mutating webhook is served on.
const Path = "/mutate-v1-pod"

// createTimeout bounds a copy's create, retries included. The create runs detached from the requests
// waiting on it: no single caller's cancellation fails the others, and a create that outlives every
// request's budget still lands for the Pods already admitted with the reference.
const createTimeout = 30 * time.Second

// createBackoff spaces the retries of a create that failed for a reason that may pass (a timeout, a
// throttled or overloaded API server).
var createBackoff = wait.Backoff{Duration: 200 * time.Millisecond, Factor: 2, Jitter: 0.2, Steps: 8, Cap: 5 * time.Second}

// Injector is the admission handler for Pod CREATE requests.
type Injector struct {
	// Config is the configuration in force; a reload swaps it under a running handler.
	Config *config.Store
	// Sources answers reads of the source Secrets.
	Sources sourcecache.Reader
	// Cache answers reads on the hot path: namespaces and managed copies, both as metadata only.
	Cache client.Reader
	// APIReader reads from the API server directly, to confirm what a lagging cache does not show.
	APIReader client.Reader
	// Writer creates the copies.
	Writer client.Writer
	// Health says which sources hold a credential that cannot work; nil says none.
	Health CredentialProblems
	// Events records Events on the copies the handler creates; nil records none.
	Events *events.Recorder
	// ServiceAccounts says what to do when the Pod's ServiceAccount enforces mountable secrets; the zero
	// value is ServiceAccountSkip.
	ServiceAccounts ServiceAccountMode

	// creates coalesces concurrent creates of the same copy within this process: a Deployment scaled to 50
	// in a new namespace sends 50 requests at once, and one Create is enough.
	creates singleflight.Group
	// namespaces, foreign and serviceAccounts remember live reads, so that Pods a tenant creates cannot
	// turn into API calls one for one (see recent.go): a namespace's labels, a Secret of a copy's name that
	// is not ours (by namespace/name, trimmed as the copies' cache trims), an enforcing ServiceAccount.
	namespaces      ttl.Cache[labels.Set]
	foreign         ttl.Cache[metav1.Object]
	serviceAccounts serviceAccountReads
	memos           sync.Once
}

var _ admission.Handler = (*Injector)(nil)

// CredentialProblems says, from memory, what is wrong with a source Secret's credential: "" when nothing
// is, or when it is missing or of the wrong type, which the handler reports on its own.
type CredentialProblems interface {
	Problem(ref config.SecretRef) string
}

// Handle implements admission.Handler.
func (h *Injector) Handle(ctx context.Context, req admission.Request) admission.Response {
	resp, outcome := h.handle(ctx, req)
	if outcome != "" {
		metrics.Admission(outcome)
	}
	return resp
}

// handle answers the request and says what it did with the Pod; no outcome for what is not a Pod create.
func (h *Injector) handle(ctx context.Context, req admission.Request) (admission.Response, metrics.Outcome) {
	h.memos.Do(func() {
		h.namespaces.TTL, h.namespaces.Max = liveConfirmTTL, maxRecentReads
		h.foreign.TTL, h.foreign.Max = liveConfirmTTL, maxRecentReads
	})
	// The API server gives every request a UID; a review without one is not from an API server (an empty
	// body, "{}" or "null" decode as such a review).
	if req.UID == "" {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("admission request has no uid")), metrics.Error
	}
	if req.Operation != admissionv1.Create || req.SubResource != "" ||
		req.Resource.Group != "" || req.Resource.Resource != "pods" {
		return admission.Allowed("not a pod create"), ""
	}
	if req.Namespace == "" {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("pod create request has no namespace")), metrics.Error
	}
	pod, err := decodePod(req.Object.Raw)
	if err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decode pod: %w", err)), metrics.Error
	}
	// The logger gets its values only where something is logged: building them costs a warm admission
	// more than the rest of its logging.
	log := logf.FromContext(ctx)
	if pod.labels()[config.InjectLabel] == config.InjectDisabled {
		log.V(1).Info("Pod opted out by label", "namespace", req.Namespace)
		return admission.Allowed("pod opted out"), metrics.OptedOut
	}

	matcher := h.Config.Matcher()
	candidates, warnings := matchImages(matcher, pod)
	if len(candidates) == 0 {
		return withWarnings(admission.Allowed("no configured registry"), warnings), metrics.NothingToAdd
	}

	nsLabels, warning, err := h.namespaceLabels(ctx, matcher, req.Namespace, candidates)
	if warning != "" {
		warnings = append(warnings, warning)
	}
	if err != nil {
		log.Error(err, "Cannot read namespace, admitting Pod unchanged", "namespace", req.Namespace)
		return withWarnings(admission.Allowed("namespace unreadable"), warnings), metrics.Error
	}
	if nsLabels == nil || !matcher.NamespaceSelector().Matches(nsLabels) {
		log.V(1).Info("Namespace not opted in", "namespace", req.Namespace)
		return withWarnings(admission.Allowed("namespace not opted in"), warnings), metrics.NotSelected
	}

	existing := pod.Spec.ImagePullSecrets
	var added []string
	referenced := func(name string) bool {
		return slices.Contains(added, name) ||
			slices.ContainsFunc(existing, func(r corev1.LocalObjectReference) bool { return r.Name == name })
	}
	// The Pod's ServiceAccount matters only for a Secret the Pod does not reference yet; it is looked up
	// once, when the first such Secret comes.
	var sa *corev1.ServiceAccount
	saLooked := false
	// selected says some matching entry selects the namespace; when none does, the Pod was not selected.
	selected := false
	for i, e := range candidates {
		name := e.Registry.Secret.Name
		if slices.ContainsFunc(candidates[:i], func(c *config.Entry) bool { return c.Registry.Secret.Name == name }) ||
			!e.NamespaceSelector.Matches(nsLabels) {
			continue
		}
		selected = true
		named := referenced(name)
		if !named && !saLooked {
			sa, saLooked = h.enforcingServiceAccount(ctx, req.Namespace, pod.Spec.ServiceAccountName), true
		}
		if sa != nil && !named && !listsPullSecret(sa, name) {
			// The ServiceAccount admission plugin runs after the webhooks and would refuse the Pod.
			allowed, warning := h.allowOnServiceAccount(ctx, sa, name, isDryRun(req))
			if warning != "" {
				warnings = append(warnings, warning)
			}
			if !allowed {
				continue
			}
		}
		// A Pod that names the Secret itself (a chart that hard-codes imagePullSecrets) still gets the copy
		// made, without a second reference.
		if warning := h.ensureCopy(ctx, e, req.Namespace, isDryRun(req), named); warning != "" {
			warnings = append(warnings, warning)
		}
		if h.Health != nil {
			if problem := h.Health.Problem(e.Registry.Secret); problem != "" {
				warnings = append(warnings, fmt.Sprintf("pullsecret-injector: source secret %s gives the kubelet no credential "+
					"for this Pod's images, its pulls may fail: %s", e.Registry.Secret, problem))
			}
		}
		if !named {
			added = append(added, name)
		}
	}
	if len(added) == 0 {
		if !selected {
			return withWarnings(admission.Allowed("no entry selects the namespace"), warnings), metrics.NotSelected
		}
		return withWarnings(admission.Allowed("nothing to add"), warnings), metrics.NothingToAdd
	}
	if log.V(1).Enabled() {
		log.V(1).Info("Adding image pull secrets", "namespace", req.Namespace, "added", added)
	}
	resp, err := podPatch(pod, added, injections(candidates, added))
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err), metrics.Error
	}
	return withWarnings(resp, warnings), metrics.Injected
}

// injections says, for each added Secret, which configured registries the Pod's images matched.
func injections(candidates []*config.Entry, added []string) []Injection {
	out := make([]Injection, len(added))
	for i, name := range added {
		out[i].Secret = name
		for _, e := range candidates {
			if e.Registry.Secret.Name == name {
				out[i].Registries = append(out[i].Registries, e.Registry.Registry)
			}
		}
	}
	return out
}

// matchImages returns the configured entries any of the Pod's images pulls from, in config order, without
// applying the entries' namespace selectors yet.
func matchImages(matcher *config.Matcher, pod *podFields) ([]*config.Entry, []string) {
	var matched []*config.Entry
	var warnings []string
	for _, containers := range [...][]containerImage{pod.Spec.InitContainers, pod.Spec.Containers, pod.Spec.EphemeralContainers} {
		for _, c := range containers {
			entries, err := matcher.MatchImage(c.Image)
			if err != nil {
				warnings = append(warnings, fmt.Sprintf("pullsecret-injector: image %q is not a valid reference, no pull secret added for it: %v", c.Image, err))
				continue
			}
			// Entries are few (they come from the configuration), so a linear search beats a map.
			for _, e := range entries {
				if !slices.Contains(matched, e) {
					matched = append(matched, e)
				}
			}
		}
	}
	slices.SortFunc(matched, func(a, b *config.Entry) int { return a.Index - b.Index })
	return matched, warnings
}

// namespaceLabels returns the labels of the namespace, nil if it does not exist. It trusts the cache only
// when the cache's answer cannot make a Pod miss a secret: a namespace the cache does not show, shows
// without the opt-in label, or shows without a label an entry's selector needs may have been created or
// labelled a moment ago, so those answers are confirmed with a live read.
func (h *Injector) namespaceLabels(ctx context.Context, matcher *config.Matcher, name string, candidates []*config.Entry) (labels.Set, string, error) {
	cached, err := getNamespace(ctx, h.Cache, name)
	if err != nil {
		logf.FromContext(ctx).V(1).Info("Namespace cache read failed, reading live", "error", err.Error())
	}
	var reason string
	switch {
	case cached == nil:
		reason = "not in cache"
	case !matcher.NamespaceSelector().Matches(cached):
		reason = "cached without the opt-in label"
	case !allSelected(candidates, cached):
		reason = "cached without a label an entry's selector needs"
	default:
		return cached, "", nil
	}
	if live, ok := h.namespaces.Get(name); ok {
		return live, "", nil // read live less than liveConfirmTTL ago
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
	h.namespaces.Put(name, live)
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
	ns := managed.PartialNamespace()
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

// ServiceAccountMode says what the webhook does for a Pod whose ServiceAccount enforces mountable secrets
// (annotation kubernetes.io/enforce-mountable-secrets: "true") and does not list a Secret the Pod would
// get in its imagePullSecrets: the ServiceAccount admission plugin, which runs after the webhooks, refuses
// a Pod that references such a Secret.
type ServiceAccountMode string

const (
	// ServiceAccountSkip adds nothing for that Secret and warns: the Pod is admitted as it would have been
	// without the webhook. The default.
	ServiceAccountSkip ServiceAccountMode = "skip"
	// ServiceAccountAppend appends the Secret to the ServiceAccount's imagePullSecrets, then references it.
	ServiceAccountAppend ServiceAccountMode = "append"
)

// enforcingServiceAccount returns the Pod's ServiceAccount when it enforces mountable secrets, nil when it
// does not or cannot be told. Only the annotation is cached (ServiceAccounts are cached as trimmed
// metadata); the ServiceAccount itself is read live, and only for one that enforces, which is rare.
func (h *Injector) enforcingServiceAccount(ctx context.Context, namespace, name string) *corev1.ServiceAccount {
	if name == "" {
		name = "default" // the ServiceAccount admission plugin's default, set before the webhooks run
	}
	key := types.NamespacedName{Namespace: namespace, Name: name}
	meta := managed.PartialServiceAccount()
	// A ServiceAccount the cache does not show yet is taken as not enforcing: reading it live would cost
	// every Pod of a ServiceAccount that does not exist an API call, for an annotation that is deprecated
	// and a cache that lags by milliseconds (see docs/limitations.md).
	if err := h.Cache.Get(ctx, key, meta); err != nil || !enforcesMountableSecrets(meta) {
		return nil
	}
	if sa := h.serviceAccounts.get(key.String(), meta.ResourceVersion); sa != nil {
		return sa // unchanged since it was read live
	}
	sa := &corev1.ServiceAccount{}
	if err := h.APIReader.Get(ctx, key, sa); err != nil {
		logf.FromContext(ctx).Error(err, "Cannot read ServiceAccount that enforces mountable secrets", "serviceAccount", name)
		return nil
	}
	h.serviceAccounts.put(key.String(), sa)
	return sa
}

func enforcesMountableSecrets(sa metav1.Object) bool {
	enforce, _ := strconv.ParseBool(sa.GetAnnotations()[managed.EnforceMountableSecretsAnnotation])
	return enforce
}

func listsPullSecret(sa *corev1.ServiceAccount, name string) bool {
	return slices.ContainsFunc(sa.ImagePullSecrets, func(r corev1.LocalObjectReference) bool { return r.Name == name })
}

// allowOnServiceAccount decides, for a Secret the Pod's enforcing ServiceAccount does not list, whether the
// Pod may reference it, appending it to the ServiceAccount first in ServiceAccountAppend mode.
func (h *Injector) allowOnServiceAccount(ctx context.Context, sa *corev1.ServiceAccount, secret string, dryRun bool) (bool, string) {
	if h.ServiceAccounts != ServiceAccountAppend {
		return false, fmt.Sprintf("pullsecret-injector: service account %q enforces mountable secrets and does not list %q in its "+
			"imagePullSecrets; %q is not added, or the ServiceAccount admission plugin would refuse the Pod", sa.Name, secret, secret)
	}
	if dryRun {
		return true, ""
	}
	if err := h.appendPullSecret(ctx, sa, secret); err != nil {
		logf.FromContext(ctx).Error(err, "Cannot add pull secret to ServiceAccount", "serviceAccount", sa.Name, "secret", secret)
		return false, fmt.Sprintf("pullsecret-injector: service account %q enforces mountable secrets and %q could not be added "+
			"to its imagePullSecrets, so it is not referenced: %v", sa.Name, secret, err)
	}
	logf.FromContext(ctx).Info("Added pull secret to ServiceAccount that enforces mountable secrets", "serviceAccount", sa.Name, "secret", secret)
	return true, ""
}

// appendPullSecret appends secret to sa's imagePullSecrets with a JSON patch that fails if another writer
// changed the list since sa was read; it then reads again and retries. sa is left as the API server stored
// it, so a second Secret for the same Pod patches on top of the first.
func (h *Injector) appendPullSecret(ctx context.Context, sa *corev1.ServiceAccount, secret string) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		ops := []map[string]any{{"op": "test", "path": "/metadata/resourceVersion", "value": sa.ResourceVersion}}
		ref := map[string]string{"name": secret}
		if sa.ImagePullSecrets == nil {
			ops = append(ops, map[string]any{"op": "add", "path": "/imagePullSecrets", "value": []any{ref}})
		} else {
			ops = append(ops, map[string]any{"op": "add", "path": "/imagePullSecrets/-", "value": ref})
		}
		body, err := json.Marshal(ops)
		if err != nil {
			return fmt.Errorf("build patch: %w", err)
		}
		patched := sa.DeepCopy()
		err = h.Writer.Patch(ctx, patched, client.RawPatch(types.JSONPatchType, body))
		// A failed test operation is a 422 Invalid from the API server.
		if apierrors.IsInvalid(err) || apierrors.IsConflict(err) {
			fresh := &corev1.ServiceAccount{}
			if gerr := h.APIReader.Get(ctx, client.ObjectKeyFromObject(sa), fresh); gerr != nil {
				return gerr
			}
			if listsPullSecret(fresh, secret) {
				*sa = *fresh
				return nil
			}
			*sa = *fresh
			return apierrors.NewConflict(corev1.Resource("serviceaccounts"), sa.Name, err)
		}
		if err != nil {
			return fmt.Errorf("patch service account %q: %w", sa.Name, err)
		}
		*sa = *patched
		return nil
	})
}

// ensureCopy makes sure the Pod's namespace has the entry's Secret, and returns a warning for the user when
// something is wrong. The Pod references the Secret whatever happens: a Pod admitted with a reference to a
// Secret that is repaired later pulls on the kubelet's next retry, whereas a refused Pod may be a
// controller's problem for a long time. podNamed says the Pod names the Secret
// itself, so an unmanaged Secret of that name is what it asked for and no warning is due.
func (h *Injector) ensureCopy(ctx context.Context, e *config.Entry, namespace string, dryRun, podNamed bool) string {
	src := e.Registry.Secret
	if namespace == src.Namespace {
		_, warning := h.source(ctx, e) // the Pod references the source itself
		return warning
	}
	// The warm path: the copy exists and is ours. Whether it holds the source's current bytes is the
	// reconciler's business, not the Pod's.
	key := types.NamespacedName{Namespace: namespace, Name: src.Name}
	existing := managed.PartialSecret()
	err := h.Cache.Get(ctx, key, existing)
	if err == nil && managed.IsManaged(existing) {
		return ""
	}
	if err != nil && !apierrors.IsNotFound(err) {
		logf.FromContext(ctx).V(1).Info("Copy cache read failed, falling back to the API server", "error", err.Error())
	}
	source, warning := h.source(ctx, e)
	if theirs, ok := h.foreign.Get(key.String()); ok {
		// Someone else's Secret has the copy's name; a create would answer AlreadyExists again.
		return join(warning, ownership(theirs, src, namespace, podNamed))
	}
	if dryRun {
		// No write on a dry run, but the same answer as a real request, including the warning for a
		// Secret this project does not own.
		if err := h.APIReader.Get(ctx, key, existing); err == nil {
			h.rememberForeign(key, existing)
			return join(warning, ownership(existing, src, namespace, podNamed))
		}
		return warning
	}
	pending := h.creates.DoChan(key.String(), func() (any, error) {
		// Detached from the request: the first caller's cancellation must not fail the callers sharing it.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), createTimeout)
		defer cancel()
		return h.create(cctx, src, source, namespace), nil
	})
	var created createResult
	select {
	case res := <-pending:
		created = res.Val.(createResult)
	case <-ctx.Done():
		// The request's budget is spent (see withBudget): answer now, with the reference, rather than let
		// the API server apply the failure policy. The create goes on and lands for this Pod too.
		logf.FromContext(ctx).Info("Copy not created within the request's budget; admitting the Pod with the reference",
			"namespace", namespace, "secret", src.Name)
		return join(warning, fmt.Sprintf("pullsecret-injector: the copy of %s into namespace %q is still being created; "+
			"the Pod references it and its pulls succeed once it exists", src, namespace))
	}
	if !created.managed {
		h.rememberForeign(key, created.existing)
		return join(warning, ownership(created.existing, src, namespace, podNamed))
	}
	return join(warning, created.warning)
}

// rememberForeign remembers, for liveConfirmTTL, that the Secret at key is not a copy of ours, keeping only
// the metadata the ownership warning reads: a tenant's Secret can carry any amount of metadata.
func (h *Injector) rememberForeign(key types.NamespacedName, existing metav1.Object) {
	if managed.IsManaged(existing) {
		return
	}
	m, ok := existing.(*metav1.PartialObjectMetadata)
	if !ok {
		return
	}
	trimmed, err := managed.TrimCopyMetadata(m)
	if err != nil {
		return
	}
	h.foreign.Put(key.String(), trimmed.(*metav1.PartialObjectMetadata))
}

// source returns the entry's source Secret when it can be copied, and otherwise nil and a warning. The
// copy is then a placeholder that the reconciler fills in once the source is usable.
func (h *Injector) source(ctx context.Context, e *config.Entry) (*corev1.Secret, string) {
	src := e.Registry.Secret
	log := logf.FromContext(ctx).WithValues("source", src.String())
	s, err := h.readSource(ctx, src)
	switch {
	case apierrors.IsNotFound(err):
		log.Info("Source secret not found; the Pod references its copy, which is filled in when the source exists")
		return nil, fmt.Sprintf("pullsecret-injector: source secret %s for registry %q does not exist yet; %q is referenced "+
			"and gets its credentials when the source is created", src, e.Registry.Registry, src.Name)
	case err != nil:
		log.Error(err, "Cannot read source secret")
		return nil, fmt.Sprintf("pullsecret-injector: cannot read source secret %s, %q is referenced and gets its credentials "+
			"when the source can be read: %v", src, src.Name, err)
	case !managed.Usable(s):
		log.Info("Source secret has the wrong type, not copied", "type", string(s.Type))
		return nil, fmt.Sprintf("pullsecret-injector: source secret %s has type %q, not %q; its credentials are not copied",
			src, s.Type, corev1.SecretTypeDockerConfigJson)
	}
	return s, ""
}

// readSource returns the source Secret from memory, or from the API server when memory cannot answer or
// does not have it (yet): a source created just before the Pod must not make the Pod miss its secret.
func (h *Injector) readSource(ctx context.Context, ref config.SecretRef) (*corev1.Secret, error) {
	if s, synced := h.Sources.Get(ref); s != nil {
		return s, nil
	} else if synced {
		logf.FromContext(ctx).V(1).Info("Source secret not in cache, reading it live", "source", ref.String())
	}
	s := &corev1.Secret{}
	if err := h.APIReader.Get(ctx, types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}, s); err != nil {
		return nil, err
	}
	return s, nil
}

type createResult struct {
	// managed is false when a Secret of the copy's name exists and is not ours; existing then holds it.
	managed  bool
	existing metav1.Object
	warning  string
}

// create creates the copy of src in namespace: the source's data when source is non-nil, a placeholder
// otherwise.
func (h *Injector) create(ctx context.Context, src config.SecretRef, source *corev1.Secret, namespace string) createResult {
	log := logf.FromContext(ctx).WithValues("namespace", namespace, "secret", src.Name, "source", src.String())
	cp := managed.Placeholder(src, namespace)
	if source != nil {
		cp = managed.Copy(source, namespace)
	}
	created := cp.DeepCopy()
	err := retry.OnError(createBackoff, retriable, func() error {
		created = cp.DeepCopy()
		return h.Writer.Create(ctx, created)
	})
	switch {
	case err == nil:
		log.Info("Copied pull secret", "placeholder", source == nil)
		metrics.CopyOperation(src.String(), metrics.Created)
		note := "Copied from %s for a Pod in this namespace"
		if source == nil {
			note = "Created as a placeholder for %s, which is missing or unusable; filled in when it can be copied"
		}
		h.Events.Normal(created, events.ReasonCopyCreated, events.ActionCreate, note, src)
		return createResult{managed: true}
	case apierrors.IsAlreadyExists(err):
		// Another replica, or a Secret someone else made: only the label tells which.
		existing := managed.PartialSecret()
		if err := h.APIReader.Get(ctx, client.ObjectKeyFromObject(cp), existing); err != nil {
			log.Error(err, "Cannot read existing secret")
			return createResult{managed: true, warning: fmt.Sprintf("pullsecret-injector: secret %q exists in namespace %q but cannot be read: %v",
				src.Name, namespace, err)}
		}
		return createResult{managed: managed.IsManaged(existing), existing: existing}
	default:
		log.Error(err, "Cannot copy pull secret")
		metrics.CopyOperation(src.String(), metrics.Failed)
		return createResult{managed: true, warning: fmt.Sprintf("pullsecret-injector: cannot copy secret %s into namespace %q, "+
			"it is referenced and the next Pod that needs it tries again: %v", src, namespace, err)}
	}
}

// retriable reports whether a create may succeed if tried again shortly.
func retriable(err error) bool {
	return apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsTooManyRequests(err) ||
		apierrors.IsServiceUnavailable(err) || apierrors.IsInternalError(err)
}

// ownership returns a warning when an existing Secret of the copy's name is not one this project manages,
// unless the Pod named that Secret itself.
func ownership(existing metav1.Object, src config.SecretRef, namespace string, podNamed bool) string {
	if managed.IsManaged(existing) || podNamed {
		return ""
	}
	return fmt.Sprintf("pullsecret-injector: secret %q in namespace %q is not managed by pullsecret-injector; "+
		"it is referenced as it is and not replaced with a copy of %s", existing.GetName(), namespace, src)
}

func join(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "; " + b
}

func withWarnings(resp admission.Response, warnings []string) admission.Response {
	resp.Warnings = append(resp.Warnings, warnings...)
	return resp
}

func isDryRun(req admission.Request) bool {
	return req.DryRun != nil && *req.DryRun
}
