package checkcmd

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/pullsecret-injector/pullsecret-injector/test/fixtures"
)

// FuzzReport checks that the report of a run against a cluster never shows a credential of the source
// Secret, wherever its author put one: in the auth value, in an auths key's user information (written
// raw, or escaped as url.UserPassword does) or in its query, around a fuzzed host and path. Every line is
// printable UTF-8 of bounded length.
func FuzzReport(f *testing.F) {
	f.Add("https://", "robot", "pw", "quay.io", "", "quay.io/x")
	f.Add("", "robot", "pw", "quay.io", "/team", "quay.io/team/app")
	f.Add("", "robot", "p@ss/w?rd \"x", "ghcr.io", "/v2/team", "quay.io/x")
	f.Add("http://", "a@b", "%40", "a.example.com", "/A", "quay.io/x")
	f.Add("", "", "\x00\xff\u202e", "quay.io", "/a b", "quay.io/a")
	f.Fuzz(func(t *testing.T, scheme, user, password, host, path, image string) {
		password = fixtures.PlantSecret(t, password, scheme, user, host, path, image)
		keys := []string{
			scheme + user + ":" + password + "@" + host + path,
			scheme + url.UserPassword(user, password).String() + "@" + host + path,
			scheme + host + path + "?token=" + password,
			"robot:" + password + "@" + host + "?x=" + password,
		}
		auths := map[string]map[string]string{}
		for _, k := range keys {
			auths[k] = map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte("robot:" + password))}
		}
		doc, err := json.Marshal(map[string]any{"auths": auths})
		if err != nil {
			t.Skip("not JSON") // invalid UTF-8 is replaced, not refused, so this does not happen
		}
		client := fake.NewClientset(&corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: "pullsecret-injector", Name: "quay-regcred"},
			Type:       corev1.SecretTypeDockerConfigJson,
			Data:       map[string][]byte{corev1.DockerConfigJsonKey: doc},
		})
		var out, errOut bytes.Buffer
		Run(context.Background(), Options{Matcher: matcher(t), Client: client}, []string{image, "quay.io/x"}, &out, &errOut)
		report := out.String() + errOut.String()
		if strings.Contains(report, fixtures.SecretMarker) {
			t.Fatalf("the report shows a credential:\n%s", report)
		}
		for _, line := range strings.Split(report, "\n") {
			if strings.HasPrefix(line, "    source exists") || strings.HasPrefix(line, "    kubelet offers") {
				if !utf8.ValidString(line) || strings.ContainsFunc(line, func(r rune) bool { return !strconv.IsPrint(r) }) {
					t.Fatalf("line is not printable UTF-8: %q", line)
				}
				if len(line) > 8000 {
					t.Fatalf("line of %d bytes, want it bounded", len(line))
				}
			}
		}
	})
}
