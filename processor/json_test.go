package processor

import (
	"encoding/json"
	"maps"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/featurestream/featurestream/topology"
)

// jsonCases are inputs where the scanner must agree with encoding/json.
var jsonCases = []string{
	`{}`, ` { } `, `{"a":1}`, `{"a":-0}`, `{"a":-0.0}`, `{"a":-12.5e-3}`, `{"a":1E+2}`, `{"a":123456789012345678901234}`,
	`{"a":"x","a":"y"}`, `{"a":"\u00e9\n\"q\"","b":"é"}`, `{"a\u0062":1}`, `{"a":"\ud800"}`,
	`{"a":"` + "\xff\xfe" + `"}`, `{"a":[1,"2",[true,false,null],{}],"b":{"c":{"d":[]}}}`,
	`{"user_id":"u1","ts":1764133200000,"type":"view","price":19.99}`,
	`{"b":"plain","a":1,"c":"\u00e9","d":"é","e":[1,{"f":"g"}],"f":{"a":2},"g":-1.5e3,"h":null,"i":true}`,
	`{"b":"q\"uo\\te\u00e9\/","c":{"x":"]}[{","y":[1,{"z":"\"]"}],"w":"\\"},"a":3}`, `{"b":[],"c":{},"d":[[[]]],"a":[{"b":1}]}`,
	// rejected
	``, `null`, `[]`, `1`, `"s"`, `{`, `{"a"}`, `{"a":}`, `{"a":1,}`, `{,}`, `{"a":01}`, `{"a":1.}`,
	`{"a":.5}`, `{"a":1e}`, `{"a":-}`, `{"a":+1}`, `{"a":NaN}`, `{"a":Infinity}`, `{"a":1e400}`,
	`{"a":tru}`, `{"a":nul}`, `{"a":"x` + "\x01" + `"}`, `{"a":"\x"}`, `{"a":"\u12"}`, `{"a":1} x`,
	`{"a":1}{}`, `{'a':1}`, `{"a":[1,]}`, `{"a":[,1]}`, `{"a" 1}`, `{"a":"unterminated}`,
	// rejected in a skipped field
	`{"b":"x` + "\x01" + `"}`, `{"b":"\x"}`, `{"b":"\u12"}`, `{"b":01}`, `{"b":[1,]}`, `{"b":tru}`, `{"b":"unterminated}`,
	`{"b":"ok","a":1,"b":{"c":}}`, `{"b":"x" "a":1}`,
}

// projected are the fields a projecting scanner (newProjectedScanner)
// keeps in these tests; the cases' other fields are skipped.
var projected = map[string]struct{}{"a": {}, "ab": {}, "user_id": {}, "ts": {}}

func newProjectedScanner() *jsonScanner {
	s := newJSONScanner(newInternTable())
	s.only = projected
	return s
}

// slotted numbers the projected fields for a slot scanner
// (newSlotScanner), which decodes them into slots.
var slotted = map[string]int{"a": 0, "ab": 1, "user_id": 2, "ts": 3}

func newSlotScanner() *jsonScanner {
	s := newJSONScanner(newInternTable())
	s.slots = slotted
	return s
}

// slotValues are the present values of slots, by name.
func slotValues(index map[string]int, slots []topology.Slot) map[string]any {
	m := map[string]any{}
	for name, i := range index {
		if v, ok := slots[i].Value(); ok {
			m[name] = v
		}
	}
	return m
}

// checkJSON checks that s decodes in as encoding/json does, and that proj,
// which keeps only the projected fields, and slot, which decodes them into
// slots, accept and reject the same and give the same values for the fields
// they keep.
func checkJSON(t *testing.T, s, proj, slot *jsonScanner, in []byte) {
	t.Helper()
	var want map[string]any
	wantErr := json.Unmarshal(in, &want)
	if wantErr == nil && want == nil {
		wantErr = errJSONNotObject // null
	}
	got := map[string]any{"stale": true}
	err := s.decodeObject(in, got)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("%q: err = %v, encoding/json says %v", in, err, wantErr)
	}
	if err == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("%q: got %#v, encoding/json gives %#v", in, got, want)
	}
	got = map[string]any{"stale": true}
	err = proj.decodeObject(in, got)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("%q projected: err = %v, encoding/json says %v", in, err, wantErr)
	}
	if err != nil {
		if slot.decodeSlots(in, make([]topology.Slot, len(slotted))) == nil {
			t.Fatalf("%q into slots: accepted, encoding/json says %v", in, wantErr)
		}
		return
	}
	for k := range want {
		if _, ok := projected[k]; !ok {
			delete(want, k)
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%q projected: got %#v, want %#v", in, got, want)
	}
	slots := slices.Repeat([]topology.Slot{{Kind: topology.SlotString, Str: "stale"}}, len(slotted))
	if err := slot.decodeSlots(in, slots); err != nil {
		t.Fatalf("%q into slots: err = %v, encoding/json says nil", in, err)
	}
	maps.DeleteFunc(want, func(_ string, v any) bool { return v == nil }) // null reads as absent
	if got := slotValues(slotted, slots); !reflect.DeepEqual(got, want) {
		t.Fatalf("%q into slots: got %#v, want %#v", in, got, want)
	}
}

