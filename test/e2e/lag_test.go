package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pullsecret-injector/pullsecret-injector/test/testenv"
)

// lagConfig uses a registry only this test's webhook knows, so the shared e2e webhook (which intercepts
// every namespace) cannot be what adds the reference.
const lagConfig = `
registries:
  - registry: lag.example.com
    secret: {namespace: pullsecret-injector, name: lag-regcred}
  - registry: late.example.com
    secret: {namespace: pullsecret-injector, name: late-regcred}
`

// cacheLag is how late the lagging webhook's informers see every change: far longer than the test's steps
// take even on a loaded machine, so that its cache cannot catch up between a label and the Pods after it.
const cacheLag = 30 * time.Second

// TestCacheLagNeverCostsASecret runs a webhook whose informers see every change cacheLag late (its watches
// go through a proxy that holds them back), then does what a pipeline does: create a namespace, label it,
// create a source Secret and deploy, back to back. Every Pod must get its secret anyway, from the live
// reads that confirm what the cache does not show yet.
func TestCacheLagNeverCostsASecret(t *testing.T) {
	ctx := context.Background()
	proxy, err := cp.StartLaggingProxy(cacheLag)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := proxy.Stop(); err != nil {
			t.Error(err)
		}
	})
	w, err := cp.StartWebhook(ctx, binary, []byte(lagConfig), "--kubeconfig", proxy.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	stopAfterTest(t, w)
	// Only namespaces made by this test, which carry this label from their creation on, reach it.
	const scope = "e2e-cache-lag"
	mwc := cp.MutatingWebhookConfiguration("pullsecret-injector-e2e-lag", w.Port,
		&metav1.LabelSelector{MatchLabels: map[string]string{scope: "true"}})
	registerWebhook(t, admin, mwc)

	// The source appears only now, so the webhook's cache of it lags too.
	if _, err := admin.CoreV1().Secrets(sourceNamespace).Create(ctx, pullSecret("lag-regcred", "lag.example.com"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	const image, lateImage = "lag.example.com/team/app:1", "late.example.com/team/sidecar:1"
	for round := range 5 {
		name := fmt.Sprintf("lag-%d-%d", round, nsCounter.Add(1))
		if err := createNamespace(ctx, name, map[string]string{scope: "true"}); err != nil {
			t.Fatal(err)
		}
		if round == 0 {
			// The API server has to pick the registration up before the first round means anything.
			labelNamespace(t, admin, name, optIn())
			if err := testenv.WaitForMutation(ctx, admin, name, image, "lag-regcred"); err != nil {
				t.Fatal(err)
			}
			// A source created just before the Pods that need it: the cache cannot have it yet.
			if _, err := admin.CoreV1().Secrets(sourceNamespace).Create(ctx, pullSecret("late-regcred", "late.example.com"), metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			continue
		}
		labelNamespace(t, admin, name, optIn())
		for i := range 2 {
			pod, _ := cp.MustCreatePod(t, name, podWith(fmt.Sprintf("app-%d", i), image, lateImage))
			if diff := cmp.Diff([]string{"lag-regcred", "late-regcred"}, refNames(pod)); diff != "" {
				t.Errorf("round %d pod %d: imagePullSecrets (-want +got):\n%s", round, i, diff)
			}
		}
		if copies := managedCopies(t, name); len(copies) != 2 {
			t.Errorf("round %d: %d managed copies, want 2", round, len(copies))
		}
	}
	// The lag was real: the webhook had to confirm namespaces its cache did not show as opted in.
	log := w.Log()
	for _, line := range []string{"Confirming namespace labels with a live read", "Source secret not in cache, reading it live"} {
		if !strings.Contains(log, line) {
			t.Errorf("the webhook never logged %q: the proxy did not make its cache lag", line)
		}
	}
}
