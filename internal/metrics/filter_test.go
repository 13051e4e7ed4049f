package metrics

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func TestReviewFilter(t *testing.T) {
	cs := fake.NewClientset()
	reviews := map[string]int{}
	cs.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		r := a.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenReview)
		reviews["token"]++
		switch r.Spec.Token {
		case "reader", "stranger":
			r.Status = authenticationv1.TokenReviewStatus{Authenticated: true, User: authenticationv1.UserInfo{Username: r.Spec.Token}}
		}
		return true, r, nil
	})
	cs.PrependReactor("create", "subjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		r := a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SubjectAccessReview)
		reviews["access"]++
		na := r.Spec.NonResourceAttributes
		r.Status.Allowed = r.Spec.User == "reader" && na != nil && na.Verb == "get" && na.Path == "/metrics"
		return true, r, nil
	})
	handler, err := NewReviewFilter(cs)(logr.Discard(), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("metrics"))
	}))
	if err != nil {
		t.Fatal(err)
	}
	scrape := func(authorization string) int {
		req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		if authorization != "" {
			req.Header.Set("Authorization", authorization)
		}
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		return rec.Code
	}
	for name, tc := range map[string]struct {
		authorization string
		want          int
	}{
		"an allowed user reads the metrics": {"Bearer reader", http.StatusOK},
		"another user is forbidden":         {"Bearer stranger", http.StatusForbidden},
		"a token the API server rejects":    {"Bearer forged", http.StatusUnauthorized},
		"no token":                          {"", http.StatusUnauthorized},
		"a credential that is not a bearer": {"Basic dTpw", http.StatusUnauthorized},
		"an empty bearer token":             {"Bearer  ", http.StatusUnauthorized},
	} {
		t.Run(name, func(t *testing.T) {
			if got := scrape(tc.authorization); got != tc.want {
				t.Errorf("status %d, want %d", got, tc.want)
			}
		})
	}
	// Answers are reused: scraping again asks the API server nothing.
	before := map[string]int{"token": reviews["token"], "access": reviews["access"]}
	for range 5 {
		scrape("Bearer reader")
		scrape("Bearer forged")
	}
	if reviews["token"] != before["token"] || reviews["access"] != before["access"] {
		t.Errorf("repeated scrapes made %d token and %d access reviews, want none", reviews["token"]-before["token"], reviews["access"]-before["access"])
	}
}
