package topology

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a time.Duration that a spec writes as a Go duration ("90s",
// "1h30m") or with a day suffix ("7d", "30d"), which Go's parser lacks.
type Duration time.Duration

// ParseDuration parses a spec duration: a Go duration or an integer number of
// days ("7d").
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseInt(days, 10, 64)
		if err != nil || n < 0 || n > 36500 {
			return 0, fmt.Errorf("bad duration %q: want a whole number of days such as 7d, or a Go duration such as 90m", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("bad duration %q: want a Go duration such as 90s, 5m, 1h30m, or days such as 7d", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("bad duration %q: must not be negative", s)
	}
	return d, nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return lineErrorf(n, "bad duration: want a scalar such as 5m or 7d")
	}
	v, err := ParseDuration(n.Value)
	if err != nil {
		return lineErrorf(n, "%v", err)
	}
	*d = Duration(v)
	return nil
}

// String formats d the way the spec would write it.
func (d Duration) String() string {
	td := time.Duration(d)
	if td != 0 && td%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", td/(24*time.Hour))
	}
	return td.String()
}
