// Package topology owns what featurestream computes: the feature spec (YAML
// parsing and validation), where-filters, window kinds, aggregations and the
// tiles that hold partial aggregates, and the binary encoding of an entity's
// state that the changelog, Pebble and Redis all carry.
//
// It is pure: no I/O, no clocks, no goroutines. Callers pass event times,
// watermarks and as-of instants in. Decoding of wire formats lives in
// processor; storage in state and sinks.
package topology
