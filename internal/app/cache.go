package app

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/internal/managed"
)

// CacheOptions returns the informer cache the webhook and the reconciler read from: the managed copies
// (Secrets labelled as managed, anywhere) and namespaces, as trimmed metadata (the ServiceAccounts that
// enforce mountable secrets are cached apart, by package webhook). No Secret data is cached here, so
// memory grows with the number of copies, never with their size or with the cluster's other Secrets; the
// source Secrets are cached apart, one informer each (package sources).
// cfg is the configuration in force and digests the sources' current digests: the copies' cache shares the
// configured sources' annotations among their copies, and keeps a copy's digest annotation only when it is
// its source's current one (see managed.TrimCopyMetadataFunc). The informers have no index by namespace
// (managed.NewInformer): a List with client.InNamespace on this cache fails.
func CacheOptions(cfg *config.Store, digests managed.SourceDigest) cache.Options {
	return cache.Options{
		NewInformer: managed.NewInformer,
		ByObject: map[client.Object]cache.ByObject{
			managed.PartialSecret(): {
				Label:     labels.SelectorFromSet(labels.Set{managed.ManagedByLabel: managed.ManagedByValue}),
				Transform: managed.TrimCopyMetadataFunc(cfg.Matcher, digests),
			},
			managed.PartialNamespace(): {Transform: managed.TrimNamespaceMetadata},
		},
	}
}

// Scheme returns the types the process reads and writes: core/v1 alone (Pods, Secrets, namespaces,
// ServiceAccounts); everything else it reads as metadata or through a typed clientset.
func Scheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := corev1.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("add core/v1 to scheme: %w", err)
	}
	return s, nil
}
