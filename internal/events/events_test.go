package events

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
)

func TestNotesAreCutToTheAPILimit(t *testing.T) {
	// Two-byte runes, so that a cut at NoteLimit-3 bytes would split one.
	long := "Source problem: " + strings.Repeat("é", NoteLimit)
	tests := []struct {
		name string
		note string
		args []any
		want string
	}{
		{name: "a short note is kept", note: "Updated from %s: %s", args: []any{"psi/regcred", "rotation"},
			want: "Updated from psi/regcred: rotation"},
		{name: "a note of exactly the limit is kept", note: strings.Repeat("a", NoteLimit), want: strings.Repeat("a", NoteLimit)},
		{name: "a longer note is cut, never inside a rune, and ends with an ellipsis", note: "%s (%s)", args: []any{long, "no_matching_key"},
			want: long[:NoteLimit-4] + "..."},
		{name: "a '%' in an argument is not a verb", note: "%s", args: []any{"100%s"}, want: "100%s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := events.NewFakeRecorder(1)
			r := New(fake, 100, 100)
			r.Warning(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "psi", Name: "regcred"}}, ReasonSourceInvalid, ActionCheck, tt.note, tt.args...)
			got := strings.TrimPrefix(<-fake.Events, "Warning "+ReasonSourceInvalid+" ")
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("note (-want +got):\n%s", diff)
			}
			if len(got) > NoteLimit || !utf8.ValidString(got) {
				t.Errorf("note of %d bytes, valid UTF-8 %v; want at most %d bytes of UTF-8", len(got), utf8.ValidString(got), NoteLimit)
			}
		})
	}
}

func TestRateLimit(t *testing.T) {
	fake := events.NewFakeRecorder(10)
	// A rate so low that no token comes back during the test: the burst is all there is.
	r := New(fake, 0.001, 2)
	for range 5 {
		r.Normal(&corev1.Secret{}, ReasonCopyCreated, ActionCreate, "created")
	}
	if got := len(fake.Events); got != 2 {
		t.Errorf("%d Events emitted, want the burst of 2", got)
	}
}

func TestNilRecorderEmitsNothing(t *testing.T) {
	var r *Recorder
	r.Warning(&corev1.Secret{}, ReasonCopyFailed, ActionUpdate, "nothing")
}
