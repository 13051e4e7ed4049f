package chart

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/test/testenv"
)

// release is the release name the rendering tests use; the full name of its objects is fullname.
const (
	release  = "psi"
	fullname = "psi-pullsecret-injector"
)

// valueSet is a set of chart values and what must be true of what the chart renders with them.
type valueSet struct {
	name   string
	values string
	check  func(t *testing.T, namespace string, objs []*unstructured.Unstructured)
}

// valueSets are the value sets every rendering test runs with. README's closing note lists them.
var valueSets = []valueSet{
	{name: "defaults", values: "", check: checkDefaults},
	{name: "cert-manager with the chart's self-signed Issuer", values: `
certManager:
  enabled: true
`, check: checkCertManager(nil)},
	{name: "cert-manager with an existing ClusterIssuer", values: `
certManager:
  enabled: true
  issuerRef: {name: corp-ca, kind: ClusterIssuer, group: cert-manager.io}
`, check: checkCertManager(map[string]any{"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"})},
	{name: "ServiceMonitor, metrics readers, a metrics certificate and NetworkPolicy", values: `
metrics:
  certSecret: psi-metrics-tls
  readers:
    - {kind: ServiceAccount, name: prometheus-k8s, namespace: monitoring}
    - {kind: Group, name: metrics-scrapers}
  serviceMonitor:
    enabled: true
    interval: 30s
    labels: {release: prometheus}
    tlsConfig:
      insecureSkipVerify: false
      serverName: psi-pullsecret-injector.render-3.svc
      ca: {secret: {name: psi-metrics-tls, key: ca.crt}}
networkPolicy:
  enabled: true
  webhookFrom:
    - ipBlock: {cidr: 10.0.0.0/24}
  metricsFrom:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}
  egress:
    to:
      - ipBlock: {cidr: 10.0.0.1/32}
`, check: checkMonitoring},
	{name: "metrics over plain HTTP", values: `
metrics:
  secure: false
  port: 8080
  certSecret: ignored-without-https
  readers: [{kind: User, name: ignored-without-https}]
  serviceMonitor: {enabled: true}
`, check: checkPlainMetrics},
	{name: "production overrides", values: `
fullnameOverride: injector
commonLabels: {team: platform}
replicaCount: 3
image:
  repository: registry.internal/mirror/pullsecret-injector
  tag: v9.9.9
  digest: sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
  pullPolicy: Always
imagePullSecrets: [{name: mirror-regcred}]
serviceAccount: {create: false, name: existing-sa}
registries:
  - registry: registry.example.com:5000/team-a
    secret: {name: team-a-regcred}
  - registry: "*.dkr.ecr.eu-west-1.amazonaws.com"
    secret: {namespace: registry-credentials, name: ecr-regcred}
    namespaceSelector: {matchLabels: {team: payments}}
namespaceSelector:
  matchLabels: {example.com/pull-secrets: "true"}
  matchExpressions:
    - {key: environment, operator: In, values: [prod, staging]}
webhook:
  failurePolicy: Ignore
  timeoutSeconds: 10
  excludedNamespaces: [kube-public, kube-node-lease]
  port: 8443
certs:
  secretName: injector-serving-cert
  extraSANs: [injector.example.com, 10.1.2.3]
  caValidity: 17520h
metrics: {enabled: false}
healthProbePort: 9440
logLevel: debug
shutdownDelay: 15s
serviceAccountPullSecrets: append
terminationGracePeriodSeconds: 60
extraArgs: [--zap-encoder=console]
priorityClassName: system-cluster-critical
nodeSelector: {kubernetes.io/os: linux}
tolerations:
  - {key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms:
        - matchExpressions:
            - {key: kubernetes.io/arch, operator: In, values: [amd64, arm64]}
topologySpreadConstraints:
  - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule}
podDisruptionBudget: {minAvailable: 2}
podAnnotations: {example.com/owner: platform}
podLabels: {example.com/tier: admission}
reconciler:
  resyncPeriod: 30m
  revocationRecheck: 5m
  workers: 8
  qps: 12.5
  burst: 25
`, check: checkProduction},
	{name: "leader election off", values: `
leaderElection: {enabled: false}
replicaCount: 1
`, check: checkNoLeaderElection},
	{name: "policy mode", values: `
injection: {mode: policy}
`, check: checkPolicyMode},
	{name: "one replica, Recreate, no RBAC, no PodDisruptionBudget", values: `
rbac: {create: false}
podDisruptionBudget: {enabled: false}
replicaCount: 1
updateStrategy: {type: Recreate}
`, check: checkMinimal},
}

// TestTemplate renders the chart with each value set, checks what it renders, and has the API server
// admit every object with a server-side dry run. The Deployment's Pod template is also admitted as a Pod in
// a namespace that enforces the restricted Pod Security Standard.
func TestTemplate(t *testing.T) {
	ctx := context.Background()
	ensureNamespace(t, "pss-restricted", map[string]string{
		"pod-security.kubernetes.io/enforce":         "restricted",
		"pod-security.kubernetes.io/enforce-version": "latest",
	})
	for i, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			namespace := fmt.Sprintf("render-%d", i)
			ensureNamespace(t, namespace, nil)
			// A namespace the production value set names as a source of Secrets.
			ensureNamespace(t, "registry-credentials", nil)

			first, err := template(t, release, namespace, vs.values)
			if err != nil {
				t.Fatal(err)
			}
			second, err := template(t, release, namespace, vs.values)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(first, second); diff != "" {
				t.Errorf("helm template output differs between two runs (-first +second):\n%s", diff)
			}
			objs, err := parseManifests(first)
			if err != nil {
				t.Fatal(err)
			}
			for _, obj := range objs {
				_, namespaced, err := resourceFor(obj)
				if err != nil {
					t.Fatal(err)
				}
				if namespaced && obj.GetNamespace() != namespace {
					t.Errorf("%s %q has namespace %q, want the release namespace %q", obj.GetKind(), obj.GetName(), obj.GetNamespace(), namespace)
				}
				if err := apply(ctx, obj, true); err != nil {
					t.Errorf("server-side dry run: %v", err)
				}
			}
			checkPodSecurity(t, objs)
			checkConfigLoads(t, objs)
			vs.check(t, namespace, objs)
		})
	}
}

