package e2e

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BenchmarkPodCreateWithWebhookVsWithout alternates Pod creates through the API server into an opted-in
// namespace (the webhook is called, the copy exists: the warm path) and into the source namespace, which
// the registration excludes (the webhook is not called). It reports the ratio of the two mean latencies,
// measured in one run under the same load; absolute times on a shared machine are noise.
func BenchmarkPodCreateWithWebhookVsWithout(b *testing.B) {
	ctx := context.Background()
	with := "bench-with"
	if err := createNamespace(ctx, with, optIn()); err != nil {
		b.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "bench-"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "quay.io/org/app:1"}}},
	}
	create := func(ns string) time.Duration {
		start := time.Now()
		got, err := admin.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
		elapsed := time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		if ns == with && len(got.Spec.ImagePullSecrets) != 1 {
			b.Fatalf("pod through the webhook has imagePullSecrets %v", got.Spec.ImagePullSecrets)
		}
		return elapsed
	}
	create(with) // makes the copy, so the loop measures the warm path
	var withTime, withoutTime time.Duration
	for b.Loop() {
		withTime += create(with)
		withoutTime += create(sourceNamespace)
	}
	b.ReportMetric(float64(withTime)/float64(withoutTime), "with/without")
	b.ReportMetric(float64(withTime.Microseconds())/float64(b.N), "with-µs/op")
	b.ReportMetric(float64(withoutTime.Microseconds())/float64(b.N), "without-µs/op")
}
