// Package version says which build of pullsecret-injector runs: the release and commit it was built from,
// and the Go that built it. `make build` and the Dockerfile set Version and Commit from git with
// -ldflags -X; a plain `go build` leaves "dev" and "unknown". main prints them for --version and logs them
// at start, and package metrics serves them as pullsecret_injector_build_info, so the three always agree.
package version

import (
	"fmt"
	"runtime"
)

// Version is the release this binary was built from (`git describe --tags --always --dirty`), or "dev".
// A variable, not a constant, so that the linker can set it.
var Version = "dev"

// Commit is the full git commit this binary was built from, or "unknown".
var Commit = "unknown"

// GoVersion returns the version of Go that built this binary.
func GoVersion() string {
	return runtime.Version()
}

// String returns the version, commit and Go version on one line, as --version prints them.
func String() string {
	return fmt.Sprintf("pullsecret-injector %s (commit %s, %s)", Version, Commit, GoVersion())
}
