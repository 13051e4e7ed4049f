package certs

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/google/go-cmp/cmp"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

// selfFixture is a self-mode source whose API server is a fake client; reader stands for its cache, which
// may lag behind the API server.
type selfFixture struct {
	s     *selfManaged
	api   client.Client
	stale client.Client
	now   time.Time
}

func newSelfFixture(t *testing.T, objs ...client.Object) *selfFixture {
	t.Helper()
	scheme, err := newScheme()
	if err != nil {
		t.Fatal(err)
	}
	o := testOptions()
	p, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	p.log = testr.New(t)
	f := &selfFixture{now: time.Now().Truncate(time.Second)}
	p.now = func() time.Time { return f.now }
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: o.WebhookConfigName},
		Webhooks:   []admissionregistrationv1.MutatingWebhook{{Name: "a.psi.io"}, {Name: "b.psi.io", ClientConfig: admissionregistrationv1.WebhookClientConfig{CABundle: []byte("helm's")}}},
	}
	f.api = fake.NewClientBuilder().WithScheme(scheme).WithObjects(append(objs, mwc)...).Build()
	f.stale = fake.NewClientBuilder().WithScheme(scheme).WithObjects(mwc.DeepCopy()).Build()
	f.s = &selfManaged{p: p, o: &p.opts, log: p.log, reader: f.api, client: f.api, published: map[string]time.Time{}}
	f.s.synced.Store(true)
	p.caBundleCheck = f.s.caBundleTrusts
	return f
}

func (f *selfFixture) secret(t *testing.T) *corev1.Secret {
	t.Helper()
	s := &corev1.Secret{}
	if err := f.api.Get(context.Background(), types.NamespacedName{Namespace: "system", Name: "psi-tls"}, s); err != nil {
		t.Fatal(err)
	}
	return s
}

func (f *selfFixture) mwc(t *testing.T) *admissionregistrationv1.MutatingWebhookConfiguration {
	t.Helper()
	m := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := f.api.Get(context.Background(), types.NamespacedName{Name: "psi"}, m); err != nil {
		t.Fatal(err)
	}
	return m
}

func servedBy(t *testing.T, p *Provider) string {
	t.Helper()
	c := p.current.Load()
	if c == nil {
		return ""
	}
	return serial(c.Leaf)
}

func readyErr(p *Provider) string {
	req, _ := http.NewRequest(http.MethodGet, "/readyz", nil)
	if err := p.Ready(req); err != nil {
		return err.Error()
	}
	return ""
}

func TestSelfModeCreatesSecretAndInjectsEveryWebhook(t *testing.T) {
	f := newSelfFixture(t)
	ctx := context.Background()
	if got := readyErr(f.s.p); !strings.Contains(got, "no serving certificate") {
		t.Errorf("before the first reconcile: readiness %q", got)
	}
	if _, err := f.s.reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	secret := f.secret(t)
	if diff := cmp.Diff(corev1.SecretTypeTLS, secret.Type); diff != "" {
		t.Errorf("Secret type (-want +got):\n%s", diff)
	}
	if secret.Labels["app.kubernetes.io/managed-by"] != "" {
		t.Error("the certificate Secret carries the label of the injector's managed copies")
	}
	for _, w := range f.mwc(t).Webhooks {
		if !bytes.Equal(w.ClientConfig.CABundle, secret.Data[CACertKey]) {
			t.Errorf("webhook %q: caBundle is not the Secret's ca.crt", w.Name)
		}
	}
	if got, want := servedBy(t, f.s.p), serial(leafOf(t, secret.Data)); got != want {
		t.Errorf("serving %q, want the Secret's %q", got, want)
	}
	if got := readyErr(f.s.p); got != "" {
		t.Errorf("after the first reconcile: not ready: %s", got)
	}
}

func TestSelfModeLoserOfTheCreateRaceAdoptsTheWinnersCA(t *testing.T) {
	winner := newSelfFixture(t)
	ctx := context.Background()
	if _, err := winner.s.reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	won := winner.secret(t)

	// The loser's cache has not seen the winner's Secret yet, so it plans a CA of its own and tries to
	// create the Secret too.
	loser := newSelfFixture(t, won.DeepCopy())
	loser.s.reader = loser.stale
	if _, err := loser.s.reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if got := servedBy(t, loser.s.p); got != "" {
		t.Fatalf("the loser serves %s, a certificate from its own CA that nobody will trust", got)
	}
	loser.s.reader = loser.api
	if _, err := loser.s.reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	after := loser.secret(t)
	if !equalData(won.Data, after.Data) {
		t.Error("the loser changed the winner's Secret")
	}
	if got, want := servedBy(t, loser.s.p), serial(leafOf(t, won.Data)); got != want {
		t.Errorf("the loser serves %q, want the winner's %q", got, want)
	}
}

