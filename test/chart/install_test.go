package chart

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/test/testenv"
)

// installValues opts in only namespaces with a label no other test uses: the release's webhook
// registration (failurePolicy Fail, and no Pod behind its Service) must not refuse other tests' Pods while
// it exists.
const installValues = `
namespaceSelector:
  matchLabels: {chart-test/install: enabled}
registries:
  - registry: registry.example.com/team-a
    secret: {name: team-a-regcred}
`

const upgradeValues = `
namespaceSelector:
  matchLabels: {chart-test/install: enabled}
registries:
  - registry: registry.example.com/team-a
    secret: {name: team-a-regcred}
  - registry: quay.io/team-b
    secret: {name: team-b-regcred}
`

// TestInstallUpgradeUninstall installs the chart with helm, upgrades it with a changed registry list, and
// uninstalls it, checking Helm's record of the release and the objects in the API server at each step. The
// upgrade changes the ConfigMap and leaves the Pod template alone: the binary rereads its configuration.
func TestInstallUpgradeUninstall(t *testing.T) {
	ctx := context.Background()
	const rel, namespace = "inst", "chart-install"
	defer func() {
		// Leave no webhook registration behind if the test fails half-way.
		_, _ = helm(t, "uninstall", rel, "--namespace", namespace)
	}()

	notes := mustHelm(t, "install", rel, chartDir, "--namespace", namespace, "--create-namespace", "--values", valuesFile(t, installValues))
	checkRelease(t, rel, namespace, 1)
	// NOTES.txt tells the user how to opt a namespace in and check it, with this release's values.
	for _, want := range []string{
		"kubectl -n " + namespace + " rollout status deployment/" + rel + "-pullsecret-injector",
		"kubectl -n " + namespace + " create secret docker-registry team-a-regcred \\\n       --docker-server=registry.example.com/team-a",
		"kubectl label namespace <namespace> chart-test/install=enabled\n",
		"kubectl -n <namespace> run check --image=registry.example.com/team-a/some/image --dry-run=server",
		`It prints [{"name":"team-a-regcred"}]`,
		"no Pod restarts. The webhook rereads\n   its configuration",
		"the replica holding the Lease " + rel + "-pullsecret-injector brings the copies already made in line",
	} {
		if !strings.Contains(notes, want) {
			t.Errorf("helm install output lacks %q:\n%s", want, notes)
		}
	}
	installed := releaseObjects(t, rel, namespace)
	checkStored(ctx, t, installed, true)
	// helm install asks the API server, which serves ValidatingAdmissionPolicy, so the admission guard is in.
	for _, kind := range []string{"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} {
		if len(find(installed, kind)) != 1 {
			t.Errorf("helm install made %d objects of kind %s, want 1: the admission guard is on by default", len(find(installed, kind)), kind)
		}
	}
	cmBefore := storedConfig(ctx, t, namespace, rel+"-pullsecret-injector")
	templateBefore := storedPodTemplate(ctx, t, namespace, rel+"-pullsecret-injector")

	mustHelm(t, "upgrade", rel, chartDir, "--namespace", namespace, "--values", valuesFile(t, upgradeValues))
	checkRelease(t, rel, namespace, 2)
	upgraded := releaseObjects(t, rel, namespace)
	checkStored(ctx, t, upgraded, true)
	cmAfter := storedConfig(ctx, t, namespace, rel+"-pullsecret-injector")
	var before, after []string
	for _, r := range cmBefore.Registries {
		before = append(before, r.Registry+" "+r.Secret.String())
	}
	for _, r := range cmAfter.Registries {
		after = append(after, r.Registry+" "+r.Secret.String())
	}
	wantAfter := []string{"registry.example.com/team-a " + namespace + "/team-a-regcred", "quay.io/team-b " + namespace + "/team-b-regcred"}
	if diff := cmp.Diff(wantAfter, after); diff != "" {
		t.Errorf("stored configuration after the upgrade (-want +got):\n%s\nbefore: %v", diff, before)
	}
	if diff := cmp.Diff(templateBefore, storedPodTemplate(ctx, t, namespace, rel+"-pullsecret-injector")); diff != "" {
		t.Errorf("a registries change altered the Pod template, which rolls every Pod for a file the binary rereads (-before +after):\n%s", diff)
	}
	history := mustHelm(t, "history", rel, "--namespace", namespace, "--output", "json")
	var revisions []struct {
		Revision int    `json:"revision"`
		Status   string `json:"status"`
	}
	if err := json.Unmarshal([]byte(history), &revisions); err != nil {
		t.Fatalf("parse helm history: %v\n%s", err, history)
	}
	if len(revisions) != 2 || revisions[0].Status != "superseded" || revisions[1].Status != "deployed" {
		t.Errorf("helm history = %+v, want revision 1 superseded and 2 deployed", revisions)
	}

	mustHelm(t, "uninstall", rel, "--namespace", namespace)
	list := mustHelm(t, "list", "--namespace", namespace, "--all", "--output", "json")
	if strings.TrimSpace(list) != "[]" {
		t.Errorf("helm list after uninstall = %s, want []", list)
	}
	checkStored(ctx, t, append(installed, upgraded...), false)
}

