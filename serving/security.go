package serving

import (
	"bufio"
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// LoadTLS returns a server TLS config with the certificate and key in
// certFile and keyFile (PEM). With clientCAFile (PEM, one or more CA
// certificates) it requires mutual TLS: every client must present a
// certificate signed by one of them. The files are read once.
func LoadTLS(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	if certFile == "" || keyFile == "" {
		return nil, fmt.Errorf("serving: tls: both a certificate (--tls-cert) and its key (--tls-key) are required, got cert %q and key %q", certFile, keyFile)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("serving: tls: load certificate %s and key %s: %w", certFile, keyFile, err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCAFile != "" {
		pool, err := LoadCertPool(clientCAFile)
		if err != nil {
			return nil, fmt.Errorf("serving: tls: client CA (--client-ca): %w", err)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// LoadCertPool reads the PEM certificates in file into a pool.
func LoadCertPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate in it", file)
	}
	return pool, nil
}

// LoadTokens reads the accepted bearer tokens from file: one a line; blank
// lines and lines starting with # are skipped, surrounding spaces trimmed.
// A file without a token is an error, so a typo cannot turn the check off.
func LoadTokens(file string) ([]string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("serving: auth tokens (--auth-token-file): %w", err)
	}
	var tokens []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		tokens = append(tokens, line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("serving: auth tokens %s: %w", file, err)
	}
	if len(tokens) == 0 {
		return nil, fmt.Errorf("serving: auth tokens %s: no token in the file (one a line; # starts a comment)", file)
	}
	return tokens, nil
}

// openMethods need no token: load balancers and grpcurl use them without
// credentials, and they tell nothing about any entity.
var openMethods = []string{
	"/grpc.health.v1.Health/",
	"/grpc.reflection.v1.ServerReflection/",
	"/grpc.reflection.v1alpha.ServerReflection/",
}

var (
	errNoToken  = status.Error(codes.Unauthenticated, "missing bearer token: send metadata \"authorization: Bearer <token>\"")
	errBadToken = status.Error(codes.Unauthenticated, "invalid bearer token")
)

// tokenAuth checks the "authorization: Bearer <token>" metadata of every
// call but the open ones against the accepted tokens.
type tokenAuth struct {
	tokens [][]byte
}

func newTokenAuth(tokens []string) (*tokenAuth, error) {
	a := &tokenAuth{}
	for i, t := range tokens {
		if t == "" || strings.ContainsAny(t, " \t\r\n") {
			return nil, fmt.Errorf("auth_tokens[%d]: empty or contains white space", i)
		}
		a.tokens = append(a.tokens, []byte(t))
	}
	return a, nil
}

func (a *tokenAuth) check(ctx context.Context, method string) error {
	for _, m := range openMethods {
		if strings.HasPrefix(method, m) {
			return nil
		}
	}
	vals := metadata.ValueFromIncomingContext(ctx, "authorization")
	if len(vals) == 0 {
		return errNoToken
	}
	// The scheme is case-insensitive (RFC 6750).
	const scheme = "bearer "
	v := vals[0]
	if len(vals) > 1 || len(v) <= len(scheme) || !strings.EqualFold(v[:len(scheme)], scheme) {
		return errBadToken
	}
	got := []byte(strings.TrimSpace(v[len(scheme):]))
	// Compare with every token, so the time taken does not tell which
	// one nearly matched.
	ok := 0
	for _, t := range a.tokens {
		ok |= subtle.ConstantTimeCompare(got, t)
	}
	if ok != 1 {
		return errBadToken
	}
	return nil
}

func (a *tokenAuth) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := a.check(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (a *tokenAuth) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := a.check(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return handler(srv, ss)
}

// errTLSConfig is what Validate reports for a TLS config without a
// certificate.
var errTLSConfig = errors.New("tls: no server certificate (set Certificates or GetCertificate, or use LoadTLS)")
