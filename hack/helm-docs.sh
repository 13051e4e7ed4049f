#!/usr/bin/env bash
# Generates the chart's documentation from charts/pullsecret-injector/values.yaml with helm-docs:
#   docs/chart.md                          from docs/chart.md.gotmpl (the manual's chart page)
#   charts/pullsecret-injector/README.md   from charts/pullsecret-injector/README.md.gotmpl (`helm show readme`)
# Usage: hack/helm-docs.sh write|check. `check` writes nothing and fails when a generated file in the tree
# differs from what the templates and values.yaml give now.
#
# helm-docs warns and exits 0 when it cannot parse the chart, and falls back to its built-in template when
# a template file is missing, so each run goes to a temporary file through --dry-run, and any warning fails.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:?usage: $0 write|check}
HELM_DOCS=${HELM_DOCS:-bin/helm-docs}
chart=charts/pullsecret-injector

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

status=0
# generate TEMPLATE OUTPUT: render TEMPLATE (absolute, so helm-docs cannot miss it) into OUTPUT's place.
generate() {
	local template=$1 output=$2 out="$tmp/$(basename "$2")"
	[[ -f $template ]] || { echo "helm-docs: template $template is missing" >&2; exit 1; }
	"$HELM_DOCS" --chart-search-root "$chart" --template-files "$PWD/$template" --sort-values-order file \
		--log-level warning --dry-run >"$out" 2>"$tmp/stderr"
	if [[ -s "$tmp/stderr" ]]; then
		cat "$tmp/stderr" >&2
		echo "helm-docs: warnings while generating $output from $template" >&2
		exit 1
	fi
	case $mode in
	write) cp "$out" "$output" ;;
	check)
		if ! diff -u "$output" "$out" >&2; then
			echo "helm-docs: $output is out of date; run 'make helm-docs' and commit the result" >&2
			status=1
		fi
		;;
	*) echo "usage: $0 write|check" >&2; exit 2 ;;
	esac
}

generate docs/chart.md.gotmpl docs/chart.md
generate "$chart/README.md.gotmpl" "$chart/README.md"
exit $status
