package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Labels on the certificate Secret. Not app.kubernetes.io/managed-by: the injector caches and owns the
// Secrets that carry that label.
var secretLabels = map[string]string{
	"app.kubernetes.io/name":      "pullsecret-injector",
	"app.kubernetes.io/component": "webhook-certificate",
}

// maxBackoff bounds the wait before retrying after an error.
const maxBackoff = time.Minute

// selfManaged keeps the certificate Secret, the caBundle and the served certificate in line. Every replica
// runs it: writes use the API server's optimistic concurrency, so replicas that race converge on the first
// write and never end up with two CAs.
type selfManaged struct {
	p   *Provider
	o   *Options
	log logr.Logger
	// cache holds only the certificate Secret and the webhook configuration, never other Secrets; reader
	// reads from it.
	cache  cache.Cache
	reader client.Reader
	client client.Client
	synced atomic.Bool
	// trigger wakes the loop when the Secret or the webhook configuration changes.
	trigger chan struct{}

	// lastData is the Secret's content as last seen, to recreate it unchanged if it is deleted: a new CA
	// would not be trusted until it had been published.
	lastData map[string][]byte
	// published maps each CA (its DER) in every webhook's caBundle to when this replica first saw it there.
	published map[string]time.Time
}

func newSelfManaged(p *Provider, cfg *rest.Config) (*selfManaged, error) {
	o := &p.opts
	scheme, err := newScheme()
	if err != nil {
		return nil, err
	}
	c, err := cache.New(cfg, cache.Options{
		Scheme:           scheme,
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}: {Namespaces: map[string]cache.Config{
				o.ServiceNamespace: {FieldSelector: fields.OneTermEqualSelector("metadata.name", o.SecretName)},
			}},
			&admissionregistrationv1.MutatingWebhookConfiguration{}: {
				Field: fields.OneTermEqualSelector("metadata.name", o.WebhookConfigName),
			},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("create certificate cache: %w", err)
	}
	cl, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("create certificate client: %w", err)
	}
	s := &selfManaged{
		p: p, o: o, cache: c, reader: c, client: cl,
		log:       p.log.WithValues("secret", o.ServiceNamespace+"/"+o.SecretName, "webhookConfiguration", o.WebhookConfigName),
		trigger:   make(chan struct{}, 1),
		published: map[string]time.Time{},
	}
	poke := func() {
		select {
		case s.trigger <- struct{}{}:
		default:
		}
	}
	handler := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke() },
		UpdateFunc: func(any, any) { poke() },
		DeleteFunc: func(any) { poke() },
	}
	for _, obj := range []client.Object{&corev1.Secret{}, &admissionregistrationv1.MutatingWebhookConfiguration{}} {
		inf, err := c.GetInformer(context.Background(), obj)
		if err != nil {
			return nil, fmt.Errorf("get informer for %T: %w", obj, err)
		}
		if _, err := inf.AddEventHandler(handler); err != nil {
			return nil, fmt.Errorf("watch %T: %w", obj, err)
		}
	}
	p.caBundleCheck = s.caBundleTrusts
	return s, nil
}

// newScheme returns the types the certificate source reads and writes.
func newScheme() (*runtime.Scheme, error) {
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("add core/v1 to scheme: %w", err)
	}
	if err := admissionregistrationv1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("add admissionregistration/v1 to scheme: %w", err)
	}
	return scheme, nil
}

// NeedLeaderElection is false: every replica serves, so every replica keeps its certificate current.
func (*selfManaged) NeedLeaderElection() bool { return false }

// Start runs the cache and the loop until ctx ends. Errors are logged and retried with backoff: the
// process stays up and unready rather than exiting, so that the reason stays visible.
func (s *selfManaged) Start(ctx context.Context) error {
	go func() {
		if err := s.cache.Start(ctx); err != nil {
			s.log.Error(err, "Certificate informers stopped")
		}
	}()
	for {
		syncCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		ok := s.cache.WaitForCacheSync(syncCtx)
		cancel()
		if ok {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		s.log.Info("Certificate Secret and webhook configuration not readable yet; check the RBAC rules")
	}
	s.synced.Store(true)

	timer := time.NewTimer(0)
	defer timer.Stop()
	failures := 0
	for {
		next, err := s.reconcile(ctx)
		wait := time.Until(next)
		if err != nil {
			failures++
			wait = min(time.Second<<min(failures-1, 6), maxBackoff)
			s.log.Error(err, "Keep serving certificate current; retrying", "retryIn", wait.String())
		} else {
			failures = 0
		}
		s.p.reportReadiness(ctx)
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return nil
		case <-s.trigger:
		case <-timer.C:
		}
	}
}

