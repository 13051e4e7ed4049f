package metrics

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/pullsecret-injector/pullsecret-injector/internal/version"
)

// seriesAtImport is what the process's registry served of the project's metrics before any test ran: once
// the package is imported and initialised, and before anything calls Register.
var seriesAtImport []string

func TestMain(m *testing.M) {
	series, err := projectSeries()
	if err != nil {
		panic(err)
	}
	seriesAtImport = series
	os.Exit(m.Run())
}

// projectSeries returns the project's series the process's registry serves, as name{label=value,...},
// sorted.
func projectSeries() ([]string, error) {
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, f := range families {
		if !strings.HasPrefix(f.GetName(), Namespace+"_") {
			continue
		}
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			out = append(out, f.GetName()+"{"+strings.Join(labels, ",")+"}")
		}
	}
	slices.Sort(out)
	return out, nil
}

func TestImportRegistersNothing(t *testing.T) {
	if len(seriesAtImport) > 0 {
		t.Errorf("importing the package registered %q; only Register may", seriesAtImport)
	}
}

func TestRegister(t *testing.T) {
	Register()
	// Tests of other packages call it as main does; a second call must not panic on a duplicate.
	Register()
	got, err := projectSeries()
	if err != nil {
		t.Fatal(err)
	}
	// Every series of a fixed label set is served before anything is counted; copy_operations_total and
	// source_invalid are by source, and appear with the first count.
	want := []string{
		"pullsecret_injector_admissions_total{outcome=error}",
		"pullsecret_injector_admissions_total{outcome=injected}",
		"pullsecret_injector_admissions_total{outcome=not_selected}",
		"pullsecret_injector_admissions_total{outcome=nothing_to_add}",
		"pullsecret_injector_admissions_total{outcome=opted_out}",
		"pullsecret_injector_build_info{commit=" + version.Commit + ",goversion=" + version.GoVersion() + ",version=" + version.Version + "}",
		"pullsecret_injector_config_last_reload_success_timestamp_seconds{}",
		"pullsecret_injector_config_reloads_total{result=failure}",
		"pullsecret_injector_config_reloads_total{result=success}",
		"pullsecret_injector_events_dropped_total{}",
		"pullsecret_injector_metrics_requests_refused_total{reason=error}",
		"pullsecret_injector_metrics_requests_refused_total{reason=forbidden}",
		"pullsecret_injector_metrics_requests_refused_total{reason=invalid_token}",
		"pullsecret_injector_metrics_requests_refused_total{reason=no_token}",
		"pullsecret_injector_metrics_requests_refused_total{reason=over_budget}",
		"pullsecret_injector_metrics_requests_refused_total{reason=rejected}",
		"pullsecret_injector_metrics_reviews_total{lane=other,review=access}",
		"pullsecret_injector_metrics_reviews_total{lane=other,review=token}",
		"pullsecret_injector_metrics_reviews_total{lane=serviceaccount,review=access}",
		"pullsecret_injector_metrics_reviews_total{lane=serviceaccount,review=token}",
		"pullsecret_injector_reconciler_rate_changes_total{reason=increase}",
		"pullsecret_injector_reconciler_rate_changes_total{reason=slow}",
		"pullsecret_injector_reconciler_rate_changes_total{reason=throttled}",
		"pullsecret_injector_reconciler_rate_limit{}",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("series served after Register (-want +got):\n%s", diff)
	}
}
