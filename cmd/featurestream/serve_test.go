package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	featurestreamv1 "github.com/featurestream/featurestream/proto/featurestream/v1"
	"github.com/featurestream/featurestream/sinks/redisserver"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestServeRedisPasswordAndToken runs `featurestream serve` against a
// redis-server with requirepass: without the password it stops at once
// saying why; with it (from the environment) it serves, and callers need
// a token from --auth-token-file.
func TestServeRedisPasswordAndToken(t *testing.T) {
	rs := redisserver.StartForTest(t, "--requirepass", "pw-1")
	tokens := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokens, []byte("# callers\nranker-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))

	noPassword := &serveCmd{specFlag: specFlag{Spec: shopSpec}, GrpcAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", MaxEntities: 10}
	noPassword.RedisAddr = rs.Addr()
	noPassword.MaxRequestBytes, noPassword.MaxFeatures = 1<<20, 10
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := noPassword.Run(ctx, logger)
	if err == nil || !strings.Contains(err.Error(), "refused authentication") || !strings.Contains(err.Error(), "--redis-password") {
		t.Fatalf("serve without the redis password: %v; want a refused-authentication error naming --redis-password", err)
	}

	t.Setenv("FEATURESTREAM_REDIS_PASSWORD", "pw-1")
	grpcAddr := freeAddr(t)
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- run(runCtx, []string{"serve", "--spec", shopSpec, "--redis-addr", rs.Addr(), "--grpc-addr", grpcAddr,
			"--admin-addr", "127.0.0.1:0", "--auth-token-file", tokens, "--log-level", "error"})
	}()
	defer func() {
		stop()
		if code := <-done; code != 0 {
			t.Errorf("serve exited %d", code)
		}
	}()

	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := featurestreamv1.NewFeatureServiceClient(conn)
	req := &featurestreamv1.GetFeaturesRequest{EntityIds: []string{"u1"}}
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer ranker-token")
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := client.GetFeatures(authed, req)
		if err == nil {
			if got := resp.GetResults()[0].GetValues()[0].GetStatus(); got != featurestreamv1.FeatureValue_NOT_FOUND {
				t.Fatalf("unknown entity: status %v", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve with the password from FEATURESTREAM_REDIS_PASSWORD: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := client.GetFeatures(ctx, req); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("call without a token: %v, want Unauthenticated", err)
	}
}
