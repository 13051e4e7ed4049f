package webhook

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/internal/managed"
	"github.com/pullsecret-injector/pullsecret-injector/test/fixtures"
)

// stubReader answers every Get with get, for clusters too large for the fake client: thousands of
// objects, each with its own large strings.
type stubReader func(key client.ObjectKey, obj client.Object) error

func (r stubReader) Get(_ context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	return r(key, obj)
}

func (r stubReader) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return errors.New("stubReader lists nothing")
}

// kind returns the kind of a metadata-only object, "" for a typed one.
func kind(obj client.Object) string {
	if m, ok := obj.(*metav1.PartialObjectMetadata); ok {
		return m.Kind
	}
	return ""
}

// unique returns a string of n bytes that no other call returns: strings the memos keep must not be
// shared between entries, or the test would measure less than a cluster costs.
func unique(i, n int) string {
	s := fmt.Sprintf("%08d", i)
	return s + strings.Repeat("x", n-len(s))
}

// suffix returns the number a name such as "ns-12" ends with.
func suffix(name string) int {
	n, _ := strconv.Atoi(name[strings.LastIndexByte(name, '-')+1:])
	return n
}

// The memos of live reads hold what a tenant's objects say (a namespace's labels, a ServiceAccount's pull
// secrets, a Secret at a copy's name): 10,000 of each, each large and unique, must leave the injector
// holding a bounded number of bytes, not a number of entries each of any size.
func TestMemosAreBoundedInBytes(t *testing.T) {
	const objects = 10000
	// Each case's bound is its memo's byte budget, doubled for what the budget does not see (the Go
	// map's spare room, the allocator's size classes).
	for name, tc := range map[string]struct {
		cache, live stubReader
		writer      client.Writer
		pod         func(i int) *corev1.Pod
		bound       int
	}{
		// 64 pull secrets of 253 bytes each, none configured: only what the handler needs is kept.
		"enforcing ServiceAccounts with 64 long pull secrets each": {
			cache: func(key client.ObjectKey, obj client.Object) error {
				switch kind(obj) {
				case "Namespace":
					obj.SetLabels(optIn)
				case "ServiceAccount":
					obj.SetAnnotations(map[string]string{managed.EnforceMountableSecretsAnnotation: "true"})
					obj.SetResourceVersion("1")
				case "Secret":
					obj.SetLabels(map[string]string{managed.ManagedByLabel: managed.ManagedByValue})
				}
				return nil
			},
			live: func(key client.ObjectKey, obj client.Object) error {
				sa, ok := obj.(*corev1.ServiceAccount)
				if !ok {
					return fmt.Errorf("unexpected live read of %T", obj)
				}
				sa.Namespace, sa.Name, sa.ResourceVersion = key.Namespace, key.Name, "1"
				i := suffix(key.Name)
				for j := range 64 {
					sa.ImagePullSecrets = append(sa.ImagePullSecrets, corev1.LocalObjectReference{Name: unique(i*64+j, 253)})
				}
				return nil
			},
			pod: func(i int) *corev1.Pod {
				p := pod("quay.io/org/app")
				p.Spec.ServiceAccountName = fmt.Sprintf("sa-%d", i)
				return p
			},
			bound: 2 * serviceAccountMemoBytes,
		},
		// 40 labels of 380 bytes each (15 KiB), none the ECR entry's selector needs: read live, remembered.
		"namespaces with large labels read live": {
			cache: optedInNamespacesOnly,
			live: func(key client.ObjectKey, obj client.Object) error {
				i := suffix(key.Name)
				labels := map[string]string{config.InjectLabel: config.InjectEnabled}
				for j := range 40 {
					labels[unique(i*40+j, 253)+"/"+strings.Repeat("k", 63)] = strings.Repeat("v", 63)
				}
				obj.SetLabels(labels)
				return nil
			},
			pod:   func(int) *corev1.Pod { return pod("123456789012.dkr.ecr.eu-west-1.amazonaws.com/app") },
			bound: 2 * namespaceMemoBytes,
		},
		// A tenant's Secret at the copy's name in each namespace, with a 16 KiB source annotation of its own.
		"Secrets of a copy's name that someone else owns": {
			cache: optedInNamespacesOnly,
			live: func(key client.ObjectKey, obj client.Object) error {
				i := suffix(key.Namespace)
				obj.SetName(key.Name)
				obj.SetNamespace(key.Namespace)
				obj.SetAnnotations(map[string]string{managed.SourceAnnotation: unique(i, 16<<10)})
				return nil
			},
			writer: existingWriter{},
			pod:    func(int) *corev1.Pod { return pod("quay.io/org/app") },
			bound:  2 * copyMemoBytes,
		},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, sources(), nil)
			h := f.injector
			h.Cache, h.APIReader = tc.cache, tc.live
			if tc.writer != nil {
				h.Writer = tc.writer
			}
			// A logger of its own: controller-runtime's global one, never set in tests, keeps every logger
			// derived from it until it is.
			ctx := logf.IntoContext(context.Background(), logr.Discard())
			before := fixtures.HeapAlloc()
			for i := range objects {
				req := podRequest(t, fmt.Sprintf("ns-%d", i), tc.pod(i))
				if resp := h.Handle(ctx, req); !resp.Allowed {
					t.Fatalf("Pod %d refused: %v", i, resp.Result)
				}
			}
			held := fixtures.HeapAlloc() - before
			runtime.KeepAlive(h)
			t.Logf("%d objects: the injector holds %d bytes more", objects, held)
			if held > tc.bound {
				t.Errorf("after %d objects the injector holds %d bytes more, bound %d", objects, held, tc.bound)
			}
		})
	}
}

