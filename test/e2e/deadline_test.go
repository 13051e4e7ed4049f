package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/pullsecret-injector/pullsecret-injector/test/testenv"
)

// apiDelay is how late the API server answers the webhook in TestSlowAPIServerNeverCostsAPod: longer than
// the registration's timeout, so that waiting for any one call would fail the Pod.
const apiDelay = 6 * time.Second

// slowConfig names a registry only the slow webhook knows, so that the main e2e webhook, which sees the
// same Pods, leaves them alone.
const slowConfig = `
registries:
  - registry: slow.example.com
    secret: {namespace: pullsecret-injector, name: slow-regcred}
`

// TestSlowAPIServerNeverCostsAPod runs a webhook whose every API request (but its watches) is answered six
// seconds late, behind a registration with the chart's default timeoutSeconds of 5: Pods in a new namespace
// need a copy created, which cannot finish in time, and must still be admitted, inside the timeout, with
// their references. The copy lands afterwards.
func TestSlowAPIServerNeverCostsAPod(t *testing.T) {
	ctx := context.Background()
	proxy, err := cp.StartSlowProxy(apiDelay)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := proxy.Stop(); err != nil {
			t.Error(err)
		}
	})
	if _, err := admin.CoreV1().Secrets(sourceNamespace).Create(ctx, pullSecret("slow-regcred", "slow.example.com"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	w, err := cp.StartWebhook(ctx, binary, []byte(slowConfig), "--kubeconfig", proxy.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	stopAfterTest(t, w)
	const scope = "e2e-slow-api"
	mwc := cp.MutatingWebhookConfiguration("pullsecret-injector-e2e-slow", w.Port,
		&metav1.LabelSelector{MatchLabels: map[string]string{scope: "true"}})
	const timeoutSeconds = 5
	mwc.Webhooks[0].TimeoutSeconds = ptr.To[int32](timeoutSeconds)
	registerWebhook(t, admin, mwc)
	probe := newNamespace(t, "slow-probe", map[string]string{scope: "true"})
	labelNamespace(t, admin, probe, optIn())
	if err := testenv.WaitForMutation(ctx, admin, probe, "slow.example.com/org/app", "slow-regcred"); err != nil {
		t.Fatal(err)
	}

	ns := newNamespace(t, "slow", map[string]string{scope: "true"})
	labelNamespace(t, admin, ns, optIn())
	const pods = 5
	var mu sync.Mutex
	var worst time.Duration
	var wg sync.WaitGroup
	for i := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			pod, warns, err := cp.CreatePod(ctx, ns, podWith(fmt.Sprintf("app-%d", i), "slow.example.com/team/app:1"))
			took := time.Since(start)
			mu.Lock()
			worst = max(worst, took)
			mu.Unlock()
			if err != nil {
				t.Errorf("pod %d refused after %v: %v", i, took, err)
				return
			}
			if diff := cmp.Diff([]string{"slow-regcred"}, refNames(pod)); diff != "" {
				t.Errorf("pod %d imagePullSecrets (-want +got):\n%s\nwarnings: %q", i, diff, warns)
			}
		}()
	}
	wg.Wait()
	t.Logf("%d Pods admitted with their references; the slowest create took %v (timeoutSeconds %d, API answers %v late)",
		pods, worst, timeoutSeconds, apiDelay)
	eventually(t, testenv.SettleTimeout, "the copy lands after the Pods were admitted", func() (bool, error) {
		_, err := admin.CoreV1().Secrets(ns).Get(ctx, "slow-regcred", metav1.GetOptions{})
		return err == nil, nil
	}, func() string { return tail(w.Log(), 20) })
}