// checkPodSecurity creates the Deployment's Pod template as a Pod, dry run, in a namespace that enforces
// the restricted Pod Security Standard.
func checkPodSecurity(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	d := one[appsv1.Deployment](t, objs, "Deployment")
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "pod-template-", Labels: d.Spec.Template.Labels},
		Spec:       d.Spec.Template.Spec,
	}
	_, err := admin.CoreV1().Pods("pss-restricted").Create(context.Background(), pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		t.Errorf("Pod template refused in a namespace enforcing the restricted Pod Security Standard: %v", err)
	}
}

// checkConfigLoads parses the rendered configuration file as the binary does, and checks that the
// Deployment mounts it where --config points.
func checkConfigLoads(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	cm := one[corev1.ConfigMap](t, objs, "ConfigMap")
	if _, err := config.Parse([]byte(cm.Data["config.yaml"])); err != nil {
		t.Errorf("the binary refuses the rendered configuration: %v\n%s", err, cm.Data["config.yaml"])
	}
	d := one[appsv1.Deployment](t, objs, "Deployment")
	c := container(t, d)
	path, _ := flagValue(c.Args, "config")
	var volume string
	for _, m := range c.VolumeMounts {
		if rest, ok := strings.CutPrefix(path, m.MountPath+"/"); ok && rest == "config.yaml" {
			volume = m.Name
			// The kubelet never refreshes a subPath mount, and the binary relies on the refresh to pick up a
			// changed configuration without a restart.
			if m.SubPath != "" {
				t.Errorf("the configuration is mounted with subPath %q: a changed ConfigMap would never reach the binary", m.SubPath)
			}
		}
	}
	var mounted string
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Name == volume && v.ConfigMap != nil {
			mounted = v.ConfigMap.Name
		}
	}
	if mounted != cm.Name {
		t.Errorf("--config=%s is not the ConfigMap %q's config.yaml (mounted from ConfigMap %q)", path, cm.Name, mounted)
	}
}

// wantWebhook is the registration the chart renders for a release named fullname in namespace, with
// the default values.
func wantWebhook(namespace string) admissionregistrationv1.MutatingWebhook {
	return admissionregistrationv1.MutatingWebhook{
		Name:                    "pods.pullsecret-injector.io",
		AdmissionReviewVersions: []string{"v1"},
		ClientConfig: admissionregistrationv1.WebhookClientConfig{Service: &admissionregistrationv1.ServiceReference{
			Namespace: namespace, Name: fullname, Path: ptr.To("/mutate-v1-pod"), Port: ptr.To[int32](443),
		}},
		// Pod creates, and ephemeral containers added later (kubectl debug).
		Rules:              testenv.WebhookRules(),
		SideEffects:        ptr.To(admissionregistrationv1.SideEffectClassNoneOnDryRun),
		ReinvocationPolicy: ptr.To(admissionregistrationv1.IfNeededReinvocationPolicy),
		MatchPolicy:        ptr.To(admissionregistrationv1.Equivalent),
		FailurePolicy:      ptr.To(admissionregistrationv1.Fail),
		TimeoutSeconds:     ptr.To[int32](5),
		NamespaceSelector: &metav1.LabelSelector{
			MatchLabels: map[string]string{"pullsecret-injector.io/inject": "enabled"},
			MatchExpressions: []metav1.LabelSelectorRequirement{{
				Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: []string{namespace, "kube-system"},
			}},
		},
		ObjectSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
			Key: "pullsecret-injector.io/inject", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"disabled"},
		}}},
	}
}