func TestSelfModeConflictingUpdateIsPlannedAgain(t *testing.T) {
	f := newSelfFixture(t)
	ctx := context.Background()
	if _, err := f.s.reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	before := f.secret(t)
	// Another replica repairs a corrupt Secret first; this replica still sees the corrupt version.
	corrupt := before.DeepCopy()
	corrupt.Data[TLSCertKey] = []byte("garbage")
	if err := f.api.Update(ctx, corrupt); err != nil {
		t.Fatal(err)
	}
	staleCopy := corrupt.DeepCopy()
	repaired := corrupt.DeepCopy()
	repaired.Data = before.Data
	if err := f.api.Update(ctx, repaired); err != nil {
		t.Fatal(err)
	}
	// Reads come from the stale cache, writes go to the API server with the stale resourceVersion.
	f.s.reader = readerFunc(func(ctx context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
		if s, ok := obj.(*corev1.Secret); ok {
			staleCopy.DeepCopyInto(s)
			return nil
		}
		return f.api.Get(ctx, key, obj)
	})
	if _, err := f.s.reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if !equalData(before.Data, f.secret(t).Data) {
		t.Error("a write based on a stale read replaced the other replica's repair")
	}
}

// readerFunc is a client.Reader that only gets.
type readerFunc func(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error

func (f readerFunc) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	return f(ctx, key, obj, opts...)
}

func (readerFunc) List(context.Context, client.ObjectList, ...client.ListOption) error {
	panic("not used")
}

func TestSelfModeReadiness(t *testing.T) {
	tests := []struct {
		name   string
		modify func(t *testing.T, f *selfFixture)
		want   string
	}{{
		name:   "ready once every webhook trusts the served certificate",
		modify: func(*testing.T, *selfFixture) {},
	}, {
		name: "unready while a webhook's caBundle is reset",
		modify: func(t *testing.T, f *selfFixture) {
			m := f.mwc(t)
			m.Webhooks[1].ClientConfig.CABundle = nil
			if err := f.api.Update(context.Background(), m); err != nil {
				t.Fatal(err)
			}
		},
		want: `caBundle of webhook "b.psi.io" in "psi" does not trust serving certificate`,
	}, {
		name: "unready without the webhook configuration",
		modify: func(t *testing.T, f *selfFixture) {
			if err := f.api.Delete(context.Background(), f.mwc(t)); err != nil {
				t.Fatal(err)
			}
		},
		want: `webhook configuration "psi" not found`,
	}, {
		name: "unready once the served certificate has expired",
		modify: func(_ *testing.T, f *selfFixture) {
			f.now = f.now.Add(2 * time.Hour)
		},
		want: "is valid only from",
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newSelfFixture(t)
			if _, err := f.s.reconcile(context.Background()); err != nil {
				t.Fatal(err)
			}
			tc.modify(t, f)
			got := readyErr(f.s.p)
			if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
				t.Errorf("readiness %q, want %q", got, tc.want)
			}
		})
	}
}

func TestSelfModeRefusesToRewriteForeignSecrets(t *testing.T) {
	tests := []struct {
		name   string
		secret *corev1.Secret
		want   string
	}{{
		name:   "immutable Secret",
		secret: &corev1.Secret{Immutable: ptrTo(true), Type: corev1.SecretTypeOpaque},
		want:   "the Secret is immutable",
	}, {
		name:   "Secret of another type",
		secret: &corev1.Secret{Type: corev1.SecretTypeDockerConfigJson, Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte("{}")}},
		want:   `the Secret has type "kubernetes.io/dockerconfigjson"`,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.secret.Name, tc.secret.Namespace = "psi-tls", "system"
			f := newSelfFixture(t, tc.secret)
			_, err := f.s.reconcile(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("reconcile error %v, want one containing %q", err, tc.want)
			}
			if got := f.secret(t); !equalData(got.Data, tc.secret.Data) {
				t.Error("the Secret was rewritten")
			}
		})
	}
}

func ptrTo[T any](v T) *T { return &v }

func TestObserveBundlesTracksCAsInEveryWebhook(t *testing.T) {
	a, _, err := newCA(t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := newCA(t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	mwc := func(bundles ...[]byte) *admissionregistrationv1.MutatingWebhookConfiguration {
		m := &admissionregistrationv1.MutatingWebhookConfiguration{}
		for _, bundle := range bundles {
			m.Webhooks = append(m.Webhooks, admissionregistrationv1.MutatingWebhook{ClientConfig: admissionregistrationv1.WebhookClientConfig{CABundle: bundle}})
		}
		return m
	}
	s := &selfManaged{published: map[string]time.Time{}}
	steps := []struct {
		name   string
		at     time.Time
		mwc    *admissionregistrationv1.MutatingWebhookConfiguration
		exists bool
		wantA  time.Time
		wantB  time.Time
	}{
		{name: "a CA in only one webhook is not published", at: t0, mwc: mwc(encodeCerts(a, b), encodeCerts(a)), exists: true, wantA: t0},
		{name: "first-seen time is kept while the CA stays", at: t0.Add(time.Minute), mwc: mwc(encodeCerts(a, b), encodeCerts(b, a)), exists: true, wantA: t0, wantB: t0.Add(time.Minute)},
		{name: "a reset forgets the CA", at: t0.Add(2 * time.Minute), mwc: mwc(encodeCerts(b), encodeCerts(a, b)), exists: true, wantB: t0.Add(time.Minute)},
		{name: "a deleted configuration publishes nothing", at: t0.Add(3 * time.Minute), exists: false},
	}
	for _, step := range steps {
		s.observeBundles(step.at, step.mwc, step.exists)
		got := []time.Time{s.published[string(a.Raw)], s.published[string(b.Raw)]}
		if diff := cmp.Diff([]time.Time{step.wantA, step.wantB}, got); diff != "" {
			t.Errorf("%s: first seen (-want +got) for [a b]:\n%s", step.name, diff)
		}
	}
}
