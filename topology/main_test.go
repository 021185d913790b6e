package topology

import (
	"flag"
	"os"
	"testing"
)

// longTests is set by FEATURESTREAM_LONG=1: property tests run many more
// cases, from a random seed unless -rapid.seed (or RAPID_SEED) names one.
var longTests = os.Getenv("FEATURESTREAM_LONG") == "1"

// TestMain pins rapid's seed so that CI runs the same cases every time (rapid
// otherwise draws a fresh seed per run), and raises the number of checks in
// long runs. Flags and RAPID_* variables given explicitly win.
func TestMain(m *testing.M) {
	flag.Parse()
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if longTests {
		if !set["rapid.checks"] && os.Getenv("RAPID_CHECKS") == "" {
			_ = flag.Set("rapid.checks", "5000")
		}
	} else if !set["rapid.seed"] && os.Getenv("RAPID_SEED") == "" {
		_ = flag.Set("rapid.seed", "20251126")
	}
	os.Exit(m.Run())
}