func checkDefaults(t *testing.T, namespace string, objs []*unstructured.Unstructured) {
	// Two ClusterRoles: the webhook's, and metrics-reader, without a binding while metrics.readers is empty.
	wantKinds := []string{"ClusterRole", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "MutatingWebhookConfiguration",
		"PodDisruptionBudget", "Role", "Role", "RoleBinding", "RoleBinding", "Service", "ServiceAccount",
		"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
	gotKinds := kinds(objs)
	slices.Sort(gotKinds)
	if diff := cmp.Diff(wantKinds, gotKinds); diff != "" {
		t.Errorf("rendered kinds (-want +got):\n%s", diff)
	}

	mwc := one[admissionregistrationv1.MutatingWebhookConfiguration](t, objs, "MutatingWebhookConfiguration")
	if diff := cmp.Diff([]admissionregistrationv1.MutatingWebhook{wantWebhook(namespace)}, mwc.Webhooks); diff != "" {
		t.Errorf("webhook registration (-want +got):\n%s", diff)
	}
	if mwc.Name != fullname || len(mwc.Annotations) != 0 {
		t.Errorf("webhook configuration %q with annotations %v, want %q without annotations", mwc.Name, mwc.Annotations, fullname)
	}

	cm := one[corev1.ConfigMap](t, objs, "ConfigMap")
	cfg, err := config.Parse([]byte(cm.Data["config.yaml"]))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(wantWebhook(namespace).NamespaceSelector, cfg.NamespaceSelector); diff != "" {
		t.Errorf("configuration's namespaceSelector differs from the registration's (-registration +config):\n%s", diff)
	}
	wantRegistries := []config.Registry{{Registry: "registry.example.com", Secret: config.SecretRef{Namespace: namespace, Name: "regcred"}}}
	if diff := cmp.Diff(wantRegistries, cfg.Registries); diff != "" {
		t.Errorf("configured registries (-want +got):\n%s", diff)
	}

	d := one[appsv1.Deployment](t, objs, "Deployment")
	if got := ptr.Deref(d.Spec.Replicas, 0); got != 2 {
		t.Errorf("replicas = %d, want 2", got)
	}
	c := container(t, d)
	wantArgs := []string{
		"--config=/etc/pullsecret-injector/config.yaml",
		"--injection=webhook",
		"--provision=lazy",
		"--webhook-port=9443",
		"--policy-name=" + fullname,
		"--health-probe-bind-address=:8081",
		"--metrics-bind-address=:8443",
		"--metrics-secure=true",
		"--shutdown-delay=5s",
		"--serviceaccount-pull-secrets=skip",
		"--zap-log-level=info",
		"--cert-mode=self",
		"--service-name=" + fullname,
		"--service-namespace=" + namespace,
		"--cert-secret-name=" + fullname + "-cert",
		"--webhook-config-name=" + fullname,
		"--ca-validity=8760h",
		"--ca-renew-before=2160h",
		"--cert-validity=2160h",
		"--cert-renew-before=720h",
		"--ca-propagation-delay=5m",
		"--leader-elect=true",
		"--leader-election-namespace=" + namespace,
		"--leader-election-id=" + fullname,
		"--resync-period=10m",
		"--revocation-recheck=1m",
		"--reconciler-workers=8",
		"--reconciler-qps=100",
		"--reconciler-burst=200",
	}
	if diff := cmp.Diff(wantArgs, c.Args); diff != "" {
		t.Errorf("container args (-want +got):\n%s", diff)
	}
	// The grace period outlasts --shutdown-delay plus the drain, or the kubelet kills a replica still answering.
	if got := ptr.Deref(d.Spec.Template.Spec.TerminationGracePeriodSeconds, 0); got != 30 {
		t.Errorf("terminationGracePeriodSeconds = %d, want 30", got)
	}
	if c.Image != "ghcr.io/pullsecret-injector/pullsecret-injector:0.1.0" || c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("image %q, pull policy %q; want the chart's appVersion, IfNotPresent", c.Image, c.ImagePullPolicy)
	}
	wantSC := &corev1.SecurityContext{
		AllowPrivilegeEscalation: ptr.To(false),
		ReadOnlyRootFilesystem:   ptr.To(true),
		RunAsNonRoot:             ptr.To(true),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	if diff := cmp.Diff(wantSC, c.SecurityContext); diff != "" {
		t.Errorf("container securityContext (-want +got):\n%s", diff)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %v: want cpu and memory requests and a memory limit", c.Resources)
	}
	probe := func(p *corev1.Probe) string {
		if p == nil || p.HTTPGet == nil {
			return "none"
		}
		return p.HTTPGet.Path + " on " + p.HTTPGet.Port.String()
	}
	if got := probe(c.LivenessProbe) + ", " + probe(c.ReadinessProbe); got != "/healthz on health, /readyz on health" {
		t.Errorf("liveness, readiness probes = %s", got)
	}
	selector := map[string]string{"app.kubernetes.io/name": "pullsecret-injector", "app.kubernetes.io/instance": release}
	wantSpread := []corev1.TopologySpreadConstraint{{
		MaxSkew: 1, TopologyKey: "kubernetes.io/hostname", WhenUnsatisfiable: corev1.ScheduleAnyway,
		LabelSelector: &metav1.LabelSelector{MatchLabels: selector},
	}}
	if diff := cmp.Diff(wantSpread, d.Spec.Template.Spec.TopologySpreadConstraints); diff != "" {
		t.Errorf("topology spread (-want +got):\n%s", diff)
	}
	// The binary rereads its configuration, so nothing derived from it may be in the Pod template: a
	// registries change would roll every Pod for nothing.
	if len(d.Spec.Template.Annotations) != 0 {
		t.Errorf("Pod template annotations %v, want none with the default values", d.Spec.Template.Annotations)
	}

	svc := one[corev1.Service](t, objs, "Service")
	if diff := cmp.Diff(selector, svc.Spec.Selector); diff != "" {
		t.Errorf("Service selector (-want +got):\n%s", diff)
	}
	if p := svc.Spec.Ports[0]; p.Port != 443 || p.TargetPort != intstr.FromString("webhook") {
		t.Errorf("Service's first port %d -> %s, want 443 -> webhook", p.Port, p.TargetPort.String())
	}
	pdb := one[policyv1.PodDisruptionBudget](t, objs, "PodDisruptionBudget")
	if pdb.Spec.MaxUnavailable == nil || *pdb.Spec.MaxUnavailable != intstr.FromInt32(1) || pdb.Spec.MinAvailable != nil {
		t.Errorf("PodDisruptionBudget minAvailable %v, maxUnavailable %v; want maxUnavailable 1", pdb.Spec.MinAvailable, pdb.Spec.MaxUnavailable)
	}

	cr := named[rbacv1.ClusterRole](t, objs, "ClusterRole", fullname)
	wantRules := append(slices.Clone(copyRules),
		rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"serviceaccounts"}, Verbs: []string{"get", "list", "watch"}},
		eventsRule,
		tokenReviewRule,
		accessReviewRule,
		// Should the release have run in policy mode before.
		rbacv1.PolicyRule{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"mutatingadmissionpolicies", "mutatingadmissionpolicybindings"},
			ResourceNames: []string{fullname}, Verbs: []string{"get", "delete"}},
		rbacv1.PolicyRule{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"mutatingwebhookconfigurations"},
			ResourceNames: []string{fullname}, Verbs: []string{"get", "list", "watch", "update"}},
	)
	if diff := cmp.Diff(wantRules, cr.Rules); diff != "" {
		t.Errorf("ClusterRole rules (-want +got):\n%s", diff)
	}
	role := named[rbacv1.Role](t, objs, "Role", fullname)
	wantRoleRules := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"create"}},
		{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{fullname + "-cert"}, Verbs: []string{"get", "list", "watch", "update"}},
	}
	if diff := cmp.Diff(wantRoleRules, role.Rules); diff != "" {
		t.Errorf("Role rules (-want +got):\n%s", diff)
	}
	checkLeaderElectionRole(t, objs)
	checkBindings(t, objs, namespace, fullname)
	checkGuardSubject(t, objs, namespace, fullname)
	checkMetricsReader(t, objs, fullname, nil)
}

