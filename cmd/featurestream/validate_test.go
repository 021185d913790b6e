package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestValidate: validate accepts the example specs and fails on a spec
// whose Avro schema file is missing, naming the key and the file.
func TestValidate(t *testing.T) {
	for _, spec := range []string{shopSpec, "../../examples/shop/spec-avro.yaml", "../../examples/shop/spec-features.yaml"} {
		if err := (&validateCmd{specFlag{Spec: spec}}).Run(context.Background(), discardLogger()); err != nil {
			t.Errorf("%s: %v", spec, err)
		}
	}
	raw, err := os.ReadFile("../../examples/shop/spec-avro.yaml")
	if err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs("../../examples/shop/event.avsc")
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "spec.yaml")
	text := strings.ReplaceAll(string(raw), " event.avsc", " "+abs)
	text = strings.Replace(text, "2: event-v2.avsc", "2: missing.avsc", 1)
	if err := os.WriteFile(bad, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	err = (&validateCmd{specFlag{Spec: bad}}).Run(context.Background(), discardLogger())
	if err == nil || !strings.Contains(err.Error(), "source.schemas.2") || !strings.Contains(err.Error(), "missing.avsc") {
		t.Fatalf("err = %v, want one naming source.schemas.2 and missing.avsc", err)
	}
}
