package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/featurestream/featurestream/serving"
	"github.com/featurestream/featurestream/sinks"
	"github.com/featurestream/featurestream/topology"
)

// redisAuthFlags are Redis credentials and TLS, shared by process, serve
// and dev.
type redisAuthFlags struct {
	RedisUsername string `name:"redis-username" help:"Redis ACL user; empty authenticates as the default user (requirepass)."`
	RedisPassword string `name:"redis-password" help:"Redis password (AUTH). Prefer the environment variable: a flag is visible to other users in ps."`
	RedisTLS      bool   `name:"redis-tls" help:"Talk to Redis over TLS, trusting the system's CA certificates (or --redis-tls-ca)."`
	RedisTLSCA    string `name:"redis-tls-ca" help:"PEM file of the CA certificates that sign Redis's certificate; implies --redis-tls." type:"path"`
}

// options returns the sinks options for addrs with these credentials.
func (f redisAuthFlags) options(addrs string, cluster bool) (sinks.Options, error) {
	o := sinks.Options{Addrs: strings.Split(addrs, ","), Cluster: cluster, Username: f.RedisUsername, Password: f.RedisPassword}
	if f.RedisTLS || f.RedisTLSCA != "" {
		o.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
		if f.RedisTLSCA != "" {
			pool, err := serving.LoadCertPool(f.RedisTLSCA)
			if err != nil {
				return o, fmt.Errorf("--redis-tls-ca: %w", err)
			}
			o.TLS.RootCAs = pool
		}
	}
	return o, nil
}

// open connects to the Redis these flags name.
func (f redisFlags) open(ctx context.Context, top *topology.Topology, logger *slog.Logger, reg prometheus.Registerer) (*sinks.Store, redis.UniversalClient, error) {
	o, err := f.options(f.RedisAddr, f.RedisCluster)
	if err != nil {
		return nil, nil, err
	}
	return openStoreWith(ctx, o, top, logger, reg)
}

// openStoreWith returns a Store on a new client of o. An unreachable Redis
// is only logged (it may come up later; health says NOT_SERVING meanwhile),
// but refused credentials fail at once: they will not fix themselves.
func openStoreWith(ctx context.Context, o sinks.Options, top *topology.Topology, logger *slog.Logger, reg prometheus.Registerer) (*sinks.Store, redis.UniversalClient, error) {
	client, err := sinks.NewClient(o)
	if err != nil {
		return nil, nil, err
	}
	store, err := sinks.NewStore(client, top, logger, reg)
	if err != nil {
		client.Close()
		return nil, nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := store.Ping(pctx); err != nil {
		if errors.Is(err, sinks.ErrAuth) {
			client.Close()
			return nil, nil, fmt.Errorf("redis %s: %w; set --redis-password (or FEATURESTREAM_REDIS_PASSWORD) and, for an ACL user, --redis-username", strings.Join(o.Addrs, ","), err)
		}
		logger.Warn("redis not reachable yet; will keep trying", "addr", strings.Join(o.Addrs, ","), "err", err)
	}
	return store, client, nil
}

// grpcServerFlags secure and bound the gRPC server of serve and dev.
type grpcServerFlags struct {
	TLSCert         string `name:"tls-cert" help:"PEM certificate (chain) of the gRPC server; with --tls-key, serves TLS." type:"path"`
	TLSKey          string `name:"tls-key" help:"PEM private key of --tls-cert." type:"path"`
	ClientCA        string `name:"client-ca" help:"PEM CA certificates; with it every gRPC client must present a certificate they signed (mutual TLS). Needs --tls-cert." type:"path"`
	AuthTokenFile   string `name:"auth-token-file" help:"File of accepted bearer tokens, one a line (# comments); every call but health and reflection must send metadata 'authorization: Bearer <token>'." type:"path"`
	MaxRequestBytes int    `help:"Largest accepted gRPC request message, in bytes." default:"4194304"`
	MaxFeatures     int    `help:"Most feature names one GetFeatures call may ask for." default:"1000"`
}

// config returns the server config for addr with these flags, reading the
// certificate and token files.
func (f grpcServerFlags) config(addr string, maxEntities int) (serving.Config, error) {
	cfg := serving.Config{Addr: addr, MaxEntities: maxEntities, MaxFeatures: f.MaxFeatures, MaxRequestBytes: f.MaxRequestBytes}
	switch {
	case f.TLSCert != "" || f.TLSKey != "":
		tlsCfg, err := serving.LoadTLS(f.TLSCert, f.TLSKey, f.ClientCA)
		if err != nil {
			return cfg, err
		}
		cfg.TLS = tlsCfg
	case f.ClientCA != "":
		return cfg, errors.New("--client-ca needs --tls-cert and --tls-key: mutual TLS is TLS")
	}
	if f.AuthTokenFile != "" {
		tokens, err := serving.LoadTokens(f.AuthTokenFile)
		if err != nil {
			return cfg, err
		}
		cfg.AuthTokens = tokens
	}
	return cfg, nil
}

// newServerWith makes a feature server with cfg and listens on cfg.Addr.
func newServerWith(cfg serving.Config, top *topology.Topology, store *sinks.Store, logger *slog.Logger, reg prometheus.Registerer) (*serving.Server, net.Listener, error) {
	srv, err := serving.New(cfg, top, store, logger, reg)
	if err != nil {
		return nil, nil, err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, nil, fmt.Errorf("grpc server: listen on %s (--grpc-addr): %w", cfg.Addr, err)
	}
	if cfg.TLS == nil && len(cfg.AuthTokens) == 0 && !isLoopback(ln.Addr()) {
		logger.Warn("grpc serves plaintext without authentication on a non-loopback address; see --tls-cert and --auth-token-file", "addr", ln.Addr().String())
	}
	return srv, ln, nil
}

func isLoopback(a net.Addr) bool {
	tcp, ok := a.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}
