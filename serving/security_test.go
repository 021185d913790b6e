package serving

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/featurestream/featurestream/internal/testcert"
	pb "github.com/featurestream/featurestream/proto/featurestream/v1"
)

func dial(t testing.TB, addr string, creds credentials.TransportCredentials, opts ...grpc.DialOption) pb.FeatureServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(creds)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return pb.NewFeatureServiceClient(conn)
}

func callOnce(c pb.FeatureServiceClient) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.GetFeatures(ctx, &pb.GetFeaturesRequest{EntityIds: []string{"u1"}})
	return err
}

// TestMutualTLS: with --client-ca only clients with a certificate of that
// CA get an answer.
func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, rogue := testcert.NewCA(t, "featurestream test CA"), testcert.NewCA(t, "someone else")
	srvCert, srvKey := ca.Issue(t, "server", true)
	tlsCfg, err := LoadTLS(testcert.WriteFile(t, dir, "srv.pem", srvCert), testcert.WriteFile(t, dir, "srv.key", srvKey), testcert.WriteFile(t, dir, "ca.pem", ca.PEM))
	if err != nil {
		t.Fatal(err)
	}
	e := start(t, Config{TLS: tlsCfg})

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.PEM)
	clientTLS := func(issuer *testcert.CA) *tls.Config {
		cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
		if issuer != nil {
			c, k := issuer.Issue(t, "client", false)
			pair, err := tls.X509KeyPair(c, k)
			if err != nil {
				t.Fatal(err)
			}
			cfg.Certificates = []tls.Certificate{pair}
		}
		return cfg
	}
	tests := []struct {
		name  string
		creds credentials.TransportCredentials
		ok    bool
	}{
		{"certificate of the CA", credentials.NewTLS(clientTLS(ca)), true},
		{"no client certificate", credentials.NewTLS(clientTLS(nil)), false},
		{"certificate of another CA", credentials.NewTLS(clientTLS(rogue)), false},
		{"plaintext", insecure.NewCredentials(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := callOnce(dial(t, e.addr, tt.creds))
			if tt.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tt.ok && status.Code(err) != codes.Unavailable {
				t.Fatalf("err = %v, want the connection refused (Unavailable)", err)
			}
		})
	}
}

// TestServerTLSOnly: without --client-ca any client that trusts the server
// gets in, and a client that does not trust it is refused.
func TestServerTLSOnly(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewCA(t, "featurestream test CA")
	c, k := ca.Issue(t, "server", true)
	tlsCfg, err := LoadTLS(testcert.WriteFile(t, dir, "srv.pem", c), testcert.WriteFile(t, dir, "srv.key", k), "")
	if err != nil {
		t.Fatal(err)
	}
	e := start(t, Config{TLS: tlsCfg})
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.PEM)
	if err := callOnce(dial(t, e.addr, credentials.NewTLS(&tls.Config{RootCAs: roots}))); err != nil {
		t.Fatalf("trusting client refused: %v", err)
	}
	if err := callOnce(dial(t, e.addr, credentials.NewTLS(&tls.Config{}))); status.Code(err) != codes.Unavailable {
		t.Fatalf("client without the CA: err = %v, want Unavailable", err)
	}
}

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return false }