// copyRules are the ClusterRole's first rules in both modes: the namespaces, the copies and the sources, and
// the Pod lists behind revocation.
var copyRules = []rbacv1.PolicyRule{
	{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get", "list", "watch"}},
	{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"list", "watch"}},
	{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get"}},
	{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"create"}},
	{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"patch"}},
	{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"delete"}},
	{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"list"}},
}

// The ClusterRole rules of the project's Events, which it writes wherever copies and sources are, and of
// the secure metrics endpoint's questions to the API server.
var (
	eventsRule       = rbacv1.PolicyRule{APIGroups: []string{"events.k8s.io"}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}}
	tokenReviewRule  = rbacv1.PolicyRule{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}}
	accessReviewRule = rbacv1.PolicyRule{APIGroups: []string{"authorization.k8s.io"}, Resources: []string{"subjectaccessreviews"}, Verbs: []string{"create"}}
)

// metricsReaderSuffix ends the name of the ClusterRole, and its binding, that lets metrics.readers scrape.
const metricsReaderSuffix = "-metrics-reader"

// checkMetricsReader checks the `<name>-metrics-reader` ClusterRole, which must grant what testenv's scrapers
// are granted, and its binding, which must exist exactly when readers are given and name them.
func checkMetricsReader(t *testing.T, objs []*unstructured.Unstructured, name string, readers []rbacv1.Subject) {
	t.Helper()
	reader := name + metricsReaderSuffix
	role := named[rbacv1.ClusterRole](t, objs, "ClusterRole", reader)
	if diff := cmp.Diff(testenv.MetricsReaderRules(), role.Rules); diff != "" {
		t.Errorf("%s rules (-want +got):\n%s", reader, diff)
	}
	var bindings []*unstructured.Unstructured
	for _, b := range find(objs, "ClusterRoleBinding") {
		if b.GetName() == reader {
			bindings = append(bindings, b)
		}
	}
	if len(readers) == 0 {
		if len(bindings) != 0 {
			t.Errorf("rendered ClusterRoleBinding %s without metrics.readers", reader)
		}
		return
	}
	b := named[rbacv1.ClusterRoleBinding](t, objs, "ClusterRoleBinding", reader)
	wantRef := rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: reader}
	if diff := cmp.Diff(wantRef, b.RoleRef); diff != "" {
		t.Errorf("%s roleRef (-want +got):\n%s", reader, diff)
	}
	if diff := cmp.Diff(readers, b.Subjects); diff != "" {
		t.Errorf("%s subjects (-want +got):\n%s", reader, diff)
	}
}

// checkNoMetricsAccess checks that without a secure metrics endpoint nothing renders metrics-reader and the
// webhook's ClusterRole asks no TokenReview or SubjectAccessReview.
func checkNoMetricsAccess(t *testing.T, objs []*unstructured.Unstructured, name string) {
	t.Helper()
	for _, kind := range []string{"ClusterRole", "ClusterRoleBinding"} {
		for _, o := range find(objs, kind) {
			if strings.HasSuffix(o.GetName(), metricsReaderSuffix) {
				t.Errorf("rendered %s %s without a secure metrics endpoint", kind, o.GetName())
			}
		}
	}
	for _, r := range named[rbacv1.ClusterRole](t, objs, "ClusterRole", name).Rules {
		if slices.Contains(r.Resources, "tokenreviews") || slices.Contains(r.Resources, "subjectaccessreviews") {
			t.Errorf("ClusterRole grants %v on %v without a secure metrics endpoint", r.Verbs, r.Resources)
		}
	}
}

// leaderElectionRole is the name of the Role that leader election needs, in both certificate modes.
const leaderElectionRole = fullname + "-leader-election"

// checkLeaderElectionRole checks the leader election Role's rules: the Lease named by --leader-election-id
// alone, and the events leader election records.
func checkLeaderElectionRole(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	c := container(t, one[appsv1.Deployment](t, objs, "Deployment"))
	lease, _ := flagValue(c.Args, "leader-election-id")
	role := named[rbacv1.Role](t, objs, "Role", leaderElectionRole)
	want := []rbacv1.PolicyRule{
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"create"}},
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, ResourceNames: []string{lease}, Verbs: []string{"get", "update"}},
		{APIGroups: []string{"", "events.k8s.io"}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
	}
	if diff := cmp.Diff(want, role.Rules); diff != "" {
		t.Errorf("leader election Role rules (-want +got):\n%s", diff)
	}
}

// checkBindings checks that every binding grants its role to the ServiceAccount the Deployment runs as.
func checkBindings(t *testing.T, objs []*unstructured.Unstructured, namespace, serviceAccount string) {
	t.Helper()
	d := one[appsv1.Deployment](t, objs, "Deployment")
	if got := d.Spec.Template.Spec.ServiceAccountName; got != serviceAccount {
		t.Errorf("Deployment runs as ServiceAccount %q, want %q", got, serviceAccount)
	}
	want := []rbacv1.Subject{{Kind: "ServiceAccount", Name: serviceAccount, Namespace: namespace}}
	roles := map[string]bool{}
	for _, kind := range []string{"ClusterRole", "Role"} {
		for _, obj := range find(objs, kind) {
			roles[kind+"/"+obj.GetName()] = true
		}
	}
	for _, kind := range []string{"ClusterRoleBinding", "RoleBinding"} {
		for _, obj := range find(objs, kind) {
			if kind == "ClusterRoleBinding" && strings.HasSuffix(obj.GetName(), metricsReaderSuffix) {
				continue // binds metrics.readers, not the webhook: checkMetricsReader
			}
			// ClusterRoleBinding and RoleBinding have the same fields.
			var b rbacv1.RoleBinding
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, &b); err != nil {
				t.Fatalf("convert %s: %v", kind, err)
			}
			if diff := cmp.Diff(want, b.Subjects); diff != "" {
				t.Errorf("%s %q subjects (-want +got):\n%s", kind, obj.GetName(), diff)
			}
			if ref := b.RoleRef.Kind + "/" + b.RoleRef.Name; !roles[ref] {
				t.Errorf("%s %q binds %s, which the chart does not render", kind, obj.GetName(), ref)
			}
		}
	}
}

