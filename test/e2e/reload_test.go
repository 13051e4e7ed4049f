package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pullsecret-injector/pullsecret-injector/test/testenv"
)

// reloadSourceNamespace is a source namespace that only the reloaded configuration names.
const reloadSourceNamespace = "reload-sources"

// reloadedConfig adds an entry whose source lives in a namespace no entry named before, and drops the
// removed.example.com entry.
var reloadedConfig = strings.Replace(e2eConfig, `
  - registry: removed.example.com
    secret: {namespace: pullsecret-injector, name: removed-regcred}`, `
  - registry: reload.example.com
    secret: {namespace: reload-sources, name: reload-regcred}`, 1)

// invalidConfig has two problems in different places; both must be reported with their field paths.
const invalidConfig = `
registries:
  - registry: "bad registry!"
    secret: {namespace: pullsecret-injector, name: quay-regcred}
  - registry: quay.io
    secret: {namespace: pullsecret-injector, name: Not_A_Name}
`

// TestConfigReload changes the webhook's configuration file the way the kubelet updates a ConfigMap volume:
// an added entry with a new source namespace works for the webhook and the reconciler, the copies of a
// removed entry are revoked, and an invalid file is refused while the previous configuration keeps serving.
func TestConfigReload(t *testing.T) {
	ctx := context.Background()
	if reloadedConfig == e2eConfig {
		t.Fatal("reloadedConfig is e2eConfig: the entry it replaces is gone from e2eConfig")
	}
	if err := createNamespace(ctx, reloadSourceNamespace, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CoreV1().Secrets(reloadSourceNamespace).Create(ctx, pullSecret("reload-regcred", "reload.example.com"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A copy of the entry that the reload removes, used by no Pod.
	removedNS := newNamespace(t, "reload-removed", optIn())
	cp.MustCreatePod(t, removedNS, podWith("app", "removed.example.com/app:1"))
	deletePod(t, removedNS, "app")

	t.Cleanup(func() {
		if err := webhook.UpdateConfig([]byte(e2eConfig)); err != nil {
			t.Error(err)
			return
		}
		probe := newNamespace(t, "reload-restored", optIn())
		if err := testenv.WaitForMutation(ctx, admin, probe, "removed.example.com/app", "removed-regcred"); err != nil {
			t.Errorf("restoring the e2e configuration: %v", err)
		}
	})

	ns := newNamespace(t, "reload", optIn())
	start := time.Now()
	if err := webhook.UpdateConfig([]byte(reloadedConfig)); err != nil {
		t.Fatal(err)
	}
	probe := podWith("probe", "reload.example.com/team/app:1")
	took := eventually(t, reloadBound, "reloaded configuration injects the new entry", func() (bool, error) {
		got, err := admin.CoreV1().Pods(ns).Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			return false, err
		}
		return cmp.Equal([]string{"reload-regcred"}, refNames(got)), nil
	}, func() string { return tail(webhook.Log(), 20) })
	t.Logf("new configuration served %v after the file was swapped", took)

	pod, warns := cp.MustCreatePod(t, ns, podWith("app", "reload.example.com/team/app:1"))
	if diff := cmp.Diff([]string{"reload-regcred"}, refNames(pod)); diff != "" || len(warns) > 0 {
		t.Errorf("imagePullSecrets (-want +got):\n%s\nwarnings: %q", diff, warns)
	}
	want := getSecret(t, reloadSourceNamespace, "reload-regcred").Data
	if got := getSecret(t, ns, "reload-regcred"); !cmp.Equal(want, got.Data) {
		t.Errorf("copy from the new source namespace holds other data")
	}

	// The reconciler follows the new configuration too: the new source's rotation reaches its copy, and the
	// removed entry's copy is revoked.
	rotated := rotatedConfig("reload.example.com", "reloaded")
	s := getSecret(t, reloadSourceNamespace, "reload-regcred")
	s.Data = map[string][]byte{corev1.DockerConfigJsonKey: rotated}
	if _, err := admin.CoreV1().Secrets(reloadSourceNamespace).Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, syncBound, "rotation of a source added by the reload", func() (bool, error) {
		ok, _ := allHold(t, "reload-regcred", []string{ns}, rotated)
		return ok, nil
	}, func() string { _, d := allHold(t, "reload-regcred", []string{ns}, rotated); return d })
	eventually(t, revokeBound, "copy of the removed entry revoked", secretGone(removedNS, "removed-regcred"),
		func() string { return "copy still there" })
	t.Logf("copy of the removed entry revoked %v after the file was swapped", time.Since(start))

	// An invalid file: every problem is logged with its field path, the process stays ready, and the
	// configuration in force keeps serving.
	if err := webhook.UpdateConfig([]byte(invalidConfig)); err != nil {
		t.Fatal(err)
	}
	waitForLog(t, webhook, reloadBound, "Configuration file refused", "registries[0].registry", "registries[1].secret.name")
	if !testenv.Ready(ctx, "http://"+webhook.ProbeAddr+"/readyz") {
		t.Error("the webhook is not ready after refusing an invalid configuration")
	}
	pod, _ = cp.MustCreatePod(t, ns, podWith("app2", "reload.example.com/team/app:1"))
	if diff := cmp.Diff([]string{"reload-regcred"}, refNames(pod)); diff != "" {
		t.Errorf("after an invalid file, imagePullSecrets (-want +got):\n%s", diff)
	}
}
