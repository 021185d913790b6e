// Package testshop gives tests of every package the shop example
// (examples/shop/spec.yaml), the spec the docs and benchmarks use.
package testshop

import (
	"path/filepath"
	"runtime"
	"testing"

	"github.com/featurestream/featurestream/topology"
)

// Spec loads the shop spec; each call returns a fresh copy that the
// caller may change before compiling.
func Spec(tb testing.TB) *topology.Spec {
	tb.Helper()
	_, here, _, _ := runtime.Caller(0)
	spec, err := topology.LoadSpec(filepath.Join(filepath.Dir(here), "..", "..", "examples", "shop", "spec.yaml"))
	if err != nil {
		tb.Fatal(err)
	}
	return spec
}

// Topology compiles the shop spec.
func Topology(tb testing.TB) *topology.Topology {
	tb.Helper()
	top, err := topology.Compile(Spec(tb))
	if err != nil {
		tb.Fatal(err)
	}
	return top
}