func checkCertManager(issuerRef map[string]any) func(t *testing.T, namespace string, objs []*unstructured.Unstructured) {
	return func(t *testing.T, namespace string, objs []*unstructured.Unstructured) {
		issuers := find(objs, "Issuer")
		wantRef := issuerRef
		if issuerRef == nil {
			if len(issuers) != 1 {
				t.Fatalf("rendered %d Issuers, want 1", len(issuers))
			}
			if _, ok, _ := unstructured.NestedMap(issuers[0].Object, "spec", "selfSigned"); !ok {
				t.Errorf("Issuer is not self-signed: %v", issuers[0].Object["spec"])
			}
			wantRef = map[string]any{"name": issuers[0].GetName(), "kind": "Issuer", "group": "cert-manager.io"}
		} else if len(issuers) != 0 {
			t.Errorf("rendered %d Issuers with issuerRef set, want none", len(issuers))
		}
		certs := find(objs, "Certificate")
		if len(certs) != 1 {
			t.Fatalf("rendered %d Certificates, want 1", len(certs))
		}
		cert := certs[0]
		gotRef, _, _ := unstructured.NestedMap(cert.Object, "spec", "issuerRef")
		if diff := cmp.Diff(wantRef, gotRef); diff != "" {
			t.Errorf("Certificate issuerRef (-want +got):\n%s", diff)
		}
		dnsNames, _, _ := unstructured.NestedStringSlice(cert.Object, "spec", "dnsNames")
		svc := fullname + "." + namespace + ".svc"
		if diff := cmp.Diff([]string{svc, svc + ".cluster.local"}, dnsNames); diff != "" {
			t.Errorf("Certificate dnsNames (-want +got):\n%s", diff)
		}
		secretName, _, _ := unstructured.NestedString(cert.Object, "spec", "secretName")

		mwc := one[admissionregistrationv1.MutatingWebhookConfiguration](t, objs, "MutatingWebhookConfiguration")
		if got, want := mwc.Annotations["cert-manager.io/inject-ca-from"], namespace+"/"+cert.GetName(); got != want {
			t.Errorf("cert-manager.io/inject-ca-from = %q, want %q", got, want)
		}
		d := one[appsv1.Deployment](t, objs, "Deployment")
		c := container(t, d)
		if mode, _ := flagValue(c.Args, "cert-mode"); mode != "external" {
			t.Errorf("--cert-mode=%s, want external", mode)
		}
		for _, self := range []string{"service-name", "cert-secret-name", "webhook-config-name"} {
			if _, ok := flagValue(c.Args, self); ok {
				t.Errorf("self-mode flag --%s set in cert-manager mode", self)
			}
		}
		certDir, _ := flagValue(c.Args, "cert-dir")
		var mountedSecret string
		for _, m := range c.VolumeMounts {
			if m.MountPath == certDir {
				for _, v := range d.Spec.Template.Spec.Volumes {
					if v.Name == m.Name && v.Secret != nil {
						mountedSecret = v.Secret.SecretName
					}
				}
			}
		}
		if mountedSecret != secretName {
			t.Errorf("--cert-dir=%s holds Secret %q, want the Certificate's Secret %q", certDir, mountedSecret, secretName)
		}
		// The certificate Secret is only mounted: the one Role is leader election's, and grants no Secret.
		if n := len(find(objs, "Role")); n != 1 {
			t.Errorf("rendered %d Roles in cert-manager mode, want only leader election's", n)
		}
		checkLeaderElectionRole(t, objs)
		cr := named[rbacv1.ClusterRole](t, objs, "ClusterRole", fullname)
		for _, r := range cr.Rules {
			if slices.Contains(r.Resources, "mutatingwebhookconfigurations") {
				t.Errorf("ClusterRole grants %v on webhook configurations in cert-manager mode, where cainjector owns caBundle", r.Verbs)
			}
		}
	}
}

func checkMonitoring(t *testing.T, namespace string, objs []*unstructured.Unstructured) {
	sm := find(objs, "ServiceMonitor")
	if len(sm) != 1 {
		t.Fatalf("rendered %d ServiceMonitors, want 1", len(sm))
	}
	endpoints, _, _ := unstructured.NestedSlice(sm[0].Object, "spec", "endpoints")
	// HTTPS with Prometheus' own token, which the binary reviews, and the values' TLS settings in place of
	// the default insecureSkipVerify.
	wantEndpoints := []any{map[string]any{
		"port": "metrics", "path": testenv.MetricsPath, "interval": "30s", "scheme": "https",
		"bearerTokenFile": "/var/run/secrets/kubernetes.io/serviceaccount/token",
		"tlsConfig": map[string]any{
			"insecureSkipVerify": false,
			"serverName":         "psi-pullsecret-injector.render-3.svc",
			"ca":                 map[string]any{"secret": map[string]any{"name": "psi-metrics-tls", "key": "ca.crt"}},
		},
	}}
	if diff := cmp.Diff(wantEndpoints, endpoints); diff != "" {
		t.Errorf("ServiceMonitor endpoints (-want +got):\n%s", diff)
	}
	if sm[0].GetLabels()["release"] != "prometheus" {
		t.Errorf("ServiceMonitor labels %v lack release=prometheus", sm[0].GetLabels())
	}
	matchLabels, _, _ := unstructured.NestedStringMap(sm[0].Object, "spec", "selector", "matchLabels")
	svc := one[corev1.Service](t, objs, "Service")
	for k, v := range matchLabels {
		if svc.Labels[k] != v {
			t.Errorf("ServiceMonitor selects %s=%s, which the Service's labels %v lack", k, v, svc.Labels)
		}
	}
	checkMetricsPorts(t, objs, 8443)
	checkMetricsReader(t, objs, fullname, []rbacv1.Subject{
		{Kind: rbacv1.ServiceAccountKind, Name: "prometheus-k8s", Namespace: "monitoring"},
		{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: "metrics-scrapers"},
	})
	checkBindings(t, objs, namespace, fullname)

	// The metrics endpoint serves the certificate Secret's tls.crt and tls.key, from where
	// --metrics-cert-dir points.
	d := one[appsv1.Deployment](t, objs, "Deployment")
	c := container(t, d)
	certDir, ok := flagValue(c.Args, "metrics-cert-dir")
	if !ok {
		t.Fatal("no --metrics-cert-dir with metrics.certSecret set")
	}
	var mounted string
	for _, m := range c.VolumeMounts {
		if m.MountPath != certDir {
			continue
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name == m.Name && v.Secret != nil {
				mounted = v.Secret.SecretName
			}
		}
	}
	if mounted != "psi-metrics-tls" {
		t.Errorf("--metrics-cert-dir=%s holds Secret %q, want metrics.certSecret psi-metrics-tls", certDir, mounted)
	}

	np := one[networkingv1.NetworkPolicy](t, objs, "NetworkPolicy")
	var ingressPorts []int32
	for _, rule := range np.Spec.Ingress {
		for _, p := range rule.Ports {
			ingressPorts = append(ingressPorts, p.Port.IntVal)
		}
	}
	if diff := cmp.Diff([]int32{9443, 8081, 8443}, ingressPorts); diff != "" {
		t.Errorf("NetworkPolicy ingress ports (-want +got):\n%s", diff)
	}
	if got := np.Spec.Ingress[0].From; len(got) != 1 || got[0].IPBlock == nil || got[0].IPBlock.CIDR != "10.0.0.0/24" {
		t.Errorf("webhook ingress from %v, want 10.0.0.0/24", got)
	}
	if len(np.Spec.Egress) != 1 || len(np.Spec.Egress[0].Ports) != 2 || len(np.Spec.Egress[0].To) != 1 {
		t.Errorf("egress %v: want the API server's two ports to 10.0.0.1/32", np.Spec.Egress)
	}
	if diff := cmp.Diff([]networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}, np.Spec.PolicyTypes); diff != "" {
		t.Errorf("policy types (-want +got):\n%s", diff)
	}
}

