package processor

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"strconv"
	"sync/atomic"
	"unicode/utf8"
	"unsafe"

	"github.com/featurestream/featurestream/topology"
)

// jsonScanner decodes one JSON object into a map[string]any with the same
// result encoding/json gives, at a fraction of its cost: keys and short
// values are interned, so the field names and the few distinct values of an
// event stream ("view", "shoes") allocate once per scanner, not per event.
// Strings with escapes take encoding/json's path, so their meaning is
// exactly the standard library's. A scanner is not safe for concurrent use;
// Decoder keeps a pool of them.
type jsonScanner struct {
	b     []byte
	i     int
	depth int
	// intern holds short strings already boxed in an interface, so
	// neither the string nor its boxing allocates again. Scanners of one
	// Decoder share it.
	intern *internTable
	// keys are the previous object's field names by position: events of
	// one topic share a shape, so a name is usually found here without
	// hashing. Only names that read the same raw as unescaped are kept.
	// dest[n] is where keys[n]'s value goes (see key).
	keys []string
	dest []int
	// only, when not nil, are the top-level fields to decode into the
	// map; the values of the others are checked and skipped.
	only map[string]struct{}
	// slots, when not nil, are the top-level fields decodeSlots decodes,
	// by slot; the values of the others are checked and skipped.
	slots map[string]int
}

// skipField is the destination of a field whose value is checked and
// skipped.
const skipField = -1

const (
	// maxJSONDepth bounds nesting, so a hostile record cannot exhaust the
	// stack.
	maxJSONDepth = 1000
	// Strings up to internMaxLen bytes are interned.
	internMaxLen = 32
)

func newJSONScanner(intern *internTable) *jsonScanner {
	return &jsonScanner{intern: intern}
}

// internSlots is the size of an internTable: enough for the hot ids of a
// large shop (users and items by the ten thousand) to stay in it.
const internSlots = 1 << 15

// internTable is a direct-mapped cache of short strings boxed in an
// interface, safe for concurrent use without locks. A string that finds
// its slot taken by another replaces it, so the table follows whatever
// values are frequent now (a Zipf-distributed id stream keeps its head in
// it) and never grows. Entries are immutable; a lost race only costs an
// allocation.
type internTable struct {
	seed  maphash.Seed
	slots [internSlots]atomic.Pointer[internEntry]
}

type internEntry struct {
	s string
	v any // s, boxed
}

func newInternTable() *internTable { return &internTable{seed: maphash.MakeSeed()} }

// bytes returns raw as a boxed string.
func (t *internTable) bytes(raw []byte) any {
	slot := &t.slots[maphash.Bytes(t.seed, raw)&(internSlots-1)]
	if e := slot.Load(); e != nil && e.s == string(raw) {
		return e.v
	}
	s := string(raw)
	e := &internEntry{s: s, v: s}
	slot.Store(e)
	return e.v
}

// string returns s boxed.
func (t *internTable) string(s string) any {
	slot := &t.slots[maphash.String(t.seed, s)&(internSlots-1)]
	if e := slot.Load(); e != nil && e.s == s {
		return e.v
	}
	e := &internEntry{s: s, v: s}
	slot.Store(e)
	return e.v
}

var (
	errJSONNotObject = errors.New("json: want an object")
	errJSONDepth     = fmt.Errorf("json: nested deeper than %d", maxJSONDepth)
)

// decodeObject fills m (cleared first) from b, which must hold exactly one
// JSON object.
func (s *jsonScanner) decodeObject(b []byte, m map[string]any) error {
	clear(m)
	return s.decode(b, m, nil)
}

// decodeSlots fills slots (cleared first) with the object's fields of
// s.slots from b, which must hold exactly one JSON object. Strings without
// escapes share b's memory.
func (s *jsonScanner) decodeSlots(b []byte, slots []topology.Slot) error {
	clear(slots)
	return s.decode(b, nil, slots)
}

