package serving

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// ErrInvalidConfig is wrapped by Config.Validate's error.
var ErrInvalidConfig = errors.New("serving: invalid config")

// Config configures a Server. The zero value is valid: every field has a
// default.
type Config struct {
	// Addr is the host:port to listen on. Default 127.0.0.1:9090; port 0
	// picks a free port.
	Addr string
	// MaxEntities bounds the entity ids of one GetFeatures call, which are
	// read in one Redis round trip. Default 1000.
	MaxEntities int
	// MaxFeatures bounds the feature names of one GetFeatures call, so a
	// huge list is refused before it is looked at. Default 1000.
	MaxFeatures int
	// MaxRequestBytes bounds the size of one request message; a bigger one
	// fails ResourceExhausted before it is decoded. Default 4 MiB.
	MaxRequestBytes int
	// TLS, when set, serves gRPC over TLS with this config (see LoadTLS);
	// with ClientAuth RequireAndVerifyClientCert it is mutual TLS. Nil
	// serves plaintext, fit only for loopback or a trusted network.
	TLS *tls.Config
	// AuthTokens, when not empty, are the accepted bearer tokens: every
	// call but health and reflection must carry metadata
	// "authorization: Bearer <token>" with one of them, or fails
	// Unauthenticated. Send tokens over TLS only.
	AuthTokens []string
	// HealthInterval is how often Redis is pinged to set the health status.
	// Default 1s.
	HealthInterval time.Duration
	// RestoringInterval is how often the published state generation and
	// the partitions being restored are read from Redis (two commands, in
	// the background): a replay's switch reaches the server within it, and
	// values of restoring partitions' entities are STALE. Default 1s.
	RestoringInterval time.Duration
	// ShutdownTimeout bounds how long in-flight calls may take to finish
	// when the server stops; after it they are cancelled. Default 10s.
	ShutdownTimeout time.Duration
}

// Config defaults.
const (
	DefaultAddr              = "127.0.0.1:9090"
	DefaultMaxEntities       = 1000
	DefaultMaxFeatures       = 1000
	DefaultMaxRequestBytes   = 4 << 20
	DefaultHealthInterval    = time.Second
	DefaultRestoringInterval = time.Second
	DefaultShutdownTimeout   = 10 * time.Second
)

// Validate reports every problem with c at once. Zero fields are valid:
// they take their defaults.
func (c Config) Validate() error {
	var probs []string
	if c.Addr != "" {
		_, port, err := net.SplitHostPort(c.Addr)
		if err != nil {
			probs = append(probs, fmt.Sprintf("addr %q: want host:port, such as %s or :9090", c.Addr, DefaultAddr))
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			probs = append(probs, fmt.Sprintf("addr %q: port must be 0-65535", c.Addr))
		}
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"max_entities", c.MaxEntities}, {"max_features", c.MaxFeatures}, {"max_request_bytes", c.MaxRequestBytes}} {
		if f.v < 0 {
			probs = append(probs, fmt.Sprintf("%s %d: must not be negative (0 means the default)", f.name, f.v))
		}
	}
	for _, f := range []struct {
		name string
		v    time.Duration
	}{{"health_interval", c.HealthInterval}, {"restoring_interval", c.RestoringInterval}, {"shutdown_timeout", c.ShutdownTimeout}} {
		if f.v < 0 {
			probs = append(probs, fmt.Sprintf("%s %s: must not be negative (0 means the default)", f.name, f.v))
		}
	}
	if c.TLS != nil && len(c.TLS.Certificates) == 0 && c.TLS.GetCertificate == nil && c.TLS.GetConfigForClient == nil {
		probs = append(probs, errTLSConfig.Error())
	}
	if _, err := newTokenAuth(c.AuthTokens); err != nil {
		probs = append(probs, err.Error())
	}
	if len(probs) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, strings.Join(probs, "; "))
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.MaxEntities == 0 {
		c.MaxEntities = DefaultMaxEntities
	}
	if c.MaxFeatures == 0 {
		c.MaxFeatures = DefaultMaxFeatures
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if c.HealthInterval == 0 {
		c.HealthInterval = DefaultHealthInterval
	}
	if c.RestoringInterval == 0 {
		c.RestoringInterval = DefaultRestoringInterval
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	return c
}
