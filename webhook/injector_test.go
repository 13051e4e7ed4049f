package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/google/go-cmp/cmp"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/config/configtest"
	"github.com/pullsecret-injector/pullsecret-injector/internal/managed"
	sourcecache "github.com/pullsecret-injector/pullsecret-injector/internal/sources"
	"github.com/pullsecret-injector/pullsecret-injector/test/fixtures"
)

const testConfig = `
registries:
  - registry: registry.example.com:5000/team-a
    secret: {namespace: psi, name: team-a-regcred}
  - registry: "*.dkr.ecr.eu-west-1.amazonaws.com"
    secret: {namespace: psi, name: ecr-regcred}
    namespaceSelector: {matchLabels: {team: payments}}
  - registry: quay.io
    secret: {namespace: psi, name: quay-regcred}
  - registry: docker.io
    secret: {namespace: psi, name: hub-regcred}
  - registry: missing.example.com
    secret: {namespace: psi, name: missing-regcred}
  - registry: opaque.example.com
    secret: {namespace: psi, name: opaque-regcred}
`

var optIn = map[string]string{config.InjectLabel: config.InjectEnabled}

func namespace(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func source(name string, typ corev1.SecretType) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "psi", Name: name},
		Type:       typ,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"x":{"auth":"eDp5"}}}`)},
	}
}

func managedCopy(ns, name string) *corev1.Secret {
	s := source(name, corev1.SecretTypeDockerConfigJson)
	s.Namespace = ns
	s.Labels = map[string]string{managed.ManagedByLabel: managed.ManagedByValue}
	return s
}

// splitSources returns the source Secrets among objs as a sourcecache.Reader, and the other objects.
func splitSources(objs []client.Object) (sourcecache.Static, []client.Object) {
	srcs := sourcecache.Static{}
	var rest []client.Object
	for _, o := range objs {
		if s, ok := o.(*corev1.Secret); ok && s.Namespace == "psi" {
			srcs[config.SecretRef{Namespace: s.Namespace, Name: s.Name}] = s
			continue
		}
		rest = append(rest, o)
	}
	return srcs, rest
}

func sources() []client.Object {
	return []client.Object{
		source("team-a-regcred", corev1.SecretTypeDockerConfigJson),
		source("ecr-regcred", corev1.SecretTypeDockerConfigJson),
		source("quay-regcred", corev1.SecretTypeDockerConfigJson),
		source("hub-regcred", corev1.SecretTypeDockerConfigJson),
		source("opaque-regcred", corev1.SecretTypeOpaque),
	}
}

// countingReader counts reads, so a test can prove the API server was not asked.
type countingReader struct {
	client.Reader
	reads atomic.Int32
}

func (r *countingReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	r.reads.Add(1)
	return r.Reader.Get(ctx, key, obj, opts...)
}

// recordingWriter records creates and can fail them. It answers a dry-run create as the API server does,
// AlreadyExists for an object it holds, which the fake client does not.
type recordingWriter struct {
	client.Client
	created       []*corev1.Secret
	dryRunCreates int
	createErr     error
}

func (w *recordingWriter) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	o := &client.CreateOptions{}
	o.ApplyOptions(opts)
	dryRun := slices.Contains(o.DryRun, metav1.DryRunAll)
	if s, ok := obj.(*corev1.Secret); ok && !dryRun {
		w.created = append(w.created, s.DeepCopy())
	}
	if dryRun {
		w.dryRunCreates++
	}
	if w.createErr != nil {
		return w.createErr
	}
	if dryRun {
		return dryWriter{w.Client}.Create(ctx, obj)
	}
	return w.Client.Create(ctx, obj, opts...)
}

type fixture struct {
	injector *Injector
	api      *countingReader
	writer   *recordingWriter
}

// newFixture builds an injector whose cache holds cached and whose API server holds live. Creates go to the
// API server's store.
func newFixture(t testing.TB, cached, live []client.Object) *fixture {
	t.Helper()
	cfg, err := config.Parse([]byte(testConfig))
	if err != nil {
		t.Fatal(err)
	}
	matcher, err := config.NewMatcher(cfg)
	if err != nil {
		t.Fatal(err)
	}
	scheme, err := Scheme()
	if err != nil {
		t.Fatal(err)
	}
	apiServer := fake.NewClientBuilder().WithScheme(scheme).WithObjects(live...).Build()
	f := &fixture{
		api:    &countingReader{Reader: apiServer},
		writer: &recordingWriter{Client: apiServer},
	}
	srcs, cachedRest := splitSources(cached)
	f.injector = &Injector{
		Config:    config.NewStaticStore(matcher),
		Sources:   srcs,
		Cache:     fake.NewClientBuilder().WithScheme(scheme).WithObjects(cachedRest...).Build(),
		APIReader: f.api,
		Writer:    f.writer,
	}
	return f
}

func podRequest(t testing.TB, ns string, pod *corev1.Pod, mutate ...func(*admissionv1.AdmissionRequest)) admission.Request {
	t.Helper()
	req := fixtures.PodCreateRequest(t, ns, pod)
	for _, m := range mutate {
		m(&req.AdmissionRequest)
	}
	return req
}

func pod(images ...string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "web-"}}
	for _, image := range images {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "c", Image: image})
	}
	return p
}

// applied applies the response's patch to the request's Pod and returns the references it ends up with.
func applied(t *testing.T, req admission.Request, resp admission.Response) []string {
	t.Helper()
	got, _ := appliedPod(t, req.Object.Raw, resp)
	var names []string
	for _, r := range got.Spec.ImagePullSecrets {
		names = append(names, r.Name)
	}
	return names
}

// checkWarnings requires one of resp's warnings to hold every part of want, or, when want is empty, no
// warning at all.
func checkWarnings(t *testing.T, resp admission.Response, want []string) {
	t.Helper()
	if len(want) > 0 && !hasWarning(resp, want...) {
		t.Errorf("warnings %q lack %q", resp.Warnings, want)
	}
	if len(want) == 0 && len(resp.Warnings) > 0 {
		t.Errorf("unexpected warnings %q", resp.Warnings)
	}
}

func hasWarning(resp admission.Response, parts ...string) bool {
	for _, w := range resp.Warnings {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(w, p)
		}
		if ok {
			return true
		}
	}
	return false
}

func TestHandleIgnoresWhatIsNotAPodCreate(t *testing.T) {
	for name, mutate := range map[string]func(*admissionv1.AdmissionRequest){
		"update":                  func(r *admissionv1.AdmissionRequest) { r.Operation = admissionv1.Update },
		"ephemeralcontainers sub": func(r *admissionv1.AdmissionRequest) { r.SubResource = "ephemeralcontainers" },
		"other resource":          func(r *admissionv1.AdmissionRequest) { r.Resource.Resource = "deployments"; r.Resource.Group = "apps" },
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, nil, nil)
			resp := f.injector.Handle(context.Background(), podRequest(t, "team", pod("quay.io/a/b"), mutate))
			if !resp.Allowed || len(resp.Patches) != 0 {
				t.Errorf("got allowed=%v patches=%v, want allowed without patches", resp.Allowed, resp.Patches)
			}
		})
	}
}

func TestHandleRejectsMalformedRequests(t *testing.T) {
	for name, mutate := range map[string]func(*admissionv1.AdmissionRequest){
		"object is not json": func(r *admissionv1.AdmissionRequest) { r.Object.Raw = []byte("{not json") },
		"object is empty":    func(r *admissionv1.AdmissionRequest) { r.Object.Raw = nil },
		"no namespace":       func(r *admissionv1.AdmissionRequest) { r.Namespace = "" },
		"no uid (an empty or {} body decodes so)": func(r *admissionv1.AdmissionRequest) {
			*r = admissionv1.AdmissionRequest{}
		},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, nil, nil)
			resp := f.injector.Handle(context.Background(), podRequest(t, "team", pod("quay.io/a/b"), mutate))
			if resp.Allowed || resp.Result == nil || resp.Result.Code != http.StatusBadRequest {
				t.Errorf("got %+v, want a 400 error", resp.AdmissionResponse)
			}
		})
	}
}

func TestHandle(t *testing.T) {
	labelledTeam := namespace("team", optIn)
	payments := namespace("team", map[string]string{config.InjectLabel: config.InjectEnabled, "team": "payments"})
	for name, tc := range map[string]struct {
		cached, live []client.Object
		ns           string
		pod          *corev1.Pod
		dryRun       bool
		createErr    error
		wantRefs     []string
		wantCreated  []string
		wantWarning  []string
		wantAPIReads *int32 // nil: not checked
	}{
		"warm path answers from the cache alone": {
			cached:       append(sources(), labelledTeam, managedCopy("team", "quay-regcred")),
			pod:          pod("quay.io/org/app:1"),
			wantRefs:     []string{"quay-regcred"},
			wantAPIReads: ptr.To[int32](0),
		},
		"missing copy is created": {
			cached:       append(sources(), labelledTeam),
			live:         sources(),
			pod:          pod("registry.example.com:5000/team-a/api"),
			wantRefs:     []string{"team-a-regcred"},
			wantCreated:  []string{"team/team-a-regcred"},
			wantAPIReads: ptr.To[int32](0),
		},
		"namespace not opted in is left alone": {
			cached:       append(sources(), namespace("team", nil)),
			live:         []client.Object{namespace("team", nil)},
			pod:          pod("quay.io/org/app"),
			wantAPIReads: ptr.To[int32](1),
		},
		"namespace missing from the cache is confirmed live": {
			cached:       sources(),
			live:         append(sources(), labelledTeam),
			pod:          pod("quay.io/org/app"),
			wantRefs:     []string{"quay-regcred"},
			wantCreated:  []string{"team/quay-regcred"},
			wantAPIReads: ptr.To[int32](1),
		},
		"namespace cached without the label is confirmed live": {
			cached:       append(sources(), namespace("team", nil)),
			live:         append(sources(), labelledTeam),
			pod:          pod("quay.io/org/app"),
			wantRefs:     []string{"quay-regcred"},
			wantCreated:  []string{"team/quay-regcred"},
			wantAPIReads: ptr.To[int32](1),
		},
		"entry selector label not yet cached is confirmed live": {
			cached:       append(sources(), labelledTeam),
			live:         append(sources(), payments),
			pod:          pod("123456789012.dkr.ecr.eu-west-1.amazonaws.com/app"),
			wantRefs:     []string{"ecr-regcred"},
			wantCreated:  []string{"team/ecr-regcred"},
			wantAPIReads: ptr.To[int32](1),
		},
		"entry selector keeps its secret out of other namespaces": {
			cached:      append(sources(), labelledTeam),
			live:        append(sources(), labelledTeam),
			pod:         pod("123456789012.dkr.ecr.eu-west-1.amazonaws.com/app", "quay.io/a/b"),
			wantRefs:    []string{"quay-regcred"},
			wantCreated: []string{"team/quay-regcred"},
		},
		"source not cached yet is read live": {
			cached:       []client.Object{labelledTeam},
			live:         sources(),
			pod:          pod("quay.io/org/app"),
			wantRefs:     []string{"quay-regcred"},
			wantCreated:  []string{"team/quay-regcred"},
			wantAPIReads: ptr.To[int32](1),
		},
		"no configured registry reads nothing": {
			pod:          pod("ghcr.io/org/app", "registry.example.com:5000/team-b/app"),
			wantAPIReads: ptr.To[int32](0),
		},
		"init, regular and ephemeral containers all count, in config order": {
			cached: append(sources(), labelledTeam),
			live:   sources(),
			pod: &corev1.Pod{Spec: corev1.PodSpec{
				InitContainers:      []corev1.Container{{Name: "i", Image: "busybox"}},
				Containers:          []corev1.Container{{Name: "c", Image: "quay.io/x/y"}},
				EphemeralContainers: []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "e", Image: "registry.example.com:5000/team-a/debug"}}},
			}},
			wantRefs:     []string{"team-a-regcred", "quay-regcred", "hub-regcred"},
			wantCreated:  []string{"team/team-a-regcred", "team/quay-regcred", "team/hub-regcred"},
			wantAPIReads: ptr.To[int32](0),
		},
		"an image volume alone needs its Secret, as a container's image does": {
			cached: append(sources(), labelledTeam), live: sources(),
			pod:      withImageVolumes(pod("ghcr.io/org/app"), "quay.io/org/data:1", ""),
			wantRefs: []string{"quay-regcred"}, wantCreated: []string{"team/quay-regcred"}, wantAPIReads: ptr.To[int32](0),
		},
		"an image volume's short Docker Hub name normalises as a container image's does": {
			cached: append(sources(), labelledTeam, managedCopy("team", "hub-regcred")),
			pod:    withImageVolumes(pod("ghcr.io/org/app"), "busybox"), wantRefs: []string{"hub-regcred"},
		},
		"image volumes and containers together, in config order": {
			cached: append(sources(), labelledTeam), live: sources(),
			pod:         withImageVolumes(pod("nginx"), "registry.example.com:5000/team-a/data", "", "quay.io/org/data"),
			wantRefs:    []string{"team-a-regcred", "quay-regcred", "hub-regcred"},
			wantCreated: []string{"team/team-a-regcred", "team/quay-regcred", "team/hub-regcred"},
		},
		"an image volume with an invalid reference is skipped with a warning": {
			cached:      append(sources(), labelledTeam, managedCopy("team", "quay-regcred")),
			pod:         withImageVolumes(pod("quay.io/a/b"), "Quay.io/UPPER"),
			wantRefs:    []string{"quay-regcred"},
			wantWarning: []string{`image "Quay.io/UPPER" is not a valid reference`},
		},
		"existing references are kept and never duplicated": {
			cached: append(sources(), labelledTeam, managedCopy("team", "quay-regcred"), managedCopy("team", "hub-regcred")),
			pod: func() *corev1.Pod {
				p := pod("quay.io/a/b", "nginx", "quay.io/c/d")
				p.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "mine"}, {Name: "hub-regcred"}}
				return p
			}(),
			wantRefs:     []string{"mine", "hub-regcred", "quay-regcred"},
			wantAPIReads: ptr.To[int32](0),
		},
		"request namespace wins over the pod's own field": {
			cached: append(sources(), labelledTeam, namespace("elsewhere", nil)),
			live:   sources(),
			pod: func() *corev1.Pod {
				p := pod("quay.io/a/b")
				p.Namespace = "elsewhere"
				return p
			}(),
			wantRefs:    []string{"quay-regcred"},
			wantCreated: []string{"team/quay-regcred"},
		},
		"dry run patches the same and writes nothing": {
			cached:   append(sources(), labelledTeam),
			live:     sources(),
			pod:      pod("quay.io/a/b"),
			dryRun:   true,
			wantRefs: []string{"quay-regcred"},
		},
		"dry run warns about an unmanaged secret too": {
			cached:      append(sources(), labelledTeam),
			live:        append(sources(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "quay-regcred"}}),
			pod:         pod("quay.io/a/b"),
			dryRun:      true,
			wantRefs:    []string{"quay-regcred"},
			wantWarning: []string{"not managed by pullsecret-injector"},
		},
		"concurrent create by another replica is success": {
			cached:      append(sources(), labelledTeam),
			live:        append(sources(), managedCopy("team", "quay-regcred")),
			pod:         pod("quay.io/a/b"),
			wantRefs:    []string{"quay-regcred"},
			wantCreated: []string{"team/quay-regcred"},
		},
		"unmanaged secret of the same name is referenced as is, with a warning": {
			cached:      append(sources(), labelledTeam),
			live:        append(sources(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "quay-regcred"}}),
			pod:         pod("quay.io/a/b"),
			wantRefs:    []string{"quay-regcred"},
			wantCreated: []string{"team/quay-regcred"},
			wantWarning: []string{`secret "quay-regcred" in namespace "team" is not managed`},
		},
		"missing source admits the pod with the reference, a placeholder copy and a warning": {
			cached:      append(sources(), labelledTeam),
			live:        sources(),
			pod:         pod("missing.example.com/app", "quay.io/a/b"),
			wantRefs:    []string{"quay-regcred", "missing-regcred"},
			wantCreated: []string{"team/quay-regcred", "team/missing-regcred"},
			wantWarning: []string{"psi/missing-regcred", "does not exist yet"},
		},
		"missing source with its placeholder already made reads nothing and warns nothing": {
			cached:       append(sources(), labelledTeam, managedCopy("team", "missing-regcred")),
			pod:          pod("missing.example.com/app"),
			wantRefs:     []string{"missing-regcred"},
			wantAPIReads: ptr.To[int32](0),
		},
		"source of the wrong type is referenced with a placeholder, not copied, with a warning": {
			cached:      append(sources(), labelledTeam),
			pod:         pod("opaque.example.com/app"),
			wantRefs:    []string{"opaque-regcred"},
			wantCreated: []string{"team/opaque-regcred"},
			wantWarning: []string{"psi/opaque-regcred", `type "Opaque"`},
		},
		"pod naming the configured secret itself still gets the copy, referenced once": {
			cached:      append(sources(), labelledTeam),
			live:        sources(),
			pod:         withPullSecrets(pod("quay.io/a/b"), "quay-regcred"),
			wantRefs:    []string{"quay-regcred"},
			wantCreated: []string{"team/quay-regcred"},
		},
		"pod naming an unmanaged secret of that name itself gets no warning": {
			cached:      append(sources(), labelledTeam),
			live:        append(sources(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "quay-regcred"}}),
			pod:         withPullSecrets(pod("quay.io/a/b"), "quay-regcred"),
			wantRefs:    []string{"quay-regcred"},
			wantCreated: []string{"team/quay-regcred"},
		},
		"failed create still references the secret, with a warning": {
			cached:      append(sources(), labelledTeam),
			pod:         pod("quay.io/a/b"),
			createErr:   apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "quay-regcred", errors.New("denied")),
			wantRefs:    []string{"quay-regcred"},
			wantCreated: []string{"team/quay-regcred"},
			wantWarning: []string{"cannot copy secret psi/quay-regcred", "forbidden"},
		},
		"unparsable image is skipped with a warning": {
			cached:      append(sources(), labelledTeam, managedCopy("team", "quay-regcred")),
			pod:         pod("Quay.io/UPPER/Case", "quay.io/a/b"),
			wantRefs:    []string{"quay-regcred"},
			wantWarning: []string{`image "Quay.io/UPPER/Case" is not a valid reference`},
		},
		"pod in the source namespace references the source itself": {
			cached:   append(sources(), namespace("psi", optIn)),
			ns:       "psi",
			pod:      pod("quay.io/a/b"),
			wantRefs: []string{"quay-regcred"},
		},
		"pod opted out by label": {
			cached: append(sources(), labelledTeam),
			pod: func() *corev1.Pod {
				p := pod("quay.io/a/b")
				p.Labels = map[string]string{config.InjectLabel: config.InjectDisabled}
				return p
			}(),
			wantAPIReads: ptr.To[int32](0),
		},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, tc.cached, tc.live)
			f.writer.createErr = tc.createErr
			ns := tc.ns
			if ns == "" {
				ns = "team"
			}
			req := podRequest(t, ns, tc.pod, func(r *admissionv1.AdmissionRequest) { r.DryRun = ptr.To(tc.dryRun) })
			resp := f.injector.Handle(context.Background(), req)
			if diff := cmp.Diff(tc.wantRefs, applied(t, req, resp)); diff != "" {
				t.Errorf("imagePullSecrets (-want +got):\n%s", diff)
			}
			var created []string
			for _, s := range f.writer.created {
				created = append(created, s.Namespace+"/"+s.Name)
				if !managed.IsManaged(s) || s.Annotations[managed.SourceAnnotation] != "psi/"+s.Name {
					t.Errorf("copy %s has labels %v annotations %v", s.Name, s.Labels, s.Annotations)
				}
				if s.Type != corev1.SecretTypeDockerConfigJson || len(s.Data[corev1.DockerConfigJsonKey]) == 0 {
					t.Errorf("copy %s has type %q and data keys %d", s.Name, s.Type, len(s.Data))
				}
			}
			if diff := cmp.Diff(tc.wantCreated, created); diff != "" {
				t.Errorf("created secrets (-want +got):\n%s", diff)
			}
			checkWarnings(t, resp, tc.wantWarning)
			if tc.wantAPIReads != nil && f.api.reads.Load() != *tc.wantAPIReads {
				t.Errorf("API server reads = %d, want %d", f.api.reads.Load(), *tc.wantAPIReads)
			}
		})
	}
}

// gatedWriter holds every Create until release is closed, and reports when the first one has started.
type gatedWriter struct {
	client.Client
	started chan struct{}
	release chan struct{}
	once    sync.Once
}

func (w *gatedWriter) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	w.once.Do(func() { close(w.started) })
	<-w.release
	// As a real client does: a request whose context has ended is not sent.
	if err := ctx.Err(); err != nil {
		return err
	}
	return w.Client.Create(ctx, obj, opts...)
}

func TestSharedCreateSurvivesTheFirstCallersCancellation(t *testing.T) {
	f := newFixture(t, append(sources(), namespace("team", optIn)), sources())
	w := &gatedWriter{Client: f.writer.Client, started: make(chan struct{}), release: make(chan struct{})}
	f.injector.Writer = w

	first, cancel := context.WithCancel(context.Background())
	responses := make([]admission.Response, 2)
	firstDone, secondDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(firstDone)
		responses[0] = f.injector.Handle(first, podRequest(t, "team", pod("quay.io/a/b")))
	}()
	<-w.started
	go func() {
		defer close(secondDone)
		responses[1] = f.injector.Handle(context.Background(), podRequest(t, "team", pod("quay.io/a/b")))
	}()
	// The first caller gives up (its budget is spent, or its client went away) while the create it started
	// is still held, so it is answered before the create can finish.
	cancel()
	<-firstDone
	close(w.release)
	<-secondDone
	// The first caller, whose context ended, is answered at once with the reference; the other waits for
	// the create, which its cancellation did not fail.
	if !hasWarning(responses[0], "still being created") {
		t.Errorf("cancelled caller's warnings %q, want the copy reported as still being created", responses[0].Warnings)
	}
	if len(responses[1].Warnings) > 0 {
		t.Errorf("second caller's warnings %q, want none", responses[1].Warnings)
	}
	for i, resp := range responses {
		req := podRequest(t, "team", pod("quay.io/a/b"))
		if diff := cmp.Diff([]string{"quay-regcred"}, applied(t, req, resp)); diff != "" {
			t.Errorf("response %d imagePullSecrets (-want +got):\n%s", i, diff)
		}
	}
	got := &corev1.Secret{}
	if err := f.writer.Get(context.Background(), client.ObjectKey{Namespace: "team", Name: "quay-regcred"}, got); err != nil {
		t.Fatalf("the shared create did not happen: %v", err)
	}
}

func TestBudget(t *testing.T) {
	for timeout, want := range map[time.Duration]time.Duration{
		time.Second:      800 * time.Millisecond,
		5 * time.Second:  4 * time.Second,
		10 * time.Second: 9 * time.Second,
		30 * time.Second: 29 * time.Second,
	} {
		if got := Budget(timeout); got != want {
			t.Errorf("Budget(%v) = %v, want %v", timeout, got, want)
		}
	}
}

func TestWithBudgetTakesTheDeadlineFromTheURL(t *testing.T) {
	for url, want := range map[string]time.Duration{
		"/mutate-v1-pod?timeout=5s": Budget(5 * time.Second),
		"/mutate-v1-pod":            Budget(defaultTimeout),
		"/mutate-v1-pod?timeout=x":  Budget(defaultTimeout),
	} {
		var got time.Duration
		h := withBudget(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
			deadline, ok := r.Context().Deadline()
			if !ok {
				t.Fatalf("%s: no deadline", url)
			}
			got = time.Until(deadline)
		}), func() bool { return false })
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, url, nil))
		if got > want || got < want-time.Second {
			t.Errorf("%s: deadline in %v, want about %v", url, got, want)
		}
	}
}

func TestWithBudgetClosesConnectionsWhileDraining(t *testing.T) {
	for _, draining := range []bool{false, true} {
		rec := httptest.NewRecorder()
		withBudget(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), func() bool { return draining }).
			ServeHTTP(rec, httptest.NewRequest(http.MethodPost, Path, nil))
		if got := rec.Header().Get("Connection") == "close"; got != draining {
			t.Errorf("draining %v: Connection: close set = %v", draining, got)
		}
	}
}

func serviceAccount(name string, enforce bool, pullSecrets ...string) *corev1.ServiceAccount {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: name}}
	if enforce {
		sa.Annotations = map[string]string{managed.EnforceMountableSecretsAnnotation: "true"}
	}
	for _, s := range pullSecrets {
		sa.ImagePullSecrets = append(sa.ImagePullSecrets, corev1.LocalObjectReference{Name: s})
	}
	return sa
}

func TestEnforceMountableSecrets(t *testing.T) {
	withSA := func(name string) *corev1.Pod {
		p := pod("quay.io/a/b")
		p.Spec.ServiceAccountName = name
		return p
	}
	for name, tc := range map[string]struct {
		sa          *corev1.ServiceAccount
		pod         *corev1.Pod
		mode        ServiceAccountMode
		dryRun      bool
		wantRefs    []string
		wantWarning string
		wantSAList  []string // nil: the ServiceAccount is not checked
	}{
		"a ServiceAccount that does not enforce changes nothing": {
			sa: serviceAccount("default", false), pod: pod("quay.io/a/b"), wantRefs: []string{"quay-regcred"},
		},
		"an enforcing ServiceAccount that lists the Secret gets it": {
			sa: serviceAccount("builder", true, "quay-regcred"), pod: withSA("builder"), wantRefs: []string{"quay-regcred"},
		},
		"an enforcing ServiceAccount that does not list it: nothing added, a warning": {
			sa: serviceAccount("default", true, "other"), pod: pod("quay.io/a/b"),
			wantWarning: `service account "default" enforces mountable secrets`, wantSAList: []string{"other"},
		},
		"append mode adds the Secret to the ServiceAccount, then to the Pod": {
			sa: serviceAccount("builder", true, "other"), pod: withSA("builder"), mode: ServiceAccountAppend,
			wantRefs: []string{"quay-regcred"}, wantSAList: []string{"other", "quay-regcred"},
		},
		"append mode on a ServiceAccount without pull secrets": {
			sa: serviceAccount("builder", true), pod: withSA("builder"), mode: ServiceAccountAppend,
			wantRefs: []string{"quay-regcred"}, wantSAList: []string{"quay-regcred"},
		},
		"append mode on a dry run writes nothing": {
			sa: serviceAccount("builder", true), pod: withSA("builder"), mode: ServiceAccountAppend, dryRun: true,
			wantRefs: []string{"quay-regcred"}, wantSAList: []string{},
		},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, append(sources(), namespace("team", optIn), tc.sa), append(sources(), tc.sa))
			f.injector.ServiceAccounts = tc.mode
			req := podRequest(t, "team", tc.pod, func(r *admissionv1.AdmissionRequest) { r.DryRun = ptr.To(tc.dryRun) })
			resp := f.injector.Handle(context.Background(), req)
			if diff := cmp.Diff(tc.wantRefs, applied(t, req, resp)); diff != "" {
				t.Errorf("imagePullSecrets (-want +got):\n%s", diff)
			}
			if tc.wantWarning != "" && !hasWarning(resp, tc.wantWarning) {
				t.Errorf("warnings %q lack %q", resp.Warnings, tc.wantWarning)
			}
			if tc.wantWarning == "" && len(resp.Warnings) > 0 {
				t.Errorf("unexpected warnings %q", resp.Warnings)
			}
			if tc.wantSAList != nil {
				got := &corev1.ServiceAccount{}
				if err := f.writer.Get(context.Background(), client.ObjectKeyFromObject(tc.sa), got); err != nil {
					t.Fatal(err)
				}
				names := []string{}
				for _, r := range got.ImagePullSecrets {
					names = append(names, r.Name)
				}
				if diff := cmp.Diff(tc.wantSAList, names); diff != "" {
					t.Errorf("ServiceAccount imagePullSecrets (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestAppendTwoSecretsPatchesOnTopOfTheFirst(t *testing.T) {
	sa := serviceAccount("builder", true)
	f := newFixture(t, append(sources(), namespace("team", optIn), sa), append(sources(), sa))
	f.injector.ServiceAccounts = ServiceAccountAppend
	p := pod("quay.io/a/b", "nginx")
	p.Spec.ServiceAccountName = "builder"
	req := podRequest(t, "team", p)
	resp := f.injector.Handle(context.Background(), req)
	if diff := cmp.Diff([]string{"quay-regcred", "hub-regcred"}, applied(t, req, resp)); diff != "" {
		t.Errorf("imagePullSecrets (-want +got):\n%s", diff)
	}
	got := &corev1.ServiceAccount{}
	if err := f.writer.Get(context.Background(), client.ObjectKeyFromObject(sa), got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]corev1.LocalObjectReference{{Name: "quay-regcred"}, {Name: "hub-regcred"}}, got.ImagePullSecrets); diff != "" {
		t.Errorf("ServiceAccount imagePullSecrets (-want +got):\n%s", diff)
	}
	// One live read of the enforcing ServiceAccount; the second patch starts from the first one's answer,
	// so no patch fails on a stale resourceVersion and nothing is read again.
	if n := f.api.reads.Load(); n != 1 {
		t.Errorf("API reads = %d, want 1", n)
	}
}

// problems is a CredentialProblems that knows of one.
type problems map[config.SecretRef]string

func (p problems) Problem(ref config.SecretRef) string { return p[ref] }

func TestCredentialProblemIsWarnedOnEveryPodThatGetsTheSecret(t *testing.T) {
	quay := config.SecretRef{Namespace: "psi", Name: "quay-regcred"}
	for name, cached := range map[string][]client.Object{
		"warm path":   append(sources(), namespace("team", optIn), managedCopy("team", "quay-regcred")),
		"copy create": append(sources(), namespace("team", optIn)),
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, cached, sources())
			f.injector.Health = problems{quay: `entry "quay.io": no auths key matches its images; the Secret has "ghcr.io"`}
			req := podRequest(t, "team", pod("quay.io/org/app"))
			resp := f.injector.Handle(context.Background(), req)
			if diff := cmp.Diff([]string{"quay-regcred"}, applied(t, req, resp)); diff != "" {
				t.Errorf("references (-want +got):\n%s", diff)
			}
			if !hasWarning(resp, "psi/quay-regcred", "no auths key matches", "ghcr.io") {
				t.Errorf("warnings %q, want the credential problem of psi/quay-regcred", resp.Warnings)
			}
			other := f.injector.Handle(context.Background(), podRequest(t, "team", pod("registry.example.com:5000/team-a/api")))
			if len(other.Warnings) != 0 {
				t.Errorf("a Pod that does not get quay-regcred was warned: %q", other.Warnings)
			}
		})
	}
}

// Pods a tenant creates must not turn into live reads one for one: a namespace confirmed live answers for
// liveConfirmTTL, and an enforcing ServiceAccount read live answers while the cache shows it unchanged.
func TestLiveReadsAreRemembered(t *testing.T) {
	t.Run("namespace without the label an entry's selector needs", func(t *testing.T) {
		labelled := namespace("team", optIn)
		f := newFixture(t, append(sources(), labelled), append(sources(), labelled))
		now := time.Now()
		f.injector.namespaces.Now = func() time.Time { return now }
		ecr := pod("123456789012.dkr.ecr.eu-west-1.amazonaws.com/app")
		for range 3 {
			if resp := f.injector.Handle(context.Background(), podRequest(t, "team", ecr)); len(resp.Patches) != 0 {
				t.Fatalf("patched a Pod the entry's selector leaves out: %v", resp.Patches)
			}
		}
		if got := f.api.reads.Load(); got != 1 {
			t.Errorf("3 Pods made %d live reads, want 1", got)
		}
		now = now.Add(liveConfirmTTL)
		f.injector.Handle(context.Background(), podRequest(t, "team", ecr))
		if got := f.api.reads.Load(); got != 2 {
			t.Errorf("after liveConfirmTTL: %d live reads, want 2: the namespace is confirmed again", got)
		}
	})
	t.Run("a Secret of the copy's name that someone else owns", func(t *testing.T) {
		theirs := source("quay-regcred", corev1.SecretTypeDockerConfigJson)
		theirs.Namespace = "team"
		theirs.Annotations = map[string]string{"large": strings.Repeat("x", 4096)}
		f := newFixture(t, append(sources(), namespace("team", optIn)), append(sources(), theirs))
		for i := range 3 {
			req := podRequest(t, "team", pod("quay.io/a/b"), func(r *admissionv1.AdmissionRequest) { r.DryRun = ptr.To(i == 2) })
			resp := f.injector.Handle(context.Background(), req)
			if !hasWarning(resp, `secret "quay-regcred" in namespace "team" is not managed`) {
				t.Fatalf("Pod %d: warnings %q, want the ownership warning", i, resp.Warnings)
			}
		}
		if got, creates := f.api.reads.Load(), len(f.writer.created); got != 1 || creates != 1 {
			t.Errorf("3 Pods made %d live reads and %d creates, want 1 and 1", got, creates)
		}
		if state, _ := f.injector.copies.Get("team/quay-regcred"); state != foreignSecret {
			t.Errorf("remembered %v for team/quay-regcred, want foreignSecret", state)
		}
	})
	t.Run("enforcing ServiceAccount", func(t *testing.T) {
		sa := serviceAccount("default", true, "other")
		f := newFixture(t, append(sources(), namespace("team", optIn), sa), append(sources(), sa))
		for range 3 {
			resp := f.injector.Handle(context.Background(), podRequest(t, "team", pod("quay.io/a/b")))
			if !hasWarning(resp, `service account "default" enforces mountable secrets`) {
				t.Fatalf("warnings %q, want the enforcing ServiceAccount's", resp.Warnings)
			}
		}
		if got := f.api.reads.Load(); got != 1 {
			t.Errorf("3 Pods of one unchanged ServiceAccount made %d live reads, want 1", got)
		}
	})
}

// With someone else's Secret at a copy's name, what the first Pod found answers for the next ones before
// anything is read, the source included, even when the source is not in the informer yet.
func TestForeignMemoAnswersBeforeAnyRead(t *testing.T) {
	theirs := source("quay-regcred", corev1.SecretTypeDockerConfigJson)
	theirs.Namespace = "team"
	f := newFixture(t, []client.Object{namespace("team", optIn)}, append(sources(), theirs))
	for i := range 4 {
		resp := f.injector.Handle(context.Background(), podRequest(t, "team", pod("quay.io/a/b")))
		if !hasWarning(resp, `secret "quay-regcred" in namespace "team" is not managed`) {
			t.Fatalf("Pod %d: warnings %q, want the ownership warning", i, resp.Warnings)
		}
		// The first Pod reads the source (not in the informer) and, after the create's AlreadyExists, the
		// Secret; the others read nothing.
		if got := f.api.reads.Load(); got != 2 {
			t.Fatalf("after Pod %d: %d live reads, want 2", i, got)
		}
	}
}

// appliedPod applies the response's patch to raw and returns the Pod it makes.
func appliedPod(t *testing.T, raw []byte, resp admission.Response) (*corev1.Pod, []byte) {
	t.Helper()
	if !resp.Allowed {
		t.Fatalf("response not allowed: %+v", resp.Result)
	}
	if len(resp.Patches) > 0 {
		ops, err := json.Marshal(resp.Patches)
		if err != nil {
			t.Fatal(err)
		}
		p, err := jsonpatch.DecodePatch(ops)
		if err != nil {
			t.Fatal(err)
		}
		if raw, err = p.Apply(raw); err != nil {
			t.Fatalf("apply patch %s: %v", ops, err)
		}
	}
	got := &corev1.Pod{}
	if err := json.Unmarshal(raw, got); err != nil {
		t.Fatal(err)
	}
	return got, raw
}

func injectedOf(t *testing.T, p *corev1.Pod) []Injection {
	t.Helper()
	var out []Injection
	if v, ok := p.Annotations[InjectedAnnotation]; ok {
		if err := json.Unmarshal([]byte(v), &out); err != nil {
			t.Fatalf("annotation %q is not a list of injections: %v", v, err)
		}
	}
	return out
}

// When a later webhook changes the Pod and the API server calls this one again, the annotation names
// every Secret this webhook added, from both calls.
func TestInjectedAnnotationAcrossReinvocations(t *testing.T) {
	cached := append(sources(), namespace("team", optIn), managedCopy("team", "quay-regcred"), managedCopy("team", "hub-regcred"))
	f := newFixture(t, cached, nil)
	first := podRequest(t, "team", pod("quay.io/a/b"))
	p, _ := appliedPod(t, first.Object.Raw, f.injector.Handle(context.Background(), first))
	// A later webhook adds a sidecar from Docker Hub; the API server calls this webhook again.
	p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "sidecar", Image: "nginx"})
	second := podRequest(t, "team", p)
	final, _ := appliedPod(t, second.Object.Raw, f.injector.Handle(context.Background(), second))
	want := []Injection{{Secret: "quay-regcred", Registries: []string{"quay.io"}}, {Secret: "hub-regcred", Registries: []string{"docker.io"}}}
	if diff := cmp.Diff(want, injectedOf(t, final)); diff != "" {
		t.Errorf("annotation after two calls (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]corev1.LocalObjectReference{{Name: "quay-regcred"}, {Name: "hub-regcred"}}, final.Spec.ImagePullSecrets); diff != "" {
		t.Errorf("imagePullSecrets after two calls (-want +got):\n%s", diff)
	}
}

// The annotation is the Pod author's to write at create: what it says is kept only for a Secret the Pod
// references and this webhook would add for the Pod's images, with the configuration's registries, so no
// value makes the webhook name another Secret or grow the annotation.
func TestInjectedAnnotationTheAuthorWrote(t *testing.T) {
	many := make([]Injection, 10000)
	for i := range many {
		many[i] = Injection{Secret: fmt.Sprintf("x-%d", i), Registries: []string{strings.Repeat("r", 100)}}
	}
	hub := Injection{Secret: "hub-regcred", Registries: []string{"docker.io"}}
	for name, tc := range map[string]struct {
		written any
		refs    []string
		images  []string
		want    []Injection
	}{
		"a Secret the Pod references and the webhook would add is kept, with the configured registries": {
			written: []Injection{{Secret: "quay-regcred", Registries: []string{"evil.example.com"}}},
			refs:    []string{"quay-regcred"}, images: []string{"quay.io/a/b", "nginx"},
			want: []Injection{{Secret: "quay-regcred", Registries: []string{"quay.io"}}, hub},
		},
		"a Secret the Pod does not reference is not claimed": {
			written: []Injection{{Secret: "team-a-regcred", Registries: []string{"registry.example.com:5000/team-a"}}},
			images:  []string{"nginx"}, want: []Injection{hub},
		},
		"a Secret no image of the Pod needs is not claimed": {
			written: []Injection{{Secret: "team-a-regcred", Registries: []string{"registry.example.com:5000/team-a"}}},
			refs:    []string{"team-a-regcred"}, images: []string{"nginx"}, want: []Injection{hub},
		},
		"a Secret that is not configured is not claimed": {
			written: []Injection{{Secret: "mine", Registries: []string{"docker.io"}}},
			refs:    []string{"mine"}, images: []string{"nginx"}, want: []Injection{hub},
		},
		"10,000 entries leave only what the configuration allows": {
			written: append(many, Injection{Secret: "quay-regcred"}),
			refs:    []string{"quay-regcred"}, images: []string{"nginx", "quay.io/a/b"},
			want: []Injection{{Secret: "quay-regcred", Registries: []string{"quay.io"}}, hub},
		},
		"a value that is no list of injections is replaced": {
			written: "lie", images: []string{"nginx"}, want: []Injection{hub},
		},
		// As the MutatingAdmissionPolicy reads it, which cannot parse JSON: the text of an injection as the
		// project writes one, wherever it is.
		"an injection spelt otherwise is not read": {
			written: `[{"registries":["quay.io"],"secret":"quay-regcred"}]`,
			refs:    []string{"quay-regcred"}, images: []string{"nginx", "quay.io/a/b"}, want: []Injection{hub},
		},
		"an injection inside text that is no JSON is read": {
			written: `lie {"secret":"quay-regcred", lie`,
			refs:    []string{"quay-regcred"}, images: []string{"nginx", "quay.io/a/b"},
			want: []Injection{{Secret: "quay-regcred", Registries: []string{"quay.io"}}, hub},
		},
	} {
		t.Run(name, func(t *testing.T) {
			cached := append(sources(), namespace("team", optIn), managedCopy("team", "quay-regcred"),
				managedCopy("team", "hub-regcred"), managedCopy("team", "team-a-regcred"))
			f := newFixture(t, cached, nil)
			p := withPullSecrets(pod(tc.images...), tc.refs...)
			value, ok := tc.written.(string)
			if !ok {
				value = mustJSON(t, tc.written)
			}
			p.Annotations = map[string]string{InjectedAnnotation: value}
			req := podRequest(t, "team", p)
			got, _ := appliedPod(t, req.Object.Raw, f.injector.Handle(context.Background(), req))
			if diff := cmp.Diff(tc.want, injectedOf(t, got)); diff != "" {
				t.Errorf("annotation (-want +got):\n%s", diff)
			}
		})
	}
}

// The memo of an enforcing ServiceAccount keeps only the configured Secrets it lists, so a reload that
// configures another Secret must not answer from it: the ServiceAccount is read again.
func TestServiceAccountMemoFollowsTheConfiguration(t *testing.T) {
	sa := serviceAccount("builder", true, "other", "new-regcred")
	newSource := source("new-regcred", corev1.SecretTypeDockerConfigJson)
	f := newFixture(t, append(sources(), namespace("team", optIn), sa, newSource), append(sources(), sa, newSource))
	p := pod("quay.io/a/b", "new.example.com/app")
	p.Spec.ServiceAccountName = "builder"
	req := podRequest(t, "team", p)
	if resp := f.injector.Handle(context.Background(), req); !hasWarning(resp, `does not list "quay-regcred"`) || len(applied(t, req, resp)) != 0 {
		t.Fatalf("before the reload: references %v, warnings %q; want none and the warning", applied(t, req, resp), resp.Warnings)
	}
	f.injector.Config = config.NewStaticStore(configtest.Matcher(t, testConfig+`
  - registry: new.example.com
    secret: {namespace: psi, name: new-regcred}
`))
	resp := f.injector.Handle(context.Background(), req)
	if diff := cmp.Diff([]string{"new-regcred"}, applied(t, req, resp)); diff != "" {
		t.Errorf("after the reload, imagePullSecrets (-want +got):\n%s", diff)
	}
	if got := f.api.reads.Load(); got != 2 {
		t.Errorf("%d live reads of the ServiceAccount, want 2: one per configuration", got)
	}
}
