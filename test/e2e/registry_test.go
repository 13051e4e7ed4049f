package e2e

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/authn"
	k8schain "github.com/google/go-containerregistry/pkg/authn/kubernetes"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/test/testenv"
)

// TestPullThroughRealRegistry closes the loop the other tests leave open: that what the webhook puts on a
// Pod lets the image be pulled. It runs a real distribution registry with htpasswd auth and TLS, pushes an
// image to it, and pulls that image with a keychain built only from the Pods' imagePullSecrets, read from
// the Pod's namespace as the kubelet reads them, with the kubelet's credential-matching rules
// (go-containerregistry's Kubernetes keychain).
func TestPullThroughRealRegistry(t *testing.T) {
	ctx := context.Background()
	registryBinary, err := testenv.RegistryBinary()
	if err != nil {
		t.Fatal(err)
	}
	const user = "puller"
	password := randomPassword(t)
	reg, err := testenv.StartRegistry(ctx, registryBinary, t.TempDir(), map[string]string{user: password})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- registry log (%s) ---\n%s", reg.LogPath, tail(reg.Log(), 60))
		}
		if err := reg.Stop(); err != nil {
			t.Error(err)
		}
	})

	// Two repositories with the same content, each mapped to its own source Secret; the second Secret
	// holds a wrong password, so its Pod's pull must fail although the webhook does its part.
	good, wrong := reg.Host+"/team/app:v1", reg.Host+"/wrong/app:v1"
	img, err := random.Image(4096, 2)
	if err != nil {
		t.Fatal(err)
	}
	pushed := imageDigests(t, img)
	for _, ref := range []string{good, wrong} {
		push(ctx, t, reg, ref, img, &authn.Basic{Username: user, Password: password})
	}

	plane, cs := ownControlPlane(t)
	mkNamespace := func(name string, labels map[string]string) {
		t.Helper()
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	mkNamespace(sourceNamespace, nil)
	const goodSecret, wrongSecret = "registry-regcred", "registry-wrong-regcred"
	for secret, pw := range map[string]string{goodSecret: password, wrongSecret: password + "-wrong"} {
		s := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: secret},
			Type:       corev1.SecretTypeDockerConfigJson,
			Data:       map[string][]byte{corev1.DockerConfigJsonKey: dockerConfigJSON(t, reg.Host, user, pw)},
		}
		if _, err := cs.CoreV1().Secrets(sourceNamespace).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := yaml.Marshal(config.Config{Registries: []config.Registry{
		{Registry: reg.Host + "/team", Secret: config.SecretRef{Namespace: sourceNamespace, Name: goodSecret}},
		{Registry: reg.Host + "/wrong", Secret: config.SecretRef{Namespace: sourceNamespace, Name: wrongSecret}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	w, err := plane.StartWebhook(ctx, binary, cfg)
	if err != nil {
		t.Fatal(err)
	}
	stopAfterTest(t, w)
	// As in TestMain, the registration sends every namespace but two to the webhook, so that it is the
	// webhook that leaves the namespace that is not opted in alone.
	mwc := plane.MutatingWebhookConfiguration("registry-pull", w.Port, &metav1.LabelSelector{
		MatchExpressions: []metav1.LabelSelectorRequirement{{
			Key: corev1.LabelMetadataName, Operator: metav1.LabelSelectorOpNotIn,
			Values: []string{metav1.NamespaceSystem, sourceNamespace},
		}},
	})
	registerWebhook(t, cs, mwc)
	optedIn, notOptedIn := "registry-opted-in", "registry-not-opted-in"
	mkNamespace(optedIn, optIn())
	mkNamespace(notOptedIn, nil)
	if err := testenv.WaitForMutation(ctx, cs, optedIn, good, goodSecret); err != nil {
		t.Fatal(err)
	}

	t.Run("a Pod in an opted-in namespace pulls the image with the injected secret", func(t *testing.T) {
		pod := createPodIn(ctx, t, plane, optedIn, podWith("app", good))
		if diff := cmp.Diff([]string{goodSecret}, refNames(pod)); diff != "" {
			t.Fatalf("imagePullSecrets (-want +got):\n%s", diff)
		}
		got, err := pull(ctx, reg, good, podKeychain(ctx, t, cs, pod))
		if err != nil {
			t.Fatalf("pull %s with the Pod's pull secrets: %v", good, err)
		}
		if diff := cmp.Diff(pushed, got); diff != "" {
			t.Errorf("pulled image (-pushed +pulled):\n%s", diff)
		}
	})
	t.Run("the same Pod in a namespace that is not opted in gets no secret and its pull is refused", func(t *testing.T) {
		pod := createPodIn(ctx, t, plane, notOptedIn, podWith("app", good))
		if len(pod.Spec.ImagePullSecrets) != 0 {
			t.Fatalf("imagePullSecrets = %v, want none", refNames(pod))
		}
		_, err := pull(ctx, reg, good, podKeychain(ctx, t, cs, pod))
		wantUnauthorized(t, err)
	})
	t.Run("a Pod whose injected secret holds a wrong password is refused", func(t *testing.T) {
		pod := createPodIn(ctx, t, plane, optedIn, podWith("wrong", wrong))
		if diff := cmp.Diff([]string{wrongSecret}, refNames(pod)); diff != "" {
			t.Fatalf("imagePullSecrets (-want +got):\n%s", diff)
		}
		_, err := pull(ctx, reg, wrong, podKeychain(ctx, t, cs, pod))
		wantUnauthorized(t, err)
	})
}

// pulledImage is what a pull compares: the manifest digest and the digests of the layers read in full.
type pulledImage struct {
	Manifest v1.Hash
	Layers   []v1.Hash
}

func imageDigests(t *testing.T, img v1.Image) pulledImage {
	t.Helper()
	got, err := readImage(img)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// readImage reads every layer to its end, which makes go-containerregistry check the content against its
// digest, and returns the digests.
func readImage(img v1.Image) (pulledImage, error) {
	var out pulledImage
	var err error
	if out.Manifest, err = img.Digest(); err != nil {
		return out, fmt.Errorf("read manifest digest: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return out, fmt.Errorf("list layers: %w", err)
	}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return out, fmt.Errorf("read layer digest: %w", err)
		}
		rc, err := l.Compressed()
		if err != nil {
			return out, fmt.Errorf("open layer %s: %w", d, err)
		}
		_, err = io.Copy(io.Discard, rc)
		if cerr := rc.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return out, fmt.Errorf("read layer %s: %w", d, err)
		}
		out.Layers = append(out.Layers, d)
	}
	return out, nil
}

func push(ctx context.Context, t *testing.T, reg *testenv.Registry, ref string, img v1.Image, auth authn.Authenticator) {
	t.Helper()
	r, err := name.ParseReference(ref, name.StrictValidation)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img, remote.WithContext(ctx), remote.WithTransport(reg.Transport), remote.WithAuth(auth)); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
}

// pull pulls ref as a client that trusts the registry's CA and authenticates with what kc resolves for it.
func pull(ctx context.Context, reg *testenv.Registry, ref string, kc authn.Keychain) (pulledImage, error) {
	r, err := name.ParseReference(ref, name.StrictValidation)
	if err != nil {
		return pulledImage{}, err
	}
	img, err := remote.Image(r, remote.WithContext(ctx), remote.WithTransport(reg.Transport), remote.WithAuthFromKeychain(kc))
	if err != nil {
		return pulledImage{}, fmt.Errorf("fetch manifest: %w", err)
	}
	return readImage(img)
}

// podKeychain returns the credentials the kubelet would offer for pod's images: the Secrets its
// imagePullSecrets name, read from its namespace. A reference to a missing Secret fails the test: the
// webhook copies every Secret it references before the Pod is admitted.
func podKeychain(ctx context.Context, t *testing.T, cs kubernetes.Interface, pod *corev1.Pod) authn.Keychain {
	t.Helper()
	var secrets []corev1.Secret
	for _, ref := range pod.Spec.ImagePullSecrets {
		s, err := cs.CoreV1().Secrets(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("read pull secret %q of pod %s/%s: %v", ref.Name, pod.Namespace, pod.Name, err)
		}
		secrets = append(secrets, *s)
	}
	kc, err := k8schain.NewFromPullSecrets(ctx, secrets)
	if err != nil {
		t.Fatalf("build keychain from the pull secrets of pod %s/%s: %v", pod.Namespace, pod.Name, err)
	}
	return kc
}

// wantUnauthorized fails the test unless err is the registry's 401 UNAUTHORIZED.
func wantUnauthorized(t *testing.T, err error) {
	t.Helper()
	var terr *transport.Error
	if !errors.As(err, &terr) {
		t.Fatalf("pull error = %v, want the registry's 401", err)
	}
	if terr.StatusCode != http.StatusUnauthorized {
		t.Errorf("pull status = %d, want %d (%v)", terr.StatusCode, http.StatusUnauthorized, err)
	}
	var codes []transport.ErrorCode
	for _, d := range terr.Errors {
		codes = append(codes, d.Code)
	}
	if diff := cmp.Diff([]transport.ErrorCode{transport.UnauthorizedErrorCode}, codes); diff != "" {
		t.Errorf("registry error codes (-want +got):\n%s", diff)
	}
}

func createPodIn(ctx context.Context, t *testing.T, plane *testenv.ControlPlane, namespace string, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	stored, warnings, err := plane.CreatePod(ctx, namespace, pod)
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 0 {
		t.Errorf("unexpected warnings: %q", warnings)
	}
	return stored
}

// dockerConfigJSON returns a kubernetes.io/dockerconfigjson payload for registry as
// `kubectl create secret docker-registry` writes it.
func dockerConfigJSON(t *testing.T, registry, user, password string) []byte {
	t.Helper()
	type entry struct {
		Username string `json:"username"`
		Password string `json:"password"`
		Auth     string `json:"auth"`
	}
	b, err := json.Marshal(map[string]map[string]entry{"auths": {registry: {
		Username: user, Password: password, Auth: base64.StdEncoding.EncodeToString([]byte(user + ":" + password)),
	}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func randomPassword(t *testing.T) string {
	t.Helper()
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}
