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
	"github.com/pullsecret-injector/pullsecret-injector/internal/redact"
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
	// namespaces, copies and serviceAccounts remember live answers, so that Pods a tenant creates cannot
	// turn into API calls one for one (see recent.go for each one's bound in bytes): a namespace's labels
	// for liveConfirmTTL; what a live answer said about the Secret at a copy's name (someone else's, or
	// missing as a dry-run create found), by "namespace/name" only, for liveConfirmTTL; what an enforcing
	// ServiceAccount lists of the configured Secrets, while it is unchanged.
	namespaces      ttl.Cache[labels.Set]
	copies          ttl.Cache[copyState]
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
		h.namespaces.TTL, h.namespaces.MaxBytes, h.namespaces.Size = liveConfirmTTL, namespaceMemoBytes, labelsBytes
		h.copies.TTL, h.copies.MaxBytes = liveConfirmTTL, copyMemoBytes
	})
	// The API server gives every request a UID; a review without one is not from an API server (an empty
	// body, "{}" or "null" decode as such a review).
	if req.UID == "" {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("admission request has no uid")), metrics.Error
	}
	pods := req.Resource.Group == "" && req.Resource.Resource == "pods"
	switch {
	case pods && req.Operation == admissionv1.Create && req.SubResource == "":
		return h.handleCreate(ctx, req)
	case pods && req.Operation == admissionv1.Update && req.SubResource == "ephemeralcontainers":
		return h.handleEphemeral(ctx, req), "" // not a Pod create: not counted among the admissions
	}
	return admission.Allowed("not a pod create"), ""
}

// decodeRequestPod decodes the Pod of a request on pods, or returns the response that ends the request: a
// 400 for a request without a namespace or a Pod, an allow for a Pod opted out.
func decodeRequestPod(ctx context.Context, req admission.Request) (*podFields, *admission.Response, metrics.Outcome) {
	if req.Namespace == "" {
		resp := admission.Errored(http.StatusBadRequest, fmt.Errorf("pod request has no namespace"))
		return nil, &resp, metrics.Error
	}
	pod, err := decodePod(req.Object.Raw)
	if err != nil {
		resp := admission.Errored(http.StatusBadRequest, fmt.Errorf("decode pod: %w", err))
		return nil, &resp, metrics.Error
	}
	if pod.labels()[config.InjectLabel] == config.InjectDisabled {
		logf.FromContext(ctx).V(1).Info("Pod opted out by label", "namespace", req.Namespace)
		resp := admission.Allowed("pod opted out")
		return nil, &resp, metrics.OptedOut
	}
	return pod, nil, ""
}

// selection is what a request's images need in its namespace: the configuration in force, the entries the
// images match (in config order, their own selectors not applied yet), the namespace's labels, and the
// warnings so far.
type selection struct {
	matcher    *config.Matcher
	candidates []*config.Entry
	nsLabels   labels.Set
	warnings   []string
}

// selectEntries matches images and reads the namespace, or returns the response that ends the request:
// no image pulls from a configured registry, or the namespace is not opted in or cannot be read.
func (h *Injector) selectEntries(ctx context.Context, namespace string, images []string) (*selection, *admission.Response, metrics.Outcome) {
	// The logger gets its values only where something is logged: building them costs a warm admission
	// more than the rest of its logging.
	log := logf.FromContext(ctx)
	matcher := h.Config.Matcher()
	candidates, warnings := matchImages(matcher, images)
	if len(candidates) == 0 {
		resp := withWarnings(admission.Allowed("no configured registry"), warnings)
		return nil, &resp, metrics.NothingToAdd
	}
	nsLabels, warning, err := h.namespaceLabels(ctx, matcher, namespace, candidates)
	if warning != "" {
		warnings = append(warnings, warning)
	}
	if err != nil {
		log.Error(err, "Cannot read namespace, admitting Pod unchanged", "namespace", namespace)
		resp := withWarnings(admission.Allowed("namespace unreadable"), warnings)
		return nil, &resp, metrics.Error
	}
	if nsLabels == nil || !matcher.NamespaceSelector().Matches(nsLabels) {
		log.V(1).Info("Namespace not opted in", "namespace", namespace)
		resp := withWarnings(admission.Allowed("namespace not opted in"), warnings)
		return nil, &resp, metrics.NotSelected
	}
	return &selection{matcher: matcher, candidates: candidates, nsLabels: nsLabels, warnings: warnings}, nil, ""
}

