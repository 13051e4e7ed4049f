// Command demo runs pullsecret-injector against an embedded kube-apiserver and etcd, shows a Pod get its
// pull secret, and leaves everything running for kubectl until Ctrl-C.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/internal/managed"
	"github.com/pullsecret-injector/pullsecret-injector/test/testenv"
	"github.com/pullsecret-injector/pullsecret-injector/webhook"
)

const demoConfig = `# The demo's configuration: one private registry, one source secret.
registries:
  - registry: registry.example.com
    secret: {namespace: pullsecret-injector, name: example-regcred}
`

func main() {
	exit := flag.Bool("exit", false, "Stop after the demonstration instead of waiting for Ctrl-C.")
	flag.Parse()
	if err := run(*exit); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(exit bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	step("Starting kube-apiserver %s and etcd on 127.0.0.1", testenv.K8sVersion)
	cp, err := testenv.StartControlPlane()
	if err != nil {
		return err
	}
	defer func() {
		step("Stopping the control plane and removing its files")
		if err := cp.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "demo: stop control plane:", err)
		}
	}()
	cs, err := kubernetes.NewForConfig(cp.Config)
	if err != nil {
		return err
	}

	step("Creating the source pull secret pullsecret-injector/example-regcred")
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "pullsecret-injector"}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	source := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "example-regcred"},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"registry.example.com":{"auth":"ZGVtbzpkZW1v"}}}`)},
	}
	if _, err := cs.CoreV1().Secrets("pullsecret-injector").Create(ctx, source, metav1.CreateOptions{}); err != nil {
		return err
	}

	step("Building and starting pullsecret-injector with this configuration:\n%s", indent(demoConfig))
	binary, err := testenv.BuildBinary(cp.Dir)
	if err != nil {
		return err
	}
	ports, err := testenv.FreePorts(1)
	if err != nil {
		return err
	}
	// Plain HTTP metrics on loopback, so that the demo can show them without a token.
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", ports[0])
	wh, err := cp.StartWebhook(ctx, binary, []byte(demoConfig),
		"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", ports[0]), "--metrics-secure=false")
	if err != nil {
		return err
	}
	defer func() {
		if err := wh.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "demo:", err)
		}
	}()
	mwc := cp.MutatingWebhookConfiguration("pullsecret-injector", wh.Port, &metav1.LabelSelector{
		MatchLabels: map[string]string{config.InjectLabel: config.InjectEnabled},
	})
	if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, mwc, metav1.CreateOptions{}); err != nil {
		return err
	}

	step("Creating namespace demo, labelled pullsecret-injector.io/inject=enabled")
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo", Labels: map[string]string{config.InjectLabel: config.InjectEnabled}}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		return err
	}
	if err := testenv.WaitForMutation(ctx, cs, "demo", "registry.example.com/team/app:1.0", "example-regcred"); err != nil {
		return err
	}

	step("Creating Pod demo/app with image registry.example.com/team/app:1.0 and no imagePullSecrets")
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "app"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example.com/team/app:1.0"}}},
	}
	if _, err := cs.CoreV1().Pods("demo").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return err
	}
	stored, err := cs.CoreV1().Pods("demo").Get(ctx, "app", metav1.GetOptions{})
	if err != nil {
		return err
	}
	fmt.Println("The stored Pod's spec.imagePullSecrets:")
	for _, ref := range stored.Spec.ImagePullSecrets {
		fmt.Printf("  - name: %s\n", ref.Name)
	}
	fmt.Printf("and its annotation %s: %s\n", webhook.InjectedAnnotation, stored.Annotations[webhook.InjectedAnnotation])
	copied, err := cs.CoreV1().Secrets("demo").Get(ctx, "example-regcred", metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("read the copied secret: %w", err)
	}
	fmt.Println("The copied Secret demo/example-regcred (data sizes only; the demo prints no secret data):")
	fmt.Printf("  type: %s\n  labels: %v\n  annotations: %v\n", copied.Type, copied.Labels, copied.Annotations)
	keys := make([]string, 0, len(copied.Data))
	for k := range copied.Data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Printf("  data[%s]: %d bytes\n", k, len(copied.Data[k]))
	}

	step("Rotating the source: updating pullsecret-injector/example-regcred with new credentials")
	src, err := cs.CoreV1().Secrets("pullsecret-injector").Get(ctx, "example-regcred", metav1.GetOptions{})
	if err != nil {
		return err
	}
	rotated := []byte(`{"auths":{"registry.example.com":{"auth":"ZGVtbzpyb3RhdGVk"}}}`)
	src.Data = map[string][]byte{corev1.DockerConfigJsonKey: rotated}
	if _, err := cs.CoreV1().Secrets("pullsecret-injector").Update(ctx, src, metav1.UpdateOptions{}); err != nil {
		return err
	}
	rotatedAt := time.Now()
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		c, err := cs.CoreV1().Secrets("demo").Get(ctx, "example-regcred", metav1.GetOptions{})
		return err == nil && bytes.Equal(c.Data[corev1.DockerConfigJsonKey], rotated), nil
	}); err != nil {
		return fmt.Errorf("wait for the copy to follow its source: %w", err)
	}
	fmt.Printf("The copy demo/example-regcred holds the new credentials %v after the source changed.\n",
		time.Since(rotatedAt).Round(time.Millisecond))
	if err := printEvents(ctx, cs, "demo", "example-regcred", 2); err != nil {
		return err
	}

	step("Breaking the source: its only auths key is now for another registry")
	src, err = cs.CoreV1().Secrets("pullsecret-injector").Get(ctx, "example-regcred", metav1.GetOptions{})
	if err != nil {
		return err
	}
	src.Data = map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"other.example.com":{"auth":"ZGVtbzpyb3RhdGVk"}}}`)}
	if _, err := cs.CoreV1().Secrets("pullsecret-injector").Update(ctx, src, metav1.UpdateOptions{}); err != nil {
		return err
	}
	if err := printEvents(ctx, cs, "pullsecret-injector", "example-regcred", 1); err != nil {
		return err
	}
	pod2 := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "app2"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example.com/team/app:1.0"}}},
	}
	_, warnings, err := cp.CreatePod(ctx, "demo", pod2)
	if err != nil {
		return err
	}
	fmt.Println("Creating Pod demo/app2 now answers with the reference and this warning:")
	for _, w := range warnings {
		fmt.Printf("  Warning: %s\n", w)
	}
	if err := printMetrics(ctx, metricsURL); err != nil {
		return err
	}

	if exit {
		return nil
	}
	step("Running. Try it yourself:")
	fmt.Printf("  export KUBECONFIG=%s\n", cp.Kubeconfig)
	fmt.Println("  kubectl create namespace shop && kubectl label namespace shop pullsecret-injector.io/inject=enabled")
	fmt.Println("  kubectl -n shop run web --image=registry.example.com/shop/web:2")
	fmt.Println("  kubectl -n shop get pod web -o jsonpath='{.spec.imagePullSecrets}'")
	fmt.Println("  kubectl get secrets -A -l " + managed.Selector + "   # every copy")
	fmt.Println("  kubectl label namespace shop pullsecret-injector.io/inject-   # opt out: the copy goes once no Pod uses it")
	fmt.Printf("  (the webhook's log: %s)\n", wh.LogPath)
	fmt.Println("Press Ctrl-C to stop and clean up.")
	<-ctx.Done()
	return nil
}

