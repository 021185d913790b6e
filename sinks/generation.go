package sinks

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// State generations in Redis. Each generation's entities and restoring
// marks have their own keys (EntityKeyFor, RestoringKeyFor), so a replay
// fills generation N+1 while servers read N. GenerationKey holds the
// generation servers read; PublishStateGeneration moves it forward in one
// command, so every server switches whole, never mixing generations within
// a request.

// GenerationKey is the Redis string holding app's published state
// generation in decimal; missing means 0.
func GenerationKey(app string) string { return "fs:" + app + ":generation" }

// EntityKeyFor is the key of entity id in app's state generation gen:
// EntityKey(app, id) for generation 0, "fs:<app>:g<gen>:e:<id>" after.
func EntityKeyFor(app string, gen int, id string) string {
	if gen == 0 {
		return EntityKey(app, id)
	}
	return "fs:" + app + ":g" + strconv.Itoa(gen) + ":e:" + id
}

// RestoringKeyFor is the restoring marks hash of app's state generation gen.
func RestoringKeyFor(app string, gen int) string {
	if gen == 0 {
		return RestoringKey(app)
	}
	return "fs:" + app + ":g" + strconv.Itoa(gen) + ":restoring"
}

// genKeys are one generation's key names.
type genKeys struct {
	gen               int
	entity, restoring string // entity is the prefix of entity keys
}

// SetStateGeneration makes the store read and write state generation gen
// from now on; a Read or Write in progress finishes in the generation it
// started in.
func (s *Store) SetStateGeneration(gen int) {
	app := s.top.Spec.App
	s.keys.Store(&genKeys{gen: gen, entity: EntityKeyFor(app, gen, ""), restoring: RestoringKeyFor(app, gen)})
	s.generation.Set(float64(gen))
}

// StateGeneration returns the generation the store reads and writes.
func (s *Store) StateGeneration() int { return s.keys.Load().gen }

// publishScript sets KEYS[1] to ARGV[1] unless it holds a greater number,
// and returns what it holds after.
var publishScript = redis.NewScript(`
local cur = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local want = tonumber(ARGV[1])
if want > cur then
  redis.call('SET', KEYS[1], ARGV[1])
  return want
end
return cur`)

// PublishStateGeneration makes gen the generation servers read, unless a
// newer one already is, and returns the published generation.
func (s *Store) PublishStateGeneration(ctx context.Context, gen int) (int, error) {
	n, err := publishScript.Run(ctx, s.client, []string{GenerationKey(s.top.Spec.App)}, gen).Int()
	if err != nil {
		s.errors.WithLabelValues("generation").Inc()
		return 0, fmt.Errorf("redis publish state generation %d: %w", gen, err)
	}
	return n, nil
}

// ReadStateGeneration returns the published state generation: 0 when none
// was published.
func (s *Store) ReadStateGeneration(ctx context.Context) (int, error) {
	v, err := s.client.Get(ctx, GenerationKey(s.top.Spec.App)).Result()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		s.errors.WithLabelValues("generation").Inc()
		return 0, fmt.Errorf("redis read state generation: %w", err)
	}
	gen, err := strconv.Atoi(v)
	if err != nil || gen < 0 {
		return 0, fmt.Errorf("redis read state generation: %s holds %q, not a generation", GenerationKey(s.top.Spec.App), v)
	}
	return gen, nil
}

// DeleteStateGeneration deletes every entity and the restoring marks of
// state generation gen (on every master of a cluster) and returns how many
// keys it deleted. It scans, so it is for cleaning up a generation no
// server reads, not for a request path.
func (s *Store) DeleteStateGeneration(ctx context.Context, gen int) (int64, error) {
	if gen == s.StateGeneration() {
		return 0, fmt.Errorf("delete state generation %d: the store itself uses it", gen)
	}
	app := s.top.Spec.App
	match := EntityKeyFor(app, gen, "") + "*"
	var deleted atomic.Int64 // ForEachMaster runs nodes concurrently
	del := func(ctx context.Context, c *redis.Client) error {
		var cursor uint64
		for {
			keys, next, err := c.Scan(ctx, cursor, match, 1000).Result()
			if err != nil {
				return err
			}
			if len(keys) > 0 {
				// One UNLINK per key: in a cluster, keys of one node still
				// span slots.
				cmds, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
					for _, k := range keys {
						p.Unlink(ctx, k)
					}
					return nil
				})
				if err != nil {
					return err
				}
				for _, cmd := range cmds {
					deleted.Add(cmd.(*redis.IntCmd).Val())
				}
			}
			if cursor = next; cursor == 0 {
				return nil
			}
		}
	}
	var err error
	switch c := s.client.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, del)
	case *redis.Client:
		err = del(ctx, c)
	default:
		err = fmt.Errorf("unsupported client %T", s.client)
	}
	if err == nil {
		var n int64
		if n, err = s.client.Unlink(ctx, RestoringKeyFor(app, gen)).Result(); err == nil {
			deleted.Add(n)
		}
	}
	if err != nil {
		return deleted.Load(), fmt.Errorf("redis delete state generation %d: %w", gen, err)
	}
	return deleted.Load(), nil
}