// checkMetricsPorts checks that the container, the Service and the ServiceMonitor agree on the metrics port.
func checkMetricsPorts(t *testing.T, objs []*unstructured.Unstructured, port int32) {
	t.Helper()
	c := container(t, one[appsv1.Deployment](t, objs, "Deployment"))
	if got, _ := flagValue(c.Args, "metrics-bind-address"); got != fmt.Sprintf(":%d", port) {
		t.Errorf("--metrics-bind-address=%s, want :%d", got, port)
	}
	var containerPort int32
	for _, p := range c.Ports {
		if p.Name == "metrics" {
			containerPort = p.ContainerPort
		}
	}
	var servicePort corev1.ServicePort
	for _, p := range one[corev1.Service](t, objs, "Service").Spec.Ports {
		if p.Name == "metrics" {
			servicePort = p
		}
	}
	if containerPort != port || servicePort.Port != port || servicePort.TargetPort != intstr.FromString("metrics") {
		t.Errorf("container port %d, Service port %d -> %s; want %d, and the Service to target the container's metrics port",
			containerPort, servicePort.Port, servicePort.TargetPort.String(), port)
	}
}

// checkPlainMetrics checks metrics.secure false: plain HTTP for anyone who reaches the port, so no
// certificate, no token in the ServiceMonitor and no RBAC for the API server's reviews.
func checkPlainMetrics(t *testing.T, _ string, objs []*unstructured.Unstructured) {
	c := container(t, one[appsv1.Deployment](t, objs, "Deployment"))
	if got, _ := flagValue(c.Args, "metrics-secure"); got != "false" {
		t.Errorf("--metrics-secure=%s, want false", got)
	}
	if dir, ok := flagValue(c.Args, "metrics-cert-dir"); ok {
		t.Errorf("--metrics-cert-dir=%s set for plain HTTP", dir)
	}
	for _, m := range c.VolumeMounts {
		if m.Name == "metrics-tls" {
			t.Errorf("metrics certificate mounted at %s for plain HTTP", m.MountPath)
		}
	}
	checkMetricsPorts(t, objs, 8080)
	sm := find(objs, "ServiceMonitor")
	if len(sm) != 1 {
		t.Fatalf("rendered %d ServiceMonitors, want 1", len(sm))
	}
	endpoints, _, _ := unstructured.NestedSlice(sm[0].Object, "spec", "endpoints")
	want := []any{map[string]any{"port": "metrics", "path": testenv.MetricsPath, "scheme": "http"}}
	if diff := cmp.Diff(want, endpoints); diff != "" {
		t.Errorf("ServiceMonitor endpoints (-want +got):\n%s", diff)
	}
	checkNoMetricsAccess(t, objs, fullname)
}