// printEvents waits for at least n events.k8s.io Events about namespace/name and prints them as
// kubectl describe does.
func printEvents(ctx context.Context, cs kubernetes.Interface, namespace, name string, n int) error {
	var events []eventsv1.Event
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := cs.EventsV1().Events(namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		events = events[:0]
		for _, e := range list.Items {
			if e.Regarding.Name == name {
				events = append(events, e)
			}
		}
		return len(events) >= n, nil
	}); err != nil {
		return fmt.Errorf("wait for the events of %s/%s: %w", namespace, name, err)
	}
	fmt.Printf("kubectl -n %s describe secret %s shows:\nEvents:\n  %-8s %-14s %-20s %s\n", namespace, name, "Type", "Reason", "From", "Message")
	for _, e := range events {
		fmt.Printf("  %-8s %-14s %-20s %s\n", e.Type, e.Reason, e.ReportingController, e.Note)
	}
	return nil
}

// printMetrics prints the project's own series from the metrics endpoint.
func printMetrics(ctx context.Context, url string) error {
	if err := testenv.WaitMetricsServing(ctx, url); err != nil {
		return err
	}
	_, body, err := testenv.Scrape(ctx, url, "")
	if err != nil {
		return fmt.Errorf("scrape %s: %w", url, err)
	}
	fmt.Printf("The project's metrics (%s):\n", url)
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "pullsecret_injector_") {
			fmt.Printf("  %s\n", line)
		}
	}
	return nil
}

func step(format string, args ...any) {
	fmt.Printf("\n==> "+format+"\n", args...)
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n    ")
}
