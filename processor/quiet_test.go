package processor

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestCommitsWhenInputGoesQuiet: while events keep arriving a processor
// commits only at its interval; once they stop for a tenth of it, it
// commits what it applied then, not at the interval's end. With an
// interval of a minute, the events reach Redis well within waitFor's 30
// seconds only because of that.
func TestCommitsWhenInputGoesQuiet(t *testing.T) {
	e := newRestoreEnv(t)
	p := e.startConfig(e.sink, Config{SessionTimeout: 6 * time.Second, CommitInterval: time.Minute}, nil)
	waitFor(t, "the processor to be ready", p.Ready)
	committed := func() float64 { return testutil.ToFloat64(p.m.txns.WithLabelValues("committed")) }
	before := committed()

	// Events every 10 ms for 3 s: never quiet for the 6 s it takes.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
		e.produce(0, 1)
		time.Sleep(10 * time.Millisecond)
	}
	n := len(e.items["a1"])
	if got := committed(); got != before {
		t.Errorf("%v commits while events kept arriving, want none before the interval", got-before)
	}
	e.waitItems(0, n)
	if got := committed(); got != before+1 {
		t.Errorf("%v commits after the input went quiet, want 1", got-before)
	}
}
