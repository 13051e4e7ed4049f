// Package checkcmd is the `pullsecret-injector check` subcommand: for each image given, it says which
// configuration entries match and why in the kubelet's terms, which Secret a Pod would get, and, with a
// cluster, whether the namespace is selected and whether the source Secret holds a credential the kubelet
// can use. It prints registry hosts and Secret names, never Secret data: what it shows of a source
// Secret's auths keys comes from dockerconfig, through redact.Text.
package checkcmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/internal/dockerconfig"
)

// Exit statuses of Main.
const (
	// ExitOK means every image gets at least one Secret (with a cluster: one whose source is usable).
	ExitOK = 0
	// ExitNothing means at least one image gets no Secret, or only Secrets whose source is missing or fails
	// the credential check.
	ExitNothing = 1
	// ExitUsage means the command line or the configuration file is wrong, or the namespace does not
	// exist: nothing was checked; or the report could not be written.
	ExitUsage = 2
	// ExitCluster means the cluster could not be read, or a source Secret could not be read; no image got
	// nothing as far as could be checked.
	ExitCluster = 3
)

// notServed says what pulls an image this project gives no Secret for, so that "gets nothing" is not read
// as "cannot be pulled": the kubelet offers every credential it has for the image, from all its sources.
const notServed = "  not served by pullsecret-injector: the kubelet pulls it with the node's credentials, a kubelet " +
	"credential provider (which can use the Pod's ServiceAccount token) or pull secrets the Pod has of its own, " +
	"never with a Secret from this project"

// timeout bounds all cluster reads of one run.
const timeout = 30 * time.Second

const usage = `Usage: pullsecret-injector check [--config FILE] [--kubeconfig PATH [--namespace NS]] [-v] IMAGE...

Says, for each image, which registries entries match it and why, which Secret a Pod gets for it, and,
with --kubeconfig, whether the Pod's namespace is selected and whether each source Secret exists and holds
a credential the kubelet can use for the entry. An image that gets no Secret is pulled with the node's
credentials, a kubelet credential provider or the Pod's own pull secrets. IMAGE is any image reference.
Secret data is never printed.

Exit status: 0 every image gets a Secret; 1 some image gets nothing (or, with --kubeconfig, only Secrets
whose source is missing or unusable); 2 usage or configuration error; 3 the cluster could not be read.

Flags:
`

// Options is what Run needs.
type Options struct {
	// Matcher is the compiled configuration.
	Matcher *config.Matcher
	// Client reads Namespaces and source Secrets; nil means no cluster: selectors are not evaluated and
	// sources are not checked.
	Client kubernetes.Interface
	// Namespace is the namespace of the Pod in question; empty means any.
	Namespace string
	// Verbose also lists the entries that do not match, with the rule that failed.
	Verbose bool
}

// Main runs the subcommand with args (those after "check") and returns the exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fprintf(stderr, "%s", usage)
		fs.PrintDefaults()
	}
	configPath := fs.String("config", config.DefaultPath, "Path of the configuration file, as the webhook reads it.")
	kubeconfig := fs.String("kubeconfig", "", "Kubeconfig of the cluster to read the namespace and the source Secrets from. Without it nothing is read from a cluster.")
	namespace := fs.String("namespace", "", "Namespace of the Pod: its labels decide which entries apply. Needs --kubeconfig to be evaluated.")
	verbose := fs.Bool("v", false, "Also list the entries that do not match, and why.")
	images, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	if err != nil {
		return ExitUsage
	}
	if len(images) == 0 {
		fprintln(stderr, "pullsecret-injector check: at least one IMAGE is required")
		fs.Usage()
		return ExitUsage
	}

	cfg, err := config.Load(*configPath)
	if err != nil {
		fprintf(stderr, "pullsecret-injector check: %v\n", err)
		return ExitUsage
	}
	m, err := config.NewMatcher(cfg)
	if err != nil {
		fprintf(stderr, "pullsecret-injector check: %v\n", err)
		return ExitUsage
	}
	o := Options{Matcher: m, Namespace: *namespace, Verbose: *verbose}
	if *kubeconfig != "" {
		restConfig, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
		if err != nil {
			fprintf(stderr, "pullsecret-injector check: load kubeconfig %q: %v\n", *kubeconfig, err)
			return ExitUsage
		}
		restConfig.Timeout = timeout
		if o.Client, err = kubernetes.NewForConfig(restConfig); err != nil {
			fprintf(stderr, "pullsecret-injector check: create client: %v\n", err)
			return ExitUsage
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return Run(ctx, o, images, stdout, stderr)
}

// parseInterspersed parses flags wherever they are among the images, as kubectl does, so that
// "check IMAGE --namespace NS" means what it says.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return positional, nil
		}
		if args[0] == "--" {
			return append(positional, args[1:]...), nil
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
}

