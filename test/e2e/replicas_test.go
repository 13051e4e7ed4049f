package e2e

import (
	"context"
	"encoding/json"
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

// Lease timing of the two replicas: a killed leader's Lease expires after leaseDuration, and the follower
// takes it over within a retry period of that.
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
		"--leader-election-retry-period", retryPeriod.String(),
		// lastAcquired orders the replicas' log lines by time.
		"--zap-time-encoding", "epoch"}
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

	// The leader is the replica that acquired the Lease last: on a loaded machine a leader can miss a renewal
	// and hand over, which is leader election working, not a fault.
	var leader, follower *testenv.Webhook
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, testenv.SettleTimeout, true, func(context.Context) (bool, error) {
		leader, follower = nil, nil
		a, b := lastAcquired(replicas[0].Log()), lastAcquired(replicas[1].Log())
		switch {
		case a > b:
			leader, follower = replicas[0], replicas[1]
		case b > a:
			leader, follower = replicas[1], replicas[0]
		}
		return leader != nil, nil
	})
	if err != nil {
		t.Fatalf("no replica acquired the lease: %v", err)
	}
	acquiredBefore := strings.Count(follower.Log(), acquiredLease)

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
	took := eventually(t, syncBound, "rotation after the leader was killed reaches every copy",
		func() (bool, error) { return len(stale()) == 0, nil },
		func() string {
			return fmt.Sprintf("stale copies: %v\n--- follower log ---\n%s", stale(), tail(follower.Log(), 30))
		})
	t.Logf("leader killed; the follower took over and the rotation reached all %d copies %v after the kill", len(namespaces), took)
	// The rotation could also have been made by a leader that was not killed: the follower must have taken
	// the Lease after the kill.
	eventually(t, syncBound, "the follower acquires the lease after the kill", func() (bool, error) {
		return strings.Count(follower.Log(), acquiredLease) > acquiredBefore, nil
	}, func() string { return tail(follower.Log(), 30) })
}

// lastAcquired returns the time, in seconds since the epoch, of the last line of log that says the replica
// acquired the Lease; 0 when there is none. The replicas log JSON with epoch timestamps (replicaArgs).
func lastAcquired(log string) float64 {
	var last float64
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, acquiredLease) {
			continue
		}
		var entry struct {
			TS float64 `json:"ts"`
		}
		if err := json.Unmarshal([]byte(line), &entry); err == nil {
			last = max(last, entry.TS)
		}
	}
	return last
}
