package sinks_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/featurestream/featurestream/internal/testshop"
	"github.com/featurestream/featurestream/sinks"
	"github.com/featurestream/featurestream/sinks/redisserver"
)

// TestRedisAuth: against a Redis that requires a password (requirepass, or
// an ACL user), the right credentials work and wrong or missing ones fail
// Ping with ErrAuth and a message that says so.
func TestRedisAuth(t *testing.T) {
	top := testshop.Topology(t)
	srv := redisserver.StartForTest(t, "--requirepass", "s3cret", "--user", "app", "on", ">app-pass", "~fs:*", "&*", "+@all")
	ctx := context.Background()
	tests := []struct {
		name               string
		username, password string
		ok                 bool
	}{
		{"requirepass", "", "s3cret", true},
		{"acl user", "app", "app-pass", true},
		{"no password", "", "", false},
		{"wrong password", "", "guess", false},
		{"acl user, wrong password", "app", "s3cret", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _, _ := newStore(t, top, sinks.Options{Addrs: []string{srv.Addr()}, Username: tt.username, Password: tt.password})
			err := s.Ping(ctx)
			if !tt.ok {
				if !errors.Is(err, sinks.ErrAuth) || !strings.Contains(err.Error(), "refused authentication") {
					t.Fatalf("Ping = %v, want ErrAuth", err)
				}
				if _, err := s.Read(ctx, []string{"u1"}, []int{0}, nil); err == nil {
					t.Fatal("Read succeeded without valid credentials")
				}
				return
			}
			if err != nil {
				t.Fatalf("Ping: %v", err)
			}
			if err := s.Write(ctx, []sinks.Record{{Entity: "u1", Version: 1, State: shopState(t, top, "u1", t0, 3)}}); err != nil {
				t.Fatal(err)
			}
			got, err := s.Read(ctx, []string{"u1"}, []int{0}, nil)
			if err != nil || !got[0].Found {
				t.Fatalf("Read = %+v, %v", got, err)
			}
		})
	}
}
