package reconciler

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// podListServer serves GET /api/v1/pods and /api/v1/namespaces/<ns>/pods as pages of a list of pods,
// page pods a page, the continue token being the next item's index. It records the queries it got.
func podListServer(t *testing.T, pods func(i int) *corev1.Pod, total, page int) (*httptest.Server, *[]string) {
	t.Helper()
	var queries []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		queries = append(queries, req.URL.Path+"?"+req.URL.RawQuery)
		start := 0
		if c := req.URL.Query().Get("continue"); c != "" {
			if _, err := fmt.Sscan(c, &start); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
		}
		end := min(start+page, total)
		next := ""
		if end < total {
			next = fmt.Sprint(end)
		}
		w.Header().Set("Content-Type", "application/json")
		// Written item by item, as the API server streams a list: the test's own memory stays one Pod too.
		_, _ = fmt.Fprintf(w, `{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"7","continue":%q},"items":[`, next)
		enc := json.NewEncoder(w)
		for i := start; i < end; i++ {
			if i > start {
				_, _ = io.WriteString(w, ",")
			}
			if err := enc.Encode(pods(i)); err != nil {
				return
			}
		}
		_, _ = io.WriteString(w, "]}")
	}))
	t.Cleanup(srv.Close)
	return srv, &queries
}

func coreREST(t *testing.T, host string) rest.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: host, QPS: -1})
	if err != nil {
		t.Fatal(err)
	}
	return cs.CoreV1().RESTClient()
}

func TestEachUnfinishedPodStreamsEveryPage(t *testing.T) {
	pod := func(i int) *corev1.Pod {
		p := &corev1.Pod{
			TypeMeta:   metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%d", i), Namespace: "team", Labels: map[string]string{"app": "x"}},
			Spec: corev1.PodSpec{
				Containers:       []corev1.Container{{Name: "c", Image: "registry.example.com/app:1"}},
				ImagePullSecrets: []corev1.LocalObjectReference{{Name: fmt.Sprintf("s%d", i%3)}},
			},
			Status: corev1.PodStatus{Phase: corev1.PodRunning},
		}
		if i == 4 {
			p.Status.Phase = corev1.PodSucceeded // a server that ignored the field selector
		}
		return p
	}
	srv, queries := podListServer(t, pod, 7, 3)
	r := &Reconciler{Pods: coreREST(t, srv.URL)}
	var got []string
	pages, err := r.eachUnfinishedPod(context.Background(), "team", func(p *corev1.Pod) error {
		got = append(got, fmt.Sprintf("%s/%s %s %v", p.Namespace, p.Name, p.Status.Phase, p.Spec.ImagePullSecrets))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"team/p0 Running [{s0}]", "team/p1 Running [{s1}]", "team/p2 Running [{s2}]", "team/p3 Running [{s0}]",
		"team/p5 Running [{s2}]", "team/p6 Running [{s0}]",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("pods seen (-want +got):\n%s", diff)
	}
	if pages != 3 {
		t.Errorf("pages = %d, want 3", pages)
	}
	for i, q := range *queries {
		if !strings.HasPrefix(q, "/api/v1/namespaces/team/pods?") || !strings.Contains(q, "fieldSelector=status.phase") ||
			!strings.Contains(q, fmt.Sprintf("limit=%d", podListPage)) {
			t.Errorf("query %d = %q, want the namespace's pods, unfinished, %d a page", i, q, podListPage)
		}
	}
}

func TestEachUnfinishedPodHoldsOnePodAtATime(t *testing.T) {
	// A tenant's Pods as large as the API server stores: 100 of 1 MiB each in one page would be 100 MiB
	// decoded whole.
	const n, size = 100, 1 << 20
	big := strings.Repeat("x", size)
	pod := func(i int) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%d", i), Namespace: "team", Annotations: map[string]string{"a": big}},
			Spec:       corev1.PodSpec{ImagePullSecrets: []corev1.LocalObjectReference{{Name: "regcred"}}},
		}
	}
	srv, _ := podListServer(t, pod, n, n)
	r := &Reconciler{Pods: coreREST(t, srv.URL)}
	runtime.GC()
	var base, peak uint64
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base = ms.HeapInuse
	seen := 0
	if _, err := r.eachUnfinishedPod(context.Background(), "", func(p *corev1.Pod) error {
		seen++
		if seen%25 == 0 {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("heap in use grew by %d MiB while streaming %d MiB of Pods", (peak-min(peak, base))>>20, n*size>>20)
	if seen != n {
		t.Fatalf("saw %d pods, want %d", seen, n)
	}
	// The server's encoder and the decoder's buffer hold a Pod or two each; garbage not yet collected
	// comes on top. A page decoded whole would be 100 MiB, and twice that while decoding.
	const bound = 64 << 20
	if grew := peak - min(peak, base); grew > bound {
		t.Errorf("heap in use grew by %d MiB while streaming %d MiB of Pods, want at most %d MiB", grew>>20, n*size>>20, bound>>20)
	}
}

func TestDecodePodListRefusesWhatIsNotAList(t *testing.T) {
	for _, body := range []string{``, `[]`, `{"items":{}}`, `{"items":[{"metadata":1}]}`, `{"items":[`} {
		if _, err := decodePodList(strings.NewReader(body), func(*corev1.Pod) error { return nil }); err == nil {
			t.Errorf("decodePodList(%q) = nil error, want one", body)
		}
	}
	cont, err := decodePodList(strings.NewReader(`{"kind":"PodList","metadata":{"continue":"c"},"items":null}`),
		func(*corev1.Pod) error { t.Error("fn called for no item"); return nil })
	if err != nil || cont != "c" {
		t.Errorf("decodePodList(items null) = %q, %v; want \"c\", nil", cont, err)
	}
}
