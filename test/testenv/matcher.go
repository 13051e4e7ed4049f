package testenv

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

// DocsExample is the configuration file of the example in docs/configuration.md: two entries, one behind a
// namespace selector. The benchmarks append the registry their Pods pull from.
const DocsExample = `namespaceSelector:
  matchLabels: {pullsecret-injector.io/inject: enabled}
registries:
  - registry: registry.example.com:5000/team-a
    secret: {namespace: pullsecret-injector, name: team-a-regcred}
  - registry: "*.dkr.ecr.eu-west-1.amazonaws.com"
    secret: {namespace: pullsecret-injector, name: ecr-regcred}
    namespaceSelector: {matchLabels: {team: payments}}
`
