package sources

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/events"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/config/configtest"
	psievents "github.com/pullsecret-injector/pullsecret-injector/internal/events"
	"github.com/pullsecret-injector/pullsecret-injector/internal/metrics"
)

func healthStore(t *testing.T) *config.Store {
	t.Helper()
	return config.NewStaticStore(configtest.Matcher(t, `
registries:
  - registry: registry.example.com
    secret: {namespace: psi, name: regcred}
  - registry: quay.io
    secret: {namespace: psi, name: quay}
`))
}

// credential is a source Secret whose one auths key is registry. Its auth is base64 of "u:p".
func credential(name, registry string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "psi", Name: name, UID: types.UID("uid-" + name)},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"` + registry + `":{"auth":"dTpw"}}}`)},
	}
}

// sourceInvalid reads the source_invalid gauge of source from the registry the process serves.
func sourceInvalid(t *testing.T, source string) (float64, bool) {
	t.Helper()
	metrics.Register() // as main does; importing the package registers nothing
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != metrics.Namespace+"_source_invalid" {
			continue
		}
		for _, m := range f.GetMetric() {
			if m.GetLabel()[0].GetValue() == source {
				return m.GetGauge().GetValue(), true
			}
		}
	}
	return 0, false
}

func drain(r *events.FakeRecorder) []string {
	var out []string
	for {
		select {
		case e := <-r.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func TestHealth(t *testing.T) {
	ref := config.SecretRef{Namespace: "psi", Name: "regcred"}
	recorder := events.NewFakeRecorder(10)
	reader := Static{}
	h := NewHealth(healthStore(t), reader, psievents.New(recorder, 100, 100), logr.Discard())
	h.leader.Store(true)

	// The only key is for another registry: the kubelet has nothing for this entry's images.
	reader[ref] = credential(ref.Name, "other.example.com")
	h.Check(ref)
	if p := h.Problem(ref); !strings.Contains(p, "registry.example.com") || !strings.Contains(p, "other.example.com") {
		t.Errorf("Problem = %q, want it to name the entry and the key the Secret has", p)
	}
	if v, _ := sourceInvalid(t, ref.String()); v != 1 {
		t.Errorf("source_invalid = %v, want 1", v)
	}
	got := drain(recorder)
	if len(got) != 1 || !strings.HasPrefix(got[0], "Warning "+psievents.ReasonSourceInvalid) || strings.Contains(got[0], "dTpw") {
		t.Errorf("events %q, want one Warning %s that carries no credential", got, psievents.ReasonSourceInvalid)
	}
	h.Check(ref)
	if got := drain(recorder); len(got) != 0 {
		t.Errorf("a second check of the unchanged source recorded %q, want nothing", got)
	}

	// Fixed: the problem goes, the gauge falls, and the recovery is said once.
	reader[ref] = credential(ref.Name, "registry.example.com")
	h.Check(ref)
	if p := h.Problem(ref); p != "" {
		t.Errorf("Problem = %q after the fix, want none", p)
	}
	if v, _ := sourceInvalid(t, ref.String()); v != 0 {
		t.Errorf("source_invalid = %v after the fix, want 0", v)
	}
	if got := drain(recorder); len(got) != 1 || !strings.HasPrefix(got[0], "Normal "+psievents.ReasonSourceValid) {
		t.Errorf("events %q, want one Normal %s", got, psievents.ReasonSourceValid)
	}

	// Missing or of the wrong type: the gauge says so, but neither is a credential problem for the webhook
	// to warn about; it warns on its own when it copies.
	delete(reader, ref)
	h.Check(ref)
	if v, _ := sourceInvalid(t, ref.String()); v != 1 || h.Problem(ref) != "" {
		t.Errorf("missing source: source_invalid = %v, Problem %q; want 1 and none", v, h.Problem(ref))
	}
	opaque := credential(ref.Name, "registry.example.com")
	opaque.Type = corev1.SecretTypeOpaque
	reader[ref] = opaque
	h.Check(ref)
	if v, _ := sourceInvalid(t, ref.String()); v != 1 || h.Problem(ref) != "" {
		t.Errorf("opaque source: source_invalid = %v, Problem %q; want 1 and none", v, h.Problem(ref))
	}
	drain(recorder)
}

func TestHealthOnlyTheLeaderRecords(t *testing.T) {
	quay := config.SecretRef{Namespace: "psi", Name: "quay"}
	recorder := events.NewFakeRecorder(10)
	h := NewHealth(healthStore(t), Static{quay: credential(quay.Name, "docker.io")}, psievents.New(recorder, 100, 100), logr.Discard())
	h.Check(quay)
	if got := drain(recorder); len(got) != 0 {
		t.Errorf("a follower recorded %q", got)
	}
	// Becoming the leader says what is wrong now, which the previous leader may not have lived to say.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := h.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if got := drain(recorder); len(got) != 1 || !strings.HasPrefix(got[0], "Warning "+psievents.ReasonSourceInvalid) {
		t.Errorf("the new leader recorded %q, want one Warning %s", got, psievents.ReasonSourceInvalid)
	}
}

func TestHealthForgetsRemovedSources(t *testing.T) {
	gone := config.SecretRef{Namespace: "psi", Name: "gone"}
	h := NewHealth(healthStore(t), Static{}, nil, logr.Discard())
	// As if a previous configuration had it.
	h.last[gone] = health{invalid: true}
	metrics.SourceInvalid(gone.String(), true)
	h.CheckAll()
	if _, ok := sourceInvalid(t, gone.String()); ok {
		t.Errorf("source_invalid still has a series for %s, which is no longer configured", gone)
	}
	if v, ok := sourceInvalid(t, "psi/quay"); !ok || v != 1 {
		t.Errorf("source_invalid{psi/quay} = %v (present %v), want 1: it is configured and missing", v, ok)
	}
}

func TestHealthCountsMissingSourcesOnceSynced(t *testing.T) {
	// A source that does not exist makes no informer event: only the check after the first list finds it.
	missing := config.SecretRef{Namespace: "psi", Name: "quay"}
	h := NewHealth(healthStore(t), Static{}, nil, logr.Discard())
	metrics.ForgetSource(missing.String())
	var synced atomic.Bool
	var asked atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- h.CheckWhenSynced(func() bool { asked.Add(1); return synced.Load() }).Start(ctx)
	}()
	// Asked twice and told not yet: nothing may have been checked.
	if err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		return asked.Load() >= 2, nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, ok := sourceInvalid(t, missing.String()); ok {
		t.Fatal("source_invalid set before the informers listed")
	}
	synced.Store(true)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if v, ok := sourceInvalid(t, missing.String()); !ok || v != 1 {
		t.Errorf("source_invalid{%s} = %v (present %v), want 1", missing, v, ok)
	}
}

// TestHealthShowsNoCredentialOfAKey: an auths key with user information works for the kubelet, which drops
// it, so a Secret may well have one. Its password must reach neither the problem the webhook warns every
// Pod about, nor the log, nor the Event; and an Event with a long note must still be one the API server
// accepts.
func TestHealthShowsNoCredentialOfAKey(t *testing.T) {
	const password = "hunter2-do-not-print"
	ref := config.SecretRef{Namespace: "psi", Name: "regcred"}
	recorder := events.NewFakeRecorder(10)
	var logged strings.Builder
	log := funcr.New(func(prefix, args string) { logged.WriteString(args + "\n") }, funcr.Options{})
	reader := Static{}
	h := NewHealth(healthStore(t), reader, psievents.New(recorder, 100, 100), log)
	h.leader.Store(true)

	auths := []string{`"https://robot:` + password + `@other.example.com":{"auth":"dTpw"}`}
	// Keys long enough that the message, ten of them and why each is never used, passes the Event limit.
	for i := range 20 {
		auths = append(auths, `"robot:`+password+`@r`+string(rune('a'+i))+`.example.com/`+strings.Repeat("X", 300)+`":{}`)
	}
	secret := credential(ref.Name, "unused")
	secret.Data[corev1.DockerConfigJsonKey] = []byte(`{"auths":{` + strings.Join(auths, ",") + `}}`)
	reader[ref] = secret
	h.Check(ref)

	problem := h.Problem(ref)
	if !strings.Contains(problem, `"https://<redacted>@other.example.com"`) {
		t.Errorf("Problem = %q, want it to name the key without its user information", problem)
	}
	got := drain(recorder)
	if len(got) != 1 {
		t.Fatalf("events %q, want one", got)
	}
	note := strings.TrimPrefix(got[0], "Warning "+psievents.ReasonSourceInvalid+" ")
	if len(note) > psievents.NoteLimit || !strings.HasSuffix(note, "...") || !strings.HasPrefix(note, "no_matching_key: ") {
		t.Errorf("note of %d bytes, %q...%q; want it to start with the reason and be cut to %d bytes with an ellipsis",
			len(note), note[:min(len(note), 20)], note[max(0, len(note)-10):], psievents.NoteLimit)
	}
	for name, text := range map[string]string{"problem": problem, "event": got[0], "log": logged.String()} {
		if strings.Contains(text, password) || strings.Contains(text, "dTpw") {
			t.Errorf("the %s shows a credential: %s", name, text)
		}
	}
	if !strings.Contains(logged.String(), "<redacted>@other.example.com") {
		t.Errorf("log %q does not name the key", logged.String())
	}
}
