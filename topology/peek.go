package topology

import "fmt"

// PeekLastEventMs returns the last event time of an entity state encoded by
// AppendState without decoding the rest, for restores that only need the
// watermark.
func PeekLastEventMs(data []byte) (int64, error) {
	d := decoder{b: data}
	if v := d.byte(); v != stateVersion {
		return 0, corrupt(fmt.Sprintf("state version %d", v))
	}
	ms := d.varint()
	return ms, d.err
}
