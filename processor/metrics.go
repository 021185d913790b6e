package processor

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	consumed      prometheus.Counter
	rejected      *prometheus.CounterVec
	decodeErrors  prometheus.Counter
	late          *prometheus.CounterVec
	lateByFeature []prometheus.Counter // by feature index
	flushDuration prometheus.Histogram
	changelog     prometheus.Counter
	sinkErrors    prometheus.Counter
	freshness     prometheus.Histogram
	assigned      prometheus.Gauge
	rebalances    *prometheus.CounterVec
	watermark     *prometheus.GaugeVec
	txns          *prometheus.CounterVec
	txnDuration   prometheus.Histogram
	dlq           *prometheus.CounterVec
	lag           *prometheus.GaugeVec
	expired       prometheus.Counter
	delay         prometheus.Histogram
	// cacheHits and cacheMisses count the state cache's lookups (a miss
	// reads Pebble); cacheBytes is what it holds, as of the last commit.
	cacheHits, cacheMisses prometheus.Counter
	cacheBytes             prometheus.Gauge
	// pushPacing is the current wait between writes to the online store
	// (pacedLocked).
	pushPacing prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		consumed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "featurestream_events_consumed_total",
			Help: "Input records consumed, valid or not.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "featurestream_records_rejected_total",
			Help: "Input records not applied, by reason (decode, no_key, no_time, bad_value, late, future).",
		}, []string{"reason"}),
		decodeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "featurestream_decode_errors_total",
			Help: "Input records whose value did not decode.",
		}),
		late: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "featurestream_late_events_total",
			Help: "Events behind their partition's watermark, counted once for each feature they would have updated (its where passed and it had the field).",
		}, []string{"feature"}),
		flushDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "featurestream_commit_duration_seconds",
			Help:    "Time of one commit cycle: changelog, local state, input offsets and online store.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		changelog: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "featurestream_changelog_records_total",
			Help: "State records written to the changelog.",
		}),
		sinkErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "featurestream_sink_errors_total",
			Help: "Failed writes to the online store; the records are retried at the next commit.",
		}),
		freshness: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "featurestream_freshness_seconds",
			Help:    "Time from an entity's newest event time to its write to the online store.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 16),
		}),
		assigned: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "featurestream_assigned_partitions",
			Help: "Input partitions assigned to this instance: processed, or being restored.",
		}),
		rebalances: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "featurestream_rebalances_total",
			Help: "Partition changes from the consumer group, by kind (assigned, revoked, lost).",
		}, []string{"kind"}),
		watermark: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "featurestream_watermark_seconds",
			Help: "Event-time watermark of each assigned partition, as Unix seconds.",
		}, []string{"partition"}),
		txns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "featurestream_transactions_total",
			Help: "Kafka transactions ended, by result (committed, aborted).",
		}, []string{"result"}),
		txnDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "featurestream_transaction_commit_duration_seconds",
			Help:    "Time to commit offsets and end a transaction.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		dlq: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "featurestream_dlq_records_total",
			Help: "Records committed to the dead-letter topic, by reason.",
		}, []string{"reason"}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "featurestream_expired_entities_total",
			Help: "Entities deleted because every window of theirs had passed the watermark.",
		}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "featurestream_consumer_lag_records",
			Help: "Input records behind the end of each assigned partition, as of its last fetch.",
		}, []string{"partition"}),
		delay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "featurestream_processing_delay_seconds",
			Help:    "Time from an input record's Kafka timestamp to its processing (the last record of each fetched batch).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 18),
		}),
		cacheBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "featurestream_state_cache_bytes",
			Help: "Estimated memory of the decoded entity states cached between commits (--state-cache-mib), as of the last commit.",
		}),
		pushPacing: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "featurestream_push_pacing_seconds",
			Help: "Least time between two writes to the online store: while the processor is catching up, its input lag in time at its consume rate, at most --catch-up-push-interval; 0 once caught up (a write at every commit).",
		}),
	}
	lookups := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "featurestream_state_cache_lookups_total",
		Help: "First reads of an entity's state in a commit interval, by result: hit (in memory: the state cache, or a copy of a state still being pushed) or miss (read and decoded from Pebble).",
	}, []string{"result"})
	m.cacheHits, m.cacheMisses = lookups.WithLabelValues("hit"), lookups.WithLabelValues("miss")
	if reg != nil {
		reg.MustRegister(m.consumed, m.rejected, m.decodeErrors, m.late, m.flushDuration, m.changelog,
			m.sinkErrors, m.freshness, m.assigned, m.rebalances, m.watermark, m.txns, m.txnDuration, m.dlq, m.lag, m.delay, m.expired,
			lookups, m.cacheBytes, m.pushPacing)
	}
	return m
}
