package topology

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
)

// StateFingerprints returns, for each stateful (not derived) feature, a
// fingerprint of everything that decides what its stored state means: the
// source's key and time fields, the aggregation and its parameters, the
// field, the filter and the window. Two specs whose fingerprints agree for
// a feature can share its state; description, emit, max_staleness and the
// quantiles asked of a sketch only change how state is read.
func (t *Topology) StateFingerprints() map[string]string {
	src := t.Spec.Source
	fps := make(map[string]string, len(t.Features))
	for i := range t.Features {
		f := &t.Features[i]
		if f.Derived() {
			continue
		}
		canonical := fmt.Sprintf("v1|key=%s|time=%s|agg=%s|field=%s|where=%s|window=%s/%d/%d/%d|k=%d|capacity=%d|distinct=%d|precision=%d|ra=%g",
			src.Key, src.Time, f.Agg, f.Field, strings.TrimSpace(f.Where),
			f.WindowKind, f.windowMs, f.tileMs, f.gapMs, f.k, f.capacity, f.maxDistinct, f.precision, f.RelativeAccuracy)
		sum := sha256.Sum256([]byte(canonical))
		fps[f.Name] = hex.EncodeToString(sum[:12])
	}
	return fps
}

// SpecChange is how one spec's stateful features differ from another's.
type SpecChange struct {
	// Added features start with empty state: they reflect events from now
	// on, not history.
	Added []string
	// Removed features' state is dropped as entities are next written.
	Removed []string
	// Changed features keep their name but their state means something
	// else: reading the old state under the new definition is wrong.
	Changed []string
}

// Compatible reports whether state written under the old spec can be used
// under the new one: no feature changed meaning.
func (c SpecChange) Compatible() bool { return len(c.Changed) == 0 }

// CompareFingerprints compares the fingerprints state was written under
// (old) with the current ones (new).
func CompareFingerprints(old, new map[string]string) SpecChange {
	var c SpecChange
	for name, fp := range new {
		switch prev, ok := old[name]; {
		case !ok:
			c.Added = append(c.Added, name)
		case prev != fp:
			c.Changed = append(c.Changed, name)
		}
	}
	for name := range old {
		if _, ok := new[name]; !ok {
			c.Removed = append(c.Removed, name)
		}
	}
	slices.Sort(c.Added)
	slices.Sort(c.Removed)
	slices.Sort(c.Changed)
	return c
}
