package state

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports Pebble's own metrics for a Store: compactions, flushes,
// L0 shape, memtable, disk use and the block cache. Register it with the
// Store's owner's registerer; it reads db.Metrics() on each scrape.
type Collector struct {
	s *Store

	compactions, flushes, compactionDebt, l0Files, l0Sublevels,
	levelFiles, levelBytes, memtableBytes, memtables, diskBytes,
	cacheBytes, cacheHits, cacheMisses *prometheus.Desc
}

// NewCollector returns a Collector of s.
func NewCollector(s *Store) *Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("featurestream_pebble_"+name, help, labels, nil)
	}
	return &Collector{
		s:              s,
		compactions:    d("compactions_total", "Compactions Pebble has run."),
		flushes:        d("flushes_total", "Memtable flushes Pebble has run."),
		compactionDebt: d("compaction_debt_bytes", "Bytes Pebble estimates it must compact to reach a stable shape."),
		l0Files:        d("l0_files", "Sstables in level 0; many slow reads and stall writes."),
		l0Sublevels:    d("l0_sublevels", "Sublevels of level 0."),
		levelFiles:     d("level_files", "Sstables per level.", "level"),
		levelBytes:     d("level_bytes", "Bytes of sstables per level.", "level"),
		memtableBytes:  d("memtable_bytes", "Bytes allocated to memtables."),
		memtables:      d("memtables", "Memtables, the mutable one included."),
		diskBytes:      d("disk_usage_bytes", "Bytes the store uses on disk (sstables, WAL, manifests)."),
		cacheBytes:     d("block_cache_bytes", "Bytes in the block cache."),
		cacheHits:      d("block_cache_hits_total", "Block cache hits."),
		cacheMisses:    d("block_cache_misses_total", "Block cache misses."),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.compactions, c.flushes, c.compactionDebt, c.l0Files, c.l0Sublevels,
		c.levelFiles, c.levelBytes, c.memtableBytes, c.memtables, c.diskBytes, c.cacheBytes, c.cacheHits, c.cacheMisses} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	m := c.s.db.Metrics()
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter(c.compactions, float64(m.Compact.Count))
	counter(c.flushes, float64(m.Flush.Count))
	gauge(c.compactionDebt, float64(m.Compact.EstimatedDebt))
	gauge(c.l0Files, float64(m.Levels[0].TablesCount))
	gauge(c.l0Sublevels, float64(m.Levels[0].Sublevels))
	for i, l := range m.Levels {
		gauge(c.levelFiles, float64(l.TablesCount), strconv.Itoa(i))
		gauge(c.levelBytes, float64(l.TablesSize), strconv.Itoa(i))
	}
	gauge(c.memtableBytes, float64(m.MemTable.Size))
	gauge(c.memtables, float64(m.MemTable.Count))
	gauge(c.diskBytes, float64(m.DiskSpaceUsage()))
	gauge(c.cacheBytes, float64(m.BlockCache.Size))
	counter(c.cacheHits, float64(m.BlockCache.Hits))
	counter(c.cacheMisses, float64(m.BlockCache.Misses))
}
