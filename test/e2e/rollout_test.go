package e2e

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pullsecret-injector/pullsecret-injector/test/testenv"
)

const rolloutConfig = `
registries:
  - registry: rollout.example.com
    secret: {namespace: pullsecret-injector, name: rollout-regcred}
`

const (
	// rolloutCreates is the least number of Pod creates made while both replicas restart.
	rolloutCreates = 1000
	// endpointLag is how long after SIGTERM the balancer still sends new connections to a replica, as a
	// Service's endpoints take a moment to drop a terminating Pod.
	endpointLag = 2 * time.Second
	// rolloutShutdownDelay is the replicas' --shutdown-delay, the chart's default.
	rolloutShutdownDelay = 5 * time.Second
)

// TestRolloutRefusesNoPod restarts two replicas one after the other, behind a balancer that keeps routing
// to a replica for a while after it is told to stop, during at least 1,000 Pod creates through a
// registration with failurePolicy Fail: not one create may fail.
func TestRolloutRefusesNoPod(t *testing.T) {
	ctx := context.Background()
	if _, err := admin.CoreV1().Secrets(sourceNamespace).Create(ctx, pullSecret("rollout-regcred", "rollout.example.com"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	start := func() *testenv.Webhook {
		t.Helper()
		w, err := cp.StartWebhook(ctx, binary, []byte(rolloutConfig), "--shutdown-delay", rolloutShutdownDelay.String())
		if err != nil {
			t.Fatal(err)
		}
		stopAfterTest(t, w)
		return w
	}
	addr := func(w *testenv.Webhook) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(w.Port)) }
	replicas := []*testenv.Webhook{start(), start()}
	lb, err := testenv.StartBalancer(addr(replicas[0]), addr(replicas[1]))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lb.Stop(); err != nil {
			t.Error(err)
		}
	})
	const scope = "e2e-rollout"
	mwc := cp.MutatingWebhookConfiguration("pullsecret-injector-e2e-rollout", lb.Port,
		&metav1.LabelSelector{MatchLabels: map[string]string{scope: "true"}})
	registerWebhook(t, admin, mwc)
	ns := newNamespace(t, "rollout", merge(optIn(), map[string]string{scope: "true"}))
	if err := testenv.WaitForMutation(ctx, admin, ns, "rollout.example.com/app", "rollout-regcred"); err != nil {
		t.Fatal(err)
	}

	cs, err := newClient()
	if err != nil {
		t.Fatal(err)
	}
	var created, failed atomic.Int64
	var firstErr atomic.Value
	restarted := make(chan struct{})
	var wg sync.WaitGroup
	for worker := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-restarted:
					if created.Load()+failed.Load() >= rolloutCreates {
						return
					}
				default:
				}
				pod, err := cs.CoreV1().Pods(ns).Create(ctx, podWith(fmt.Sprintf("app-%d-%d", worker, i), "rollout.example.com/team/app:1"), metav1.CreateOptions{})
				if err == nil && !cmp.Equal([]string{"rollout-regcred"}, refNames(pod)) {
					err = fmt.Errorf("pod %s has imagePullSecrets %v", pod.Name, refNames(pod))
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				created.Add(1)
			}
		}()
	}

	began := time.Now()
	for i, old := range replicas {
		old.Terminate()
		time.Sleep(endpointLag) // the balancer's view lags behind the SIGTERM, as endpoints do
		lb.Remove(addr(old))
		if !old.Wait(rolloutShutdownDelay + 30*time.Second) {
			t.Fatalf("replica %d did not exit after SIGTERM", i)
		}
		replicas[i] = start()
		lb.Add(addr(replicas[i]))
	}
	close(restarted)
	wg.Wait()
	t.Logf("both replicas restarted in %v during %d Pod creates; %d failed", time.Since(began).Round(time.Millisecond),
		created.Load()+failed.Load(), failed.Load())
	if failed.Load() > 0 {
		t.Errorf("%d of %d Pod creates failed during the rollout; first: %v", failed.Load(), created.Load()+failed.Load(), firstErr.Load())
	}
}
