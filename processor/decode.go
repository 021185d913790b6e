package processor

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/featurestream/featurestream/topology"
)

// Reasons a record is rejected; they label metrics and, with the DLQ, its
// reason header.
const (
	ReasonDecode   = "decode"    // the value is not valid JSON/Avro
	ReasonNoKey    = "no_key"    // no entity id
	ReasonNoTime   = "no_time"   // no usable event time
	ReasonBadValue = "bad_value" // a field has a wrong type or is out of range
	ReasonLate     = "late"      // behind the partition's watermark
	ReasonFuture   = "future"    // further ahead of the clock than max_future
)

// MaxKeyBytes bounds an entity id.
const MaxKeyBytes = 1024

// RejectError says why a record cannot be applied.
type RejectError struct {
	Reason string
	Err    error
}

func (e *RejectError) Error() string { return e.Reason + ": " + e.Err.Error() }
func (e *RejectError) Unwrap() error { return e.Err }

func reject(reason string, format string, args ...any) error {
	return &RejectError{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// Decoder turns input records into events. It is safe for concurrent use.
type Decoder struct {
	format   string
	keyPath  []string
	timePath []string
	// raw reads Avro records without Confluent framing, and framed ones
	// when byID is empty; byID holds the writer schema of each Confluent
	// schema id in source.schemas.
	raw      *avroSchema
	byID     map[uint32]*avroSchema
	readers  sync.Pool
	scanners sync.Pool // *jsonScanner
	// only, when not nil, are the top-level JSON fields decoded into
	// Event.Fields (project).
	only map[string]struct{}
	// slotIndex, when not nil, gives the top-level JSON fields decoded
	// into Event.Slots their slot, instead of Event.Fields: the
	// topology's (topology.SlotFields) first, then the key's and the
	// time's, at keySlot and timeSlot.
	slotIndex         map[string]int
	keySlot, timeSlot int
}

// avroSchema is one writer schema.
type avroSchema struct {
	schema avro.Schema
	// required are the record's fields that cannot be null: hamba's
	// decoder can stop early on bad input without an error, so a nil
	// required field marks a record that did not decode.
	required []string
}

// NewDecoder builds the decoder for a spec's source; Avro schema paths are
// relative to the spec file.
func NewDecoder(spec *topology.Spec) (*Decoder, error) { return newDecoder(spec, nil) }

// newDecoder is NewDecoder; with top, JSON decoding leaves out of
// Event.Fields the top-level fields top's features never read (and the
// source's key and time need not): their values are checked as JSON and
// skipped, without interning, boxing or storing them. Avro records are
// decoded whole.
func newDecoder(spec *topology.Spec, top *topology.Topology) (*Decoder, error) {
	src := spec.Source
	d := &Decoder{format: src.Format}
	if src.Key != "" {
		d.keyPath = strings.Split(src.Key, ".")
	}
	if src.Time != "" {
		d.timePath = strings.Split(src.Time, ".")
	}
	if top != nil {
		d.only = projection(top, d.keyPath, d.timePath)
		d.slotIndex, d.keySlot, d.timeSlot = slotIndex(top, src.Format, d.keyPath, d.timePath)
	}
	intern := newInternTable()
	d.scanners.New = func() any {
		s := newJSONScanner(intern)
		s.only, s.slots = d.only, d.slotIndex
		return s
	}
	if src.Format != "avro" {
		return d, nil
	}
	d.readers.New = func() any { return avro.NewReader(nil, 0) }
	var err error
	if src.Schema != "" {
		if d.raw, err = loadAvroSchema(spec, "source.schema", src.Schema); err != nil {
			return nil, err
		}
	}
	if len(src.Schemas) > 0 {
		d.byID = make(map[uint32]*avroSchema, len(src.Schemas))
		for id, file := range src.Schemas {
			if d.byID[uint32(id)], err = loadAvroSchema(spec, fmt.Sprintf("source.schemas.%d", id), file); err != nil {
				return nil, err
			}
		}
	}
	return d, nil
}

// projection is the set of top-level fields to decode for top's features,
// with the first part of the key and time paths, or nil for all of them (an
// expression reads the whole event).
func projection(top *topology.Topology, keyPath, timePath []string) map[string]struct{} {
	names, all := top.EventFields()
	if all {
		return nil
	}
	only := make(map[string]struct{}, len(names)+2)
	for _, name := range names {
		only[name] = struct{}{}
	}
	for _, path := range [][]string{keyPath, timePath} {
		if len(path) > 0 {
			only[path[0]] = struct{}{}
		}
	}
	return only
}

// slotIndex numbers the JSON fields to decode into Event.Slots for top:
// its slot fields, then the key's and the time's. It returns nil when
// top's features need Event.Fields, the format is not JSON, or the key or
// time is nested.
func slotIndex(top *topology.Topology, format string, keyPath, timePath []string) (index map[string]int, keySlot, timeSlot int) {
	names, ok := top.SlotFields()
	if !ok || format == "avro" || len(keyPath) > 1 || len(timePath) > 1 {
		return nil, 0, 0
	}
	index = make(map[string]int, len(names)+2)
	for i, name := range names {
		index[name] = i
	}
	slot := func(path []string) int {
		if len(path) == 0 {
			return -1
		}
		if i, ok := index[path[0]]; ok {
			return i
		}
		index[path[0]] = len(index)
		return len(index) - 1
	}
	return index, slot(keyPath), slot(timePath)
}

// loadAvroSchema reads the record schema at path (relative to the spec)
// given by the spec's key.
func loadAvroSchema(spec *topology.Spec, key, path string) (*avroSchema, error) {
	if !filepath.IsAbs(path) {
		path = filepath.Join(filepath.Dir(spec.File), path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", spec.File, key, err)
	}
	schema, err := avro.Parse(string(data))
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %s is not a valid Avro schema: %w", spec.File, key, path, err)
	}
	rs, ok := schema.(*avro.RecordSchema)
	if !ok {
		return nil, fmt.Errorf("%s: %s: %s: want a record schema, got %s", spec.File, key, path, schema.Type())
	}
	s := &avroSchema{schema: schema}
	for _, f := range rs.Fields() {
		if !nullable(f.Type()) {
			s.required = append(s.required, f.Name())
		}
	}
	return s, nil
}

// Decode fills ev from rec. A JSON decode reuses ev.Fields (cleared) or
// ev.Slots when they are not nil, so a caller decoding many records can keep
// one event; values from an earlier record must not be retained through
// them. ev.Key and strings in ev.Slots may share memory with rec: what keeps
// one beyond the record's use copies it.
func (d *Decoder) Decode(rec *kgo.Record, ev *topology.Event) error {
	var (
		slotKey, slotTime *topology.Slot
		err               error
	)
	if d.slotIndex != nil {
		if len(rec.Value) == 0 {
			return &RejectError{Reason: ReasonDecode, Err: errEmpty}
		}
		ev.Fields = nil
		ev.Slots = slices.Grow(ev.Slots[:0], len(d.slotIndex))[:len(d.slotIndex)]
		s := d.scanners.Get().(*jsonScanner)
		err = s.decodeSlots(rec.Value, ev.Slots)
		d.scanners.Put(s)
		if err != nil {
			return &RejectError{Reason: ReasonDecode, Err: err}
		}
		if d.keyPath != nil {
			slotKey = &ev.Slots[d.keySlot]
		}
		if d.timePath != nil {
			slotTime = &ev.Slots[d.timeSlot]
		}
	} else {
		fields, err := d.decodeValue(rec.Value, ev.Fields)
		if err != nil {
			return &RejectError{Reason: ReasonDecode, Err: err}
		}
		ev.Fields, ev.Slots = fields, nil
	}

	// A string or number in a slot is read as it is, not boxed first.
	switch {
	case d.keyPath == nil:
		if len(rec.Key) == 0 {
			return reject(ReasonNoKey, "record has no key")
		}
		ev.Key = unsafe.String(&rec.Key[0], len(rec.Key))
	case slotKey != nil && slotKey.Kind == topology.SlotString:
		ev.Key = slotKey.Str
	case slotKey != nil:
		ev.Key, err = d.keyOf(slotKey.Value())
	default:
		ev.Key, err = d.keyOf(ev.Lookup(d.keyPath))
	}
	switch {
	case err != nil:
		return err
	case ev.Key == "":
		return reject(ReasonNoKey, "field %s is empty", strings.Join(d.keyPath, "."))
	case len(ev.Key) > MaxKeyBytes:
		return reject(ReasonNoKey, "entity id of %d bytes, at most %d", len(ev.Key), MaxKeyBytes)
	}

	switch {
	case d.timePath == nil:
		ev.TimeMs = rec.Timestamp.UnixMilli()
		return nil
	case slotTime != nil && slotTime.Kind == topology.SlotNumber:
		if ev.TimeMs, err = epochMs(slotTime.Num); err != nil {
			err = d.badTime(err)
		}
	case slotTime != nil:
		ev.TimeMs, err = d.timeOf(slotTime.Value())
	default:
		ev.TimeMs, err = d.timeOf(ev.Lookup(d.timePath))
	}
	return err
}

// keyOf is the entity id in the key field's value v.
func (d *Decoder) keyOf(v any, found bool) (string, error) {
	if !found {
		return "", reject(ReasonNoKey, "no field %s", strings.Join(d.keyPath, "."))
	}
	switch k := v.(type) {
	case string:
		return k, nil
	case float64:
		if k != math.Trunc(k) || math.Abs(k) > 1<<53 {
			return "", reject(ReasonNoKey, "field %s: %v is not an integer id", strings.Join(d.keyPath, "."), k)
		}
		return strconv.FormatInt(int64(k), 10), nil
	case int64:
		return strconv.FormatInt(k, 10), nil
	case int:
		return strconv.Itoa(k), nil
	case int32:
		return strconv.FormatInt(int64(k), 10), nil
	}
	return "", reject(ReasonNoKey, "field %s: want a string or integer id, got %T", strings.Join(d.keyPath, "."), v)
}

// timeOf is the event time in the time field's value v.
func (d *Decoder) timeOf(v any, found bool) (int64, error) {
	if !found {
		return 0, reject(ReasonNoTime, "no field %s", strings.Join(d.timePath, "."))
	}
	ms, err := eventTimeMs(v)
	if err != nil {
		return 0, d.badTime(err)
	}
	return ms, nil
}

// badTime rejects a time field whose value is not a time.
func (d *Decoder) badTime(err error) error {
	return reject(ReasonNoTime, "field %s: %v", strings.Join(d.timePath, "."), err)
}

// eventTimeMs reads epoch milliseconds (a number or a string of digits), an
// RFC 3339 string, or an Avro timestamp.
func eventTimeMs(v any) (int64, error) {
	switch t := v.(type) {
	case float64:
		return epochMs(t)
	case int64:
		return t, nil
	case int:
		return int64(t), nil
	case int32:
		return int64(t), nil
	case time.Time:
		return t.UnixMilli(), nil
	case string:
		if ms, err := strconv.ParseInt(t, 10, 64); err == nil {
			return ms, nil
		}
		ts, err := time.Parse(time.RFC3339Nano, t)
		if err != nil {
			return 0, fmt.Errorf("%q is neither epoch milliseconds nor RFC 3339", t)
		}
		return ts.UnixMilli(), nil
	}
	return 0, fmt.Errorf("want epoch milliseconds or RFC 3339, got %T", v)
}

// epochMs reads epoch milliseconds from a JSON number.
func epochMs(t float64) (int64, error) {
	if math.IsNaN(t) || math.IsInf(t, 0) || math.Abs(t) > 1<<53 {
		return 0, fmt.Errorf("%v is not epoch milliseconds", t)
	}
	return int64(t), nil
}

var errEmpty = errors.New("empty value")

func (d *Decoder) decodeValue(b []byte, m map[string]any) (map[string]any, error) {
	if len(b) == 0 {
		return nil, errEmpty
	}
	if d.format != "avro" {
		if m == nil {
			m = make(map[string]any, 8)
		}
		s := d.scanners.Get().(*jsonScanner)
		err := s.decodeObject(b, m)
		d.scanners.Put(s)
		if err != nil {
			return nil, err
		}
		return m, nil
	}
	// Confluent wire framing: magic byte 0 and a 4-byte schema id.
	framed := len(b) > 5 && b[0] == 0
	if d.byID != nil {
		if framed {
			id := binary.BigEndian.Uint32(b[1:5])
			if s, ok := d.byID[id]; ok {
				return d.decodeAvro(s, b[5:])
			}
			if d.raw == nil {
				return nil, fmt.Errorf("avro: schema id %d is not in source.schemas (add its writer schema there)", id)
			}
		} else if d.raw == nil {
			return nil, errors.New("avro: no Confluent wire framing (magic byte 0, schema id), and no source.schema for unframed records")
		}
	}
	// One schema for all: a raw record may start with 0 too, so framing is
	// tried first and raw second.
	if framed {
		if m, err := d.decodeAvro(d.raw, b[5:]); err == nil {
			return m, nil
		}
	}
	return d.decodeAvro(d.raw, b)
}

func (d *Decoder) decodeAvro(s *avroSchema, b []byte) (map[string]any, error) {
	r := d.readers.Get().(*avro.Reader)
	defer d.readers.Put(r)
	r.Error = nil
	r.Reset(b)
	var m map[string]any
	r.ReadVal(s.schema, &m)
	if r.Error != nil {
		return nil, fmt.Errorf("avro: %w", r.Error)
	}
	if r.Peek(); r.Error == nil {
		return nil, errors.New("avro: trailing bytes after the record")
	}
	for _, f := range s.required {
		if m[f] == nil {
			return nil, fmt.Errorf("avro: field %s did not decode", f)
		}
	}
	return m, nil
}

func nullable(s avro.Schema) bool {
	switch t := s.(type) {
	case *avro.NullSchema:
		return true
	case *avro.UnionSchema:
		return t.Nullable()
	}
	return false
}