// reconcile plans the Secret, writes it if needed, serves it and injects its CA bundle. It returns when
// to look again.
func (s *selfManaged) reconcile(ctx context.Context) (time.Time, error) {
	now := s.p.now()
	soon := now.Add(time.Second)

	secret, exists, err := s.readSecret(ctx)
	if err != nil {
		return now, err
	}
	mwc, mwcExists, err := s.readWebhookConfig(ctx)
	if err != nil {
		return now, err
	}
	s.observeBundles(now, mwc, mwcExists)

	data := secret.Data
	if !exists {
		data = s.lastData
	}
	pl, err := s.o.plan(now, data, func(ca *x509.Certificate) (time.Time, bool) {
		t, ok := s.published[string(ca.Raw)]
		return t, ok
	})
	if err != nil {
		return now, err
	}

	again := false
	switch {
	case !exists:
		secret, again, err = s.create(ctx, pl)
	case !equalData(pl.Data, secret.Data):
		secret, again, err = s.update(ctx, secret, pl)
	}
	switch {
	case err != nil:
		return now, err
	case again:
		return soon, nil
	}
	s.lastData = maps.Clone(secret.Data)
	s.serve(secret.Data)

	if !mwcExists {
		// The informer wakes the loop when it appears; readiness says what is missing meanwhile.
		return pl.Next, nil
	}
	if err := s.injectCABundle(ctx, mwc, secret.Data[CACertKey]); apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		s.log.V(1).Info("Webhook configuration changed meanwhile; injecting again")
		return soon, nil
	} else if err != nil {
		return now, err
	}
	return pl.Next, nil
}

// readSecret reads the certificate Secret; exists is false, with an empty Secret, when there is none.
func (s *selfManaged) readSecret(ctx context.Context) (secret *corev1.Secret, exists bool, err error) {
	secret = &corev1.Secret{}
	if err := s.reader.Get(ctx, types.NamespacedName{Namespace: s.o.ServiceNamespace, Name: s.o.SecretName}, secret); apierrors.IsNotFound(err) {
		return secret, false, nil
	} else if err != nil {
		return nil, false, fmt.Errorf("read certificate Secret %q: %w", s.o.SecretName, err)
	}
	return secret, true, nil
}

// readWebhookConfig reads the MutatingWebhookConfiguration to inject; exists is false, with an empty one,
// when there is none.
func (s *selfManaged) readWebhookConfig(ctx context.Context) (mwc *admissionregistrationv1.MutatingWebhookConfiguration, exists bool, err error) {
	mwc = &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := s.reader.Get(ctx, types.NamespacedName{Name: s.o.WebhookConfigName}, mwc); apierrors.IsNotFound(err) {
		return mwc, false, nil
	} else if err != nil {
		return nil, false, fmt.Errorf("read webhook configuration %q: %w", s.o.WebhookConfigName, err)
	}
	return mwc, true, nil
}

// create creates the certificate Secret with the plan's data. again is true when another replica created
// it first: the caller plans again from what that replica wrote.
func (s *selfManaged) create(ctx context.Context, pl plan) (secret *corev1.Secret, again bool, err error) {
	secret = &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: s.o.SecretName, Namespace: s.o.ServiceNamespace, Labels: secretLabels},
		Type:       corev1.SecretTypeTLS,
		Data:       pl.Data,
	}
	if err := s.client.Create(ctx, secret); apierrors.IsAlreadyExists(err) {
		s.log.V(1).Info("Certificate Secret created by another replica; adopting it")
		return nil, true, nil
	} else if err != nil {
		return nil, false, fmt.Errorf("create certificate Secret %q: %w", s.o.SecretName, err)
	}
	if s.lastData != nil {
		s.log.Info("Recreated deleted certificate Secret from the last content seen", "steps", pl.Rotations, "problems", pl.Repairs)
	} else {
		s.log.Info("Created certificate Secret", "steps", pl.Rotations)
	}
	return secret, false, nil
}

// update writes the plan's data into secret. again is true when the Secret changed or went away meanwhile:
// the caller plans again from what is there now. A Secret it cannot write (immutable, or of another type)
// is served as it is, if its pair is usable.
func (s *selfManaged) update(ctx context.Context, secret *corev1.Secret, pl plan) (updated *corev1.Secret, again bool, err error) {
	if err := writable(secret); err != nil {
		s.serve(secret.Data)
		return nil, false, fmt.Errorf("update certificate Secret %q (problems: %v; steps: %v): %w", s.o.SecretName, pl.Repairs, pl.Rotations, err)
	}
	updated = secret.DeepCopy()
	updated.Data = pl.Data
	if err := s.client.Update(ctx, updated); apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		s.log.V(1).Info("Certificate Secret changed meanwhile; planning again")
		return nil, true, nil
	} else if err != nil {
		return nil, false, fmt.Errorf("update certificate Secret %q: %w", s.o.SecretName, err)
	}
	if len(pl.Repairs) > 0 {
		s.log.Info("Repaired certificate Secret", "problems", pl.Repairs)
	}
	if len(pl.Rotations) > 0 {
		s.log.Info("Rotated certificates", "steps", pl.Rotations)
	}
	return updated, false, nil
}

