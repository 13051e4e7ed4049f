package testenv

import (
	"strings"
	"testing"
)

// SecretMarker starts every credential a fuzz target plants with PlantSecret: no output may contain it.
const SecretMarker = "s3cr3t-"

// PlantSecret returns the credential a fuzz target plants, SecretMarker followed by secret, and skips the
// input when one of the inputs that are no credential already holds the marker: the fuzzer would have
// moved a credential where the target shows text by design.
func PlantSecret(t testing.TB, secret string, notSecrets ...string) string {
	t.Helper()
	for _, s := range notSecrets {
		if strings.Contains(s, SecretMarker) {
			t.Skip("the marker must appear only where the target plants it")
		}
	}
	return SecretMarker + secret
}
