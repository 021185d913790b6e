// Package state owns the processor's local state: a Pebble store with one
// key prefix per input partition, the compacted changelog topic that backs
// it, and restore from that changelog.
//
// Pebble is a cache of the changelog, never the other way round: every state
// change is in the changelog before it is in Pebble, and each Pebble batch
// carries the changelog offset it reflects, atomically. So a store that lost
// unsynced writes in a crash is still consistent, only older, and the
// changelog tail brings it forward. This package does no consuming of input
// and knows nothing about Redis or gRPC.
package state