func checkProduction(t *testing.T, namespace string, objs []*unstructured.Unstructured) {
	for _, obj := range objs {
		if !strings.HasPrefix(obj.GetName(), "injector") {
			t.Errorf("%s %q does not use fullnameOverride", obj.GetKind(), obj.GetName())
		}
		if obj.GetLabels()["team"] != "platform" {
			t.Errorf("%s %q lacks the common label team=platform", obj.GetKind(), obj.GetName())
		}
	}
	if n := len(find(objs, "ServiceAccount")); n != 0 {
		t.Errorf("rendered %d ServiceAccounts with serviceAccount.create false, want none", n)
	}
	checkBindings(t, objs, namespace, "existing-sa")
	checkGuardSubject(t, objs, namespace, "existing-sa")
	// serviceAccountPullSecrets: append, and only then, may patch ServiceAccounts.
	saPatch := rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"serviceaccounts"}, Verbs: []string{"patch"}}
	if !slices.ContainsFunc(named[rbacv1.ClusterRole](t, objs, "ClusterRole", "injector").Rules, func(r rbacv1.PolicyRule) bool { return cmp.Equal(r, saPatch) }) {
		t.Error("serviceAccountPullSecrets: append grants no patch on ServiceAccounts")
	}
	checkNoMetricsAccess(t, objs, "injector")

	d := one[appsv1.Deployment](t, objs, "Deployment")
	spec := d.Spec.Template.Spec
	c := container(t, d)
	if got := ptr.Deref(d.Spec.Replicas, 0); got != 3 {
		t.Errorf("replicas = %d, want 3", got)
	}
	if got := ptr.Deref(spec.TerminationGracePeriodSeconds, 0); got != 60 {
		t.Errorf("terminationGracePeriodSeconds = %d, want 60", got)
	}
	if want := "registry.internal/mirror/pullsecret-injector@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"; c.Image != want || c.ImagePullPolicy != corev1.PullAlways {
		t.Errorf("image %q, pull policy %q; want %q, Always", c.Image, c.ImagePullPolicy, want)
	}
	if diff := cmp.Diff([]corev1.LocalObjectReference{{Name: "mirror-regcred"}}, spec.ImagePullSecrets); diff != "" {
		t.Errorf("imagePullSecrets (-want +got):\n%s", diff)
	}
	if spec.PriorityClassName != "system-cluster-critical" || spec.NodeSelector["kubernetes.io/os"] != "linux" ||
		len(spec.Tolerations) != 1 || spec.Affinity == nil || spec.Affinity.NodeAffinity == nil {
		t.Errorf("priorityClassName %q, nodeSelector %v, tolerations %v, affinity %v: not the values'",
			spec.PriorityClassName, spec.NodeSelector, spec.Tolerations, spec.Affinity)
	}
	if got := spec.TopologySpreadConstraints; len(got) != 1 || got[0].TopologyKey != "topology.kubernetes.io/zone" || got[0].LabelSelector == nil {
		t.Errorf("topology spread %v, want the zone constraint with the chart's selector", got)
	}
	if d.Spec.Template.Annotations["example.com/owner"] != "platform" || d.Spec.Template.Labels["example.com/tier"] != "admission" {
		t.Errorf("Pod template annotations %v, labels %v lack podAnnotations and podLabels", d.Spec.Template.Annotations, d.Spec.Template.Labels)
	}
	for flag, want := range map[string]string{
		"webhook-port":                "8443",
		"health-probe-bind-address":   ":9440",
		"metrics-bind-address":        "0",
		"zap-log-level":               "debug",
		"shutdown-delay":              "15s",
		"serviceaccount-pull-secrets": "append",
		"cert-secret-name":            "injector-serving-cert",
		"cert-extra-sans":             "injector.example.com,10.1.2.3",
		"ca-validity":                 "17520h",
		"service-name":                "injector",
		"webhook-config-name":         "injector",
		"leader-election-id":          "injector",
		"leader-election-namespace":   namespace,
		"resync-period":               "30m",
		"revocation-recheck":          "5m",
		"reconciler-workers":          "8",
		"reconciler-qps":              "12.5",
		"reconciler-burst":            "25",
	} {
		if got, _ := flagValue(c.Args, flag); got != want {
			t.Errorf("--%s=%q, want %q", flag, got, want)
		}
	}
	if last := c.Args[len(c.Args)-1]; last != "--zap-encoder=console" {
		t.Errorf("last arg %q, want extraArgs last so that they override", last)
	}
	for _, p := range c.Ports {
		if p.Name == "metrics" {
			t.Error("metrics port declared with metrics disabled")
		}
	}
	svc := one[corev1.Service](t, objs, "Service")
	if len(svc.Spec.Ports) != 1 {
		t.Errorf("Service ports %v, want only the webhook's with metrics disabled", svc.Spec.Ports)
	}
	pdb := one[policyv1.PodDisruptionBudget](t, objs, "PodDisruptionBudget")
	if pdb.Spec.MinAvailable == nil || *pdb.Spec.MinAvailable != intstr.FromInt32(2) || pdb.Spec.MaxUnavailable != nil {
		t.Errorf("PodDisruptionBudget minAvailable %v, maxUnavailable %v; want minAvailable 2 alone", pdb.Spec.MinAvailable, pdb.Spec.MaxUnavailable)
	}

	mwc := one[admissionregistrationv1.MutatingWebhookConfiguration](t, objs, "MutatingWebhookConfiguration")
	w := mwc.Webhooks[0]
	if *w.FailurePolicy != admissionregistrationv1.Ignore || *w.TimeoutSeconds != 10 {
		t.Errorf("failurePolicy %s, timeoutSeconds %d; want Ignore, 10", *w.FailurePolicy, *w.TimeoutSeconds)
	}
	// The user's matchLabels replace the default opt-in label rather than being merged with it.
	wantSelector := &metav1.LabelSelector{
		MatchLabels: map[string]string{"example.com/pull-secrets": "true"},
		MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: []string{namespace, "kube-system", "kube-public", "kube-node-lease"}},
			{Key: "environment", Operator: metav1.LabelSelectorOpIn, Values: []string{"prod", "staging"}},
		},
	}
	if diff := cmp.Diff(wantSelector, w.NamespaceSelector); diff != "" {
		t.Errorf("namespaceSelector (-want +got):\n%s", diff)
	}
	cm := one[corev1.ConfigMap](t, objs, "ConfigMap")
	cfg, err := config.Parse([]byte(cm.Data["config.yaml"]))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(wantSelector, cfg.NamespaceSelector); diff != "" {
		t.Errorf("configuration's namespaceSelector (-want +got):\n%s", diff)
	}
	wantRegistries := []config.Registry{
		{Registry: "registry.example.com:5000/team-a", Secret: config.SecretRef{Namespace: namespace, Name: "team-a-regcred"}},
		{Registry: "*.dkr.ecr.eu-west-1.amazonaws.com", Secret: config.SecretRef{Namespace: "registry-credentials", Name: "ecr-regcred"},
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "payments"}}},
	}
	if diff := cmp.Diff(wantRegistries, cfg.Registries); diff != "" {
		t.Errorf("configured registries (-want +got):\n%s", diff)
	}
}