// observeBundles records since when each CA has been in the caBundle of every webhook.
func (s *selfManaged) observeBundles(now time.Time, mwc *admissionregistrationv1.MutatingWebhookConfiguration, exists bool) {
	inAll := map[string]bool{}
	if exists && len(mwc.Webhooks) > 0 {
		first, _ := parseCerts(mwc.Webhooks[0].ClientConfig.CABundle)
		for _, ca := range first {
			all := true
			for _, w := range mwc.Webhooks[1:] {
				all = all && containsCert(w.ClientConfig.CABundle, ca)
			}
			if all {
				inAll[string(ca.Raw)] = true
			}
		}
	}
	for k := range s.published {
		if !inAll[k] {
			delete(s.published, k)
		}
	}
	for k := range inAll {
		if _, ok := s.published[k]; !ok {
			s.published[k] = now
		}
	}
}

// serve makes the Secret's pair the served certificate if it is usable.
func (s *selfManaged) serve(data map[string][]byte) {
	pair, err := tls.X509KeyPair(data[TLSCertKey], data[TLSKeyKey])
	if err != nil {
		return
	}
	leaf, err := s.p.usable(&pair)
	if err != nil {
		return
	}
	if cur := s.p.current.Load(); cur != nil && bytes.Equal(cur.Certificate[0], pair.Certificate[0]) {
		return
	}
	s.p.current.Store(&pair)
	issuer := ""
	if cas, _ := parseCerts(data[CACertKey]); len(cas) > 0 {
		for _, ca := range cas {
			if issuedBy(leaf, ca) {
				issuer = serial(ca)
			}
		}
	}
	s.log.Info("Loaded serving certificate", "serial", serial(leaf), "issuerSerial", issuer,
		"notAfter", leaf.NotAfter.UTC().Format(time.RFC3339), "dnsNames", leaf.DNSNames, "ipAddresses", leaf.IPAddresses)
}

// injectCABundle sets bundle as the caBundle of every webhook in mwc.
func (s *selfManaged) injectCABundle(ctx context.Context, mwc *admissionregistrationv1.MutatingWebhookConfiguration, bundle []byte) error {
	updated := mwc.DeepCopy()
	var changed []string
	for i := range updated.Webhooks {
		w := &updated.Webhooks[i]
		if !bytes.Equal(w.ClientConfig.CABundle, bundle) {
			w.ClientConfig.CABundle = bundle
			changed = append(changed, w.Name)
		}
	}
	if len(changed) == 0 {
		return nil
	}
	if err := s.client.Update(ctx, updated); err != nil {
		return fmt.Errorf("inject caBundle into webhook configuration %q: %w", mwc.Name, err)
	}
	s.log.Info("Injected CA bundle", "webhooks", changed)
	return nil
}

// caBundleTrusts fails unless every webhook in the webhook configuration trusts leaf.
func (s *selfManaged) caBundleTrusts(ctx context.Context, leaf *x509.Certificate) error {
	if !s.synced.Load() {
		return errors.New("certificate Secret and webhook configuration not read yet")
	}
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := s.reader.Get(ctx, types.NamespacedName{Name: s.o.WebhookConfigName}, mwc); apierrors.IsNotFound(err) {
		return fmt.Errorf("webhook configuration %q not found", s.o.WebhookConfigName)
	} else if err != nil {
		return fmt.Errorf("read webhook configuration %q: %w", s.o.WebhookConfigName, err)
	}
	if len(mwc.Webhooks) == 0 {
		return fmt.Errorf("webhook configuration %q has no webhooks", s.o.WebhookConfigName)
	}
	now := s.p.now()
	for _, w := range mwc.Webhooks {
		if !verifies(w.ClientConfig.CABundle, leaf, now) {
			return fmt.Errorf("caBundle of webhook %q in %q does not trust serving certificate %s", w.Name, mwc.Name, serial(leaf))
		}
	}
	return nil
}

// writable returns why the Secret must not be rewritten, or nil.
func writable(s *corev1.Secret) error {
	if s.Immutable != nil && *s.Immutable {
		return errors.New("the Secret is immutable; delete it so that it is recreated")
	}
	if s.Type != corev1.SecretTypeTLS && s.Type != corev1.SecretTypeOpaque && s.Type != "" {
		return fmt.Errorf("the Secret has type %q, not %q; delete it so that it is recreated", s.Type, corev1.SecretTypeTLS)
	}
	return nil
}

func equalData(a, b map[string][]byte) bool {
	return maps.EqualFunc(a, b, bytes.Equal)
}
