package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// kafkaFlags are the Kafka connection of process, replay and demo: seed
// brokers, TLS and SASL.
type kafkaFlags struct {
	Brokers            []string `help:"Kafka seed brokers, comma-separated." required:"" sep:","`
	KafkaTLS           bool     `name:"kafka-tls" help:"Talk to Kafka over TLS, trusting the system's CA certificates (or --kafka-tls-ca)."`
	KafkaTLSCA         string   `name:"kafka-tls-ca" help:"PEM file of the CA certificates that sign the brokers' certificates; implies --kafka-tls." type:"path"`
	KafkaTLSCert       string   `name:"kafka-tls-cert" help:"PEM client certificate, for brokers that require mutual TLS; with --kafka-tls-key; implies --kafka-tls." type:"path"`
	KafkaTLSKey        string   `name:"kafka-tls-key" help:"PEM private key of --kafka-tls-cert." type:"path"`
	KafkaSASLMechanism string   `name:"kafka-sasl-mechanism" help:"SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty for none. Use it with TLS: PLAIN sends the password as is." enum:",PLAIN,SCRAM-SHA-256,SCRAM-SHA-512" default:""`
	KafkaSASLUsername  string   `name:"kafka-sasl-username" help:"SASL user."`
	KafkaSASLPassword  string   `name:"kafka-sasl-password" help:"SASL password. Prefer the environment variable: a flag is visible to other users in ps."`
}

// opts returns the franz-go options for these flags (seed brokers first),
// or an error naming the flag to fix.
func (f kafkaFlags) opts() ([]kgo.Opt, error) {
	sec, err := f.securityOpts()
	if err != nil {
		return nil, err
	}
	return append([]kgo.Opt{kgo.SeedBrokers(f.Brokers...)}, sec...), nil
}

// securityOpts are opts without the seed brokers: TLS and SASL.
func (f kafkaFlags) securityOpts() ([]kgo.Opt, error) {
	var opts []kgo.Opt
	if (f.KafkaTLSCert == "") != (f.KafkaTLSKey == "") {
		return nil, errors.New("--kafka-tls-cert and --kafka-tls-key go together: give both for mutual TLS, or neither")
	}
	if f.KafkaTLS || f.KafkaTLSCA != "" || f.KafkaTLSCert != "" {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if f.KafkaTLSCA != "" {
			pem, err := os.ReadFile(f.KafkaTLSCA)
			if err != nil {
				return nil, fmt.Errorf("--kafka-tls-ca: %w", err)
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--kafka-tls-ca %s: no PEM certificate in it", f.KafkaTLSCA)
			}
		}
		if f.KafkaTLSCert != "" {
			cert, err := tls.LoadX509KeyPair(f.KafkaTLSCert, f.KafkaTLSKey)
			if err != nil {
				return nil, fmt.Errorf("--kafka-tls-cert/--kafka-tls-key: %w", err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, kgo.DialTLSConfig(cfg))
	}
	switch {
	case f.KafkaSASLMechanism == "" && (f.KafkaSASLUsername != "" || f.KafkaSASLPassword != ""):
		return nil, errors.New("--kafka-sasl-username/--kafka-sasl-password need --kafka-sasl-mechanism (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)")
	case f.KafkaSASLMechanism != "" && f.KafkaSASLUsername == "":
		return nil, fmt.Errorf("--kafka-sasl-mechanism %s needs --kafka-sasl-username (and --kafka-sasl-password)", f.KafkaSASLMechanism)
	}
	switch f.KafkaSASLMechanism {
	case "PLAIN":
		opts = append(opts, kgo.SASL(plain.Auth{User: f.KafkaSASLUsername, Pass: f.KafkaSASLPassword}.AsMechanism()))
	case "SCRAM-SHA-256":
		opts = append(opts, kgo.SASL(scram.Auth{User: f.KafkaSASLUsername, Pass: f.KafkaSASLPassword}.AsSha256Mechanism()))
	case "SCRAM-SHA-512":
		opts = append(opts, kgo.SASL(scram.Auth{User: f.KafkaSASLUsername, Pass: f.KafkaSASLPassword}.AsSha512Mechanism()))
	}
	return opts, nil
}
