package topology

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"time"
)

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

var windowKindByName = func() map[string]WindowKind {
	m := make(map[string]WindowKind, len(windowKindNames))
	for k, n := range windowKindNames {
		m[n] = k
	}
	return m
}()

// compileWindow sets the window fields from the validated spec. A spec built
// in code rather than parsed may leave WindowKind and the tile unset:
// defaults apply as ParseSpec would fill them.
func (f *CompiledFeature) compileWindow() error {
	kind := f.Feature.WindowKind
	if kind == "" {
		kind = "sliding"
		if f.Feature.Window == 0 {
			kind = "lifetime"
		}
	}
	wk, ok := windowKindByName[kind]
	if !ok {
		return fmt.Errorf("window kind %q: want sliding, tumbling, hopping, session or lifetime", kind)
	}
	f.WindowKind = wk
	f.EmitLastClosed = f.Emit == "last_closed"
	size := time.Duration(f.Feature.Window)
	switch wk {
	case WindowLifetime:
		f.Window, f.Tile = 0, 0
	case WindowSliding:
		f.Window, f.Tile = size, time.Duration(f.Feature.Tile)
		if f.Tile <= 0 {
			f.Tile = defaultTile(size)
		}
	case WindowTumbling:
		f.Window, f.Tile = size, size
	case WindowHopping:
		f.Window, f.Tile = size, time.Duration(f.Hop)
	case WindowSession:
		f.Window, f.Tile = time.Duration(f.Gap), 0
		f.gapMs = f.Window.Milliseconds()
		if f.gapMs <= 0 {
			return fmt.Errorf("window kind session needs a gap")
		}
		return nil
	}
	if wk != WindowLifetime {
		f.windowMs, f.tileMs = f.Window.Milliseconds(), f.Tile.Milliseconds()
		if f.windowMs <= 0 || f.tileMs <= 0 || f.windowMs%f.tileMs != 0 && wk == WindowHopping {
			return fmt.Errorf("window %s in tiles of %s: want positive sizes", f.Window, f.Tile)
		}
	}
	return nil
}

// extentMs is how far before as_of a read of the feature may reach.
func (f *CompiledFeature) extentMs() int64 {
	switch f.WindowKind {
	case WindowSliding:
		return f.windowMs
	case WindowTumbling:
		return 2 * f.windowMs
	case WindowHopping:
		return f.windowMs + f.tileMs
	case WindowSession:
		return f.gapMs
	}
	return 0
}

// tileStart is the start of the tile holding timeMs.
func (f *CompiledFeature) tileStart(timeMs int64) int64 {
	if f.tileMs == 0 {
		return 0
	}
	return floorDiv(timeMs, f.tileMs) * f.tileMs
}

// add folds a contribution at timeMs into the feature's tiles.
func (f *CompiledFeature) add(tiles []Tile, timeMs int64, c *contribution) []Tile {
	if f.WindowKind == WindowSession {
		return f.addSession(tiles, timeMs, c)
	}
	start := f.tileStart(timeMs)
	// Tiles are few and events mostly land in the newest: search from the end.
	i := len(tiles)
	for i > 0 && tiles[i-1].Start > start {
		i--
	}
	if i == 0 || tiles[i-1].Start != start {
		tiles = append(tiles, Tile{})
		copy(tiles[i+1:], tiles[i:])
		tiles[i] = Tile{Start: start}
		i++
	}
	f.addTo(&tiles[i-1], timeMs, c)
	return tiles
}

// addSession adds an event to the session it falls in or within gap of,
// merging the two sessions an event bridges, or starts a new session.
// Sessions are kept in Start order, each [Start, End] more than gap after
// the previous one's End.
func (f *CompiledFeature) addSession(tiles []Tile, timeMs int64, c *contribution) []Tile {
	g := f.gapMs
	// i: the first session that does not end more than gap before timeMs.
	i := sort.Search(len(tiles), func(i int) bool { return tiles[i].End >= timeMs-g })
	j := i
	for j < len(tiles) && tiles[j].Start <= timeMs+g {
		j++
	}
	if i == j {
		tiles = slices.Insert(tiles, i, Tile{Start: timeMs, End: timeMs})
		f.addTo(&tiles[i], timeMs, c)
		return tiles
	}
	// Sessions i..j-1 (at most two: they are more than gap apart) and the
	// event become one.
	s := &tiles[i]
	for k := i + 1; k < j; k++ {
		f.mergeTile(s, &tiles[k])
		s.End = max(s.End, tiles[k].End)
	}
	s.Start, s.End = min(s.Start, timeMs), max(s.End, timeMs)
	f.addTo(s, timeMs, c)
	return slices.Delete(tiles, i+1, j)
}

