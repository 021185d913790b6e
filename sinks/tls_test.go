package sinks_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"strconv"
	"testing"

	"github.com/featurestream/featurestream/internal/testcert"
	"github.com/featurestream/featurestream/internal/testshop"
	"github.com/featurestream/featurestream/sinks"
	"github.com/featurestream/featurestream/sinks/redisserver"
)

// TestRedisTLS talks to a redis-server's TLS port: a client that trusts
// its certificate works, one that does not is refused.
func TestRedisTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, cert := testcert.SelfSigned(t, dir, "redis")
	tlsPort := freePort(t)
	redisserver.StartForTest(t, "--tls-port", strconv.Itoa(tlsPort), "--tls-cert-file", certFile,
		"--tls-key-file", keyFile, "--tls-ca-cert-file", certFile, "--tls-auth-clients", "no")
	top := testshop.Topology(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(tlsPort))
	ctx := context.Background()

	roots := x509.NewCertPool()
	roots.AddCert(cert.Leaf)
	s, _, _ := newStore(t, top, sinks.Options{Addrs: []string{addr}, TLS: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}})
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping over TLS: %v", err)
	}
	if err := s.Write(ctx, []sinks.Record{{Entity: "u1", Version: 1, State: shopState(t, top, "u1", t0, 2)}}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Read(ctx, []string{"u1"}, []int{0}, nil); err != nil || !got[0].Found {
		t.Fatalf("Read over TLS = %+v, %v", got, err)
	}

	untrusting, _, _ := newStore(t, top, sinks.Options{Addrs: []string{addr}, TLS: &tls.Config{MinVersion: tls.VersionTLS12}})
	if err := untrusting.Ping(ctx); err == nil {
		t.Fatal("Ping succeeded without trusting the server's certificate")
	}
}
