package state

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/featurestream/featurestream/internal/testshop"
)

func TestCollector(t *testing.T) {
	top := testshop.Topology(t)
	s := openMem(t, top)
	b := s.NewBatch()
	b.Set(0, "u1", top.AppendState(nil, stateOf(t, top, "u1", 3)))
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := s.DB().Flush(); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(s))
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP featurestream_pebble_flushes_total Memtable flushes Pebble has run.
# TYPE featurestream_pebble_flushes_total counter
featurestream_pebble_flushes_total 1
# HELP featurestream_pebble_l0_files Sstables in level 0; many slow reads and stall writes.
# TYPE featurestream_pebble_l0_files gauge
featurestream_pebble_l0_files 1
`), "featurestream_pebble_flushes_total", "featurestream_pebble_l0_files"); err != nil {
		t.Fatal(err)
	}
	n, err := testutil.GatherAndCount(reg)
	if err != nil || n < 20 {
		t.Fatalf("gathered %d series, %v", n, err)
	}
}
