package topology

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/DataDog/sketches-go/ddsketch"
	"github.com/axiomhq/hyperloglog"
)

// The binary encodings below are what the changelog, Pebble and Redis carry.
// They are versioned by their first byte so a later release can read what an
// earlier one wrote.
//
// A state (AppendState) is version 1: the newest event time and each
// feature by name with its encoding. A feature's encoding starts with its
// own version:
//
//   - 1: the aggregations count..last_k over a sliding window or lifetime.
//     Still written for those, byte for byte, so a reader of an earlier
//     release reads what this one writes for the features it knows.
//   - 2: everything else, with a header naming the aggregation and the
//     window kind, so a feature whose spec changed under the same name is
//     recognised (and starts empty) rather than misread.
//
// Per tile: start (varint), for sessions end-start (uvarint), the event
// count (uvarint), then the aggregation's payload (see appendTile).
const (
	stateVersion     = 1
	featureVersion   = 1
	featureVersionV2 = 2
)

// Sketch payload formats, the first byte of a sketch's bytes.
const (
	sketchCounts = 0 // count_distinct: exact set as (value, count) pairs
	sketchHLL    = 1 // count_distinct: HyperLogLog (axiomhq binary)
)

// ErrKindChanged is wrapped (beside ErrCorrupt) by DecodeFeature's error
// when a feature's encoding is of another aggregation or window kind than
// the spec's feature of that name: the spec changed the feature, and its
// old state means nothing now.
var ErrKindChanged = errors.New("feature kind changed")

// ErrCorrupt is wrapped by decode errors: the bytes are not an encoding this
// release can read.
var ErrCorrupt = errors.New("topology: corrupt encoding")

func corrupt(what string) error { return fmt.Errorf("%w: %s", ErrCorrupt, what) }

// v1 reports whether feature f is written in feature version 1.
func (f *CompiledFeature) v1() bool {
	return f.Kind <= AggLastK && f.WindowKind.v1()
}

// AppendFeature appends the encoding of feature fi's tiles to dst. It does
// not modify tiles.
func (t *Topology) AppendFeature(dst []byte, fi int, tiles []Tile) []byte {
	f := &t.Features[fi]
	if f.v1() {
		dst = append(dst, featureVersion)
	} else {
		dst = append(dst, featureVersionV2, byte(f.Kind), byte(f.WindowKind))
	}
	dst = binary.AppendUvarint(dst, uint64(len(tiles)))
	for i := range tiles {
		dst = f.appendTile(dst, &tiles[i])
	}
	return dst
}

// hasHeader reports whether an encoding of tiles starts as AppendFeature
// starts one of f's.
func (f *CompiledFeature) hasHeader(b []byte) bool {
	if f.v1() {
		return len(b) > 0 && b[0] == featureVersion
	}
	return len(b) > 2 && b[0] == featureVersionV2 && b[1] == byte(f.Kind) && b[2] == byte(f.WindowKind)
}

func (f *CompiledFeature) appendTile(dst []byte, tl *Tile) []byte {
	dst = binary.AppendVarint(dst, tl.Start)
	if f.WindowKind == WindowSession {
		dst = binary.AppendUvarint(dst, uint64(tl.End-tl.Start))
	}
	dst = binary.AppendUvarint(dst, uint64(tl.Count))
	switch f.Kind {
	case AggSum, AggAvg, AggMin, AggMax:
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(tl.Num))
	case AggVariance, AggStddev:
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(tl.Num))
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(tl.sk().m2))
	case AggFirst, AggLast, AggFirstK, AggLastK:
		dst = binary.AppendUvarint(dst, uint64(len(tl.Items)))
		for _, it := range tl.Items {
			dst = binary.AppendVarint(dst, it.TimeMs)
			dst = binary.AppendUvarint(dst, uint64(len(it.Value)))
			dst = append(dst, it.Value...)
		}
	case AggTopK:
		dst = appendCounts(dst, tl.sk().counts)
	case AggCountDistinct:
		if tl.sk().hll != nil {
			dst = append(dst, sketchHLL)
			dst = appendHLL(dst, tl.sk().hll)
		} else {
			dst = append(dst, sketchCounts)
			dst = appendCounts(dst, tl.sk().counts)
		}
	case AggApproxDistinct:
		dst = appendHLL(dst, tl.sk().hll)
	case AggApproxQuantile:
		// Length-prefixed: the sketch's own encoding has no end marker.
		var b []byte
		if tl.sk().dd != nil {
			tl.sk().dd.Encode(&b, true)
		}
		dst = binary.AppendUvarint(dst, uint64(len(b)))
		dst = append(dst, b...)
	}
	return dst
}

