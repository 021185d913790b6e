// Package sinks owns the Redis online store: the connection options, the key
// layout of an entity's features in Redis, the versioned write the processor
// makes after each committed batch, and the read that serving makes on each
// GetFeatures. Writer and reader share this one package so the layout lives
// in one place.
//
// It must not evaluate windows (topology does, at read time) and must not
// decide what is committed (processor does): a Store only stores the tiles it
// is given and refuses to move a value backwards.
package sinks