// handleCreate answers a Pod create: the copies its images need, and their references patched in.
func (h *Injector) handleCreate(ctx context.Context, req admission.Request) (admission.Response, metrics.Outcome) {
	pod, done, outcome := decodeRequestPod(ctx, req)
	if done != nil {
		return *done, outcome
	}
	sel, done, outcome := h.selectEntries(ctx, req.Namespace, pod.images())
	if done != nil {
		return *done, outcome
	}
	plan := h.planReferences(ctx, req, pod, sel)
	if len(plan.added) == 0 {
		if !plan.selected {
			return withWarnings(admission.Allowed("no entry selects the namespace"), plan.warnings), metrics.NotSelected
		}
		return withWarnings(admission.Allowed("nothing to add"), plan.warnings), metrics.NothingToAdd
	}
	if log := logf.FromContext(ctx); log.V(1).Enabled() {
		log.V(1).Info("Adding image pull secrets", "namespace", req.Namespace, "added", plan.added)
	}
	resp, err := podPatch(pod, plan.added, injections(sel.candidates, claimed(sel.candidates, plan.added, plan.namedSelected, pod.injected())))
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err), metrics.Error
	}
	return withWarnings(resp, plan.warnings), metrics.Injected
}

// referencePlan is what a Pod create gets: the Secrets to add, in configuration order; the Secrets the Pod
// references already that the webhook would add for its images (on a reinvocation, the ones an earlier
// call added are among them, see claimed); whether any matching entry selects the namespace (when none
// does, the Pod was not selected); and the warnings to answer with.
type referencePlan struct {
	added, namedSelected []string
	selected             bool
	warnings             []string
}

// planReferences decides, entry by entry in configuration order, which Secrets the Pod gets, and makes
// sure the copy of each exists (a dry run writes nothing).
func (h *Injector) planReferences(ctx context.Context, req admission.Request, pod *podFields, sel *selection) referencePlan {
	plan := referencePlan{warnings: sel.warnings}
	existing := pod.Spec.ImagePullSecrets
	referenced := func(name string) bool {
		return slices.Contains(plan.added, name) ||
			slices.ContainsFunc(existing, func(r corev1.LocalObjectReference) bool { return r.Name == name })
	}
	// The Pod's ServiceAccount matters only for a Secret the Pod does not reference yet; it is looked up
	// once, when the first such Secret comes.
	var sa *enforcingServiceAccount
	saLooked := false
	for i, e := range sel.candidates {
		name := e.Registry.Secret.Name
		if slices.ContainsFunc(sel.candidates[:i], func(c *config.Entry) bool { return c.Registry.Secret.Name == name }) ||
			!e.NamespaceSelector.Matches(sel.nsLabels) {
			continue
		}
		plan.selected = true
		named := referenced(name)
		if named {
			plan.namedSelected = append(plan.namedSelected, name)
		}
		if !named && !saLooked {
			sa, saLooked = h.enforcingServiceAccount(ctx, sel.matcher, req.Namespace, pod.Spec.ServiceAccountName), true
		}
		if sa != nil && !named && !sa.listsPullSecret(name) {
			// The ServiceAccount admission plugin runs after the webhooks and would refuse the Pod.
			allowed, warning := h.allowOnServiceAccount(ctx, sel.matcher, sa, name, isDryRun(req))
			plan.warn(warning)
			if !allowed {
				continue
			}
		}
		// A Pod that names the Secret itself (a chart that hard-codes imagePullSecrets) still gets the copy
		// made, without a second reference.
		plan.warn(h.ensureCopy(ctx, e, req.Namespace, isDryRun(req), named))
		plan.warn(h.credentialWarning(e.Registry.Secret))
		if !named {
			plan.added = append(plan.added, name)
		}
	}
	return plan
}

