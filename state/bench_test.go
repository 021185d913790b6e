package state

import (
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"testing"

	"github.com/featurestream/featurestream/internal/testshop"
)

// BenchmarkStore measures the processor's use of the store, tuned and with
// Pebble's defaults, on a real directory: commits of 1000 entity states
// (ns/op is per state) and point reads of existing and missing entities.
func BenchmarkStore(b *testing.B) {
	top := testshop.Topology(b)
	const entities = 200_000
	enc := top.AppendState(nil, stateOf(b, top, "u", 10))
	for _, tuned := range []bool{true, false} {
		// Named key=value so that benchstat -col /pebble compares them.
		name := "pebble=tuned"
		if !tuned {
			name = "pebble=defaults"
		}
		open := func(b *testing.B) *Store {
			s, err := Open(Options{Dir: b.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), pebbleDefaults: !tuned}, top)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			return s
		}
		b.Run(name+"/op=write", func(b *testing.B) {
			s := open(b)
			rng := rand.New(rand.NewPCG(1, 2))
			b.SetBytes(int64(len(enc)))
			b.ResetTimer()
			for i := 0; i < b.N; {
				batch := s.NewBatch()
				for j := 0; j < 1000 && i < b.N; j, i = j+1, i+1 {
					batch.Set(int32(i%8), fmt.Sprintf("u%d", rng.IntN(entities)), enc)
				}
				if err := batch.Commit(); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/op=get", func(b *testing.B) {
			s := open(b)
			for i := 0; i < entities; i += 1000 {
				batch := s.NewBatch()
				for j := i; j < i+1000; j++ {
					batch.Set(int32(j%8), fmt.Sprintf("u%d", j), enc)
				}
				batch.Commit()
			}
			s.DB().Flush()
			rng := rand.New(rand.NewPCG(3, 4))
			b.ResetTimer()
			for i := range b.N {
				// Half the reads are of entities that do not exist yet, as
				// for new users: the bloom filters answer those.
				j := rng.IntN(2 * entities)
				if _, err := s.Get(int32(j%8), fmt.Sprintf("u%d", j)); err != nil {
					b.Fatal(err, i)
				}
			}
		})
	}
}
