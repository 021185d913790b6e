package sinks

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"unsafe"

	"github.com/featurestream/featurestream/topology"
)

// The key layout (decision 0023). An entity is one Redis string at
// EntityKey(app, id), its value:
//
//	byte     valueLayout
//	byte     length of the generation, then the generation
//	8 bytes  version, big-endian
//	varint   when the writer stored it, epoch ms by its clock
//	uvarint  the partition that owns the entity
//	varint   horizon, epoch ms (math.MinInt64: none)
//	...      the state, as topology.AppendState encodes it (the changelog's value)
//
// The first three parts are the write script's compare (writeScript). A
// value of another layout reads as another generation's, so a later
// layout replaces it on its entity's next write.
const valueLayout = 1

// maxGenerationLen is the longest generation the layout holds.
const maxGenerationLen = math.MaxUint8

// genPrefix is what every value of generation gen starts with: the write
// script's ARGV[1].
func genPrefix(gen string) string {
	return string([]byte{valueLayout, byte(len(gen))}) + gen
}

// appendValueHead appends everything of r's value but its state.
func appendValueHead(dst []byte, r *Record, writtenMs int64) []byte {
	dst = append(dst, valueLayout, byte(len(r.Generation)))
	dst = append(dst, r.Generation...)
	dst = binary.BigEndian.AppendUint64(dst, r.Version)
	dst = binary.AppendVarint(dst, writtenMs)
	dst = binary.AppendUvarint(dst, uint64(r.Partition)) // not negative: Write checks
	return binary.AppendVarint(dst, r.HorizonMs)
}

// AppendValue appends the value Write stores for r at writtenMs, with
// r.Encoded as its state, as it is: for tools that load Redis themselves,
// and tests that store what another writer would. r.Generation must be at
// most 255 bytes and r.Partition not negative, as Write checks.
func AppendValue(dst []byte, r *Record, writtenMs int64) []byte {
	return append(appendValueHead(dst, r, writtenMs), r.Encoded...)
}

// ValueVersion returns the generation and version of a stored value v, as
// the write script compares them; ok is false for a value of another
// layout, or too short for one.
func ValueVersion(v string) (generation string, version uint64, ok bool) {
	if len(v) < 2 || v[0] != valueLayout || len(v) < 2+int(v[1])+8 {
		return "", 0, false
	}
	gl := int(v[1])
	return v[2 : 2+gl], binary.BigEndian.Uint64([]byte(v[2+gl : 2+gl+8])), true
}

var (
	errNotLayout = errors.New("not a value of this layout")
	errBadVarint = errors.New("bad varint")
)

// decodeValue decodes an entity's value v into e, with the tiles of
// features (indexes into the topology's features). A feature the stored
// state lacks, or holds as another kind than the spec's, has nil tiles; a
// derived feature has empty ones.
func (s *Store) decodeValue(e *Entry, entity string, features []int, v string) error {
	tiles := e.Tiles[:0]
	*e = Entry{}
	// The decoding only reads v and keeps nothing of it but the
	// generation, a substring.
	b := unsafe.Slice(unsafe.StringData(v), len(v))
	fail := func(what string, err error) error {
		return fmt.Errorf("entity %q: %s: %w: %w", entity, what, ErrCorrupt, err)
	}
	gen, version, ok := ValueVersion(v)
	if !ok {
		return fail("header", errNotLayout)
	}
	e.Generation, e.Version = gen, version
	b = b[2+len(gen)+8:]
	written, n := binary.Varint(b)
	if n <= 0 {
		return fail("write time", errBadVarint)
	}
	b = b[n:]
	part, n := binary.Uvarint(b)
	if n <= 0 {
		return fail("partition", errBadVarint)
	}
	if part > math.MaxInt32 {
		return fail("partition", fmt.Errorf("%d is not an int32", part))
	}
	b = b[n:]
	horizon, n := binary.Varint(b)
	if n <= 0 {
		return fail("horizon", errBadVarint)
	}
	b = b[n:]
	e.WrittenMs, e.Partition, e.HorizonMs = written, int32(part), horizon
	// Up to 16 features' slices need no allocation.
	var small [16][]byte
	stored, last, err := s.top.StateFeatures(b, small[:0])
	if err != nil {
		return fail("state", err)
	}
	e.Found, e.LastEventMs = true, last
	for _, fi := range features {
		raw := stored[fi]
		if raw == nil {
			var none []topology.Tile
			if s.top.Features[fi].Derived() {
				none = []topology.Tile{}
			}
			tiles = append(tiles, none)
			continue
		}
		ft, err := s.top.DecodeFeature(fi, raw)
		switch {
		case errors.Is(err, topology.ErrKindChanged):
			ft = nil // the spec changed the feature: its old tiles mean nothing
		case err != nil:
			return fail("feature "+s.names[fi], err)
		case ft == nil:
			ft = []topology.Tile{}
		}
		tiles = append(tiles, ft)
	}
	e.Tiles = tiles
	return nil
}
