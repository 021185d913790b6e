package bench

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Stage is one step between an event and its effect in Redis, from the
// processor's own histograms over the live phase: where freshness goes.
// Its percentiles are interpolated within histogram buckets that double
// in width, so they are estimates: within a bucket the true value may be
// anywhere, up to a factor of 2 from the estimate.
type Stage struct {
	Name string
	// Metric is the histogram it comes from.
	Metric   string
	P50, P99 time.Duration
	N        uint64
}

// liveStages are the histograms a live run reports, in pipeline order.
var liveStages = []struct{ name, metric string }{
	{"produce → processed", "featurestream_processing_delay_seconds"},
	{"commit (changelog, offsets, state)", "featurestream_commit_duration_seconds"},
	{"  of which the transaction's end", "featurestream_transaction_commit_duration_seconds"},
	{"Redis write of a push", "featurestream_redis_write_duration_seconds"},
	{"event time → in Redis", "featurestream_freshness_seconds"},
}

// histSnapshot is the cumulative bucket counts of named histograms.
type histSnapshot map[string]*dto.Histogram

func snapshotHists(g prometheus.Gatherer) (histSnapshot, error) {
	mfs, err := g.Gather()
	if err != nil {
		return nil, err
	}
	snap := histSnapshot{}
	for _, mf := range mfs {
		if mf.GetType() != dto.MetricType_HISTOGRAM || len(mf.GetMetric()) != 1 {
			continue
		}
		snap[mf.GetName()] = mf.GetMetric()[0].GetHistogram()
	}
	return snap, nil
}

// stagesBetween returns liveStages over what the histograms observed
// between two snapshots.
func stagesBetween(before, after histSnapshot) []Stage {
	var out []Stage
	for _, s := range liveStages {
		h := after[s.metric]
		if h == nil {
			continue
		}
		bounds := make([]float64, len(h.GetBucket()))
		counts := make([]uint64, len(h.GetBucket()))
		for i, b := range h.GetBucket() {
			bounds[i], counts[i] = b.GetUpperBound(), b.GetCumulativeCount()
		}
		total := h.GetSampleCount()
		if b := before[s.metric]; b != nil {
			for i, bb := range b.GetBucket() {
				counts[i] -= bb.GetCumulativeCount()
			}
			total -= b.GetSampleCount()
		}
		if total == 0 {
			continue
		}
		out = append(out, Stage{Name: s.name, Metric: s.metric, N: total,
			P50: bucketQuantile(0.5, bounds, counts, total), P99: bucketQuantile(0.99, bounds, counts, total)})
	}
	return out
}

// bucketQuantile estimates quantile q of a histogram in seconds as
// Prometheus's histogram_quantile does: linear within the bucket that
// holds it; past the last bound, the last bound.
func bucketQuantile(q float64, bounds []float64, cumulative []uint64, total uint64) time.Duration {
	rank := q * float64(total)
	lower, below := 0.0, uint64(0)
	for i, upper := range bounds {
		if float64(cumulative[i]) >= rank {
			in := cumulative[i] - below
			frac := 1.0
			if in > 0 {
				frac = (rank - float64(below)) / float64(in)
			}
			return time.Duration((lower + (upper-lower)*frac) * float64(time.Second))
		}
		lower, below = upper, cumulative[i]
	}
	if len(bounds) == 0 {
		return 0
	}
	return time.Duration(bounds[len(bounds)-1] * float64(time.Second))
}

func (s Stage) String() string {
	return fmt.Sprintf("%s p50 %s p99 %s", s.Name, ms(s.P50), ms(s.P99))
}
