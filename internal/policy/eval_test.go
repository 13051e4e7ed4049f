package policy

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"

	celgo "github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types/ref"
	"google.golang.org/protobuf/types/known/structpb"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/admission"
	plugincel "k8s.io/apiserver/pkg/admission/plugin/cel"
	"k8s.io/apiserver/pkg/admission/plugin/policy/mutating/patch"
	"k8s.io/apiserver/pkg/admission/plugin/policy/validating"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/cel/environment"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
)

// This file evaluates a policy the way kube-apiserver 1.37 does (k8s.io/apiserver
// pkg/admission/plugin/policy/mutating: compilePolicy and dispatchOne), with its CEL environment, its
// cost limits and its JSON patch code, so the unit tests and fuzz targets see what the API server sees.
// Creating the objects, in the API server's own validation, compiles every expression in the stricter
// environment for new expressions; compile does that too.

// jsonValueType is what the API server converts a JSON patch value to before it marshals it.
var jsonValueType = reflect.TypeOf(&structpb.Value{})

var (
	podGVR = schema.GroupVersionResource{Version: "v1", Resource: "pods"}
	podGVK = schema.GroupVersionKind{Version: "v1", Kind: "Pod"}
)

// evaluator is a compiled policy.
type evaluator struct {
	compiler *plugincel.CompositedCompiler
	patchers []patch.Patcher
	// probes are extra expressions of any type over the policy's variables, for tests that look inside.
	probes map[string]plugincel.MutatingEvaluator
}

// anyExpression is an expression of any type, for probes.
type anyExpression string

func (e anyExpression) GetExpression() string      { return string(e) }
func (e anyExpression) ReturnTypes() []*celgo.Type { return []*celgo.Type{celgo.AnyType} }

// compile compiles p as the API server validates it on create (new expressions) and as it evaluates it
// (stored expressions), failing t on any error, and compiles probes over its variables.
func compile(t testing.TB, p *admissionregistrationv1.MutatingAdmissionPolicy, probes ...string) *evaluator {
	t.Helper()
	for _, mode := range []environment.Type{environment.NewExpressions, environment.StoredExpressions} {
		compiler, err := plugincel.NewCompositedCompiler(environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion()))
		if err != nil {
			t.Fatal(err)
		}
		opts := plugincel.OptionalVariableDeclarations{HasParams: false, HasAuthorizer: true}
		for i, v := range p.Spec.Variables {
			res := compiler.CompileAndStoreVariable(&validating.Variable{Name: v.Name, Expression: v.Expression}, opts, mode)
			if res.Error != nil {
				t.Fatalf("compile spec.variables[%d] (%s) in mode %v: %v", i, v.Name, mode, res.Error)
			}
		}
		patchOpts := opts
		patchOpts.HasPatchTypes = true
		e := &evaluator{compiler: compiler, probes: map[string]plugincel.MutatingEvaluator{}}
		for i, m := range p.Spec.Mutations {
			if m.PatchType != admissionregistrationv1.PatchTypeJSONPatch || m.JSONPatch == nil {
				t.Fatalf("spec.mutations[%d] is not a JSON patch", i)
			}
			res := compiler.CompileCELExpression(&patch.JSONPatchCondition{Expression: m.JSONPatch.Expression}, patchOpts, mode)
			if res.Error != nil {
				t.Fatalf("compile spec.mutations[%d] in mode %v: %v", i, mode, res.Error)
			}
			e.patchers = append(e.patchers, patch.NewJSONPatcher(compiler.CompileMutatingEvaluator(
				&patch.JSONPatchCondition{Expression: m.JSONPatch.Expression}, patchOpts, mode)))
		}
		for _, probe := range probes {
			ev := compiler.CompileMutatingEvaluator(anyExpression(probe), patchOpts, mode)
			if errs := ev.CompilationErrors(); len(errs) > 0 {
				t.Fatalf("compile probe %q: %v", probe, errs)
			}
			e.probes[probe] = ev
		}
		if mode == environment.StoredExpressions {
			return e
		}
	}
	panic("unreachable")
}