func TestJSONScannerMatchesEncodingJSON(t *testing.T) {
	s, proj, slot := newJSONScanner(newInternTable()), newProjectedScanner(), newSlotScanner()
	for _, c := range jsonCases {
		checkJSON(t, s, proj, slot, []byte(c))
	}
	// The same shape again, with the positional name cache warm, and a
	// name that changes at the cached position.
	for _, c := range []string{`{"ab":1,"c":2}`, `{"ab":1,"c":2}`, `{"ab":1,"cd":2}`, `{"a":1,"c":2}`, `{"a\"":1}`, `{"a\"":1}`} {
		checkJSON(t, s, proj, slot, []byte(c))
	}
	for _, field := range []string{"a", "b"} { // b is skipped by proj
		deep := []byte(`{"` + field + `":` + strings.Repeat(`{"a":`, maxJSONDepth) + "1" + strings.Repeat("}", maxJSONDepth+1))
		for _, sc := range []*jsonScanner{s, proj} {
			if err := sc.decodeObject(deep, map[string]any{}); err == nil {
				t.Fatalf("nesting beyond the limit in field %s was accepted", field)
			}
		}
		if err := slot.decodeSlots(deep, make([]topology.Slot, len(slotted))); err == nil {
			t.Fatalf("nesting beyond the limit in field %s was accepted into slots", field)
		}
		ok := []byte(`{"` + field + `":` + strings.Repeat(`{"a":`, maxJSONDepth-2) + "1" + strings.Repeat("}", maxJSONDepth-1))
		for _, sc := range []*jsonScanner{s, proj} {
			if err := sc.decodeObject(ok, map[string]any{}); err != nil {
				t.Fatalf("nesting at the limit in field %s: %v", field, err)
			}
		}
		if err := slot.decodeSlots(ok, make([]topology.Slot, len(slotted))); err != nil {
			t.Fatalf("nesting at the limit in field %s, into slots: %v", field, err)
		}
	}
}

func TestJSONScannerInterns(t *testing.T) {
	s := newJSONScanner(newInternTable())
	m := map[string]any{}
	in := []byte(`{"type":"view","item":"i1"}`)
	allocs := testing.AllocsPerRun(100, func() {
		if err := s.decodeObject(in, m); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("a repeated event allocates %.0f times, want 0", allocs)
	}
	long := strings.Repeat("x", internMaxLen+1)
	if err := s.decodeObject([]byte(`{"a":"`+long+`"}`), m); err != nil || m["a"] != long {
		t.Fatalf("long string: %v %v", err, m["a"])
	}
}

// FuzzJSONScanner: the scanner accepts exactly what encoding/json accepts
// as an object and decodes it to the same value.
func FuzzJSONScanner(f *testing.F) {
	for _, c := range jsonCases {
		f.Add([]byte(c))
	}
	s, proj, slot := newJSONScanner(newInternTable()), newProjectedScanner(), newSlotScanner()
	f.Fuzz(func(t *testing.T, in []byte) {
		checkJSON(t, s, proj, slot, in)
	})
}

// TestJSONNumbersExact: the scanner's fast path for short decimals gives
// bit for bit what strconv (and so encoding/json) gives, sign of zero
// included, for chosen edge cases and a million random decimals.
func TestJSONNumbersExact(t *testing.T) {
	s := newJSONScanner(newInternTable())
	check := func(num string) {
		t.Helper()
		want, err := strconv.ParseFloat(num, 64)
		if err != nil {
			t.Fatalf("%s: %v", num, err)
		}
		m := map[string]any{}
		if err := s.decodeObject([]byte(`{"n":`+num+`}`), m); err != nil {
			t.Fatalf("%s: %v", num, err)
		}
		if got := m["n"].(float64); math.Float64bits(got) != math.Float64bits(want) {
			t.Fatalf("%s: got %v (%#x), want %v (%#x)", num, got, math.Float64bits(got), want, math.Float64bits(want))
		}
	}
	for _, num := range []string{
		"0", "-0", "0.0", "-0.0", "-0.000", "0.1", "0.2", "0.3", "19.99", "-19.99", "1.5", "100.25",
		"123456789012345", "-123456789012345", "12345678901234.5", "0.000000000000001", "0.123456789012345",
		"999999999999999", "99999999999999.9", "9007199254740993", "0.30000000000000004", "1234567890123456",
		"1.7976931348623157", "4.9406564584124654",
	} {
		check(num)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 1_000_000 {
		intDigits, fracDigits := 1+rng.IntN(15), rng.IntN(16)
		b := make([]byte, 0, 34)
		if rng.IntN(2) == 0 {
			b = append(b, '-')
		}
		b = append(b, byte('1'+rng.IntN(9)))
		for range intDigits - 1 {
			b = append(b, byte('0'+rng.IntN(10)))
		}
		if fracDigits > 0 {
			b = append(b, '.')
			for range fracDigits {
				b = append(b, byte('0'+rng.IntN(10)))
			}
		}
		check(string(b))
	}
}