// namespaceState is what is known of the Pod's namespace.
type namespaceState struct {
	// evaluated is true when the namespace's labels were read.
	evaluated bool
	labels    labels.Set
	// optedIn is true when the global namespaceSelector selects it.
	optedIn bool
}

// source is a source Secret as read from the cluster, once per run.
type source struct {
	secret *corev1.Secret
	// missing is true when the Secret does not exist; err is set when it could not be read.
	missing bool
	err     error
}

type runner struct {
	Options
	out     *printer
	ns      namespaceState
	sources map[config.SecretRef]source
	readErr bool
}

// Run writes the report for images to stdout and returns the exit status. Errors that stop the run go to
// stderr.
func Run(ctx context.Context, o Options, images []string, stdout, stderr io.Writer) int {
	r := &runner{Options: o, out: &printer{w: stdout}, sources: map[config.SecretRef]source{}}
	if err := r.readNamespace(ctx); err != nil {
		fprintf(stderr, "pullsecret-injector check: %v\n", err)
		if apierrors.IsNotFound(err) {
			return ExitUsage
		}
		return ExitCluster
	}
	r.printHeader()
	status := ExitOK
	for _, image := range images {
		if !r.image(ctx, image) {
			status = ExitNothing
		}
	}
	if status == ExitOK && r.readErr {
		status = ExitCluster
	}
	if r.out.err != nil {
		fprintf(stderr, "pullsecret-injector check: write report: %v\n", r.out.err)
		return ExitUsage
	}
	return status
}

// printer writes the report and keeps the first write error, so that the report's code stays linear.
type printer struct {
	w   io.Writer
	err error
}

func (p *printer) printf(format string, args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format, args...)
	}
}

func (p *printer) println(s string) {
	p.printf("%s\n", s)
}

// fprintf and fprintln write to stderr, where a failed write has nowhere left to be reported.
func fprintf(w io.Writer, format string, args ...any) {
	_, _ = fmt.Fprintf(w, format, args...)
}

func fprintln(w io.Writer, s string) {
	_, _ = fmt.Fprintln(w, s)
}

func (r *runner) readNamespace(ctx context.Context) error {
	if r.Client == nil || r.Namespace == "" {
		return nil
	}
	ns, err := r.Client.CoreV1().Namespaces().Get(ctx, r.Namespace, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("read namespace %q: %w", r.Namespace, err)
	}
	r.ns = namespaceState{evaluated: true, labels: labels.Set(ns.Labels)}
	r.ns.optedIn = r.Matcher.NamespaceSelector().Matches(r.ns.labels)
	return nil
}

func (r *runner) printHeader() {
	global := selectorString(r.Matcher.NamespaceSelector())
	switch {
	case r.ns.evaluated:
		injectLabel := "label " + config.InjectLabel + " not set"
		if v, ok := r.ns.labels[config.InjectLabel]; ok {
			injectLabel = config.InjectLabel + "=" + v
		}
		verdict := "opted in: selected by"
		if !r.ns.optedIn {
			verdict = "not opted in: Pods there are never mutated; not selected by"
		}
		r.out.printf("namespace %s (%s): %s namespaceSelector %s\n", r.Namespace, injectLabel, verdict, global)
	case r.Namespace != "":
		r.out.printf("namespace %s: labels not read (no --kubeconfig); selectors not evaluated, answers hold if namespaceSelector %s selects it\n",
			r.Namespace, global)
	default:
		r.out.printf("namespace: any (no --namespace); selectors not evaluated, answers hold for a namespace that namespaceSelector %s selects\n", global)
	}
	if r.Client == nil {
		r.out.println("sources: not checked (no --kubeconfig)")
	}
}

