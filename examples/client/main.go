// Command client reads features with the featurestream Go client: the
// shortest path from a ranking service to its features.
//
// Against `make dev` (plaintext on loopback):
//
//	go run ./examples/client -plaintext u1 u2
//
// Against a server with TLS, mutual TLS and a token:
//
//	FEATURESTREAM_TOKEN=... go run ./examples/client -addr features:9090 \
//	  -ca ca.pem -cert client.pem -key client-key.pem u1
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/featurestream/featurestream/client"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9090", "FeatureService address")
	plaintext := flag.Bool("plaintext", false, "connect without TLS (loopback or trusted network only)")
	ca := flag.String("ca", "", "PEM CA certificates to trust (default: the system's)")
	cert := flag.String("cert", "", "PEM client certificate, for mutual TLS")
	key := flag.String("key", "", "PEM key of -cert")
	features := flag.String("features", "", "comma-separated feature names (default: all)")
	timeout := flag.Duration("timeout", 2*time.Second, "deadline of the call")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: client [flags] entity-id...\nThe bearer token, if the server wants one, is read from FEATURESTREAM_TOKEN.\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*addr, *plaintext, *ca, *cert, *key, *features, *timeout, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		os.Exit(1)
	}
}

func run(addr string, plaintext bool, ca, cert, key, features string, timeout time.Duration, ids []string) error {
	var opts []client.Option
	if plaintext {
		opts = append(opts, client.Insecure())
	} else {
		opts = append(opts, client.TLSFiles(ca, cert, key))
	}
	if tok := os.Getenv("FEATURESTREAM_TOKEN"); tok != "" {
		opts = append(opts, client.Token(tok))
	}
	c, err := client.New(addr, opts...)
	if err != nil {
		return err
	}
	defer c.Close()

	req := client.Request{EntityIDs: ids}
	if features != "" {
		req.Features = strings.Split(features, ",")
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	fs, err := c.GetFeatures(ctx, req)
	if err != nil {
		return err
	}

	fmt.Printf("as of %s\n", fs.AsOf().Format(time.RFC3339Nano))
	for i := range fs.Len() {
		e := fs.Entity(i)
		last := "never seen"
		if t, ok := e.LastEventTime(); ok {
			last = "last event " + t.Format(time.RFC3339)
		}
		fmt.Printf("%s (%s)\n", e.ID(), last)
		for j, name := range fs.Names() {
			v := e.Value(j)
			fmt.Printf("  %-16s %-9s %s\n", name, v.Status(), format(v))
		}
	}
	return nil
}

// format prints whichever value the feature has.
func format(v client.Value) string {
	switch x := v.Any().(type) {
	case nil:
		return "-"
	case []string:
		return "[" + strings.Join(x, " ") + "]"
	default:
		return fmt.Sprint(x)
	}
}
