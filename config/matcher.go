package config

import (
	"errors"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Matcher is a validated, compiled Config. It is immutable and safe for
// concurrent use, so a reload can swap in a new one atomically.
type Matcher struct {
	namespaceSelector labels.Selector
	entries           []Entry
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
	return m, nil
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
// it, in config order; nil when none does. The entries belong to the
// matcher and must not be modified. An image that does not parse
// returns an error, which the caller reports and skips: the kubelet will
// fail to pull it whatever secrets the pod has.
func (m *Matcher) MatchImage(image string) ([]*Entry, error) {
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
