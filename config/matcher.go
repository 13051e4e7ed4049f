package config

import (
	"errors"
	"fmt"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Matcher is a validated, compiled Config. It is immutable and safe for
// concurrent use, so a reload can swap in a new one atomically.
type Matcher struct {
	namespaceSelector labels.Selector
	entries           []Entry
	// bySecret maps a Secret name to the first entry naming it. Validate guarantees that every entry naming
	// it has the same source and the same namespace selector, so the first one speaks for all.
	bySecret map[string]*Entry
	// sources holds every configured source, unique, in config order.
	sources []SecretRef
	// memo remembers MatchImage's recent answers: a cluster pulls the same few images over and over, and
	// parsing a reference is most of what matching one costs.
	memo *imageMemo
}

// Entry is one compiled registries[] item.
type Entry struct {
	// Index is the item's position in Config.Registries, for messages that
	// must point the operator at the right entry.
	Index int
	// Registry is a copy of the configured item.
	Registry Registry
	// Pattern is Registry.Registry parsed.
	Pattern Pattern
	// NamespaceSelector is the entry's own restriction, labels.Everything()
	// when the entry has none.
	NamespaceSelector labels.Selector
}

// NewMatcher validates c and compiles it. The error lists every problem.
// A nil c.NamespaceSelector means the default opt-in selector, as after
// Default; c itself is not modified.
func NewMatcher(c *Config) (*Matcher, error) {
	if c == nil {
		return nil, errors.New("compile config: config is nil")
	}
	if errs := c.Validate(); len(errs) > 0 {
		return nil, fmt.Errorf("validate config: %w", errs.ToAggregate())
	}

	globalSelector := c.NamespaceSelector
	if globalSelector == nil {
		globalSelector = defaultNamespaceSelector()
	}
	// Validate has checked every selector and pattern, so the errors below
	// can only come from a bug; they are still returned rather than ignored.
	nsSelector, err := metav1.LabelSelectorAsSelector(globalSelector)
	if err != nil {
		return nil, fmt.Errorf("convert namespaceSelector: %w", err)
	}
	m := &Matcher{
		namespaceSelector: nsSelector,
		entries:           make([]Entry, 0, len(c.Registries)),
		bySecret:          make(map[string]*Entry, len(c.Registries)),
		memo:              &imageMemo{answers: map[string]matchAnswer{}},
	}
	for i, r := range c.Registries {
		pattern, err := ParsePattern(r.Registry)
		if err != nil {
			return nil, fmt.Errorf("parse registries[%d].registry: %w", i, err)
		}
		// LabelSelectorAsSelector turns nil into Nothing; an entry without
		// a selector must instead apply everywhere the global one does.
		selector := labels.Everything()
		if r.NamespaceSelector != nil {
			selector, err = metav1.LabelSelectorAsSelector(r.NamespaceSelector)
			if err != nil {
				return nil, fmt.Errorf("convert registries[%d].namespaceSelector: %w", i, err)
			}
		}
		// Deep copy so later edits to c cannot change a running matcher.
		registry := r
		registry.NamespaceSelector = r.NamespaceSelector.DeepCopy()
		m.entries = append(m.entries, Entry{
			Index:             i,
			Registry:          registry,
			Pattern:           pattern,
			NamespaceSelector: selector,
		})
	}
	for i := range m.entries {
		e := &m.entries[i]
		if _, seen := m.bySecret[e.Registry.Secret.Name]; !seen {
			m.bySecret[e.Registry.Secret.Name] = e
			m.sources = append(m.sources, e.Registry.Secret)
		}
	}
	return m, nil
}

// EntryForSecret returns the first entry whose copies are named name, or nil when no entry is. Every entry
// naming the same Secret has the same source and namespace selector (Validate refuses anything else), so
// the answer stands for all of them.
func (m *Matcher) EntryForSecret(name string) *Entry {
	return m.bySecret[name]
}

// Sources returns every configured source Secret once, in config order.
func (m *Matcher) Sources() []SecretRef {
	return append([]SecretRef(nil), m.sources...)
}

// IsSource reports whether namespace/name is a configured source Secret, which is only ever read.
func (m *Matcher) IsSource(namespace, name string) bool {
	e := m.bySecret[name]
	return e != nil && e.Registry.Secret.Namespace == namespace
}

// Selects reports whether the copy of e's Secret belongs in a namespace with these labels: the global
// selector and the entry's own both match. A terminating namespace is the caller's to exclude.
func (m *Matcher) Selects(e *Entry, nsLabels labels.Set) bool {
	return m.namespaceSelector.Matches(nsLabels) && e.NamespaceSelector.Matches(nsLabels)
}

// NamespaceSelector returns the global opt-in selector: pods in namespaces
// it does not select are never mutated.
func (m *Matcher) NamespaceSelector() labels.Selector {
	return m.namespaceSelector
}

// Entries returns the compiled entries in config order. The slice is a
// copy; the entries share the matcher's immutable patterns and selectors.
func (m *Matcher) Entries() []Entry {
	out := make([]Entry, len(m.entries))
	copy(out, m.entries)
	return out
}

// MatchImage normalises image and returns the entries whose pattern matches
// it, in config order; nil when none does. The entries, and the slice, belong
// to the matcher and must not be modified. An image that does not parse
// returns an error, which the caller reports and skips: the kubelet will
// fail to pull it whatever secrets the pod has.
func (m *Matcher) MatchImage(image string) ([]*Entry, error) {
	if a, ok := m.memo.get(image); ok {
		return a.entries, a.err
	}
	entries, err := m.matchImage(image)
	m.memo.put(image, matchAnswer{entries: entries, err: err})
	return entries, err
}

func (m *Matcher) matchImage(image string) ([]*Entry, error) {
	repository, err := NormalizeImage(image)
	if err != nil {
		return nil, err
	}
	t := parseTarget(repository)
	var matched []*Entry
	for i := range m.entries {
		if m.entries[i].Pattern.matches(t) {
			matched = append(matched, &m.entries[i])
		}
	}
	return matched, nil
}

const (
	// maxMemoImages bounds the images the memo holds. Pod image strings are tenant input: a tenant that
	// creates Pods with ever new images only makes the memo start over, never grow.
	maxMemoImages = 2048
	// maxMemoImageLen keeps long image strings out of the memo, so that it holds at most about 1 MiB of
	// keys. No valid reference is that long (a name of 255 characters, a tag of 128 and a sha256 digest
	// make 456), so only strings that fail to parse anyway are left out.
	maxMemoImageLen = 512
)

type matchAnswer struct {
	entries []*Entry
	err     error
}

// imageMemo is a bounded map of MatchImage's answers, safe for concurrent use. It is emptied when full,
// which costs one parse per image for the next requests: cheaper to run, and harder to abuse, than an LRU.
type imageMemo struct {
	mu      sync.RWMutex
	answers map[string]matchAnswer
}

func (c *imageMemo) get(image string) (matchAnswer, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	a, ok := c.answers[image]
	return a, ok
}

func (c *imageMemo) put(image string, a matchAnswer) {
	if len(image) > maxMemoImageLen {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.answers) >= maxMemoImages {
		clear(c.answers)
	}
	c.answers[image] = a
}
