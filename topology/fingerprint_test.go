package topology

import (
	"slices"
	"strings"
	"testing"
)

func compileYAML(t *testing.T, src string) *Topology {
	t.Helper()
	spec, err := ParseSpec("spec.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	top, err := Compile(spec)
	if err != nil {
		t.Fatal(err)
	}
	return top
}

const fpBase = `app: shop
source: {topic: events, key: user_id, time: ts}
features:
  - {name: views_1h, where: 'type == "view"', agg: count, window: 1h}
  - {name: spend_24h, where: 'type == "purchase"', agg: sum, field: price, window: 24h}
  - {name: last_items, agg: last_k, field: item_id, k: 10}
`

func TestCompareFingerprints(t *testing.T) {
	base := compileYAML(t, fpBase).StateFingerprints()
	if len(base) != 3 {
		t.Fatalf("fingerprints %v", base)
	}
	tests := []struct {
		name                    string
		edit                    func(string) string
		added, removed, changed []string
	}{
		{name: "same", edit: func(s string) string { return s }},
		{name: "description and staleness only", edit: func(s string) string {
			return strings.Replace(s, "agg: count, window: 1h}", "agg: count, window: 1h, description: Views., max_staleness: 5m}", 1)
		}},
		{name: "a derived feature added", edit: func(s string) string {
			return s + "  - {name: spend_per_view, expr: spend_24h / views_1h}\n"
		}},
		{name: "feature added", edit: func(s string) string {
			return s + "  - {name: clicks_1h, where: 'type == \"click\"', agg: count, window: 1h}\n"
		}, added: []string{"clicks_1h"}},
		{name: "feature removed", edit: func(s string) string {
			return strings.Replace(s, "  - {name: last_items, agg: last_k, field: item_id, k: 10}\n", "", 1)
		}, removed: []string{"last_items"}},
		{name: "window changed", edit: func(s string) string { return strings.Replace(s, "window: 1h}", "window: 2h}", 1) }, changed: []string{"views_1h"}},
		{name: "tile changed", edit: func(s string) string { return strings.Replace(s, "window: 1h}", "window: 1h, tile: 1m}", 1) }, changed: []string{"views_1h"}},
		{name: "filter changed", edit: func(s string) string { return strings.Replace(s, `"view"`, `"click"`, 1) }, changed: []string{"views_1h"}},
		{name: "k changed", edit: func(s string) string { return strings.Replace(s, "k: 10", "k: 20", 1) }, changed: []string{"last_items"}},
		{name: "field changed", edit: func(s string) string { return strings.Replace(s, "field: price", "field: amount", 1) }, changed: []string{"spend_24h"}},
		{name: "entity key changed", edit: func(s string) string { return strings.Replace(s, "key: user_id", "key: session_id", 1) },
			changed: []string{"last_items", "spend_24h", "views_1h"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := CompareFingerprints(base, compileYAML(t, tt.edit(fpBase)).StateFingerprints())
			if !slices.Equal(c.Added, tt.added) || !slices.Equal(c.Removed, tt.removed) || !slices.Equal(c.Changed, tt.changed) {
				t.Fatalf("got %+v, want added %v removed %v changed %v", c, tt.added, tt.removed, tt.changed)
			}
			if c.Compatible() != (len(tt.changed) == 0) {
				t.Fatalf("Compatible() = %v", c.Compatible())
			}
		})
	}
}