// warn adds warning to the plan's warnings unless it is empty.
func (p *referencePlan) warn(warning string) {
	if warning != "" {
		p.warnings = append(p.warnings, warning)
	}
}

// handleEphemeral answers an update of the ephemeralcontainers subresource (`kubectl debug`), which adds
// ephemeral containers to a running Pod whose imagePullSecrets can no longer change: nothing is patched.
// For the images of the containers the update adds, under the same opt-in, opt-out and selectors as a
// create, the webhook makes sure the copies exist (dry runs write nothing), and for each Secret they need
// that the Pod does not reference, it warns that the pull goes without it and records an Event on the Pod:
// the kubelet uses the Pod's pull secrets only. No ServiceAccount is looked at: no reference is added.
func (h *Injector) handleEphemeral(ctx context.Context, req admission.Request) admission.Response {
	pod, done, _ := decodeRequestPod(ctx, req)
	if done != nil {
		return *done
	}
	old, err := decodePod(req.OldObject.Raw)
	if err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decode old pod: %w", err))
	}
	images := pod.addedEphemeralImages(old)
	if len(images) == 0 {
		return admission.Allowed("no ephemeral container added")
	}
	sel, done, _ := h.selectEntries(ctx, req.Namespace, images)
	if done != nil {
		return *done
	}
	warnings := sel.warnings
	var checked []string
	for _, e := range sel.candidates {
		name := e.Registry.Secret.Name
		if slices.Contains(checked, name) || !e.NamespaceSelector.Matches(sel.nsLabels) {
			continue
		}
		checked = append(checked, name)
		// No reference is added, so someone else's Secret of that name gets no ownership warning: the
		// missing reference is what this Pod's pull fails for, if anything.
		if warning := h.ensureCopy(ctx, e, req.Namespace, isDryRun(req), true); warning != "" {
			warnings = append(warnings, warning)
		}
		if pod.references(name) {
			if warning := h.credentialWarning(e.Registry.Secret); warning != "" {
				warnings = append(warnings, warning)
			}
			continue
		}
		warnings = append(warnings, fmt.Sprintf("pullsecret-injector: an ephemeral container's image pulls from registry %q, "+
			"whose pull secret %q this Pod does not reference; imagePullSecrets cannot change after creation, so the kubelet "+
			"pulls that image without credentials and the pull fails if the image is private", e.Registry.Registry, name))
		if !isDryRun(req) {
			regarding := &corev1.Pod{
				TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
				ObjectMeta: metav1.ObjectMeta{Namespace: req.Namespace, Name: req.Name},
			}
			if pod.Metadata != nil {
				regarding.UID = pod.Metadata.UID
			}
			h.Events.Warning(regarding, events.ReasonPullSecretMissing, events.ActionCheck,
				"An ephemeral container's image pulls from registry %q, whose pull secret %q this Pod does not reference: "+
					"the kubelet pulls it without credentials, and a private image's pull fails", e.Registry.Registry, name)
		}
	}
	return withWarnings(admission.Allowed("ephemeral containers checked"), warnings)
}

// credentialWarning returns the warning for a Pod that gets src's copy when src holds a credential that
// cannot work, "" when it holds none such.
func (h *Injector) credentialWarning(src config.SecretRef) string {
	if h.Health == nil {
		return ""
	}
	if problem := h.Health.Problem(src); problem != "" {
		return fmt.Sprintf("pullsecret-injector: source secret %s gives the kubelet no credential "+
			"for this Pod's images, its pulls may fail: %s", src, problem)
	}
	return ""
}