func (s *jsonScanner) decode(b []byte, m map[string]any, slots []topology.Slot) error {
	s.b, s.i, s.depth = b, 0, 0
	defer func() { s.b = nil }()
	s.space()
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		return errJSONNotObject
	}
	if err := s.object(m, slots); err != nil {
		return err
	}
	s.space()
	if s.i != len(s.b) {
		return s.errorf("trailing data after the object")
	}
	return nil
}

func (s *jsonScanner) errorf(format string, args ...any) error {
	return fmt.Errorf("json: offset %d: %s", s.i, fmt.Sprintf(format, args...))
}

func (s *jsonScanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// object reads an object whose '{' is at s.i into m, or at the top level
// with slots into slots.
func (s *jsonScanner) object(m map[string]any, slots []topology.Slot) error {
	if s.depth++; s.depth > maxJSONDepth {
		return errJSONDepth
	}
	s.i++ // '{'
	s.space()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		s.depth--
		return nil
	}
	top := s.depth == 1
	for n := 0; ; n++ {
		if s.i >= len(s.b) || s.b[s.i] != '"' {
			return s.errorf("want a field name")
		}
		k, dest, err := s.key(top, n)
		if err != nil {
			return err
		}
		s.space()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return s.errorf("want ':' after field %q", k)
		}
		s.i++
		switch {
		case dest == skipField:
			err = s.skipValue()
		case top && slots != nil:
			err = s.slot(&slots[dest])
		default:
			var v any
			if v, err = s.value(); err == nil {
				m[k] = v
			}
		}
		if err != nil {
			return err
		}
		s.space()
		if s.i >= len(s.b) {
			return s.errorf("unterminated object")
		}
		switch s.b[s.i] {
		case ',':
			s.i++
			s.space()
		case '}':
			s.i++
			s.depth--
			return nil
		default:
			return s.errorf("want ',' or '}' after field %q", k)
		}
	}
}

func (s *jsonScanner) array() ([]any, error) {
	if s.depth++; s.depth > maxJSONDepth {
		return nil, errJSONDepth
	}
	s.i++ // '['
	s.space()
	a := []any{}
	if s.i < len(s.b) && s.b[s.i] == ']' {
		s.i++
		s.depth--
		return a, nil
	}
	for {
		v, err := s.value()
		if err != nil {
			return nil, err
		}
		a = append(a, v)
		s.space()
		if s.i >= len(s.b) {
			return nil, s.errorf("unterminated array")
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case ']':
			s.i++
			s.depth--
			return a, nil
		default:
			return nil, s.errorf("want ',' or ']' in array")
		}
	}
}

func (s *jsonScanner) value() (any, error) {
	s.space()
	if s.i >= len(s.b) {
		return nil, s.errorf("want a value")
	}
	switch c := s.b[s.i]; {
	case c == '"':
		return s.str()
	case c == '{':
		m := make(map[string]any)
		if err := s.object(m, nil); err != nil {
			return nil, err
		}
		return m, nil
	case c == '[':
		return s.array()
	case c == '-' || c >= '0' && c <= '9':
		return s.number()
	case c == 't':
		return true, s.literal("true")
	case c == 'f':
		return false, s.literal("false")
	case c == 'n':
		return nil, s.literal("null")
	}
	return nil, s.errorf("unexpected %q", s.b[s.i])
}

func (s *jsonScanner) literal(word string) error {
	if len(s.b)-s.i < len(word) || string(s.b[s.i:s.i+len(word)]) != word {
		return s.errorf("want %s", word)
	}
	s.i += len(word)
	return nil
}

