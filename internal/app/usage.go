package app

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// intro is the first thing --help says: what the program is and how it is called.
const intro = `pullsecret-injector is a Kubernetes mutating admission webhook that copies registry pull secrets into the
namespaces of Pods that need them, adds them to the Pods' imagePullSecrets, and keeps the copies in step.

Usage:
  pullsecret-injector [flags]                 serve admissions and, on the elected leader, reconcile copies
  pullsecret-injector check [flags] IMAGE...  say which Secret a Pod gets for each image, and why
                                              (pullsecret-injector check --help)

Flags:
`

// Usage writes the help of the flags BindFlags registered on fs to w: the introduction, then each group of
// flags under its title. A flag of fs in no group is listed last, under "Other", so that none is hidden.
func (o *Options) Usage(fs *flag.FlagSet, w io.Writer) {
	var b strings.Builder
	b.WriteString(intro)
	grouped := map[string]bool{}
	for _, g := range o.groups {
		fmt.Fprintf(&b, "\n%s:\n", g.title)
		printFlags(fs, g.names, &b)
		for _, name := range g.names {
			grouped[name] = true
		}
	}
	var other []string
	fs.VisitAll(func(f *flag.Flag) {
		if !grouped[f.Name] {
			other = append(other, f.Name)
		}
	})
	if len(other) > 0 {
		b.WriteString("\nOther:\n")
		printFlags(fs, other, &b)
	}
	// Help goes to a terminal or to stderr: there is no one to tell that it could not be written.
	_, _ = io.WriteString(w, b.String())
}

// printFlags writes the named flags of fs to w as flag.PrintDefaults does, with their defaults, not the
// values an earlier argument may have set.
func printFlags(fs *flag.FlagSet, names []string, w io.Writer) {
	group := flag.NewFlagSet("", flag.ContinueOnError)
	group.SetOutput(w)
	for _, name := range names {
		f := fs.Lookup(name)
		if f == nil {
			continue
		}
		group.Var(f.Value, f.Name, f.Usage)
		group.Lookup(name).DefValue = f.DefValue
	}
	group.PrintDefaults()
}