// claimed returns the Secrets the InjectedAnnotation names, in config order: those added now and, of those
// the Pod references already and this call would add (namedSelected), the ones the annotation the Pod
// comes with names (see injectedBefore). On a reinvocation (a later webhook changed the Pod and the API server calls this one
// again), the Pod comes with this webhook's earlier annotation and references, so the annotation keeps
// naming every Secret the webhook added. The annotation is the Pod author's to write at create too: what
// it says is kept only for a Secret the Pod references and the webhook would add for its images in its
// namespace, so an author can make the annotation name no other Secret, and its size is bounded by the
// configuration, whatever was written. Its registries are the configuration's, never the Pod's.
func claimed(candidates []*config.Entry, added, namedSelected []string, previous string) []string {
	var out []string
	for _, e := range candidates {
		name := e.Registry.Secret.Name
		if slices.Contains(out, name) {
			continue
		}
		if slices.Contains(added, name) || (slices.Contains(namedSelected, name) && injectedBefore(previous, name)) {
			out = append(out, name)
		}
	}
	return out
}

// injections says, for each claimed Secret, which configured registries the Pod's images matched.
func injections(candidates []*config.Entry, names []string) []Injection {
	out := make([]Injection, len(names))
	for i, name := range names {
		out[i].Secret = name
		for _, e := range candidates {
			if e.Registry.Secret.Name == name {
				out[i].Registries = append(out[i].Registries, e.Registry.Registry)
			}
		}
	}
	return out
}

// matchImages returns the configured entries any of the images pulls from, in config order, without
// applying the entries' namespace selectors yet.
func matchImages(matcher *config.Matcher, images []string) ([]*config.Entry, []string) {
	var matched []*config.Entry
	var warnings []string
	for _, image := range images {
		entries, err := matcher.MatchImage(image)
		if err != nil {
			warnings = append(warnings, fmt.Sprintf("pullsecret-injector: image %q is not a valid reference, no pull secret added for it: %v", image, err))
			continue
		}
		// Entries are few (they come from the configuration), so a linear search beats a map.
		for _, e := range entries {
			if !slices.Contains(matched, e) {
				matched = append(matched, e)
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
	return managed.NamespaceLabels(ns), nil
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
func (h *Injector) enforcingServiceAccount(ctx context.Context, m *config.Matcher, namespace, name string) *enforcingServiceAccount {
	if name == "" {
		name = "default" // the ServiceAccount admission plugin's default, set before the webhooks run
	}
	key := types.NamespacedName{Namespace: namespace, Name: name}
	// A ServiceAccount the cache does not show yet is taken as not enforcing: reading it live would cost
	// every Pod of a ServiceAccount that does not exist an API call, for an annotation that is deprecated
	// and a cache that lags by milliseconds (see docs/limitations.md).
	resourceVersion, enforcing := h.enforcingResourceVersion(ctx, key)
	if !enforcing {
		return nil
	}
	if sa := h.serviceAccounts.get(m, key.String(), resourceVersion); sa != nil {
		return sa // unchanged since it was read live
	}
	live := &corev1.ServiceAccount{}
	if err := h.APIReader.Get(ctx, key, live); err != nil {
		logf.FromContext(ctx).Error(err, "Cannot read ServiceAccount that enforces mountable secrets", "serviceAccount", name)
		return nil
	}
	sa := newEnforcingServiceAccount(live, m)
	h.serviceAccounts.put(m, key.String(), sa)
	return sa
}

// enforcingIndex answers, without building an object, whether a ServiceAccount enforces mountable
// secrets, and at which resourceVersion: serviceAccountReader, the handler's cache in the process.
type enforcingIndex interface {
	enforcing(key types.NamespacedName) (resourceVersion string, ok bool)
}

// enforcingResourceVersion returns the resourceVersion of the ServiceAccount key as the cache shows it,
// when the cache shows it enforcing mountable secrets.
func (h *Injector) enforcingResourceVersion(ctx context.Context, key types.NamespacedName) (string, bool) {
	if idx, ok := h.Cache.(enforcingIndex); ok {
		return idx.enforcing(key)
	}
	meta := managed.PartialServiceAccount()
	if err := h.Cache.Get(ctx, key, meta); err != nil || !managed.EnforcesMountableSecrets(meta) {
		return "", false
	}
	return meta.ResourceVersion, true
}

// allowOnServiceAccount decides, for a Secret the Pod's enforcing ServiceAccount does not list, whether the
// Pod may reference it, appending it to the ServiceAccount first in ServiceAccountAppend mode.
func (h *Injector) allowOnServiceAccount(ctx context.Context, m *config.Matcher, sa *enforcingServiceAccount, secret string, dryRun bool) (bool, string) {
	if h.ServiceAccounts != ServiceAccountAppend {
		return false, fmt.Sprintf("pullsecret-injector: service account %q enforces mountable secrets and does not list %q in its "+
			"imagePullSecrets; %q is not added, or the ServiceAccount admission plugin would refuse the Pod", sa.name, secret, secret)
	}
	if dryRun {
		return true, ""
	}
	if err := h.appendPullSecret(ctx, m, sa, secret); err != nil {
		logf.FromContext(ctx).Error(err, "Cannot add pull secret to ServiceAccount", "serviceAccount", sa.name, "secret", secret)
		return false, fmt.Sprintf("pullsecret-injector: service account %q enforces mountable secrets and %q could not be added "+
			"to its imagePullSecrets, so it is not referenced: %v", sa.name, secret, err)
	}
	logf.FromContext(ctx).Info("Added pull secret to ServiceAccount that enforces mountable secrets", "serviceAccount", sa.name, "secret", secret)
	return true, ""
}

// appendPullSecret appends secret to sa's imagePullSecrets with a JSON patch that fails if another writer
// changed the list since sa was read; it then reads again and retries. sa is left as the API server stored
// it, so a second Secret for the same Pod patches on top of the first.
func (h *Injector) appendPullSecret(ctx context.Context, m *config.Matcher, sa *enforcingServiceAccount, secret string) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		ops := []map[string]any{{"op": "test", "path": "/metadata/resourceVersion", "value": sa.resourceVersion}}
		ref := map[string]string{"name": secret}
		if !sa.hasPullSecrets {
			ops = append(ops, map[string]any{"op": "add", "path": "/imagePullSecrets", "value": []any{ref}})
		} else {
			ops = append(ops, map[string]any{"op": "add", "path": "/imagePullSecrets/-", "value": ref})
		}
		body, err := json.Marshal(ops)
		if err != nil {
			return fmt.Errorf("build patch: %w", err)
		}
		key := types.NamespacedName{Namespace: sa.namespace, Name: sa.name}
		patched := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: sa.namespace, Name: sa.name}}
		err = h.Writer.Patch(ctx, patched, client.RawPatch(types.JSONPatchType, body))
		// A failed test operation is a 422 Invalid from the API server.
		if apierrors.IsInvalid(err) || apierrors.IsConflict(err) {
			fresh := &corev1.ServiceAccount{}
			if gerr := h.APIReader.Get(ctx, key, fresh); gerr != nil {
				return gerr
			}
			*sa = *newEnforcingServiceAccount(fresh, m)
			if sa.listsPullSecret(secret) {
				return nil
			}
			return apierrors.NewConflict(corev1.Resource("serviceaccounts"), sa.name, err)
		}
		if err != nil {
			return fmt.Errorf("patch service account %q: %w", sa.name, err)
		}
		*sa = *newEnforcingServiceAccount(patched, m)
		return nil
	})
}

