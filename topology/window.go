package topology

// WindowKind is how a feature's window relates to event time and to the
// read's as_of. Its numeric value is part of the version 2 feature
// encoding: never renumber.
type WindowKind uint8

// The window kinds.
const (
	// WindowSliding ends at as_of and is kept in tiles.
	WindowSliding WindowKind = iota + 1
	// WindowLifetime has no window: every event counts.
	WindowLifetime
	// WindowTumbling is fixed, adjacent buckets of one size.
	WindowTumbling
	// WindowHopping is fixed buckets of one size starting every hop.
	WindowHopping
	// WindowSession groups events closer than a gap to each other.
	WindowSession
)

var windowKindNames = map[WindowKind]string{
	WindowSliding:  "sliding",
	WindowLifetime: "lifetime",
	WindowTumbling: "tumbling",
	WindowHopping:  "hopping",
	WindowSession:  "session",
}

func (k WindowKind) String() string {
	if n, ok := windowKindNames[k]; ok {
		return n
	}
	return "unknown"
}

// v1 reports whether feature encoding version 1 can hold this window kind.
func (k WindowKind) v1() bool { return k == WindowSliding || k == WindowLifetime }
