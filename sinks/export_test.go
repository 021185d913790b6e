package sinks

import "time"

// SetClock replaces the clock s stamps writes and restoring marks with.
func SetClock(s *Store, now func() time.Time) { s.now = now }

// SetReadPipelines sets how many read pipelines s keeps in flight.
func SetReadPipelines(s *Store, n int) { s.reads.max = n }

// QueuedReads is how many reads wait for a pipeline.
func QueuedReads(s *Store) int {
	s.reads.mu.Lock()
	defer s.reads.mu.Unlock()
	return len(s.reads.mu.queue)
}
