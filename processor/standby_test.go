package processor

import (
	"slices"
	"testing"
)

// TestStandbyPartitions: each partition's standbys are the n members after
// its owner, cyclically; never the owner; n is capped by the group size.
func TestStandbyPartitions(t *testing.T) {
	owners := map[int32]string{0: "a", 1: "a", 2: "b", 3: "c", 4: "d"}
	order := []string{"a", "b", "c", "d"}
	for _, tc := range []struct {
		self string
		n    int
		want []int32
	}{
		{"b", 1, []int32{0, 1}},
		{"a", 1, []int32{4}},
		{"c", 2, []int32{0, 1, 2}},
		{"a", 3, []int32{2, 3, 4}},
		{"a", 9, []int32{2, 3, 4}},
		{"a", 0, nil},
		{"x", 1, nil},
	} {
		if got := standbyPartitions(owners, order, tc.self, tc.n); !slices.Equal(got, tc.want) {
			t.Errorf("self %s n %d: %v, want %v", tc.self, tc.n, got, tc.want)
		}
	}
	// Every partition has exactly n standbys, none its owner.
	for n := 1; n <= 3; n++ {
		count := map[int32]int{}
		for _, self := range order {
			for _, part := range standbyPartitions(owners, order, self, n) {
				if owners[part] == self {
					t.Fatalf("n %d: %s is owner and standby of %d", n, self, part)
				}
				count[part]++
			}
		}
		for part := range owners {
			if count[part] != n {
				t.Errorf("n %d: partition %d has %d standbys", n, part, count[part])
			}
		}
	}
}
