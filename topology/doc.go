// Package topology owns what featurestream computes: the feature spec (YAML
// parsing and validation), where-filters, window kinds (sliding, tumbling,
// hopping, session, lifetime), aggregations and the tiles that hold their
// mergeable partial aggregates, derived features evaluated at read time, and
// the binary encoding of an entity's state that the changelog, Pebble and
// Redis all carry. docs/features.md is the user's view of all of it.
//
// It is pure: no I/O, no clocks, no goroutines. Callers pass event times,
// watermarks and as-of instants in. Decoding of wire formats lives in
// processor; storage in state and sinks.
package topology
