// Package client is the Go client of featurestream's FeatureService, for
// the apps that read features on every page view. It wraps the generated
// gRPC client with connection options (TLS, mutual TLS, bearer token) and
// typed, allocation-light access to the results: by index for hot loops, or
// by name with Int64, Float64, Str, Strings and Status.
//
// It must stay a thin layer over the proto API: no caching, no retries
// beyond gRPC's own, and nothing that needs the server's packages.
package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/featurestream/featurestream/proto/featurestream/v1"
)

// Client calls one FeatureService. It is safe for concurrent use; make one
// per server address and share it.
type Client struct {
	conn *grpc.ClientConn
	svc  pb.FeatureServiceClient
}

// Option configures New.
type Option interface{ apply(*config) }

type config struct {
	tls      *tls.Config
	insecure bool
	token    string
	dial     []grpc.DialOption
	errs     []error
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// TLS connects with this TLS config: RootCAs to trust the server, and
// Certificates for mutual TLS. Without TLS or Insecure, New uses TLS
// trusting the system's CA certificates.
func TLS(cfg *tls.Config) Option { return optionFunc(func(c *config) { c.tls = cfg }) }

// TLSFiles connects with TLS trusting the PEM CA certificates in caFile
// (empty: the system's), presenting the PEM certificate and key in certFile
// and keyFile for mutual TLS (empty: none).
func TLSFiles(caFile, certFile, keyFile string) Option {
	return optionFunc(func(c *config) {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if caFile != "" {
			pem, err := os.ReadFile(caFile)
			if err != nil {
				c.errs = append(c.errs, fmt.Errorf("ca file: %w", err))
				return
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				c.errs = append(c.errs, fmt.Errorf("ca file %s: no PEM certificate in it", caFile))
				return
			}
		}
		if certFile != "" || keyFile != "" {
			pair, err := tls.LoadX509KeyPair(certFile, keyFile)
			if err != nil {
				c.errs = append(c.errs, fmt.Errorf("client certificate: %w", err))
				return
			}
			cfg.Certificates = []tls.Certificate{pair}
		}
		c.tls = cfg
	})
}

// Insecure connects in plaintext: for a server on loopback or a trusted
// network only.
func Insecure() Option { return optionFunc(func(c *config) { c.insecure = true }) }

// Token sends "authorization: Bearer <token>" with every call, for a
// server started with --auth-token-file. Combine it with TLS: over
// Insecure the token travels in clear text.
func Token(token string) Option { return optionFunc(func(c *config) { c.token = token }) }

// DialOptions adds gRPC dial options (interceptors, keepalive, a custom
// dialer), applied after the client's own.
func DialOptions(opts ...grpc.DialOption) Option {
	return optionFunc(func(c *config) { c.dial = append(c.dial, opts...) })
}

// New returns a client of the FeatureService at addr (host:port, or any
// gRPC target). It does not connect: the first call does, and a server that
// is down makes that call fail Unavailable.
func New(addr string, opts ...Option) (*Client, error) {
	var cfg config
	for _, o := range opts {
		o.apply(&cfg)
	}
	if cfg.tls != nil && cfg.insecure {
		cfg.errs = append(cfg.errs, errors.New("both TLS and Insecure given"))
	}
	if strings.TrimSpace(cfg.token) != cfg.token {
		cfg.errs = append(cfg.errs, errors.New("token has surrounding white space"))
	}
	if len(cfg.errs) > 0 {
		return nil, fmt.Errorf("featurestream client: %w", errors.Join(cfg.errs...))
	}
	creds := credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})
	switch {
	case cfg.insecure:
		creds = insecure.NewCredentials()
	case cfg.tls != nil:
		creds = credentials.NewTLS(cfg.tls)
	}
	dial := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if cfg.token != "" {
		dial = append(dial, grpc.WithPerRPCCredentials(bearer("Bearer "+cfg.token)))
	}
	conn, err := grpc.NewClient(addr, append(dial, cfg.dial...)...)
	if err != nil {
		return nil, fmt.Errorf("featurestream client: %w", err)
	}
	return &Client{conn: conn, svc: pb.NewFeatureServiceClient(conn)}, nil
}

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": string(b)}, nil
}