// prune drops the tiles that no read at or after watermarkMs can include.
// The processor rejects events behind the watermark, so nothing can be
// added to a dropped tile either.
func (f *CompiledFeature) prune(tiles []Tile, watermarkMs int64) []Tile {
	if len(tiles) == 0 || f.WindowKind == WindowLifetime {
		return tiles
	}
	// No watermark yet; and the horizons below would wrap around.
	if watermarkMs < math.MinInt64/2 {
		return tiles
	}
	var horizon int64
	switch f.WindowKind {
	case WindowSliding:
		// One extra tile is kept so a read a little behind the watermark
		// is still whole.
		horizon = watermarkMs - f.windowMs - f.tileMs
	case WindowTumbling:
		// The bucket holding the watermark and the one before it: the
		// last closed one, or a spare for current reads.
		horizon = f.tileStart(watermarkMs) - f.windowMs
	case WindowHopping:
		// The last closed window of a read at the watermark starts here;
		// the current one later.
		horizon = f.tileStart(watermarkMs) - f.windowMs
	case WindowSession:
		// Sessions closed at the watermark can only be read as the last
		// closed one, and only the newest of them.
		n := 0
		for n < len(tiles) && tiles[n].End+f.gapMs < watermarkMs {
			n++
		}
		if f.EmitLastClosed && n > 0 {
			n--
		}
		if n == 0 {
			return tiles
		}
		return append(tiles[:0], tiles[n:]...)
	}
	n := 0
	for n < len(tiles) && tiles[n].Start < horizon {
		n++
	}
	if n == 0 {
		return tiles
	}
	return append(tiles[:0], tiles[n:]...)
}

// CoveredWindow returns the event-time interval a read at asOfMs covers,
// when it does not depend on the entity: for a sliding window, the tiles
// starting in [start, asOfMs] (start is the first tile boundary at or
// after asOfMs - window, so the covered span is short of the window by
// less than one tile); for tumbling and hopping windows, the current
// window's start and asOfMs, or the last closed window's start and end.
// It is (0, 0) for lifetime and session features: a session's interval is
// in the Value Evaluate returns.
func (f *CompiledFeature) CoveredWindow(asOfMs int64) (startMs, endMs int64) {
	switch f.WindowKind {
	case WindowSliding:
		from := asOfMs - f.windowMs
		start := floorDiv(from, f.tileMs) * f.tileMs
		if start < from {
			start += f.tileMs
		}
		return start, asOfMs
	case WindowTumbling, WindowHopping:
		// The window ending at the next tile boundary (current), or at
		// this one (last closed).
		end := f.tileStart(asOfMs)
		if !f.EmitLastClosed {
			return end + f.tileMs - f.windowMs, asOfMs
		}
		return end - f.windowMs, end
	}
	return 0, 0
}

// selectTiles returns the tiles a read at asOfMs merges and the interval
// they cover. ok is false for a session feature with no session to read.
func (f *CompiledFeature) selectTiles(tiles []Tile, asOfMs int64) (in []Tile, startMs, endMs int64, ok bool) {
	switch f.WindowKind {
	case WindowLifetime:
		return tiles, 0, 0, true
	case WindowSession:
		g := f.gapMs
		if f.EmitLastClosed {
			// The newest session closed at as_of.
			for i := len(tiles) - 1; i >= 0; i-- {
				if tiles[i].End < asOfMs-g {
					return tiles[i : i+1], tiles[i].Start, tiles[i].End, true
				}
			}
			return nil, 0, 0, false
		}
		// The session as_of falls in or within gap after.
		for i := len(tiles) - 1; i >= 0; i-- {
			if tiles[i].Start <= asOfMs {
				if tiles[i].End >= asOfMs-g {
					return tiles[i : i+1], tiles[i].Start, tiles[i].End, true
				}
				break
			}
		}
		return nil, 0, 0, false
	}
	startMs, endMs = f.CoveredWindow(asOfMs)
	// Tiles whose start lies in [startMs, last]: up to as_of for sliding
	// and current reads (the tile holding as_of counts whole), before the
	// window's end for closed ones.
	last := asOfMs
	if f.EmitLastClosed {
		last = endMs - 1
	}
	lo, hi := 0, len(tiles)
	for lo < hi && tiles[lo].Start < startMs {
		lo++
	}
	for hi > lo && tiles[hi-1].Start > last {
		hi--
	}
	return tiles[lo:hi], startMs, endMs, true
}

// WindowString describes the feature's window for listings such as
// featurestream validate: "sliding 1h in 5m tiles", "tumbling 1d",
// "hopping 1h every 15m, last closed", "session gap 30m", "lifetime", or
// "derived: clicks_1h / views_1h".
func (f *CompiledFeature) WindowString() string {
	if f.Derived() {
		return "derived: " + f.Expr
	}
	var s string
	switch f.WindowKind {
	case WindowSliding:
		s = fmt.Sprintf("sliding %s in %s tiles", Duration(f.Window), Duration(f.Tile))
	case WindowTumbling:
		s = fmt.Sprintf("tumbling %s", Duration(f.Window))
	case WindowHopping:
		s = fmt.Sprintf("hopping %s every %s", Duration(f.Window), Duration(f.Tile))
	case WindowSession:
		s = fmt.Sprintf("session gap %s", Duration(f.Window))
	default:
		return "lifetime"
	}
	if f.EmitLastClosed {
		s += ", last closed"
	}
	return s
}