// ensureCopy makes sure the Pod's namespace has the entry's Secret, and returns a warning for the user when
// something is wrong. The Pod references the Secret whatever happens: a Pod admitted with a reference to a
// Secret that is repaired later pulls on the kubelet's next retry, whereas a refused Pod may be a
// controller's problem for a long time. podNamed says the Pod names the Secret
// itself, so an unmanaged Secret of that name is what it asked for and no warning is due.
//
// A dry run takes the same path and costs the same API calls, its create being a dry-run create: the same
// answer as a real request, and no more live reads.
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
	// What a live answer said a moment ago answers before anything is read again.
	switch state, _ := h.copies.Get(key.String()); {
	case state == foreignSecret:
		// Someone else's Secret has the copy's name; a create would answer AlreadyExists again.
		return ownership(src, namespace, podNamed)
	case state == dryRunClear && dryRun:
		// As for the Pods after a real create, which find the copy.
		return ""
	}
	source, warning := h.source(ctx, e)
	flight := key.String()
	if dryRun {
		flight = "dry-run " + flight // a real request must not take a dry run's answer
	}
	pending := h.creates.DoChan(flight, func() (any, error) {
		// Detached from the request: the first caller's cancellation must not fail the callers sharing it.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), createTimeout)
		defer cancel()
		return h.create(cctx, src, source, namespace, dryRun), nil
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
	switch {
	case created.foreign:
		h.copies.Put(key.String(), foreignSecret)
		// The source does not matter to this Pod: it gets the other Secret, not a copy.
		return ownership(src, namespace, podNamed)
	case dryRun && created.warning == "":
		h.copies.Put(key.String(), dryRunClear)
	}
	return join(warning, created.warning)
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
		// The type is the source's owner's to write, of any length: it is shown as all Secret text is.
		log.Info("Source secret has the wrong type, not copied", "type", redact.Text(string(s.Type)))
		return nil, fmt.Sprintf("pullsecret-injector: source secret %s has type %q, not %q; its credentials are not copied",
			src, redact.Text(string(s.Type)), corev1.SecretTypeDockerConfigJson)
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
	// foreign says a Secret of the copy's name exists and is not ours.
	foreign bool
	warning string
}

// create creates the copy of src in namespace: the source's data when source is non-nil, a placeholder
// otherwise. A dry run sends a dry-run create: the API server answers it as it would the create, and
// stores nothing.
func (h *Injector) create(ctx context.Context, src config.SecretRef, source *corev1.Secret, namespace string, dryRun bool) createResult {
	log := logf.FromContext(ctx).WithValues("namespace", namespace, "secret", src.Name, "source", src.String())
	cp := managed.Placeholder(src, namespace)
	if source != nil {
		cp = managed.Copy(source, namespace)
	}
	var opts []client.CreateOption
	if dryRun {
		opts = append(opts, client.DryRunAll)
	}
	created := cp.DeepCopy()
	err := retry.OnError(createBackoff, retriable, func() error {
		created = cp.DeepCopy()
		return h.Writer.Create(ctx, created, opts...)
	})
	switch {
	case err == nil && dryRun:
		return createResult{}
	case err == nil:
		log.Info("Copied pull secret", "placeholder", source == nil)
		metrics.CopyOperation(src.String(), metrics.Created)
		note := "Copied from %s for a Pod in this namespace"
		if source == nil {
			note = "Created as a placeholder for %s, which is missing or unusable; filled in when it can be copied"
		}
		h.Events.Normal(created, events.ReasonCopyCreated, events.ActionCreate, note, src)
		return createResult{}
	case apierrors.IsAlreadyExists(err):
		// Another replica, or a Secret someone else made: only the label tells which.
		existing := managed.PartialSecret()
		if err := h.APIReader.Get(ctx, client.ObjectKeyFromObject(cp), existing); err != nil {
			log.Error(err, "Cannot read existing secret")
			return createResult{warning: fmt.Sprintf("pullsecret-injector: secret %q exists in namespace %q but cannot be read: %v",
				src.Name, namespace, err)}
		}
		return createResult{foreign: !managed.IsManaged(existing)}
	default:
		if !dryRun {
			log.Error(err, "Cannot copy pull secret")
			metrics.CopyOperation(src.String(), metrics.Failed)
		}
		return createResult{warning: fmt.Sprintf("pullsecret-injector: cannot copy secret %s into namespace %q, "+
			"it is referenced and the next Pod that needs it tries again: %v", src, namespace, err)}
	}
}

// retriable reports whether a create may succeed if tried again shortly.
func retriable(err error) bool {
	return apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsTooManyRequests(err) ||
		apierrors.IsServiceUnavailable(err) || apierrors.IsInternalError(err)
}

// ownership returns the warning for a Secret of the copy's name that this project does not manage, unless
// the Pod named that Secret itself.
func ownership(src config.SecretRef, namespace string, podNamed bool) string {
	if podNamed {
		return ""
	}
	return fmt.Sprintf("pullsecret-injector: secret %q in namespace %q is not managed by pullsecret-injector; "+
		"it is referenced as it is and not replaced with a copy of %s", src.Name, namespace, src)
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
