package sinks

import "time"

// SetClock replaces the clock s stamps writes and restoring marks with.
func SetClock(s *Store, now func() time.Time) { s.now = now }
