package client

import (
	"errors"
	"fmt"
	"math"
	"time"
	"unsafe"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// A GetFeaturesResponse decodes with the generated code into one Go value
// per message: for 100 entities × 4 features, some 2,000 allocations, which
// cost a caller about as much CPU as the server spends answering. This
// file decodes it instead into a few flat slices whose strings point into
// the response's bytes. Unknown fields are skipped, so a newer server's
// additions do not break it; a test checks it against the generated code.

// The field numbers of features.proto.
const (
	respResults, respAsOf, respColumns                   = 1, 2, 3
	entID, entValues, entLastEvent                       = 1, 2, 3
	valName, valInt, valDouble, valString, valStringList = 1, 2, 3, 4, 5
	valStatus, valWindowStart, valWindowEnd              = 6, 7, 8
	valDoubleList, valItemCounts, valApproximate         = 9, 10, 11
	colName, colWindowStart, colWindowEnd                = 1, 2, 3
	tsSeconds, tsNanos                                   = 1, 2
	listValues, countsItems, itemValue, itemCount        = 1, 1, 1, 2
)

// The oneof case of a value.
const (
	kindNone uint8 = iota
	kindInt
	kindDouble
	kindString
	kindStrings
	kindDoubles
	kindCounts
)

// stamp is a decoded Timestamp; set is false when the field was absent.
type stamp struct {
	sec   int64
	nanos int32
	set   bool
}

func (s stamp) time() time.Time { return time.Unix(s.sec, int64(s.nanos)).UTC() }

type column struct {
	name       string
	start, end stamp
}

type entityRec struct {
	id        string
	lastEvent stamp
	// values[first:first+n] are the entity's.
	first, n int
}

type valueRec struct {
	name       string
	status     int32
	kind       uint8
	approx     bool
	i          int64
	f          float64
	s          string
	start, end stamp
	// For list kinds, items [first, first+n) of the list of that kind.
	first, n int
}

// decoded is a GetFeaturesResponse.
type decoded struct {
	buf      []byte // the response; strings point into it
	asOf     stamp
	columns  []column
	entities []entityRec
	values   []valueRec
	strs     []string
	floats   []float64
	counts   []ItemCount
}

var errTruncated = errors.New("truncated or malformed message")

// view returns b as a string without copying; b must never change.
func view(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// fields calls fn for each field of the message in b, with the field's
// number, type and, for varint and fixed64 fields, its value, and for bytes
// fields its contents. Other wire types are skipped.
func fields(b []byte, fn func(num protowire.Number, typ protowire.Type, v uint64, data []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errTruncated
		}
		b = b[n:]
		var (
			v    uint64
			data []byte
		)
		switch typ {
		case protowire.VarintType:
			v, n = protowire.ConsumeVarint(b)
		case protowire.Fixed64Type:
			v, n = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			data, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return errTruncated
			}
			b = b[n:]
			continue
		}
		if n < 0 {
			return errTruncated
		}
		b = b[n:]
		if err := fn(num, typ, v, data); err != nil {
			return err
		}
	}
	return nil
}

// mergeStamp decodes a Timestamp into s. Like protobuf, a message field
// that occurs twice merges: the second sets only the fields it has.
func mergeStamp(s *stamp, b []byte) error {
	s.set = true
	return fields(b, func(num protowire.Number, typ protowire.Type, v uint64, _ []byte) error {
		switch {
		case num == tsSeconds && typ == protowire.VarintType:
			s.sec = int64(v)
		case num == tsNanos && typ == protowire.VarintType:
			s.nanos = int32(v)
		}
		return nil
	})
}

