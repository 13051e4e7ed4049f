// Package configtest holds the helpers tests share that need the config package: it starts nothing, so a
// unit test of any package above config can import it.
package configtest

import (
	"testing"

	"github.com/pullsecret-injector/pullsecret-injector/config"
)

// Matcher parses configYAML and compiles its matcher, failing t on any error, for a unit test that needs
// the matcher of a fixed configuration.
func Matcher(t testing.TB, configYAML string) *config.Matcher {
	t.Helper()
	c, err := config.Parse([]byte(configYAML))
	if err != nil {
		t.Fatalf("parse configuration: %v", err)
	}
	m, err := config.NewMatcher(c)
	if err != nil {
		t.Fatalf("compile configuration: %v", err)
	}
	return m
}
