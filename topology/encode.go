package topology

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// The binary encodings below are what the changelog, Pebble and Redis carry.
// They are versioned by their first byte so a later release can read what an
// earlier one wrote.
const (
	stateVersion   = 1
	featureVersion = 1
)

// ErrCorrupt is wrapped by decode errors: the bytes are not an encoding this
// release can read.
var ErrCorrupt = errors.New("topology: corrupt encoding")

func corrupt(what string) error { return fmt.Errorf("%w: %s", ErrCorrupt, what) }

// AppendFeature appends the encoding of feature fi's tiles to dst.
func (t *Topology) AppendFeature(dst []byte, fi int, tiles []Tile) []byte {
	kind := t.Features[fi].Kind
	dst = append(dst, featureVersion)
	dst = binary.AppendUvarint(dst, uint64(len(tiles)))
	for i := range tiles {
		tl := &tiles[i]
		dst = binary.AppendVarint(dst, tl.Start)
		dst = binary.AppendUvarint(dst, uint64(tl.Count))
		switch kind {
		case AggSum, AggAvg, AggMin, AggMax:
			dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(tl.Num))
		case AggFirst, AggLast, AggFirstK, AggLastK:
			dst = binary.AppendUvarint(dst, uint64(len(tl.Items)))
			for _, it := range tl.Items {
				dst = binary.AppendVarint(dst, it.TimeMs)
				dst = binary.AppendUvarint(dst, uint64(len(it.Value)))
				dst = append(dst, it.Value...)
			}
		}
	}
	return dst
}

// DecodeFeature decodes tiles of feature fi encoded by AppendFeature. The
// result does not alias data.
func (t *Topology) DecodeFeature(fi int, data []byte) ([]Tile, error) {
	f := &t.Features[fi]
	d := decoder{b: data}
	if v := d.byte(); v != featureVersion {
		return nil, corrupt(fmt.Sprintf("feature %s: version %d", f.Name, v))
	}
	n := d.uvarint()
	if n > uint64(len(data)) {
		return nil, corrupt("tile count")
	}
	tiles := make([]Tile, 0, n)
	for i := uint64(0); i < n && d.err == nil; i++ {
		tl := Tile{Start: d.varint()}
		if c := d.uvarint(); c > math.MaxInt64 {
			return nil, corrupt(fmt.Sprintf("feature %s: count %d", f.Name, c))
		} else {
			tl.Count = int64(c)
		}
		switch f.Kind {
		case AggSum, AggAvg, AggMin, AggMax:
			tl.Num = math.Float64frombits(d.uint64())
		case AggFirst, AggLast, AggFirstK, AggLastK:
			m := d.uvarint()
			if m > uint64(f.k) {
				return nil, corrupt(fmt.Sprintf("feature %s: %d items, k is %d", f.Name, m, f.k))
			}
			tl.Items = make([]Item, 0, m)
			for j := uint64(0); j < m && d.err == nil; j++ {
				ts := d.varint()
				tl.Items = append(tl.Items, Item{TimeMs: ts, Value: string(d.bytes())})
			}
		}
		if len(tiles) > 0 && tl.Start <= tiles[len(tiles)-1].Start {
			return nil, corrupt(fmt.Sprintf("feature %s: tiles out of order", f.Name))
		}
		tiles = append(tiles, tl)
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = corrupt("trailing bytes")
	}
	if d.err != nil {
		return nil, fmt.Errorf("decode feature %s: %w", f.Name, d.err)
	}
	return tiles, nil
}

// AppendState appends the encoding of a whole entity state to dst. Features
// are named in it, so a state written under one spec can be read under
// another that adds or removes features.
func (t *Topology) AppendState(dst []byte, st *EntityState) []byte {
	dst = append(dst, stateVersion)
	dst = binary.AppendVarint(dst, st.LastEventMs)
	dst = binary.AppendUvarint(dst, uint64(len(t.Features)))
	var scratch []byte
	for i := range t.Features {
		dst = binary.AppendUvarint(dst, uint64(len(t.Features[i].Name)))
		dst = append(dst, t.Features[i].Name...)
		scratch = t.AppendFeature(scratch[:0], i, st.Features[i])
		dst = binary.AppendUvarint(dst, uint64(len(scratch)))
		dst = append(dst, scratch...)
	}
	return dst
}

// DecodeState decodes an entity state written by AppendState. Features the
// spec no longer has are dropped; new ones start empty. The result does not
// alias data.
func (t *Topology) DecodeState(data []byte) (*EntityState, error) {
	d := decoder{b: data}
	if v := d.byte(); v != stateVersion {
		return nil, corrupt(fmt.Sprintf("state version %d", v))
	}
	st := t.NewEntityState()
	st.LastEventMs = d.varint()
	n := d.uvarint()
	for i := uint64(0); i < n && d.err == nil; i++ {
		name := d.bytes()
		payload := d.bytes()
		if d.err != nil {
			break
		}
		fi, ok := t.byName[string(name)]
		if !ok {
			continue
		}
		tiles, err := t.DecodeFeature(fi, payload)
		if err != nil {
			return nil, err
		}
		st.Features[fi] = tiles
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = corrupt("trailing bytes")
	}
	if d.err != nil {
		return nil, fmt.Errorf("decode state: %w", d.err)
	}
	return st, nil
}

// decoder reads the encodings; after the first error every read returns
// zero and err stays set.
type decoder struct {
	b   []byte
	err error
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