// image reports one image and says whether it gets at least one usable Secret.
func (r *runner) image(ctx context.Context, image string) bool {
	r.out.printf("\n%s\n", image)
	repository, matched, ok := r.match(image)
	if !ok {
		return false
	}
	got := imageSecrets{notUsable: map[string]bool{}, unchecked: map[string]bool{}}
	for _, e := range r.Matcher.Entries() {
		r.entry(ctx, &e, repository, matched[e.Index], &got)
	}
	return r.result(&got)
}

// imageSecrets is what one image gets, gathered over the configuration's entries in order.
type imageSecrets struct {
	// anyMatch is true when an entry matches the image, whether or not it applies in the namespace.
	anyMatch bool
	// referenced are the Secrets of the matching entries that apply in the namespace, each once, in
	// configuration order: the references a Pod gets.
	referenced []string
	// usable are the Secrets of referenced whose source gives a credential for the image, or was not
	// checked (no cluster) or could not be read.
	usable []string
	// notUsable holds the Secrets an entry's source check found unusable; unchecked those whose source
	// could not be read.
	notUsable, unchecked map[string]bool
}

// match returns the image's normalised repository and the indexes of the entries that match it; false,
// after the report says why, when the image is not a valid reference.
func (r *runner) match(image string) (repository string, matched map[int]bool, ok bool) {
	// The webhook's own answer (MatchImage) decides which entries match; Explain only says why in words.
	matches, err := r.Matcher.MatchImage(image)
	if err == nil {
		repository, err = config.NormalizeImage(image)
	}
	if err != nil {
		r.out.printf("  not a valid image reference: %v\n", err)
		r.out.println("  result: gets nothing (the webhook skips an invalid image; the kubelet cannot pull it)")
		return "", nil, false
	}
	r.out.printf("  repository %s\n", repository)
	matched = map[int]bool{}
	for _, e := range matches {
		matched[e.Index] = true
	}
	return repository, matched, true
}

// entry reports e for the image at repository (matches says whether it matches) and adds the Secret it
// gives, if it applies in the namespace, to got.
func (r *runner) entry(ctx context.Context, e *config.Entry, repository string, matches bool, got *imageSecrets) {
	_, why := e.Pattern.Explain(repository)
	if !matches {
		if r.Verbose {
			r.out.printf("  registries[%d] %s does not match: %s\n", e.Index, e.Registry.Registry, why)
		}
		return
	}
	got.anyMatch = true
	r.out.printf("  registries[%d] %s matches %s\n", e.Index, e.Registry.Registry, why)
	r.out.printf("    secret %s\n", e.Registry.Secret)
	selected, line := r.selection(e)
	r.out.printf("    namespace %s\n", line)
	if !selected {
		return
	}
	name := e.Registry.Secret.Name
	if !slices.Contains(got.referenced, name) {
		got.referenced = append(got.referenced, name)
	}
	// Without a cluster the source is taken as usable; one that could not be read is not held against it.
	usable := true
	if r.Client != nil {
		lines, usableHere, readErr := r.checkSource(ctx, e, repository)
		for _, l := range lines {
			r.out.printf("    %s\n", l)
		}
		got.unchecked[name] = got.unchecked[name] || readErr
		usable = usableHere || readErr
	}
	switch {
	case !usable:
		got.notUsable[name] = true
	case !slices.Contains(got.usable, name):
		got.usable = append(got.usable, name)
	}
}

