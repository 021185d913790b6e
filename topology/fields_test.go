package topology

import (
	"slices"
	"testing"
)

// TestEventFields: the top-level fields features read are their fields'
// first path parts and their where expressions' identifiers; $env makes
// every field matter.
func TestEventFields(t *testing.T) {
	const head = "app: shop\nsource:\n  topic: events\n  format: json\n  key: user_id\n  time: ts\nfeatures:\n"
	tests := []struct {
		name     string
		features string
		want     []string
		all      bool
	}{
		{
			name: "shop",
			features: "  - {name: views, where: 'type == \"view\"', agg: count, window: 1h}\n" +
				"  - {name: spend, where: 'type == \"purchase\"', agg: sum, field: price, window: 1h}\n" +
				"  - {name: items, agg: last_k, field: item_id, k: 10}\n",
			want: []string{"item_id", "price", "type"},
		},
		{
			name: "nested paths and expressions",
			features: "  - {name: big, where: 'item.price > 10 && len(tags) > 1', agg: sum, field: order.total, window: 1h}\n" +
				"  - {name: d, expr: big * 2}\n",
			want: []string{"item", "order", "tags"},
		},
		{
			name:     "whole event",
			features: "  - {name: n, where: 'len($env) > 3', agg: count, window: 1h}\n",
			all:      true,
		},
		{
			name:     "no fields",
			features: "  - {name: n, agg: count, window: 1h}\n",
			want:     []string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseSpec("spec.yaml", []byte(head+tt.features))
			if err != nil {
				t.Fatal(err)
			}
			top, err := Compile(s)
			if err != nil {
				t.Fatal(err)
			}
			got, all := top.EventFields()
			if all != tt.all || !slices.Equal(got, tt.want) {
				t.Errorf("EventFields() = %q, %v; want %q, %v", got, all, tt.want, tt.all)
			}
		})
	}
}
