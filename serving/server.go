package serving

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/featurestream/featurestream/proto/featurestream/v1"
	"github.com/featurestream/featurestream/sinks"
	"github.com/featurestream/featurestream/topology"
)

// ServiceName is the FeatureService's full name, also the service name its
// health status is reported under.
var ServiceName = pb.FeatureService_ServiceDesc.ServiceName

// Server serves FeatureService over gRPC. Make it with New and run it once,
// with Run or Serve.
type Server struct {
	pb.UnimplementedFeatureServiceServer

	cfg    Config
	top    *topology.Topology
	store  *sinks.Store
	logger *slog.Logger
	// now is the clock a request without as_of is evaluated at.
	now func() time.Time

	grpc   *grpc.Server
	health *health.Server

	allFeatures []int
	known       string // feature names for error messages
	list        *pb.ListFeaturesResponse

	entities *prometheus.CounterVec
	// found and notFound are entities' two series, looked up once.
	found, notFound prometheus.Counter
	started         atomic.Bool

	// restoring holds the partitions being restored, ascending, as last
	// read by watchRestoring; requests only load it.
	restoring atomic.Pointer[[]int32]
	// staleMs is each feature's max_staleness in ms; 0 never stale by age.
	staleMs []int64
}

// AsOfFuture is how far after the server's clock an as_of may lie: tiles
// of the future do not exist yet, so such a read is almost surely a unit
// mistake.
const AsOfFuture = time.Hour

// New returns a Server for top's features, read from store, registering its
// metrics (gRPC server metrics with a handling-time histogram, and
// featurestream_serving_*) on reg (nil: not registered).
func New(cfg Config, top *topology.Topology, store *sinks.Store, logger *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if top == nil || top.Spec == nil {
		return nil, errors.New("serving: new server: nil topology")
	}
	if store == nil {
		return nil, errors.New("serving: new server: nil store")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:    cfg.withDefaults(),
		top:    top,
		store:  store,
		logger: logger,
		now:    time.Now,
		health: health.NewServer(),
		entities: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "featurestream_serving_entities_total",
			Help: "Entities looked up by GetFeatures, by whether the online store knew them (found, not_found).",
		}, []string{"result"}),
	}
	names := make([]string, len(top.Features))
	s.allFeatures = make([]int, len(top.Features))
	s.staleMs = make([]int64, len(top.Features))
	s.list = &pb.ListFeaturesResponse{App: top.Spec.App}
	for i := range top.Features {
		f := &top.Features[i]
		names[i] = f.Name
		s.allFeatures[i] = i
		s.staleMs[i] = f.MaxStaleness.Milliseconds()
		info := &pb.FeatureInfo{
			Name:        f.Name,
			Aggregation: f.Agg,
			Field:       f.Field,
			Where:       f.Where,
			ValueType:   f.Type.String(),
			Description: f.Description,
		}
		if !f.Lifetime() {
			info.Window, info.Tile = f.Window.String(), f.Tile.String()
		}
		if f.MaxStaleness > 0 {
			info.MaxStaleness = f.MaxStaleness.String()
		}
		info.K = int32(f.K)
		switch {
		case f.Q != nil:
			info.Quantiles = []float64{*f.Q}
		case len(f.Quantiles) > 0:
			info.Quantiles = slices.Clone(f.Quantiles)
		}
		s.list.Features = append(s.list.Features, info)
	}
	s.known = strings.Join(names, ", ")
	s.found, s.notFound = s.entities.WithLabelValues("found"), s.entities.WithLabelValues("not_found")

	metrics := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
		grpcprom.WithHistogramBuckets(prometheus.ExponentialBuckets(0.0001, 2, 16)),
	))
	if reg != nil {
		for _, c := range []prometheus.Collector{metrics, s.entities} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("serving: new server: register metrics: %w", err)
			}
		}
	}
	// A panic is a bug, never a reason to drop every other caller's
	// connection: it becomes an Internal error and a log line with the stack.
	onPanic := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		s.logger.Error("panic in grpc handler", "panic", p, "stack", string(debug.Stack()))
		return status.Error(codes.Internal, "internal error")
	})
	unary := []grpc.UnaryServerInterceptor{metrics.UnaryServerInterceptor(), recovery.UnaryServerInterceptor(onPanic)}
	stream := []grpc.StreamServerInterceptor{metrics.StreamServerInterceptor(), recovery.StreamServerInterceptor(onPanic)}
	if len(s.cfg.AuthTokens) > 0 {
		// After metrics, so refused calls are counted with their code.
		auth, err := newTokenAuth(s.cfg.AuthTokens)
		if err != nil {
			return nil, fmt.Errorf("serving: new server: %w", err)
		}
		unary, stream = append(unary, auth.unary), append(stream, auth.stream)
	}
	opts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
		grpc.MaxRecvMsgSize(s.cfg.MaxRequestBytes),
	}
	if s.cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(s.cfg.TLS)))
	}
	s.grpc = grpc.NewServer(opts...)
	pb.RegisterFeatureServiceServer(s.grpc, s)
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	metrics.InitializeMetrics(s.grpc)
	// Not serving until Redis has answered once.
	s.setHealth(healthpb.HealthCheckResponse_NOT_SERVING)
	return s, nil
}