// optedInNamespacesOnly is a cache that shows every namespace opted in, and nothing else.
func optedInNamespacesOnly(key client.ObjectKey, obj client.Object) error {
	if kind(obj) != "Namespace" {
		return apierrors.NewNotFound(schema.GroupResource{}, key.Name)
	}
	obj.SetLabels(optIn)
	return nil
}

// existingWriter answers every create AlreadyExists, as the API server does where a Secret of the copy's
// name exists.
type existingWriter struct{ client.Client }

func (existingWriter) Create(_ context.Context, obj client.Object, _ ...client.CreateOption) error {
	return apierrors.NewAlreadyExists(schema.GroupResource{Resource: "secrets"}, obj.GetName())
}

// lineCounter is a logger that counts the lines with a message.
func lineCounter(message string, n *atomic.Int32) logr.Logger {
	return funcr.New(func(_, args string) {
		if strings.Contains(args, fmt.Sprintf("%q", message)) {
			n.Add(1)
		}
	}, funcr.Options{Verbosity: 0})
}

// A dry run must cost no more API reads than a real Pod, and be remembered the same way: dry runs a tenant
// sends in a loop cost at most what as many real Pods would.
func TestDryRunCostsNoMoreThanARealPod(t *testing.T) {
	const pods = 5
	theirs := source("quay-regcred", corev1.SecretTypeDockerConfigJson)
	theirs.Namespace = "team"
	for name, tc := range map[string]struct {
		cached, live []client.Object
		pod          *corev1.Pod
		// wantDryReads is what the dry runs cost in all, at most what the real Pods cost.
		wantDryReads int32
	}{
		"missing copy of a cached source": {
			cached: append(sources(), namespace("team", optIn)), live: sources(),
			pod: pod("quay.io/a/b"), wantDryReads: 0,
		},
		"missing copy of a missing source": {
			cached: append(sources(), namespace("team", optIn)), live: sources(),
			pod: pod("missing.example.com/a"), wantDryReads: 1,
		},
		"a Secret of the copy's name that someone else owns": {
			cached: append(sources(), namespace("team", optIn)), live: append(sources(), theirs),
			pod: pod("quay.io/a/b"), wantDryReads: 1,
		},
	} {
		t.Run(name, func(t *testing.T) {
			reads := map[bool]int32{}
			notFoundLines := map[bool]int32{}
			for _, dryRun := range []bool{false, true} {
				f := newFixture(t, tc.cached, tc.live)
				var lines atomic.Int32
				ctx := logf.IntoContext(context.Background(), lineCounter("Source secret not found; the Pod references its copy, which is filled in when the source exists", &lines))
				now := time.Now()
				f.injector.copies.Now = func() time.Time { return now } // no entry expires during the test
				for i := range pods {
					req := podRequest(t, "team", tc.pod, func(r *admissionv1.AdmissionRequest) { r.DryRun = ptr.To(dryRun) })
					resp := f.injector.Handle(ctx, req)
					if !resp.Allowed || len(resp.Patches) == 0 {
						t.Fatalf("dry run %v, Pod %d: allowed %v with %d patches, want the reference", dryRun, i, resp.Allowed, len(resp.Patches))
					}
					if real := !dryRun; real {
						// The real Pods' copy is in the cache for the next Pod, as the informer would have it.
						addCreatedToCache(t, f)
					}
				}
				reads[dryRun], notFoundLines[dryRun] = f.api.reads.Load(), lines.Load()
				if dryRun && len(f.writer.created) != 0 {
					t.Errorf("dry runs created %d Secrets", len(f.writer.created))
				}
				if dryRun && f.writer.dryRunCreates > 1 {
					t.Errorf("%d dry-run Pods sent %d dry-run creates, want at most 1: the first one's answer is remembered",
						pods, f.writer.dryRunCreates)
				}
			}
			if reads[true] > reads[false] || reads[true] != tc.wantDryReads {
				t.Errorf("%d dry-run Pods made %d live reads, %d real ones %d; want %d, no more than the real ones",
					pods, reads[true], pods, reads[false], tc.wantDryReads)
			}
			if notFoundLines[true] > notFoundLines[false] {
				t.Errorf("%d dry-run Pods logged the missing source %d times, %d real ones %d", pods, notFoundLines[true], pods, notFoundLines[false])
			}
		})
	}
}

// addCreatedToCache puts the copies the API server holds now into the injector's cache, as its informer
// would.
func addCreatedToCache(t *testing.T, f *fixture) {
	t.Helper()
	cache := f.injector.Cache.(client.Client)
	for _, s := range f.writer.created {
		stored := &corev1.Secret{}
		if err := f.writer.Get(context.Background(), client.ObjectKeyFromObject(s), stored); err != nil || !managed.IsManaged(stored) {
			continue
		}
		stored.ResourceVersion = ""
		if err := cache.Create(context.Background(), stored); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
}
