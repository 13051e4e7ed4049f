package reconciler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// streamPods lists one page of the unfinished Pods in namespace ("" for every namespace) from the API
// server through rc, a core/v1 REST client, and calls fn for each Pod as it is decoded from the response:
// only one Pod's JSON is held at a time, and of it only its name, namespace, phase and pull secret
// references are kept. A tenant's Pods can each be as large as the API server stores (1.5 MiB); a page of
// podListPage of them decoded whole would be 750 MiB, three times the chart's memory limit. It returns the
// next page's continue token ("" after the last page).
func streamPods(ctx context.Context, rc rest.Interface, namespace, cont string, fn func(*corev1.Pod) error) (string, error) {
	body, err := rc.Get().
		Namespace(namespace).
		Resource("pods").
		VersionedParams(&metav1.ListOptions{FieldSelector: unfinishedPods.String(), Limit: podListPage, Continue: cont},
			scheme.ParameterCodec).
		SetHeader("Accept", "application/json").
		Stream(ctx)
	if err != nil {
		return "", err
	}
	defer func() { _ = body.Close() }()
	return decodePodList(body, fn)
}

// slimPod is the part of a Pod that decodePodList keeps; encoding/json skips every other field without
// allocating for it.
type slimPod struct {
	Metadata struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	Spec struct {
		ImagePullSecrets []corev1.LocalObjectReference `json:"imagePullSecrets"`
	} `json:"spec"`
	Status struct {
		Phase corev1.PodPhase `json:"phase"`
	} `json:"status"`
}

// decodePodList reads a PodList's JSON from r, one item at a time, calls fn with each Pod (see slimPod),
// and returns the list's continue token.
func decodePodList(r io.Reader, fn func(*corev1.Pod) error) (string, error) {
	dec := json.NewDecoder(r)
	if err := expectDelim(dec, '{'); err != nil {
		return "", err
	}
	var cont string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return "", fmt.Errorf("decode pod list: %w", err)
		}
		switch tok {
		case "metadata":
			var lm metav1.ListMeta
			if err := dec.Decode(&lm); err != nil {
				return "", fmt.Errorf("decode pod list metadata: %w", err)
			}
			cont = lm.Continue
		case "items":
			if err := decodeItems(dec, fn); err != nil {
				return "", err
			}
		default:
			var skip json.RawMessage // kind, apiVersion: a few bytes
			if err := dec.Decode(&skip); err != nil {
				return "", fmt.Errorf("decode pod list: %w", err)
			}
		}
	}
	return cont, expectDelim(dec, '}')
}

// decodeItems decodes a JSON array of Pods from dec, one at a time, calling fn with each.
func decodeItems(dec *json.Decoder, fn func(*corev1.Pod) error) error {
	if tok, err := dec.Token(); err != nil {
		return fmt.Errorf("decode pod list items: %w", err)
	} else if tok == nil {
		return nil // "items": null
	} else if tok != json.Delim('[') {
		return fmt.Errorf("decode pod list items: got %v, want an array", tok)
	}
	for dec.More() {
		var s slimPod
		if err := dec.Decode(&s); err != nil {
			return fmt.Errorf("decode pod: %w", err)
		}
		p := &corev1.Pod{}
		p.Name, p.Namespace = s.Metadata.Name, s.Metadata.Namespace
		p.Spec.ImagePullSecrets = s.Spec.ImagePullSecrets
		p.Status.Phase = s.Status.Phase
		if err := fn(p); err != nil {
			return err
		}
	}
	return expectDelim(dec, ']')
}

// expectDelim reads the next token of dec and fails unless it is want.
func expectDelim(dec *json.Decoder, want json.Delim) error {
	tok, err := dec.Token()
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("decode pod list: unexpected end, want %v", want)
	}
	if err != nil {
		return fmt.Errorf("decode pod list: %w", err)
	}
	if tok != want {
		return fmt.Errorf("decode pod list: got %v, want %v", tok, want)
	}
	return nil
}

// listPodsPage reads one page of the unfinished Pods selected by opts through reader, whole: the path of
// a Reconciler without a REST client for Pods (its unit tests, with a fake client).
func listPodsPage(ctx context.Context, reader client.Reader, cont string, fn func(*corev1.Pod) error, opts ...client.ListOption) (string, error) {
	pods := &corev1.PodList{}
	opts = append(opts[:len(opts):len(opts)], client.MatchingFieldsSelector{Selector: unfinishedPods},
		client.Limit(podListPage), client.Continue(cont))
	if err := reader.List(ctx, pods, opts...); err != nil {
		return "", err
	}
	for i := range pods.Items {
		if err := fn(&pods.Items[i]); err != nil {
			return "", err
		}
	}
	return pods.Continue, nil
}
