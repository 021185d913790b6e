package main

import (
	"context"
	"crypto/tls"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/featurestream/featurestream/internal/testcert"
	"github.com/featurestream/featurestream/sinks/redisserver"
	"github.com/featurestream/featurestream/topology"
)

// TestKafkaSASLAndTLS runs `featurestream process` against a broker that
// takes only TLS connections with SCRAM-SHA-256 users: with the CA and the
// credentials it processes events into Redis; a wrong password, or no
// trust in the broker's certificate, stops it at once with an error.
func TestKafkaSASLAndTLS(t *testing.T) {
	dir := t.TempDir()
	caFile, _, serverCert := testcert.SelfSigned(t, dir, "kafka")
	kafka, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "events"),
		kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", "fs", "s3cret"),
		kfake.TLS(&tls.Config{Certificates: []tls.Certificate{serverCert}, MinVersion: tls.VersionTLS12}))
	if err != nil {
		t.Fatal(err)
	}
	defer kafka.Close()
	rs := redisserver.StartForTest(t)

	good := kafkaFlags{Brokers: kafka.ListenAddrs(), KafkaTLSCA: caFile, KafkaSASLMechanism: "SCRAM-SHA-256", KafkaSASLUsername: "fs", KafkaSASLPassword: "s3cret"}
	process := func(k kafkaFlags) *processCmd {
		c := &processCmd{specFlag: specFlag{Spec: shopSpec}, kafkaFlags: k, StateDir: filepath.Join(dir, "state"), AdminAddr: "127.0.0.1:0",
			CommitInterval: 50 * time.Millisecond, SessionTimeout: 6 * time.Second, ExpireInterval: time.Hour, Guarantee: "exactly-once"}
		c.RedisAddr = rs.Addr()
		return c
	}
	for name, k := range map[string]kafkaFlags{
		"wrong password":               func() kafkaFlags { k := good; k.KafkaSASLPassword = "nope"; return k }(),
		"untrusted broker certificate": func() kafkaFlags { k := good; k.KafkaTLSCA, k.KafkaTLS = "", true; return k }(),
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := process(k).Run(ctx, discardLogger())
			if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), "--kafka-sasl-") {
				t.Fatalf("process = %v (ctx %v), want an immediate error naming the flags to check", err, ctx.Err())
			}
			t.Log(err)
		})
	}
	for _, bad := range []struct {
		k    kafkaFlags
		want string
	}{
		{kafkaFlags{Brokers: good.Brokers, KafkaSASLUsername: "fs"}, "--kafka-sasl-mechanism"},
		{kafkaFlags{Brokers: good.Brokers, KafkaSASLMechanism: "PLAIN"}, "--kafka-sasl-username"},
		{kafkaFlags{Brokers: good.Brokers, KafkaTLSCert: caFile}, "--kafka-tls-key"},
		{kafkaFlags{Brokers: good.Brokers, KafkaTLSKey: caFile}, "--kafka-tls-cert"},
		{kafkaFlags{Brokers: good.Brokers, KafkaTLSCA: filepath.Join(dir, "missing.pem")}, "--kafka-tls-ca"},
	} {
		if _, err := bad.k.opts(); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%+v: err = %v, want one naming %s", bad.k, err, bad.want)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- process(good).Run(ctx, discardLogger()) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("process: %v", err)
		}
	}()
	opts, err := good.opts()
	if err != nil {
		t.Fatal(err)
	}
	prod, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	ts := time.Now().UnixMilli()
	rec := &kgo.Record{Topic: "events", Key: []byte("u-tls"), Value: []byte(`{"user_id":"u-tls","ts":` + strconv.FormatInt(ts, 10) + `,"type":"view","item_id":"i1"}`)}
	if err := prod.ProduceSync(ctx, rec).FirstErr(); err != nil {
		t.Fatal(err)
	}
	store, client, err := openStore(ctx, rs.Addr(), false, mustTopology(t), discardLogger(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	waitFor(t, "the event in Redis", func() string {
		entries, err := store.Read(ctx, []string{"u-tls"}, []int{0}, nil)
		if err != nil {
			return err.Error()
		}
		if !entries[0].Found {
			return "u-tls not found"
		}
		return ""
	})
}

func mustTopology(t *testing.T) *topology.Topology {
	t.Helper()
	top, err := loadTopology(shopSpec)
	if err != nil {
		t.Fatal(err)
	}
	return top
}