// number reads a number by JSON's grammar. One without an exponent and of
// at most 15 digits in all (1234, 19.99) is converted without strconv, by
// the exact fast path strconv itself takes: the digits as an integer are
// exact in a float64, and so is 10^k for k <= 22, so one division rounds
// correctly.
func (s *jsonScanner) number() (float64, error) {
	start := s.i
	neg := s.b[s.i] == '-'
	if neg {
		s.i++
	}
	digits := s.i
	switch {
	case s.i < len(s.b) && s.b[s.i] == '0':
		s.i++
	case s.i < len(s.b) && s.b[s.i] >= '1' && s.b[s.i] <= '9':
		for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
			s.i++
		}
	default:
		return 0, s.errorf("malformed number")
	}
	intEnd, fracStart, fracEnd := s.i, s.i, s.i
	exp := false
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		fracStart = s.i
		if !s.digits() {
			return 0, s.errorf("malformed number")
		}
		fracEnd = s.i
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		exp = true
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if !s.digits() {
			return 0, s.errorf("malformed number")
		}
	}
	if !exp && (intEnd-digits)+(fracEnd-fracStart) <= 15 {
		var n int64
		for _, c := range s.b[digits:intEnd] {
			n = n*10 + int64(c-'0')
		}
		for _, c := range s.b[fracStart:fracEnd] {
			n = n*10 + int64(c-'0')
		}
		f := float64(n) / pow10[fracEnd-fracStart]
		if neg {
			f = -f // -0 stays -0, as encoding/json reads it
		}
		return f, nil
	}
	f, err := strconv.ParseFloat(string(s.b[start:s.i]), 64)
	if err != nil {
		return 0, s.errorf("number %s out of range", s.b[start:s.i])
	}
	return f, nil
}

// pow10 are the powers of ten the number fast path divides by, all exact.
var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15}

func (s *jsonScanner) digits() bool {
	start := s.i
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
	}
	return s.i > start
}

// key reads the name of the n-th field of an object, and where its value
// goes: skipField for a top-level field not in only or slots, its slot for
// one in slots, else 0 (the map).
func (s *jsonScanner) key(top bool, n int) (string, int, error) {
	if top && n < len(s.keys) {
		k := s.keys[n]
		if end := s.i + 1 + len(k); end < len(s.b) && s.b[end] == '"' && string(s.b[s.i+1:end]) == k {
			s.i = end + 1
			return k, s.dest[n], nil
		}
	}
	v, err := s.str()
	if err != nil {
		return "", 0, err
	}
	k := v.(string)
	dest := 0
	switch {
	case !top:
	case s.slots != nil:
		slot, ok := s.slots[k]
		dest = slot
		if !ok {
			dest = skipField
		}
	case s.only != nil:
		if _, keep := s.only[k]; !keep {
			dest = skipField
		}
	}
	if top && plainASCII(k) {
		if n < len(s.keys) {
			s.keys[n], s.dest[n] = k, dest
		} else if n < 64 {
			s.keys, s.dest = append(s.keys, k), append(s.dest, dest)
		}
	}
	return k, dest, nil
}

// slot reads the value at s.i into sl, as value would but unboxed, and a
// string without escapes as a view of s.b.
func (s *jsonScanner) slot(sl *topology.Slot) error {
	s.space()
	if s.i >= len(s.b) {
		return s.errorf("want a value")
	}
	switch c := s.b[s.i]; {
	case c == '"':
		start := s.i
		plain, err := s.scanString()
		if err != nil {
			return err
		}
		if !plain {
			v, err := s.decodeEscaped(start)
			*sl = topology.Slot{Kind: topology.SlotString, Str: v}
			return err
		}
		*sl = topology.Slot{Kind: topology.SlotString, Str: unsafe.String(&s.b[start+1], s.i-start-2)}
	case c == '-' || c >= '0' && c <= '9':
		n, err := s.number()
		*sl = topology.Slot{Kind: topology.SlotNumber, Num: n}
		return err
	case c == 'n':
		*sl = topology.Slot{}
		return s.literal("null")
	default:
		v, err := s.value()
		*sl = topology.Slot{Kind: topology.SlotOther, Any: v}
		return err
	}
	return nil
}