// decodeResponse decodes a GetFeaturesResponse from buf, which it keeps.
func decodeResponse(buf []byte) (*decoded, error) {
	d := &decoded{buf: buf}
	// Size the slices first: growing them by appending cost more than
	// this second look at the tags.
	var nEnt, nVal int
	_ = fields(buf, func(num protowire.Number, typ protowire.Type, _ uint64, data []byte) error {
		if num == respResults && typ == protowire.BytesType {
			nEnt++
			_ = fields(data, func(num protowire.Number, typ protowire.Type, _ uint64, _ []byte) error {
				if num == entValues && typ == protowire.BytesType {
					nVal++
				}
				return nil
			})
		}
		return nil
	})
	d.entities, d.values = make([]entityRec, 0, nEnt), make([]valueRec, 0, nVal)
	err := fields(buf, func(num protowire.Number, typ protowire.Type, _ uint64, data []byte) error {
		if typ != protowire.BytesType {
			return nil
		}
		var err error
		switch num {
		case respResults:
			err = d.entity(data)
		case respAsOf:
			err = mergeStamp(&d.asOf, data)
		case respColumns:
			var c column
			err = fields(data, func(num protowire.Number, typ protowire.Type, _ uint64, data []byte) error {
				var err error
				switch {
				case typ != protowire.BytesType:
				case num == colName:
					c.name = view(data)
				case num == colWindowStart:
					err = mergeStamp(&c.start, data)
				case num == colWindowEnd:
					err = mergeStamp(&c.end, data)
				}
				return err
			})
			d.columns = append(d.columns, c)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("decode GetFeaturesResponse: %w", err)
	}
	return d, nil
}

func (d *decoded) entity(b []byte) error {
	e := entityRec{first: len(d.values)}
	err := fields(b, func(num protowire.Number, typ protowire.Type, _ uint64, data []byte) error {
		var err error
		switch {
		case typ != protowire.BytesType:
		case num == entID:
			e.id = view(data)
		case num == entValues:
			err = d.value(data)
			e.n++
		case num == entLastEvent:
			err = mergeStamp(&e.lastEvent, data)
		}
		return err
	})
	d.entities = append(d.entities, e)
	return err
}

func (d *decoded) value(b []byte) error {
	var v valueRec
	err := fields(b, func(num protowire.Number, typ protowire.Type, x uint64, data []byte) error {
		var err error
		switch {
		case num == valStatus && typ == protowire.VarintType:
			v.status = int32(x)
		case num == valInt && typ == protowire.VarintType:
			v.kind, v.i = kindInt, int64(x)
		case num == valDouble && typ == protowire.Fixed64Type:
			v.kind, v.f = kindDouble, math.Float64frombits(x)
		case num == valApproximate && typ == protowire.VarintType:
			v.approx = x != 0
		case typ != protowire.BytesType:
		case num == valName:
			v.name = view(data)
		case num == valString:
			v.kind, v.s = kindString, view(data)
		case num == valStringList:
			if v.kind != kindStrings {
				// A list occurring twice merges, as in protobuf; this
				// value's items are the last appended, so they are
				// contiguous.
				v.kind, v.first = kindStrings, len(d.strs)
			}
			err = fields(data, func(num protowire.Number, typ protowire.Type, _ uint64, data []byte) error {
				if num == listValues && typ == protowire.BytesType {
					d.strs = append(d.strs, view(data))
				}
				return nil
			})
			v.n = len(d.strs) - v.first
		case num == valDoubleList:
			if v.kind != kindDoubles {
				v.kind, v.first = kindDoubles, len(d.floats)
			}
			err = fields(data, func(num protowire.Number, typ protowire.Type, x uint64, data []byte) error {
				if num != listValues {
					return nil
				}
				switch typ {
				case protowire.Fixed64Type:
					d.floats = append(d.floats, math.Float64frombits(x))
				case protowire.BytesType: // packed, as proto3 sends it
					for len(data) > 0 {
						f, n := protowire.ConsumeFixed64(data)
						if n < 0 {
							return errTruncated
						}
						d.floats = append(d.floats, math.Float64frombits(f))
						data = data[n:]
					}
				}
				return nil
			})
			v.n = len(d.floats) - v.first
		case num == valItemCounts:
			if v.kind != kindCounts {
				v.kind, v.first = kindCounts, len(d.counts)
			}
			err = fields(data, func(num protowire.Number, typ protowire.Type, _ uint64, data []byte) error {
				if num != countsItems || typ != protowire.BytesType {
					return nil
				}
				var it ItemCount
				err := fields(data, func(num protowire.Number, typ protowire.Type, x uint64, data []byte) error {
					switch {
					case num == itemValue && typ == protowire.BytesType:
						it.Value = view(data)
					case num == itemCount && typ == protowire.VarintType:
						it.Count = int64(x)
					}
					return nil
				})
				d.counts = append(d.counts, it)
				return err
			})
			v.n = len(d.counts) - v.first
		case num == valWindowStart:
			err = mergeStamp(&v.start, data)
		case num == valWindowEnd:
			err = mergeStamp(&v.end, data)
		}
		return err
	})
	d.values = append(d.values, v)
	return err
}

// rawResponse receives a response's bytes from codec.
type rawResponse struct{ buf []byte }

// codec is gRPC's proto codec, except that a *rawResponse receives the
// message's bytes undecoded.
type codec struct{}

func (codec) Name() string { return "proto" }

func (codec) Marshal(v any) (mem.BufferSlice, error) {
	return encoding.GetCodecV2("proto").Marshal(v)
}

func (codec) Unmarshal(data mem.BufferSlice, v any) error {
	if r, ok := v.(*rawResponse); ok {
		// Materialize copies: the response owns its bytes.
		r.buf = data.Materialize()
		return nil
	}
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("featurestream client: cannot decode into %T", v)
	}
	return proto.Unmarshal(data.Materialize(), m)
}
