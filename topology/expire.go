package topology

// Expire drops from st the tiles no read at or after watermarkMs can need,
// as Apply does for an entity it touches, and reports whether nothing is
// left: every windowed feature has no tile and no lifetime feature holds
// anything. An empty entity can be deleted (a changelog tombstone) without
// changing any value a read at or after the watermark returns.
func (t *Topology) Expire(st *EntityState, watermarkMs int64) (empty bool) {
	empty = true
	for i := range t.Features {
		f := &t.Features[i]
		if f.Derived() {
			continue
		}
		st.Features[i] = f.prune(st.Features[i], watermarkMs)
		if len(st.Features[i]) > 0 {
			empty = false
		}
	}
	return empty
}
