// Command demo runs pullsecret-injector against an embedded kube-apiserver and etcd, shows a Pod get its
// pull secret, and leaves everything running for kubectl until Ctrl-C.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"slices"
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

// demo is what the steps of the demonstration share.
type demo struct {
	cp         *testenv.ControlPlane
	cs         kubernetes.Interface
	wh         *testenv.Webhook
	metricsURL string
}

// sourceNamespace and sourceName name the demo's source pull secret; demoNamespace is the opted-in
// namespace its Pods run in.
const (
	sourceNamespace = "pullsecret-injector"
	sourceName      = "example-regcred"
	demoNamespace   = "demo"
	demoImage       = "registry.example.com/team/app:1.0"
)

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
	d := &demo{cp: cp, cs: cs}
	if err := d.createSource(ctx); err != nil {
		return err
	}
	if err := d.startWebhook(ctx); err != nil {
		return err
	}
	defer func() {
		if err := d.wh.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "demo:", err)
		}
	}()
	for _, show := range []func(context.Context) error{d.injectPod, d.rotateSource, d.breakSource} {
		if err := show(ctx); err != nil {
			return err
		}
	}
	if exit {
		return nil
	}
	d.waitForUser(ctx)
	return nil
}

// createSource creates the source pull secret in its namespace.
func (d *demo) createSource(ctx context.Context) error {
	step("Creating the source pull secret %s/%s", sourceNamespace, sourceName)
	if _, err := d.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: sourceNamespace}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	source := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: sourceName},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"registry.example.com":{"auth":"ZGVtbzpkZW1v"}}}`)},
	}
	_, err := d.cs.CoreV1().Secrets(sourceNamespace).Create(ctx, source, metav1.CreateOptions{})
	return err
}

// startWebhook builds and starts the binary, registers it for opted-in namespaces, and creates the opted-in
// demo namespace.
func (d *demo) startWebhook(ctx context.Context) error {
	step("Building and starting pullsecret-injector with this configuration:\n%s", indent(demoConfig))
	binary, err := testenv.BuildBinary(d.cp.Dir)
	if err != nil {
		return err
	}
	ports, err := testenv.FreePorts(1)
	if err != nil {
		return err
	}
	// Plain HTTP metrics on loopback, so that the demo can show them without a token.
	d.metricsURL = fmt.Sprintf("http://127.0.0.1:%d/metrics", ports[0])
	d.wh, err = d.cp.StartWebhook(ctx, binary, []byte(demoConfig),
		"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", ports[0]), "--metrics-secure=false")
	if err != nil {
		return err
	}
	optIn := map[string]string{config.InjectLabel: config.InjectEnabled}
	mwc := d.cp.MutatingWebhookConfiguration("pullsecret-injector", d.wh.Port, &metav1.LabelSelector{MatchLabels: optIn})
	if _, err := d.cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, mwc, metav1.CreateOptions{}); err != nil {
		return err
	}
	step("Creating namespace %s, labelled %s=%s", demoNamespace, config.InjectLabel, config.InjectEnabled)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: demoNamespace, Labels: optIn}}
	if _, err := d.cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		return err
	}
	return testenv.WaitForMutation(ctx, d.cs, demoNamespace, demoImage, sourceName)
}

// injectPod creates a Pod without imagePullSecrets and shows what was stored: its references, its
// annotation, and the copy, data sizes only.
func (d *demo) injectPod(ctx context.Context) error {
	step("Creating Pod %s/app with image %s and no imagePullSecrets", demoNamespace, demoImage)
	stored, _, err := d.cp.CreatePod(ctx, demoNamespace, demoPod("app"))
	if err != nil {
		return err
	}
	fmt.Println("The stored Pod's spec.imagePullSecrets:")
	for _, ref := range stored.Spec.ImagePullSecrets {
		fmt.Printf("  - name: %s\n", ref.Name)
	}
	fmt.Printf("and its annotation %s: %s\n", webhook.InjectedAnnotation, stored.Annotations[webhook.InjectedAnnotation])
	copied, err := d.cs.CoreV1().Secrets(demoNamespace).Get(ctx, sourceName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("read the copied secret: %w", err)
	}
	fmt.Printf("The copied Secret %s/%s (data sizes only; the demo prints no secret data):\n", demoNamespace, sourceName)
	fmt.Printf("  type: %s\n  labels: %v\n  annotations: %v\n", copied.Type, copied.Labels, copied.Annotations)
	for _, k := range slices.Sorted(maps.Keys(copied.Data)) {
		fmt.Printf("  data[%s]: %d bytes\n", k, len(copied.Data[k]))
	}
	return nil
}

// rotateSource updates the source and shows how long the copy took to follow, and its Events.
func (d *demo) rotateSource(ctx context.Context) error {
	step("Rotating the source: updating %s/%s with new credentials", sourceNamespace, sourceName)
	rotated := []byte(`{"auths":{"registry.example.com":{"auth":"ZGVtbzpyb3RhdGVk"}}}`)
	if err := d.setSourceData(ctx, rotated); err != nil {
		return err
	}
	rotatedAt := time.Now()
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		c, err := d.cs.CoreV1().Secrets(demoNamespace).Get(ctx, sourceName, metav1.GetOptions{})
		return err == nil && bytes.Equal(c.Data[corev1.DockerConfigJsonKey], rotated), nil
	}); err != nil {
		return fmt.Errorf("wait for the copy to follow its source: %w", err)
	}
	fmt.Printf("The copy %s/%s holds the new credentials %v after the source changed.\n", demoNamespace, sourceName,
		time.Since(rotatedAt).Round(time.Millisecond))
	return printEvents(ctx, d.cs, demoNamespace, sourceName, 2)
}

// breakSource gives the source a key for another registry only, and shows the Event on the source, the
// warning a new Pod is answered with, and the metrics.
func (d *demo) breakSource(ctx context.Context) error {
	step("Breaking the source: its only auths key is now for another registry")
	if err := d.setSourceData(ctx, []byte(`{"auths":{"other.example.com":{"auth":"ZGVtbzpyb3RhdGVk"}}}`)); err != nil {
		return err
	}
	if err := printEvents(ctx, d.cs, sourceNamespace, sourceName, 1); err != nil {
		return err
	}
	_, warnings, err := d.cp.CreatePod(ctx, demoNamespace, demoPod("app2"))
	if err != nil {
		return err
	}
	fmt.Printf("Creating Pod %s/app2 now answers with the reference and this warning:\n", demoNamespace)
	for _, w := range warnings {
		fmt.Printf("  Warning: %s\n", w)
	}
	return printMetrics(ctx, d.metricsURL)
}

func (d *demo) setSourceData(ctx context.Context, data []byte) error {
	src, err := d.cs.CoreV1().Secrets(sourceNamespace).Get(ctx, sourceName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	src.Data = map[string][]byte{corev1.DockerConfigJsonKey: data}
	_, err = d.cs.CoreV1().Secrets(sourceNamespace).Update(ctx, src, metav1.UpdateOptions{})
	return err
}

// waitForUser prints how to try it with kubectl and waits for Ctrl-C.
func (d *demo) waitForUser(ctx context.Context) {
	step("Running. Try it yourself:")
	fmt.Printf("  export KUBECONFIG=%s\n", d.cp.Kubeconfig)
	fmt.Println("  kubectl create namespace shop && kubectl label namespace shop pullsecret-injector.io/inject=enabled")
	fmt.Println("  kubectl -n shop run web --image=registry.example.com/shop/web:2")
	fmt.Println("  kubectl -n shop get pod web -o jsonpath='{.spec.imagePullSecrets}'")
	fmt.Println("  kubectl get secrets -A -l " + managed.Selector + "   # every copy")
	fmt.Println("  kubectl label namespace shop pullsecret-injector.io/inject-   # opt out: the copy goes once no Pod uses it")
	fmt.Printf("  (the webhook's log: %s)\n", d.wh.LogPath)
	fmt.Println("Press Ctrl-C to stop and clean up.")
	<-ctx.Done()
}

func demoPod(name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: demoImage}}},
	}
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