func TestBearerToken(t *testing.T) {
	e := start(t, Config{AuthTokens: []string{"first-token", "second-token"}})
	tests := []struct {
		name   string
		header string // empty: none sent
		want   codes.Code
		msg    string
	}{
		{"no token", "", codes.Unauthenticated, "missing bearer token"},
		{"wrong token", "Bearer third-token", codes.Unauthenticated, "invalid bearer token"},
		{"prefix of a token", "Bearer first", codes.Unauthenticated, "invalid bearer token"},
		{"token without scheme", "first-token", codes.Unauthenticated, "invalid bearer token"},
		{"basic scheme", "Basic first-token", codes.Unauthenticated, "invalid bearer token"},
		{"first token", "Bearer first-token", codes.OK, ""},
		{"second token, scheme in lower case", "bearer second-token", codes.OK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var opts []grpc.DialOption
			if tt.header != "" {
				opts = append(opts, grpc.WithPerRPCCredentials(bearer(tt.header)))
			}
			err := callOnce(dial(t, e.addr, insecure.NewCredentials(), opts...))
			if st := status.Convert(err); st.Code() != tt.want || !strings.Contains(st.Message(), tt.msg) {
				t.Fatalf("err = %v, want %v %q", err, tt.want, tt.msg)
			}
		})
	}
	// Two authorization headers are refused, not matched one by one.
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer nope", "authorization", "Bearer first-token")
	if _, err := e.client.GetFeatures(ctx, &pb.GetFeaturesRequest{EntityIds: []string{"u1"}}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("two authorization values: err = %v, want Unauthenticated", err)
	}
	// Health and reflection stay open for load balancers and grpcurl.
	waitHealth(t, e, "", healthpb.HealthCheckResponse_SERVING)
	if _, err := e.client.ListFeatures(context.Background(), &pb.ListFeaturesRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("ListFeatures without token: err = %v, want Unauthenticated", err)
	}
}

func TestMaxRequestBytes(t *testing.T) {
	e := start(t, Config{MaxRequestBytes: 1024})
	ids := make([]string, 100)
	for i := range ids {
		ids[i] = strings.Repeat("x", 20)
	}
	_, err := e.client.GetFeatures(context.Background(), &pb.GetFeaturesRequest{EntityIds: ids})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("2 KiB request with a 1 KiB limit: err = %v, want ResourceExhausted", err)
	}
	if _, err := e.client.GetFeatures(context.Background(), &pb.GetFeaturesRequest{EntityIds: ids[:10]}); err != nil {
		t.Fatalf("small request: %v", err)
	}
}

func TestLoadSecurityFiles(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewCA(t, "ca")
	c, k := ca.Issue(t, "server", true)
	cert, key := testcert.WriteFile(t, dir, "c.pem", c), testcert.WriteFile(t, dir, "k.pem", k)
	notPEM := testcert.WriteFile(t, dir, "junk", []byte("hello"))
	tokens := testcert.WriteFile(t, dir, "tokens", []byte("# callers\n\n  alpha-token \nbeta-token\n"))
	noTokens := testcert.WriteFile(t, dir, "none", []byte("# nobody yet\n\n"))

	got, err := LoadTokens(tokens)
	if err != nil || len(got) != 2 || got[0] != "alpha-token" || got[1] != "beta-token" {
		t.Errorf("LoadTokens = %q, %v", got, err)
	}
	for _, tt := range []struct {
		name string
		err  error
		want string
	}{
		{"no tokens", second(LoadTokens(noTokens)), "no token in the file"},
		{"token file missing", second(LoadTokens(filepath.Join(dir, "nope"))), "--auth-token-file"},
		{"key without cert", second(LoadTLS("", key, "")), "both a certificate (--tls-cert) and its key (--tls-key)"},
		{"cert not PEM", second(LoadTLS(notPEM, key, "")), "load certificate"},
		{"client CA not PEM", second(LoadTLS(cert, key, notPEM)), "client CA (--client-ca)"},
		{"token with space", validate(Config{AuthTokens: []string{"a b"}}), "auth_tokens[0]"},
		{"tls without cert", validate(Config{TLS: &tls.Config{}}), "no server certificate"},
		{"negative request bytes", validate(Config{MaxRequestBytes: -1}), "max_request_bytes -1"},
	} {
		if tt.err == nil || !strings.Contains(tt.err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want %q", tt.name, tt.err, tt.want)
		}
	}
}

func second[T any](_ T, err error) error { return err }

// validate returns what Config.Validate says.
func validate(c Config) error { return c.Validate() }