// result reports what the image gets, with what the answer assumes, and says whether it gets at least one
// usable Secret.
func (r *runner) result(got *imageSecrets) bool {
	switch {
	case !got.anyMatch:
		r.out.println("  no entry matches")
		r.out.println(notServed)
		r.out.println("  result: gets nothing")
		return false
	case len(got.referenced) == 0:
		r.out.println(notServed)
		r.out.println("  result: gets nothing (no matching entry applies in this namespace)")
		return false
	case len(got.usable) == 0:
		r.out.printf("  result: gets %s, but no usable credential from it\n", strings.Join(got.referenced, ", "))
		return false
	}
	var notes []string
	if !r.ns.evaluated {
		notes = append(notes, "if the selectors select the namespace")
	}
	if r.Client == nil {
		notes = append(notes, "sources not checked")
	}
	for _, name := range got.referenced {
		if got.notUsable[name] && !slices.Contains(got.usable, name) {
			notes = append(notes, name+" is not usable")
		}
		if got.unchecked[name] {
			notes = append(notes, name+" could not be checked")
		}
	}
	line := "  result: gets " + strings.Join(got.referenced, ", ")
	if len(notes) > 0 {
		line += " (" + strings.Join(notes, "; ") + ")"
	}
	r.out.println(line)
	return true
}

// selection says whether e applies in the namespace, and the line that explains it.
func (r *runner) selection(e *config.Entry) (bool, string) {
	entrySelector := "entry namespaceSelector " + selectorString(e.NamespaceSelector)
	if e.Registry.NamespaceSelector == nil {
		entrySelector = "no entry namespaceSelector"
	}
	switch {
	case !r.ns.evaluated:
		return true, "not evaluated (" + entrySelector + ")"
	case !r.ns.optedIn:
		return false, "not opted in"
	case r.Matcher.Selects(e, r.ns.labels):
		return true, "selected (" + entrySelector + ")"
	default:
		return false, "not selected by the " + entrySelector + ": this entry adds nothing here"
	}
}

// checkSource returns the lines that say whether e's source is usable for repository: whether it exists,
// its credential check for e's pattern, and which of its auths keys the kubelet offers for this image.
// usable is true when one of those keys carries a credential; readErr when the source could not be read.
func (r *runner) checkSource(ctx context.Context, e *config.Entry, repository string) (lines []string, usable, readErr bool) {
	src := r.source(ctx, e.Registry.Secret)
	switch {
	case src.missing:
		return []string{"source missing: the Pod gets an empty placeholder copy and pulls anonymously until the source exists"}, false, false
	case src.err != nil:
		return []string{"source could not be read: " + src.err.Error()}, false, true
	}
	res := dockerconfig.Check(src.secret.Type, src.secret.Data, []config.Pattern{e.Pattern})
	line := "source exists; credential " + string(res.Reason)
	if res.Message != "" {
		line += ": " + res.Message
	} else if len(res.Keys) > 0 {
		line += " (auths keys " + dockerconfig.QuoteKeys(res.Keys) + ")"
	}
	lines = append(lines, line)
	if res.Refused() {
		return lines, false, false
	}
	offered, credential := dockerconfig.ForImage(src.secret.Type, src.secret.Data, repository)
	switch {
	case len(offered) == 0:
		lines = append(lines, "kubelet offers none of its auths keys for this image")
	case !credential:
		lines = append(lines, "kubelet offers auths keys "+dockerconfig.QuoteKeys(offered)+" for this image, without a username or password")
	default:
		lines = append(lines, "kubelet offers auths keys "+dockerconfig.QuoteKeys(offered)+" for this image")
	}
	return lines, credential, false
}

// source reads ref once per run.
func (r *runner) source(ctx context.Context, ref config.SecretRef) source {
	if s, ok := r.sources[ref]; ok {
		return s
	}
	var s source
	var err error
	s.secret, err = r.Client.CoreV1().Secrets(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		s.missing = true
	case err != nil:
		s.err = err
		r.readErr = true
	}
	r.sources[ref] = s
	return s
}

func selectorString(s labels.Selector) string {
	if s.Empty() {
		return "{} (every namespace)"
	}
	return s.String()
}
