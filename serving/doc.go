// Package serving owns the gRPC FeatureService: it validates requests, reads
// entity state from the Redis online store (sinks) in one round trip per
// request, evaluates each feature's window as of the request time
// (topology) and says, per value, whether it is known. It also serves the
// standard gRPC health service, tied to Redis reachability, and server
// reflection so grpcurl needs no proto file.
//
// It is stateless and must not write: the processor is the only writer of the
// online store.
package serving