// checkRelease checks that Helm recorded the release as deployed at revision.
func checkRelease(t *testing.T, rel, namespace string, revision int) {
	t.Helper()
	out := mustHelm(t, "status", rel, "--namespace", namespace, "--output", "json")
	var status struct {
		Version int `json:"version"`
		Info    struct {
			Status string `json:"status"`
		} `json:"info"`
	}
	if err := json.Unmarshal([]byte(out), &status); err != nil {
		t.Fatalf("parse helm status: %v\n%s", err, out)
	}
	if status.Info.Status != "deployed" || status.Version != revision {
		t.Errorf("release %s is %q at revision %d, want deployed at %d", rel, status.Info.Status, status.Version, revision)
	}
}

// releaseObjects returns the objects Helm recorded for the release's current revision.
func releaseObjects(t *testing.T, rel, namespace string) []*unstructured.Unstructured {
	t.Helper()
	objs, err := parseManifests(mustHelm(t, "get", "manifest", rel, "--namespace", namespace))
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) == 0 {
		t.Fatal("helm recorded no objects for the release")
	}
	for _, o := range objs {
		if o.GetNamespace() == "" {
			if _, namespaced, err := resourceFor(o); err == nil && namespaced {
				o.SetNamespace(namespace)
			}
		}
	}
	return objs
}

// checkStored waits until every object is stored (want true) or gone (want false). Deletion is
// asynchronous for objects with finalizers, so absence is waited for rather than read once.
func checkStored(ctx context.Context, t *testing.T, objs []*unstructured.Unstructured, want bool) {
	t.Helper()
	for _, o := range objs {
		var last error
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, testenv.SettleTimeout, true, func(ctx context.Context) (bool, error) {
			got, err := exists(ctx, o)
			last = err
			return err == nil && got == want, nil
		})
		if err != nil {
			state := "stored"
			if !want {
				state = "gone"
			}
			t.Errorf("%s %s/%s not %s (last error: %v)", o.GetKind(), o.GetNamespace(), o.GetName(), state, last)
		}
	}
}

func storedConfig(ctx context.Context, t *testing.T, namespace, name string) *config.Config {
	t.Helper()
	cm, err := admin.CoreV1().ConfigMaps(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte(cm.Data["config.yaml"]))
	if err != nil {
		t.Fatalf("stored configuration: %v", err)
	}
	return cfg
}

func storedPodTemplate(ctx context.Context, t *testing.T, namespace, name string) corev1.PodTemplateSpec {
	t.Helper()
	d, err := admin.AppsV1().Deployments(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d.Spec.Template
}