// skipValue checks the value at s.i as value does, without building it: no
// string is copied or interned and no number boxed, so a skipped field
// costs a scan.
func (s *jsonScanner) skipValue() error {
	s.space()
	if s.i >= len(s.b) {
		return s.errorf("want a value")
	}
	switch c := s.b[s.i]; {
	case c == '"':
		return s.skipString()
	case c == '{' || c == '[':
		return s.skipContainer()
	case c == '-' || c >= '0' && c <= '9':
		_, err := s.number()
		return err
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	}
	return s.errorf("unexpected %q", s.b[s.i])
}

// skipString skips the string whose '"' is at s.i. One with escapes or
// bytes beyond ASCII is checked by encoding/json's own validator, which
// accepts exactly the strings it decodes (any byte from 0x80 up, and only
// valid escapes).
func (s *jsonScanner) skipString() error {
	start := s.i
	plain, err := s.scanString()
	if err == nil && !plain && !json.Valid(s.b[start:s.i]) {
		return fmt.Errorf("json: string at offset %d: invalid escape", start)
	}
	return err
}

// skipContainer skips the object or array whose '{' or '[' is at s.i: it
// finds the matching close, bounding the nesting as object and array do,
// and checks what it spans with encoding/json's validator. A span that
// validates is one whole value, so it ends where value would have.
func (s *jsonScanner) skipContainer() error {
	start, depth := s.i, 0
	for ; s.i < len(s.b); s.i++ {
		switch s.b[s.i] {
		case '{', '[':
			if depth++; s.depth+depth > maxJSONDepth {
				return errJSONDepth
			}
		case '}', ']':
			if depth--; depth == 0 {
				s.i++
				if !json.Valid(s.b[start:s.i]) {
					return fmt.Errorf("json: value at offset %d: not valid JSON", start)
				}
				return nil
			}
		case '"':
			for s.i++; s.i < len(s.b) && s.b[s.i] != '"'; s.i++ {
				if s.b[s.i] == '\\' {
					s.i++
				}
			}
		}
	}
	return s.errorf("unterminated value")
}

// plainASCII reports whether a name needs no escaping: one read back from
// the raw bytes must mean the same as the bytes.
func plainASCII(k string) bool {
	for i := 0; i < len(k); i++ {
		if c := k[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// str reads a string whose '"' is at s.i, boxed.
func (s *jsonScanner) str() (any, error) {
	start := s.i
	plain, err := s.scanString()
	if err != nil {
		return nil, err
	}
	if !plain {
		out, err := s.decodeEscaped(start)
		if err != nil {
			return nil, err
		}
		return s.interned(out), nil
	}
	raw := s.b[start+1 : s.i-1]
	if len(raw) > internMaxLen {
		return string(raw), nil
	}
	return s.intern.bytes(raw), nil
}

// decodeEscaped decodes the string from start to s.i, which has escapes or
// bytes beyond ASCII, by encoding/json's own rules (and its replacement of
// invalid UTF-8).
func (s *jsonScanner) decodeEscaped(start int) (string, error) {
	var out string
	if err := json.Unmarshal(s.b[start:s.i], &out); err != nil {
		return "", fmt.Errorf("json: string at offset %d: %w", start, err)
	}
	return out, nil
}

// scanString moves s.i past the string whose '"' is at s.i and reports
// whether it is plain ASCII without escapes, which reads the same raw as
// decoded.
func (s *jsonScanner) scanString() (plain bool, err error) {
	plain = true
	for s.i++; s.i < len(s.b); s.i++ {
		switch c := s.b[s.i]; {
		case c == '"':
			s.i++
			return plain, nil
		case c == '\\':
			plain = false
			s.i++ // the escaped byte: '"' or '\\' do not end the string
		case c < 0x20:
			return false, s.errorf("control character in string")
		case c >= utf8.RuneSelf:
			plain = false
		}
	}
	return false, s.errorf("unterminated string")
}

func (s *jsonScanner) interned(v string) any {
	if len(v) > internMaxLen {
		return v
	}
	return s.intern.string(v)
}