// appendCounts writes (value, count) pairs in ascending value order, so the
// encoding does not depend on map order.
func appendCounts(dst []byte, counts map[string]int64) []byte {
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	dst = binary.AppendUvarint(dst, uint64(len(keys)))
	for _, k := range keys {
		dst = binary.AppendUvarint(dst, uint64(len(k)))
		dst = append(dst, k...)
		dst = binary.AppendUvarint(dst, uint64(counts[k]))
	}
	return dst
}

// appendHLL writes a length-prefixed sketch (length 0: none). The sketch is
// compacted on a copy first: the library's encoding of its not yet merged
// insertions depends on map order, and the tile must not change under a
// concurrent reader.
func appendHLL(dst []byte, sk *hyperloglog.Sketch) []byte {
	if sk == nil {
		return append(dst, 0)
	}
	c := sk.Clone()
	c.Estimate()
	b, err := c.AppendBinary(nil)
	if err != nil {
		// Only an uninitialised sketch fails, and tiles never hold one.
		return append(dst, 0)
	}
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// DecodeFeature decodes tiles of feature fi encoded by AppendFeature. The
// result does not alias data.
func (t *Topology) DecodeFeature(fi int, data []byte) ([]Tile, error) {
	f := &t.Features[fi]
	tiles, err := f.decode(data)
	if err != nil {
		return nil, fmt.Errorf("decode feature %s: %w", f.Name, err)
	}
	return tiles, nil
}

func (f *CompiledFeature) decode(data []byte) ([]Tile, error) {
	return f.appendDecoded(nil, data)
}

// AppendDecodedFeature decodes tiles of feature fi encoded by AppendFeature
// and appends them to dst, reusing its capacity: a reader that decodes
// many entities can keep one slice per feature. The tiles do not alias
// data; they do alias dst's backing array, which the caller owns. On error
// dst is returned as it was.
func (t *Topology) AppendDecodedFeature(dst []Tile, fi int, data []byte) ([]Tile, error) {
	f := &t.Features[fi]
	out, err := f.appendDecoded(dst, data)
	if err != nil {
		return dst, fmt.Errorf("decode feature %s: %w", f.Name, err)
	}
	return out, nil
}

func (f *CompiledFeature) appendDecoded(dst []Tile, data []byte) ([]Tile, error) {
	d := decoder{b: data}
	switch v := d.byte(); v {
	case featureVersion:
		if !f.v1() {
			return nil, fmt.Errorf("%w: %w: version 1 encoding, the spec's %s %s is not a version 1 feature", ErrCorrupt, ErrKindChanged, f.WindowKind, f.Kind)
		}
	case featureVersionV2:
		kind, wk := AggKind(d.byte()), WindowKind(d.byte())
		if d.err != nil {
			return nil, d.err
		}
		if kind != f.Kind || wk != f.WindowKind {
			return nil, fmt.Errorf("%w: %w: encoded as %s %s, the spec says %s %s", ErrCorrupt, ErrKindChanged, wk, kind, f.WindowKind, f.Kind)
		}
	default:
		if d.err != nil {
			return nil, d.err
		}
		return nil, corrupt(fmt.Sprintf("version %d", v))
	}
	n := d.uvarint()
	if n > uint64(len(data)) {
		return nil, corrupt("tile count")
	}
	if dst == nil {
		dst = make([]Tile, 0, n)
	}
	base := len(dst)
	tiles := slices.Grow(dst, int(n))
	if f.itemKind() && len(d.b) > 0 {
		// One string holds every item value of the feature and one array
		// every item: two allocations, not one per item and tile. An item
		// takes at least two bytes.
		d.str = string(d.b)
		d.items = make([]Item, 0, min(n*uint64(f.k), uint64(len(d.b)/2)))
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		tiles = append(tiles, Tile{})
		tl := &tiles[len(tiles)-1]
		if err := f.decodeTile(&d, tl); err != nil {
			return nil, err
		}
		if prev := tiles[base : len(tiles)-1]; len(prev) > 0 {
			if tl.Start <= prev[len(prev)-1].Start {
				return nil, corrupt("tiles out of order")
			}
			if f.WindowKind == WindowSession && tl.Start <= prev[len(prev)-1].End {
				return nil, corrupt("sessions overlap")
			}
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = corrupt("trailing bytes")
	}
	if d.err != nil {
		return nil, d.err
	}
	return tiles, nil
}

// itemKind reports whether the feature keeps first/last items.
func (f *CompiledFeature) itemKind() bool {
	switch f.Kind {
	case AggFirst, AggLast, AggFirstK, AggLastK:
		return true
	}
	return false
}

func (f *CompiledFeature) decodeTile(d *decoder, tl *Tile) error {
	tl.Start = d.varint()
	if f.WindowKind == WindowSession {
		span := d.uvarint()
		if span > math.MaxInt64 || tl.Start > math.MaxInt64-int64(span) {
			return corrupt("session span")
		}
		tl.End = tl.Start + int64(span)
	}
	c := d.uvarint()
	if c > math.MaxInt64 {
		return corrupt(fmt.Sprintf("count %d", c))
	}
	tl.Count = int64(c)
	switch f.Kind {
	case AggSum, AggAvg, AggMin, AggMax:
		tl.Num = math.Float64frombits(d.uint64())
	case AggVariance, AggStddev:
		tl.Num = math.Float64frombits(d.uint64())
		tl.sketch().m2 = math.Float64frombits(d.uint64())
	case AggFirst, AggLast, AggFirstK, AggLastK:
		m := d.uvarint()
		if m > uint64(f.k) {
			return corrupt(fmt.Sprintf("%d items, k is %d", m, f.k))
		}
		// Items go to the decoder's shared array (presized by
		// appendDecoded); should it grow, earlier tiles keep the old one.
		start := len(d.items)
		for j := uint64(0); j < m && d.err == nil; j++ {
			ts := d.varint()
			d.items = append(d.items, Item{TimeMs: ts, Value: d.itemString()})
		}
		if m > 0 {
			tl.Items = d.items[start:len(d.items):len(d.items)]
		}
	case AggTopK:
		tl.sketch().counts = d.counts(f.capacity)
	case AggCountDistinct:
		switch mode := d.byte(); mode {
		case sketchCounts:
			tl.sketch().counts = d.counts(f.maxDistinct)
		case sketchHLL:
			tl.sketch().hll = d.hll(f.precision)
			if tl.sk().hll == nil && d.err == nil {
				return corrupt("count_distinct: empty sketch")
			}
		default:
			if d.err == nil {
				return corrupt(fmt.Sprintf("count_distinct: sketch format %d", mode))
			}
		}
	case AggApproxDistinct:
		tl.sketch().hll = d.hll(f.precision)
	case AggApproxQuantile:
		if b := d.bytes(); len(b) > 0 && d.err == nil {
			tl.sketch().dd = decodeDD(d, b, f)
		}
	}
	return d.err
}

// AppendState appends the encoding of a whole entity state to dst. Features
// are named in it, so a state written under one spec can be read under
// another that adds or removes features.
func (t *Topology) AppendState(dst []byte, st *EntityState) []byte {
	dst = append(dst, stateVersion)
	dst = binary.AppendVarint(dst, st.LastEventMs)
	dst = binary.AppendUvarint(dst, uint64(t.stateful))
	for i := range t.Features {
		if t.Features[i].Derived() {
			continue // no state
		}
		dst = binary.AppendUvarint(dst, uint64(len(t.Features[i].Name)))
		dst = append(dst, t.Features[i].Name...)
		dst = appendSized(dst, func(dst []byte) []byte { return t.AppendFeature(dst, i, st.Features[i]) })
	}
	return dst
}

// EncodedFeatures returns, for a state encoded by AppendState under this
// topology, each feature's encoding as AppendFeature writes it, by feature
// index: slices of state, nil for derived features, in dst's memory if it
// has room; and the state's LastEventMs. It reports false when the
// encoding is not this topology's stateful features in its order (one
// written under another spec, or damaged), for the caller to encode the
// decoded state instead.
func (t *Topology) EncodedFeatures(state []byte, dst [][]byte) (features [][]byte, lastEventMs int64, ok bool) {
	d := decoder{b: state}
	if d.byte() != stateVersion {
		return nil, 0, false
	}
	lastEventMs = d.varint()
	if d.uvarint() != uint64(t.stateful) {
		return nil, 0, false
	}
	out := dst[:0]
	for range t.Features {
		out = append(out, nil)
	}
	for i := range t.Features {
		if t.Features[i].Derived() {
			continue
		}
		if name := d.bytes(); string(name) != t.Features[i].Name {
			return nil, 0, false
		}
		// The header AppendFeature writes says which aggregation and
		// window the tiles are of.
		payload := d.bytes()
		if !t.Features[i].hasHeader(payload) {
			return nil, 0, false
		}
		out[i] = payload
	}
	if d.err != nil || len(d.b) != 0 {
		return nil, 0, false
	}
	return out, lastEventMs, true
}

// StateFeatures returns, for a state encoded by AppendState under any spec,
// the encoding of each of this topology's features it holds, as
// AppendFeature wrote it, by feature index: slices of state, nil for a
// feature it lacks (written under a spec without it) and for derived
// features, in dst's memory if it has room; and the state's LastEventMs.
// Features found by name may still be of another kind (DecodeFeature says
// ErrKindChanged). The error wraps ErrCorrupt.
func (t *Topology) StateFeatures(state []byte, dst [][]byte) (features [][]byte, lastEventMs int64, err error) {
	d := decoder{b: state}
	if v := d.byte(); v != stateVersion && d.err == nil {
		return nil, 0, corrupt(fmt.Sprintf("state version %d", v))
	}
	lastEventMs = d.varint()
	n := d.uvarint()
	out := dst[:0]
	for range t.Features {
		out = append(out, nil)
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		name := d.bytes()
		payload := d.bytes()
		if fi, ok := t.byName[string(name)]; ok && d.err == nil && !t.Features[fi].Derived() {
			out[fi] = payload
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = corrupt("trailing bytes")
	}
	if d.err != nil {
		return nil, 0, fmt.Errorf("state features: %w", d.err)
	}
	return out, lastEventMs, nil
}

// appendSized appends what enc appends, prefixed with its length as a
// uvarint. enc writes straight into dst, which then moves the few bytes
// of its output right by the prefix's size: no scratch buffer to grow.
func appendSized(dst []byte, enc func([]byte) []byte) []byte {
	mark := len(dst)
	dst = enc(dst)
	n := len(dst) - mark
	var prefix [binary.MaxVarintLen64]byte
	k := binary.PutUvarint(prefix[:], uint64(n))
	dst = append(dst, prefix[:k]...)
	copy(dst[mark+k:], dst[mark:mark+n])
	copy(dst[mark:], prefix[:k])
	return dst
}

// DecodeState decodes an entity state written by AppendState. Features the
// spec no longer has are dropped; new ones start empty. The result does not
// alias data.
func (t *Topology) DecodeState(data []byte) (*EntityState, error) {
	// Up to 16 features' slices need no allocation.
	var small [16][]byte
	payloads, lastEventMs, err := t.StateFeatures(data, small[:0])
	if err != nil {
		return nil, fmt.Errorf("decode state: %w", err)
	}
	st := t.NewEntityState()
	st.LastEventMs = lastEventMs
	for fi, payload := range payloads {
		if payload == nil {
			continue
		}
		tiles, err := t.DecodeFeature(fi, payload)
		if errors.Is(err, ErrKindChanged) {
			// The spec changed the feature's aggregation or window under
			// the same name: its old state means nothing now.
			continue
		}
		if err != nil {
			return nil, err
		}
		st.Features[fi] = tiles
	}
	return st, nil
}

// decoder reads the encodings; after the first error every read returns
// zero and err stays set.
type decoder struct {
	b   []byte
	err error
	// str is a copy of the bytes being decoded, ending where b ends; item
	// values are substrings of it. items holds a feature's items.
	str   string
	items []Item
}

// itemString reads a length-prefixed string as a substring of d.str (no
// allocation), or a copy when d.str is unset.
func (d *decoder) itemString() string {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail("short bytes")
		return ""
	}
	if d.str == "" {
		v := string(d.b[:n])
		d.b = d.b[n:]
		return v
	}
	start := len(d.str) - len(d.b)
	d.b = d.b[n:]
	return d.str[start : start+int(n)]
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = corrupt(what)
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail("short")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad uvarint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) uint64() uint64 {
	if len(d.b) < 8 {
		d.fail("short float")
		return 0
	}
	v := binary.LittleEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

// counts reads (value, count) pairs written by appendCounts: at most limit,
// values strictly ascending, counts positive.
func (d *decoder) counts(limit int) map[string]int64 {
	n := d.uvarint()
	if n > uint64(limit) || n > uint64(len(d.b)) {
		d.fail(fmt.Sprintf("%d counted values, at most %d", n, limit))
		return nil
	}
	m := make(map[string]int64, n)
	var prev []byte
	for i := uint64(0); i < n && d.err == nil; i++ {
		v := d.bytes()
		c := d.uvarint()
		switch {
		case d.err != nil:
		case i > 0 && string(v) <= string(prev):
			d.fail("counted values out of order")
		case c == 0 || c > math.MaxInt64:
			d.fail(fmt.Sprintf("count %d", c))
		case len(v) > MaxItemBytes:
			d.fail("counted value too long")
		default:
			m[string(v)] = int64(c)
			prev = v
		}
	}
	return m
}

// hll reads a length-prefixed HyperLogLog sketch; nil for length 0.
func (d *decoder) hll(precision int) *hyperloglog.Sketch {
	b := d.bytes()
	if len(b) == 0 || d.err != nil {
		return nil
	}
	var sk hyperloglog.Sketch
	if err := sk.UnmarshalBinary(b); err != nil {
		d.fail("hyperloglog: " + err.Error())
		return nil
	}
	// Merging sketches of different precisions fails, so only the spec's
	// precision is accepted.
	if b[1] != byte(precision) {
		d.fail(fmt.Sprintf("hyperloglog precision %d, the spec says %d", b[1], precision))
		return nil
	}
	return &sk
}

// decodeDD decodes a DDSketch with the feature's index mapping. The library
// is not written for hostile input, so a panic in it is a corrupt encoding.
func decodeDD(d *decoder, b []byte, f *CompiledFeature) (sk *ddsketch.DDSketch) {
	defer func() {
		if r := recover(); r != nil {
			d.fail(fmt.Sprintf("ddsketch: %v", r))
			sk = nil
		}
	}()
	sk = f.newDD()
	if err := sk.DecodeAndMergeWith(b); err != nil {
		d.fail("ddsketch: " + err.Error())
		return nil
	}
	return sk
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail("short bytes")
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}