// Run listens on the configured address and serves until ctx is done; see
// Serve.
func (s *Server) Run(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("serving: listen on %s: %w", s.cfg.Addr, err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves on ln, which it closes, until ctx is done. Then it reports
// NOT_SERVING, lets in-flight calls finish for up to ShutdownTimeout,
// cancels the rest and returns nil. It returns an error only when serving
// fails. A Server serves once.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if !s.started.CompareAndSwap(false, true) {
		ln.Close()
		return errors.New("serving: server already served")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Know the published state generation before the first call; if Redis
	// does not answer now, the watch below catches up.
	gctx, gcancel := context.WithTimeout(ctx, s.cfg.RestoringInterval)
	if gen, err := s.store.ReadStateGeneration(gctx); err == nil {
		s.store.SetStateGeneration(gen)
	}
	gcancel()
	var wg sync.WaitGroup
	wg.Go(func() { s.watchHealth(ctx) })
	wg.Go(func() { s.watchRestoring(ctx) })
	served := make(chan error, 1)
	go func() { served <- s.grpc.Serve(ln) }()
	s.logger.Info("grpc serving", "addr", ln.Addr().String(), "app", s.top.Spec.App, "features", len(s.top.Features))

	var err error
	select {
	case <-ctx.Done():
	case err = <-served:
		err = fmt.Errorf("serving: serve grpc on %s: %w", ln.Addr(), err)
	}
	cancel()
	// Health first, so load balancers stop sending before calls are refused.
	// The background Redis checks are waited for last: against a Redis
	// that hangs they may take a read timeout to give up, and shutdown must
	// not wait for them to begin.
	s.health.Shutdown()
	s.stop()
	if err == nil {
		<-served
	}
	wg.Wait()
	s.logger.Info("grpc stopped", "addr", ln.Addr().String())
	return err
}

// stop drains in-flight calls for up to ShutdownTimeout, then cuts them.
func (s *Server) stop() {
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	t := time.NewTimer(s.cfg.ShutdownTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.logger.Warn("grpc calls still running after shutdown timeout, cancelling them", "timeout", s.cfg.ShutdownTimeout)
		s.grpc.Stop()
		<-done
	}
}

// watchHealth pings Redis every HealthInterval: without Redis every call
// fails, so a load balancer should send calls to another replica.
func (s *Server) watchHealth(ctx context.Context) {
	t := time.NewTicker(s.cfg.HealthInterval)
	defer t.Stop()
	serving := false
	for {
		pctx, cancel := context.WithTimeout(ctx, s.cfg.HealthInterval)
		err := s.store.Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		switch {
		case err == nil && !serving:
			s.logger.Info("redis reachable: serving")
			s.setHealth(healthpb.HealthCheckResponse_SERVING)
		case err != nil && serving:
			s.logger.Warn("redis unreachable: not serving", "err", err)
			s.setHealth(healthpb.HealthCheckResponse_NOT_SERVING)
		}
		serving = err == nil
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// watchRestoring reads the published state generation and the partitions
// being restored every RestoringInterval, so requests know them without
// asking Redis. On error
// the last known set stays: a restore that ended meanwhile keeps saying
// STALE a little longer, which is the safe mistake.
func (s *Server) watchRestoring(ctx context.Context) {
	t := time.NewTicker(s.cfg.RestoringInterval)
	defer t.Stop()
	var failing bool
	for {
		rctx, cancel := context.WithTimeout(ctx, s.cfg.RestoringInterval)
		// Follow the published state generation first, so the marks read
		// next are that generation's.
		gen, err := s.store.ReadStateGeneration(rctx)
		var parts []int32
		if err == nil {
			parts, err = s.store.RestoringPartitionsFor(rctx, gen)
		}
		if err == nil && gen != s.store.StateGeneration() {
			// The marks just read are the new generation's: store them
			// first, so no request of the new generation sees the old
			// generation's marks.
			s.restoring.Store(&parts)
			s.logger.Info("serving a new state generation", "from", s.store.StateGeneration(), "to", gen)
			s.store.SetStateGeneration(gen)
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		switch {
		case err != nil && !failing:
			s.logger.Warn("read restoring partitions", "err", err)
		case err == nil:
			if old := s.restoring.Load(); old == nil || !slices.Equal(*old, parts) {
				s.logger.Info("partitions restoring", "partitions", parts)
			}
			s.restoring.Store(&parts)
		}
		failing = err != nil
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Server) setHealth(st healthpb.HealthCheckResponse_ServingStatus) {
	s.health.SetServingStatus("", st)
	s.health.SetServingStatus(ServiceName, st)
}

// GetFeatures implements FeatureService.
func (s *Server) GetFeatures(ctx context.Context, req *pb.GetFeaturesRequest) (*pb.GetFeaturesResponse, error) {
	ids := req.GetEntityIds()
	if err := s.checkEntities(ids); err != nil {
		return nil, err
	}
	features, err := s.resolveFeatures(req.GetFeatures())
	if err != nil {
		return nil, err
	}
	now := s.now()
	nowMs := now.UnixMilli()
	// Windows are evaluated to the millisecond; the response says so.
	asOfMs := nowMs
	if req.GetAsOf() != nil {
		if asOfMs, err = s.checkAsOf(req.GetAsOf(), now); err != nil {
			return nil, err
		}
	}

	ep := entryPool.Get().(*[]sinks.Entry)
	defer func() {
		// Drop the tiles, keep the slices: the next call decodes into them.
		for i := range *ep {
			clear((*ep)[i].Tiles)
		}
		entryPool.Put(ep)
	}()
	// Derived features have no state: read the stored features they use.
	read := s.top.Needs(features)
	entries, err := s.store.Read(ctx, ids, read, (*ep)[:0])
	*ep = entries
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return nil, status.FromContextError(cerr).Err()
		}
		if errors.Is(err, sinks.ErrCorrupt) {
			s.logger.Error("online store holds an undecodable entity", "err", err)
			return nil, status.Errorf(codes.DataLoss, "read features: %v", err)
		}
		s.logger.Warn("read features", "err", err, "entities", len(ids))
		return nil, status.Errorf(codes.Unavailable, "read features: %v", err)
	}
	if req.GetAsOf() != nil {
		for i := range entries {
			if e := &entries[i]; e.Found && asOfMs < e.HorizonMs {
				return nil, status.Errorf(codes.InvalidArgument,
					"as_of %s is before the retained horizon of entity %q (%s): its state keeps only what reads at or after that time need; ask for a later as_of",
					time.UnixMilli(asOfMs).UTC().Format(time.RFC3339Nano), ids[i], time.UnixMilli(e.HorizonMs).UTC().Format(time.RFC3339Nano))
			}
		}
	}
	return s.respond(entries, ids, features, read, asOfMs, nowMs, req.GetCompact()), nil
}

// entryPool recycles the entries Read decodes into; the response copies
// what it needs out of them.
var entryPool = sync.Pool{New: func() any { return new([]sinks.Entry) }}

// checkAsOf returns as_of in epoch ms if it lies within the retained
// horizon around now.
func (s *Server) checkAsOf(ts *timestamppb.Timestamp, now time.Time) (int64, error) {
	if err := ts.CheckValid(); err != nil {
		return 0, status.Errorf(codes.InvalidArgument, "as_of: %v", err)
	}
	asOf := ts.AsTime()
	// No bound in the past: the processor keeps tiles by event time, and
	// replayed or backfilled data may be old by the wall clock. A read
	// further back than the longest window (plus grace) before an entity's
	// newest event may miss pruned tiles; docs/features.md says so.
	if latest := now.Add(AsOfFuture); asOf.After(latest) {
		return 0, status.Errorf(codes.InvalidArgument, "as_of %s: more than %s after the server's clock (%s)",
			asOf.Format(time.RFC3339Nano), AsOfFuture, now.Format(time.RFC3339Nano))
	}
	return asOf.UnixMilli(), nil
}

func (s *Server) checkEntities(ids []string) error {
	switch {
	case len(ids) == 0:
		return status.Error(codes.InvalidArgument, "entity_ids: at least one entity id is required")
	case len(ids) > s.cfg.MaxEntities:
		return status.Errorf(codes.InvalidArgument, "entity_ids: %d ids, at most %d per call", len(ids), s.cfg.MaxEntities)
	}
	for i, id := range ids {
		if id == "" {
			return status.Errorf(codes.InvalidArgument, "entity_ids[%d]: empty entity id", i)
		}
	}
	return nil
}

// resolveFeatures maps names to feature indexes; no names means all, in
// spec order.
func (s *Server) resolveFeatures(names []string) ([]int, error) {
	if len(names) == 0 {
		return s.allFeatures, nil
	}
	if len(names) > s.cfg.MaxFeatures {
		return nil, status.Errorf(codes.InvalidArgument, "features: %d names, at most %d per call", len(names), s.cfg.MaxFeatures)
	}
	out := make([]int, len(names))
	for i, name := range names {
		fi, ok := s.top.FeatureIndex(name)
		if !ok {
			return nil, status.Errorf(codes.InvalidArgument, "features[%d]: unknown feature %q; known: %s", i, name, s.known)
		}
		for j := range i {
			if out[j] == fi {
				return nil, status.Errorf(codes.InvalidArgument, "features[%d]: duplicate feature %q (also features[%d])", i, name, j)
			}
		}
		out[i] = fi
	}
	return out, nil
}

// respond renders features for each entity; entries hold the tiles of the
// stored features read (topology.Needs of features).
//
// compact leaves each value's name and window out where its column says
// the same; session windows, which differ per entity, stay on the value.
func (s *Server) respond(entries []sinks.Entry, ids []string, features, read []int, asOfMs, nowMs int64, compact bool) *pb.GetFeaturesResponse {
	var restoring []int32
	if r := s.restoring.Load(); r != nil {
		restoring = *r
	}
	// A feature's covered window mostly depends only on as_of, so one
	// timestamp per feature is shared by every entity's value: fewer
	// allocations, and marshaling does not mind the sharing. Session
	// windows differ per entity and get their own.
	type window struct {
		startMs, endMs int64
		start, end     *timestamppb.Timestamp
	}
	windows := make([]window, len(features))
	stamps := make([]timestamppb.Timestamp, 2*len(features)+1)
	stamp := func(ms int64) *timestamppb.Timestamp {
		ts := &stamps[len(stamps)-1]
		stamps = stamps[:len(stamps)-1]
		ts.Seconds, ts.Nanos = msParts(ms)
		return ts
	}
	for j, fi := range features {
		if f := &s.top.Features[fi]; !f.Lifetime() {
			start, end := f.CoveredWindow(asOfMs) // as Evaluate reports it
			windows[j] = window{start, end, stamp(start), stamp(end)}
		}
	}
	// Tiles by feature index, as EvaluateAll takes them; nil: not stored.
	tiles := make([][]topology.Tile, len(s.top.Features))
	tvals := make([]topology.Value, len(features))

	// Every message of the response comes from a few slices, one per
	// message type, rather than one allocation per value: a response of
	// 100 entities × 4 features is a handful of allocations, not a
	// thousand. The oneof wrappers are counted per value type.
	var nInt, nDouble, nString, nList, nDoubles, nCounts int
	for _, fi := range features {
		switch s.top.Features[fi].Type {
		case topology.TypeInt64:
			nInt++
		case topology.TypeDouble:
			nDouble++
		case topology.TypeString:
			nString++
		case topology.TypeStringList:
			nList++
		case topology.TypeDoubleList:
			nDoubles++
		case topology.TypeItemCounts:
			nCounts++
		}
	}
	n := len(ids)
	var (
		ints    = make([]pb.FeatureValue_Int64Value, n*nInt)
		doubles = make([]pb.FeatureValue_DoubleValue, n*nDouble)
		strs    = make([]pb.FeatureValue_StringValue, n*nString)
		lists   = make([]pb.FeatureValue_StringListValue, n*nList)
		listMsg = make([]pb.StringList, n*nList)
		dlists  = make([]pb.FeatureValue_DoubleListValue, n*nDoubles)
		dlMsg   = make([]pb.DoubleList, n*nDoubles)
		counts  = make([]pb.FeatureValue_ItemCountsValue, n*nCounts)
		countMs = make([]pb.ItemCounts, n*nCounts)
		lastTs  = make([]timestamppb.Timestamp, n)
		ents    = make([]pb.EntityFeatures, n)
		entPtrs = make([]*pb.EntityFeatures, n)
		vals    = make([]pb.FeatureValue, n*len(features))
		valPtrs = make([]*pb.FeatureValue, n*len(features))
	)
	cols, colPtrs := make([]pb.FeatureColumn, len(features)), make([]*pb.FeatureColumn, len(features))
	for j, fi := range features {
		cols[j].Name = s.top.Features[fi].Name
		cols[j].WindowStart, cols[j].WindowEnd = windows[j].start, windows[j].end
		colPtrs[j] = &cols[j]
	}
	resp := &pb.GetFeaturesResponse{Results: entPtrs, AsOf: stamp(asOfMs), Columns: colPtrs}
	var found int
	for i := range ids {
		e, ent := &entries[i], &ents[i]
		ent.EntityId = ids[i]
		ent.Values = valPtrs[i*len(features) : (i+1)*len(features) : (i+1)*len(features)]
		var partRestoring bool
		if e.Found {
			found++
			ts := &lastTs[i]
			ts.Seconds, ts.Nanos = msParts(e.LastEventMs)
			ent.LastEventTime = ts
			if len(restoring) > 0 {
				_, partRestoring = slices.BinarySearch(restoring, e.Partition)
			}
		}
		if e.Found {
			// A nil tile slice is a feature the stored state lacks (written
			// under an older spec): nothing is known, which is not zero,
			// and EvaluateAll leaves it (and what derives from it) unset.
			for k, fi := range read {
				tiles[fi] = e.Tiles[k]
			}
			s.top.EvaluateAll(tiles, asOfMs, features, tvals)
		}
		for j, fi := range features {
			fv := &vals[i*len(features)+j]
			if !compact {
				fv.Name = s.top.Features[fi].Name
			}
			fv.Status = pb.FeatureValue_NOT_FOUND
			ent.Values[j] = fv
			if !e.Found {
				continue
			}
			v := &tvals[j]
			switch w := &windows[j]; {
			case v.WindowStartMs == 0 && v.WindowEndMs == 0:
			case v.WindowStartMs == w.startMs && v.WindowEndMs == w.endMs:
				if !compact {
					fv.WindowStart, fv.WindowEnd = w.start, w.end
				}
			default:
				fv.WindowStart, fv.WindowEnd = msTimestamp(v.WindowStartMs), msTimestamp(v.WindowEndMs)
			}
			if !v.Present {
				continue
			}
			fv.Status = pb.FeatureValue_PRESENT
			if maxMs := s.staleMs[fi]; partRestoring || (maxMs > 0 && nowMs-e.WrittenMs > maxMs) {
				fv.Status = pb.FeatureValue_STALE
			}
			switch v.Type {
			case topology.TypeInt64:
				w := &ints[len(ints)-1]
				ints = ints[:len(ints)-1]
				w.Int64Value = v.Int
				fv.Value = w
			case topology.TypeDouble:
				w := &doubles[len(doubles)-1]
				doubles = doubles[:len(doubles)-1]
				w.DoubleValue = v.Float
				fv.Value = w
			case topology.TypeString:
				w := &strs[len(strs)-1]
				strs = strs[:len(strs)-1]
				w.StringValue = v.Str
				fv.Value = w
			case topology.TypeStringList:
				w, l := &lists[len(lists)-1], &listMsg[len(listMsg)-1]
				lists, listMsg = lists[:len(lists)-1], listMsg[:len(listMsg)-1]
				l.Values = v.List
				w.StringListValue = l
				fv.Value = w
			case topology.TypeDoubleList:
				w, l := &dlists[len(dlists)-1], &dlMsg[len(dlMsg)-1]
				dlists, dlMsg = dlists[:len(dlists)-1], dlMsg[:len(dlMsg)-1]
				l.Values = v.Floats
				w.DoubleListValue = l
				fv.Value = w
			case topology.TypeItemCounts:
				w, l := &counts[len(counts)-1], &countMs[len(countMs)-1]
				counts, countMs = counts[:len(counts)-1], countMs[:len(countMs)-1]
				items := make([]pb.ItemCount, len(v.Counts))
				l.Items = make([]*pb.ItemCount, len(v.Counts))
				for k, c := range v.Counts {
					items[k].Value, items[k].Count = c.Value, c.Count
					l.Items[k] = &items[k]
				}
				w.ItemCountsValue = l
				fv.Value = w
			default:
				// Unreachable while serving knows every topology type; never
				// claim a value we cannot say.
				fv.Status = pb.FeatureValue_NOT_FOUND
			}
			fv.Approximate = v.Approximate
		}
		entPtrs[i] = ent
	}
	s.found.Add(float64(found))
	s.notFound.Add(float64(len(ids) - found))
	return resp
}

func msTimestamp(ms int64) *timestamppb.Timestamp {
	sec, nanos := msParts(ms)
	return &timestamppb.Timestamp{Seconds: sec, Nanos: nanos}
}

// msParts splits epoch ms into a Timestamp's seconds and nanos (nanos
// never negative, as the Timestamp type requires).
func msParts(ms int64) (int64, int32) {
	sec, rem := ms/1000, ms%1000
	if rem < 0 {
		sec, rem = sec-1, rem+1000
	}
	return sec, int32(rem * 1e6)
}

// ListFeatures implements FeatureService.
func (s *Server) ListFeatures(context.Context, *pb.ListFeaturesRequest) (*pb.ListFeaturesResponse, error) {
	return proto.CloneOf(s.list), nil
}
