package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/google/go-cmp/cmp"

	"github.com/pullsecret-injector/pullsecret-injector/test/fixtures"
)

const reloadedYAML = `
registries:
  - registry: quay.io
    secret: {namespace: ops, name: quay-regcred}
`

// swapConfigMapVolume updates dir/config.yaml the way the kubelet updates a ConfigMap volume: config.yaml
// is a symlink to ..data/config.yaml, and ..data is swapped to a new directory in one rename.
func swapConfigMapVolume(t *testing.T, dir, content string) {
	t.Helper()
	if err := fixtures.WriteConfigMapVolume(dir, "config.yaml", []byte(content)); err != nil {
		t.Fatal(err)
	}
}

func newTestStore(t *testing.T, log logr.Logger) (*Store, string) {
	t.Helper()
	dir := t.TempDir()
	swapConfigMapVolume(t, dir, validYAML)
	s, err := NewStore(filepath.Join(dir, "config.yaml"), time.Hour, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s, dir
}

func TestStoreReloadsASwappedConfigMapVolume(t *testing.T) {
	s, dir := newTestStore(t, logr.Discard())
	var notified []*Matcher
	s.Subscribe(func(m *Matcher) { notified = append(notified, m) })
	before := s.Matcher()

	if s.Reload() {
		t.Error("Reload of an unchanged file reported a change")
	}
	swapConfigMapVolume(t, dir, reloadedYAML)
	if !s.Reload() {
		t.Fatal("Reload did not take the swapped file")
	}
	after := s.Matcher()
	if after == before || len(after.Entries()) != 1 || after.EntryForSecret("quay-regcred") == nil {
		t.Errorf("configuration in force has entries %d, want the reloaded one", len(after.Entries()))
	}
	if len(notified) != 1 || notified[0] != after {
		t.Errorf("subscribers were told %d times, want once with the new configuration", len(notified))
	}
}

func TestStoreRefusesAnInvalidFileAndKeepsServing(t *testing.T) {
	var logged bytes.Buffer
	log := funcr.New(func(prefix, args string) { logged.WriteString(args + "\n") }, funcr.Options{})
	s, dir := newTestStore(t, log)
	before := s.Matcher()
	swapConfigMapVolume(t, dir, `
registries:
  - registry: "bad registry!"
    secret: {namespace: ops, name: quay-regcred}
  - registry: quay.io
    secret: {namespace: ops, name: Not_A_Name}
    unknownField: true
`)
	if s.Reload() {
		t.Fatal("an invalid file was put in force")
	}
	if s.Matcher() != before {
		t.Error("the configuration in force changed")
	}
	for _, want := range []string{"Configuration file refused", "registries[0].registry", "registries[1].secret.name", "unknownField"} {
		if !strings.Contains(logged.String(), want) {
			t.Errorf("log does not mention %q:\n%s", want, logged.String())
		}
	}
	// Reported once, not at every read of the same bad file.
	n := strings.Count(logged.String(), "Configuration file refused")
	s.Reload()
	if got := strings.Count(logged.String(), "Configuration file refused"); got != n {
		t.Errorf("the same bad file was reported %d times", got)
	}
	// Fixed: the next good file takes effect.
	swapConfigMapVolume(t, dir, reloadedYAML)
	if !s.Reload() {
		t.Error("a good file after a bad one was not taken")
	}
}

func TestNewStoreRefusesAnInvalidFile(t *testing.T) {
	dir := t.TempDir()
	swapConfigMapVolume(t, dir, "registries: []\n")
	if _, err := NewStore(filepath.Join(dir, "config.yaml"), time.Second, logr.Discard(), nil); err == nil ||
		!strings.Contains(err.Error(), "registries") {
		t.Errorf("NewStore = %v, want an error naming registries", err)
	}
}

func TestStoreReportsEachLoad(t *testing.T) {
	dir := t.TempDir()
	swapConfigMapVolume(t, dir, validYAML)
	var got []bool
	s, err := NewStore(filepath.Join(dir, "config.yaml"), time.Hour, logr.Discard(), func(ok bool, at time.Time) {
		if at.IsZero() {
			t.Error("a load was reported without its time")
		}
		got = append(got, ok)
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Reload() // unchanged: not a load
	swapConfigMapVolume(t, dir, "registries: []\n")
	s.Reload() // refused
	s.Reload() // the same refused file: not read as a change
	swapConfigMapVolume(t, dir, reloadedYAML)
	s.Reload() // in force
	if err := os.Remove(filepath.Join(dir, "config.yaml")); err != nil {
		t.Fatal(err)
	}
	s.Reload() // unreadable
	s.Reload() // still unreadable: every failed read counts
	if diff := cmp.Diff([]bool{true, false, true, false, false}, got); diff != "" {
		t.Errorf("loads reported, true for in force (-want +got):\n%s", diff)
	}
}

// TestStoreCheck: a configuration the check refuses is refused like an invalid file, at start and on
// reload, with the check's reason, and the configuration in force stays.
func TestStoreCheck(t *testing.T) {
	check := func(m *Matcher) error {
		if m.EntryForSecret("quay-regcred") != nil {
			return errors.New("quay-regcred cannot be served")
		}
		return nil
	}
	dir := t.TempDir()
	swapConfigMapVolume(t, dir, reloadedYAML)
	if _, err := NewStore(filepath.Join(dir, "config.yaml"), time.Hour, logr.Discard(), nil, WithCheck(check)); err == nil ||
		!strings.Contains(err.Error(), "quay-regcred cannot be served") {
		t.Errorf("NewStore = %v, want the check's error", err)
	}

	var logged bytes.Buffer
	log := funcr.New(func(prefix, args string) { logged.WriteString(args + "\n") }, funcr.Options{})
	swapConfigMapVolume(t, dir, validYAML)
	s, err := NewStore(filepath.Join(dir, "config.yaml"), time.Hour, log, nil, WithCheck(check))
	if err != nil {
		t.Fatal(err)
	}
	before := s.Matcher()
	swapConfigMapVolume(t, dir, reloadedYAML)
	if s.Reload() || s.Matcher() != before {
		t.Fatal("a configuration the check refuses was put in force")
	}
	for _, want := range []string{"Configuration file refused", "quay-regcred cannot be served"} {
		if !strings.Contains(logged.String(), want) {
			t.Errorf("log does not mention %q:\n%s", want, logged.String())
		}
	}
}
