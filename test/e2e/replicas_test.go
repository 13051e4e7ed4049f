package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/pullsecret-injector/pullsecret-injector/test/testenv"
)

const replicasConfig = `
registries:
  - registry: pair.example.com
    secret: {namespace: pullsecret-injector, name: pair-regcred}
`

// Lease timing of the two replicas: a killed leader's Lease expires after leaseDuration, so the rotation
// after the kill must reach every copy within leaseDuration plus syncBound.
const (
	leaseDuration = 4 * time.Second
	renewDeadline = 3 * time.Second
	retryPeriod   = 500 * time.Millisecond
)

// acquiredLease is what controller-runtime's leader election logs when a replica becomes the leader.
const acquiredLease = "Successfully acquired lease"

// TestTwoReplicas runs two replicas of one release against a control plane of their own (so that no other
// reconciler runs beside them): both answer admissions, one leads, and when the leader is killed the other
// takes over and a rotation made after the kill reaches every copy.
func TestTwoReplicas(t *testing.T) {
	ctx := context.Background()
	plane, cs := ownControlPlane(t)
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: sourceNamespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Secrets(sourceNamespace).Create(ctx, pullSecret("pair-regcred", "pair.example.com"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	args := []string{"--leader-election-id", "pair",
		"--leader-election-lease-duration", leaseDuration.String(),
		"--leader-election-renew-deadline", renewDeadline.String(),
		"--leader-election-retry-period", retryPeriod.String()}
	var replicas []*testenv.Webhook
	for i := range 2 {
		w, err := plane.StartWebhook(ctx, binary, []byte(replicasConfig), args...)
		if err != nil {
			t.Fatal(err)
		}
		// Stopped before the control plane: cleanups run last-in first-out.
		stopAfterTest(t, w)
		replicas = append(replicas, w)
		// Each replica gets the namespaces labelled for it, so both are shown to answer.
		mwc := plane.MutatingWebhookConfiguration(fmt.Sprintf("pair-%d", i), w.Port,
			&metav1.LabelSelector{MatchLabels: map[string]string{"replica": fmt.Sprint(i)}})
		registerWebhook(t, cs, mwc)
	}

	var namespaces []string
	for i := range 2 {
		for j := range 10 {
			ns := fmt.Sprintf("pair-%d-%d", i, j)
			labels := merge(optIn(), map[string]string{"replica": fmt.Sprint(i)})
			if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			if j == 0 {
				if err := testenv.WaitForMutation(ctx, cs, ns, "pair.example.com/app", "pair-regcred"); err != nil {
					t.Fatal(err)
				}
			}
			pod, _, err := plane.CreatePod(ctx, ns, podWith("app", "pair.example.com/team/app:1"))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]string{"pair-regcred"}, refNames(pod)); diff != "" {
				t.Fatalf("replica %d, namespace %s: imagePullSecrets (-want +got):\n%s", i, ns, diff)
			}
			namespaces = append(namespaces, ns)
		}
	}
	for i, w := range replicas {
		if n := strings.Count(w.Log(), "Copied pull secret"); n == 0 {
			t.Errorf("replica %d made no copy: it did not answer its admissions", i)
		}
	}

	var leader, follower *testenv.Webhook
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*leaseDuration, true, func(context.Context) (bool, error) {
		a, b := strings.Contains(replicas[0].Log(), acquiredLease), strings.Contains(replicas[1].Log(), acquiredLease)
		switch {
		case a && b:
			return false, fmt.Errorf("both replicas acquired the lease")
		case a:
			leader, follower = replicas[0], replicas[1]
		case b:
			leader, follower = replicas[1], replicas[0]
		}
		return leader != nil, nil
	})
	if err != nil {
		t.Fatalf("no single leader: %v", err)
	}

	leader.Kill()
	source, err := cs.CoreV1().Secrets(sourceNamespace).Get(ctx, "pair-regcred", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rotated := rotatedConfig("pair.example.com", "after-the-kill")
	source.Data = map[string][]byte{corev1.DockerConfigJsonKey: rotated}
	if _, err := cs.CoreV1().Secrets(sourceNamespace).Update(ctx, source, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	stale := func() []string {
		list, err := cs.CoreV1().Secrets("").List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", "pair-regcred").String()})
		if err != nil {
			return []string{err.Error()}
		}
		held := map[string]bool{}
		for _, s := range list.Items {
			held[s.Namespace] = string(s.Data[corev1.DockerConfigJsonKey]) == string(rotated)
		}
		var out []string
		for _, ns := range namespaces {
			if !held[ns] {
				out = append(out, ns)
			}
		}
		return out
	}
	took := eventually(t, leaseDuration+syncBound, "rotation after the leader was killed reaches every copy",
		func() (bool, error) { return len(stale()) == 0, nil },
		func() string {
			return fmt.Sprintf("stale copies: %v\n--- follower log ---\n%s", stale(), tail(follower.Log(), 30))
		})
	t.Logf("leader killed; the follower took over and the rotation reached all %d copies %v after the kill", len(namespaces), took)
	if !strings.Contains(follower.Log(), acquiredLease) {
		t.Error("the follower never logged that it acquired the lease")
	}
}