// RequireTransportSecurity is false so Token works with Insecure on
// loopback; see Token.
func (bearer) RequireTransportSecurity() bool { return false }

// Close closes the connection. Calls in flight fail.
func (c *Client) Close() error { return c.conn.Close() }

// Service returns the generated gRPC client, for what this package does
// not wrap.
func (c *Client) Service() pb.FeatureServiceClient { return c.svc }

// Request is one GetFeatures call.
type Request struct {
	// EntityIDs are the entities to read, at least one; results come back
	// in this order.
	EntityIDs []string
	// Features are the feature names to read, in this order; empty means
	// every feature, in spec order.
	Features []string
	// AsOf is the instant the windows end at; zero means the server's now.
	AsOf time.Time
}

// GetFeatures reads the request's features. Errors are gRPC status errors
// (use status.Code): InvalidArgument names the offending id, feature or
// as_of; Unavailable means the server or its Redis cannot answer now.
func (c *Client) GetFeatures(ctx context.Context, req Request, opts ...grpc.CallOption) (*Features, error) {
	// Compact: names and windows once per response, not per value.
	in := &pb.GetFeaturesRequest{EntityIds: req.EntityIDs, Features: req.Features, Compact: true}
	if !req.AsOf.IsZero() {
		in.AsOf = timestamppb.New(req.AsOf)
	}
	var raw rawResponse
	opts = append(opts[:len(opts):len(opts)], grpc.ForceCodecV2(codec{}))
	if err := c.conn.Invoke(ctx, pb.FeatureService_GetFeatures_FullMethodName, in, &raw, opts...); err != nil {
		return nil, fmt.Errorf("featurestream: get features: %w", err)
	}
	d, err := decodeResponse(raw.buf)
	if err != nil {
		return nil, fmt.Errorf("featurestream: get features: %w", err)
	}
	return newFeatures(d), nil
}

// FeatureInfo describes one feature the server serves.
type FeatureInfo struct {
	Name        string
	Description string
	// Aggregation is the spec's agg, such as "count" or "last_k".
	Aggregation string
	// Field is the event field aggregated; empty for count.
	Field string
	// Where is the filter expression; empty when every event counts.
	Where string
	// ValueType is "int64", "double", "string" or "string_list": which of
	// Value's accessors carries the value.
	ValueType string
	// Window is the sliding window and Tile its tile size; both 0 for a
	// lifetime feature.
	Window, Tile time.Duration
}

// ListFeatures returns the app name and its features.
func (c *Client) ListFeatures(ctx context.Context, opts ...grpc.CallOption) (app string, features []FeatureInfo, err error) {
	resp, err := c.svc.ListFeatures(ctx, &pb.ListFeaturesRequest{}, opts...)
	if err != nil {
		return "", nil, fmt.Errorf("featurestream: list features: %w", err)
	}
	for _, f := range resp.GetFeatures() {
		fi := FeatureInfo{Name: f.GetName(), Description: f.GetDescription(), Aggregation: f.GetAggregation(),
			Field: f.GetField(), Where: f.GetWhere(), ValueType: f.GetValueType()}
		if f.GetWindow() != "" {
			if fi.Window, err = time.ParseDuration(f.GetWindow()); err != nil {
				return "", nil, fmt.Errorf("featurestream: list features: %s: window: %w", f.GetName(), err)
			}
			if fi.Tile, err = time.ParseDuration(f.GetTile()); err != nil {
				return "", nil, fmt.Errorf("featurestream: list features: %s: tile: %w", f.GetName(), err)
			}
		}
		features = append(features, fi)
	}
	return resp.GetApp(), features, nil
}