// checkNoLeaderElection checks that with leader election off the binary is told so and the chart grants
// nothing on Leases or Events.
func checkNoLeaderElection(t *testing.T, namespace string, objs []*unstructured.Unstructured) {
	c := container(t, one[appsv1.Deployment](t, objs, "Deployment"))
	if got, _ := flagValue(c.Args, "leader-elect"); got != "false" {
		t.Errorf("--leader-elect=%s, want false", got)
	}
	for _, flag := range []string{"leader-election-namespace", "leader-election-id"} {
		if v, ok := flagValue(c.Args, flag); ok {
			t.Errorf("--%s=%s set with leader election off", flag, v)
		}
	}
	if n := len(find(objs, "Role")); n != 1 {
		t.Errorf("rendered %d Roles, want only the certificate Secret's", n)
	}
	// The project's own Events stay (events.k8s.io, in the ClusterRole); leader election's go.
	for _, kind := range []string{"ClusterRole", "Role"} {
		for _, obj := range find(objs, kind) {
			var r rbacv1.Role // ClusterRole's rules have the same fields.
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, &r); err != nil {
				t.Fatalf("convert %s: %v", kind, err)
			}
			for _, rule := range r.Rules {
				if slices.Contains(rule.Resources, "leases") || (slices.Contains(rule.Resources, "events") && !cmp.Equal(rule, eventsRule)) {
					t.Errorf("%s %q grants %v on %v with leader election off", kind, obj.GetName(), rule.Verbs, rule.Resources)
				}
			}
		}
	}
	checkBindings(t, objs, namespace, fullname)
}

func checkMinimal(t *testing.T, _ string, objs []*unstructured.Unstructured) {
	// The admission guard is no RBAC: it confines whatever the ServiceAccount is granted by other means.
	wantKinds := []string{"ConfigMap", "Deployment", "MutatingWebhookConfiguration", "Service", "ServiceAccount",
		"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
	gotKinds := kinds(objs)
	slices.Sort(gotKinds)
	if diff := cmp.Diff(wantKinds, gotKinds); diff != "" {
		t.Errorf("rendered kinds (-want +got):\n%s", diff)
	}
}

// TestLint runs `helm lint --strict` with the default values and with each value set.
func TestLint(t *testing.T) {
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			out, err := helm(t, "lint", "--strict", chartDir, "--values", valuesFile(t, vs.values))
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
		})
	}
}

// TestSchemaRejects checks that values.schema.json refuses values that would otherwise be ignored or
// produce a broken release.
func TestSchemaRejects(t *testing.T) {
	for _, tc := range []struct {
		name, values string
		// want is part of helm's message: what is wrong, and where.
		want string
	}{
		{"misspelled top-level value", "replicaCont: 3\n", "additional properties 'replicaCont'"},
		{"misspelled nested value", "webhook: {failurPolicy: Ignore}\n", "additional properties 'failurPolicy'"},
		{"registry entry without a secret", "registries: [{registry: registry.example.com}]\n", "missing property 'secret'"},
		{"registry entry without a registry", "registries: [{secret: {name: regcred}}]\n", "missing property 'registry'"},
		{"secret without a name", "registries: [{registry: registry.example.com, secret: {namespace: x}}]\n", "missing property 'name'"},
		{"unknown field in a registry entry", "registries: [{registry: r.example.com, secret: {name: s}, namespace: x}]\n", "additional properties 'namespace'"},
		{"empty registry list", "registries: []\n", "'/registries'"},
		{"failurePolicy other than Fail or Ignore", "webhook: {failurePolicy: Sometimes}\n", "'/webhook/failurePolicy'"},
		{"replicaCount of the wrong type", "replicaCount: two\n", "'/replicaCount'"},
		{"digest that is not a sha256 digest", "image: {digest: latest}\n", "'/image/digest'"},
		{"duration that Go cannot parse", "certs: {certValidity: 90d}\n", "'/certs/certValidity'"},
		{"misspelled selector field", "namespaceSelector: {matchLabel: {a: b}}\n", "additional properties 'matchLabel'"},
		{"misspelled reconciler value", "reconciler: {worker: 2}\n", "additional properties 'worker'"},
		{"reconciler duration that Go cannot parse", "reconciler: {resyncPeriod: 1d}\n", "'/reconciler/resyncPeriod'"},
		{"reconciler qps of zero", "reconciler: {qps: 0}\n", "'/reconciler/qps'"},
		{"reconciler workers that are not a whole number", "reconciler: {workers: 1.5}\n", "'/reconciler/workers'"},
		{"leaderElection.enabled that is not a boolean", "leaderElection: {enabled: \"yes\"}\n", "'/leaderElection/enabled'"},
		{"admissionGuard.enabled that is not a boolean", "admissionGuard: {enabled: \"no\"}\n", "'/admissionGuard/enabled'"},
		{"misspelled admissionGuard value", "admissionGuard: {enable: false}\n", "additional properties 'enable'"},
		{"shutdownDelay that Go cannot parse", "shutdownDelay: 5\n", "'/shutdownDelay'"},
		{"serviceAccountPullSecrets that is neither skip nor append", "serviceAccountPullSecrets: add\n", "'/serviceAccountPullSecrets'"},
		{"terminationGracePeriodSeconds of zero", "terminationGracePeriodSeconds: 0\n", "'/terminationGracePeriodSeconds'"},
		{"metrics.secure that is not a boolean", "metrics: {secure: \"yes\"}\n", "'/metrics/secure'"},
		{"metrics reader ServiceAccount without a namespace", "metrics: {readers: [{kind: ServiceAccount, name: prometheus}]}\n", "missing property 'namespace'"},
		{"metrics reader of an unknown kind", "metrics: {readers: [{kind: Serviceaccount, name: p, namespace: m}]}\n", "'/metrics/readers/0/kind'"},
		{"misspelled ServiceMonitor tlsConfig field", "metrics: {serviceMonitor: {tlsConfig: {insecureSkipVerfy: false}}}\n", "additional properties 'insecureSkipVerfy'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := template(t, release, "schema", tc.values)
			if err == nil {
				t.Fatalf("helm template accepted %q", tc.values)
			}
			if msg := err.Error(); !strings.Contains(msg, "schema") || !strings.Contains(msg, tc.want) {
				t.Errorf("error does not name the schema and %q:\n%s", tc.want, msg)
			}
		})
	}
}