type allowAll struct{}

func (allowAll) Authorize(context.Context, authorizer.Attributes) (authorizer.Decision, string, error) {
	return authorizer.DecisionAllow, "", nil
}

// request returns what a mutation of pod in ns sees, as the dispatcher builds it.
func request(pod *corev1.Pod, ns *corev1.Namespace) (patch.Request, error) {
	pod = pod.DeepCopy()
	pod.APIVersion, pod.Kind = "v1", "Pod"
	attrs := admission.NewAttributesRecord(pod, nil, podGVK, ns.Name, pod.Name, podGVR, "", admission.Create,
		&metav1.CreateOptions{}, false, nil)
	return patch.Request{
		MatchedResource: podGVR,
		VersionedAttributes: &admission.VersionedAttributes{
			Attributes:         attrs,
			VersionedKind:      podGVK,
			VersionedObject:    admission.NewLazyObject(pod),
			VersionedOldObject: admission.NewLazyObject(nil),
		},
		ObjectInterfaces:  admission.NewObjectInterfacesFromScheme(clientgoscheme.Scheme),
		OptionalVariables: plugincel.OptionalVariableBindings{Authorizer: allowAll{}},
		Namespace:         ns,
	}, nil
}

// mutate runs the policy's mutations on pod created in ns, in order, each with the API server's runtime
// cost budget, and returns the Pod they leave.
func (e *evaluator) mutate(pod *corev1.Pod, ns *corev1.Namespace) (*corev1.Pod, error) {
	var obj runtime.Object = pod
	for _, p := range e.patchers {
		r, err := request(obj.(*corev1.Pod), ns)
		if err != nil {
			return nil, err
		}
		ctx := e.compiler.CreateContext(context.Background())
		patched, err := p.Patch(ctx, r, celconfig.RuntimeCELCostBudget)
		if err != nil {
			return nil, err
		}
		out := &corev1.Pod{}
		if err := clientgoscheme.Scheme.Convert(patched, out, nil); err != nil {
			return nil, fmt.Errorf("convert patched pod: %w", err)
		}
		obj = out
	}
	return obj.(*corev1.Pod), nil
}

// probe evaluates the probe expression for pod in ns and returns its value converted to T by way of JSON,
// and its cost, variables included.
func probe[T any](e *evaluator, expression string, pod *corev1.Pod, ns *corev1.Namespace) (T, int64, error) {
	var zero T
	val, cost, err := e.evaluate(expression, pod, ns)
	if err != nil {
		return zero, 0, err
	}
	native, err := val.ConvertToNative(jsonValueType)
	if err != nil {
		return zero, 0, err
	}
	raw, err := json.Marshal(native)
	if err != nil {
		return zero, 0, err
	}
	var out T
	if err := json.Unmarshal(raw, &out); err != nil {
		return zero, 0, err
	}
	return out, cost, nil
}

// evaluate evaluates the probe expression for pod in ns, within the API server's budget, and returns its
// value and its cost, variables included.
func (e *evaluator) evaluate(expression string, pod *corev1.Pod, ns *corev1.Namespace) (ref.Val, int64, error) {
	ev, ok := e.probes[expression]
	if !ok {
		return nil, 0, fmt.Errorf("probe %q was not compiled", expression)
	}
	r, err := request(pod, ns)
	if err != nil {
		return nil, 0, err
	}
	ctx := e.compiler.CreateContext(context.Background())
	req := plugincel.CreateAdmissionRequest(r.VersionedAttributes.Attributes, metav1.GroupVersionResource(podGVR), metav1.GroupVersionKind(podGVK))
	res, remaining, err := ev.ForInput(ctx, r.VersionedAttributes, req, r.OptionalVariables, ns, celconfig.RuntimeCELCostBudget)
	if err != nil {
		return nil, 0, err
	}
	if res.Error != nil {
		return nil, 0, res.Error
	}
	return res.EvalResult, celconfig.RuntimeCELCostBudget - remaining, nil
}
