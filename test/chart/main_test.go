// Package chart tests the Helm chart in charts/pullsecret-injector against a real kube-apiserver and etcd:
// what it renders is accepted by the API server, `helm install`, `upgrade` and `uninstall` work, the
// rendered webhook registration and configuration drive the real binary, and the rendered RBAC is enough
// for the binary and no more. It also checks that the Dockerfile builds the binary as `make build` does.
package chart

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"

	"github.com/pullsecret-injector/pullsecret-injector/test/testenv"
)

var (
	cp *testenv.ControlPlane
	// admin is an admin client that drops warnings.
	admin kubernetes.Interface
	// dyn and mapper apply rendered objects of any kind.
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
	// binary is the pullsecret-injector binary, built as `make build` builds it.
	binary string
	// helmBinary is the helm the Makefile builds.
	helmBinary string
	// chartDir is charts/pullsecret-injector.
	chartDir string
	// apiVersions are the test control plane's API versions and kinds as `helm install` discovers them, for
	// `helm template --api-versions`: the chart renders the admission guard only where the API server
	// serves ValidatingAdmissionPolicy.
	apiVersions []string
)

func TestMain(m *testing.M) {
	chartDir = filepath.Join(testenv.RepoRoot(), "charts", "pullsecret-injector")
	helmBinary = os.Getenv("HELM")
	if helmBinary == "" {
		helmBinary = filepath.Join(testenv.RepoRoot(), "bin", "helm")
	}
	if _, err := os.Stat(helmBinary); err != nil {
		fmt.Fprintf(os.Stderr, "find helm at %s (run `make helm`, or set HELM): %v\n", helmBinary, err)
		os.Exit(1)
	}
	os.Exit(testenv.RunWithControlPlane(func(plane *testenv.ControlPlane, built string) int {
		cp, binary = plane, built
		return run(m)
	}))
}

// run sets up the clients, the stand-in CRDs and the API versions the chart renders against, and runs
// the tests.
func run(m *testing.M) int {
	if err := setupClients(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := installCRDs(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var err error
	if apiVersions, err = serverAPIVersions(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

func setupClients() error {
	cfg := rest.CopyConfig(cp.Config)
	cfg.WarningHandlerWithContext = rest.NoWarnings{}
	var err error
	if admin, err = kubernetes.NewForConfig(cfg); err != nil {
		return fmt.Errorf("create admin client: %w", err)
	}
	if dyn, err = dynamic.NewForConfig(cfg); err != nil {
		return fmt.Errorf("create dynamic client: %w", err)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return fmt.Errorf("create discovery client: %w", err)
	}
	mapper = restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	return nil
}

// crds are stand-ins for the cert-manager and Prometheus Operator CRDs the optional templates need: the
// kinds and versions, without their schemas. The dry run then checks what the API server itself checks of
// these objects (kind, version, scope, metadata), not the fields the real CRDs validate.
var crds = []struct{ group, kind, plural string }{
	{"cert-manager.io", "Issuer", "issuers"},
	{"cert-manager.io", "Certificate", "certificates"},
	{"monitoring.coreos.com", "ServiceMonitor", "servicemonitors"},
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

func installCRDs(ctx context.Context) error {
	for _, c := range crds {
		var obj unstructured.Unstructured
		crd := fmt.Sprintf(`
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: %[3]s.%[1]s}
spec:
  group: %[1]s
  scope: Namespaced
  names: {kind: %[2]s, plural: %[3]s, listKind: %[2]sList}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
`, c.group, c.kind, c.plural)
		if err := yaml.Unmarshal([]byte(crd), &obj.Object); err != nil {
			return fmt.Errorf("parse CRD for %s: %w", c.kind, err)
		}
		if _, err := dyn.Resource(crdGVR).Create(ctx, &obj, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create CRD for %s: %w", c.kind, err)
		}
	}
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		for _, c := range crds {
			got, err := dyn.Resource(crdGVR).Get(ctx, c.plural+"."+c.group, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			if !established(got) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("wait for CRDs to be established: %w", err)
	}
	mapper.Reset()
	return nil
}

func established(crd *unstructured.Unstructured) bool {
	conditions, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
	for _, c := range conditions {
		m, _ := c.(map[string]any)
		if m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
}

// serverAPIVersions returns every group version the API server serves and every kind in it, as
// "group/version" and "group/version/Kind": the set Helm's own discovery gives templates as
// .Capabilities.APIVersions on install and upgrade.
func serverAPIVersions() ([]string, error) {
	groups, resources, err := admin.Discovery().ServerGroupsAndResources()
	if err != nil {
		return nil, fmt.Errorf("discover the API server's resources: %w", err)
	}
	seen := map[string]bool{}
	for _, g := range groups {
		for _, v := range g.Versions {
			seen[v.GroupVersion] = true
		}
	}
	for _, list := range resources {
		for _, r := range list.APIResources {
			seen[path.Join(list.GroupVersion, r.Kind)] = true
		}
	}
	return slices.Sorted(maps.Keys(seen)), nil
}
