package e2e

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pullsecret-injector/pullsecret-injector/internal/managed"
	"github.com/pullsecret-injector/pullsecret-injector/test/testenv"
)

const (
	// hostileSecrets of hostileSize each are what a tenant creates, labelled as managed, to grow every
	// replica that caches them with their data.
	hostileSecrets = 200
	hostileSize    = 1<<20 - 1024 // the API server refuses Secrets over 1 MiB of data
	// rssBound is how much the webhook's resident memory may grow meanwhile.
	rssBound = 20 << 20
)

// rss returns the resident set size of process pid, from /proc.
func rss(t *testing.T, pid int) int64 {
	t.Helper()
	n, err := testenv.ProcRSS(pid)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestTenantLabelledSecretsCostNoMemory creates 200 Secrets of 1 MiB, labelled as managed, in a namespace
// that does not opt in: the webhook (which leads here, so its reconciler looks at each) must not grow by
// their data, and must not treat them as copies: they stay as they were.
func TestTenantLabelledSecretsCostNoMemory(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t, "hostile", nil)
	t.Cleanup(func() {
		if err := admin.CoreV1().Secrets(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
			t.Error(err)
		}
	})
	before := rss(t, webhook.Pid())
	payload := bytes.Repeat([]byte{'x'}, hostileSize)
	var created []*corev1.Secret
	for i := range hostileSecrets {
		s, err := admin.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("big-%03d", i), Labels: map[string]string{managed.ManagedByLabel: managed.ManagedByValue}},
			Type:       corev1.SecretTypeOpaque,
			Data:       map[string][]byte{"blob": payload},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		created = append(created, s)
	}
	// The last one has reached the reconciler, so the webhook's informer has delivered all of them.
	waitForLog(t, webhook, syncBound, "Not a copy this project may write", `"namespace":"`+ns+`"`, fmt.Sprintf(`"name":"big-%03d"`, hostileSecrets-1))
	after := rss(t, webhook.Pid())
	t.Logf("webhook RSS %d MiB before and %d MiB after %d Secrets of %d KiB labelled as managed (growth %d KiB, bound %d MiB)",
		before>>20, after>>20, hostileSecrets, hostileSize>>10, (after-before)>>10, rssBound>>20)
	if after-before >= rssBound {
		t.Errorf("RSS grew by %d MiB, want less than %d MiB", (after-before)>>20, rssBound>>20)
	}
	for _, s := range created {
		got, err := admin.CoreV1().Secrets(ns).Get(ctx, s.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("Secret %s/%s is gone: %v", ns, s.Name, err)
		}
		if got.ResourceVersion != s.ResourceVersion {
			t.Errorf("Secret %s/%s was written", ns, s.Name)
		}
	}
}
