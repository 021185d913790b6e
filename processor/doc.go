// Package processor owns the stream side of featurestream: the consumer
// group, one task per assigned input partition, decoding, event time and
// watermarks, applying events to state, and the commit cycle that moves
// state to the changelog, Pebble, the input offsets and the online store,
// in that order.
//
// It must not serve reads and must not know the Redis key layout: it hands
// finished entity states to a Sink.
package processor
