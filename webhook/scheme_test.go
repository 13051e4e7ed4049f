package webhook

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// Scheme returns the types the injector reads and writes, for the tests that run it on fake clients. The
// process's own scheme, and the cache it reads from, are the wiring's (internal/app).
func Scheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := corev1.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("add core/v1 to scheme: %w", err)
	}
	return s, nil
}
