package sinks

import (
	"context"
	"fmt"
	"slices"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// SetPartitionRestoring records that the processor is restoring partition
// (restoring true) or has finished (false), so serving marks that
// partition's entities STALE meanwhile. A mark lasts RestoringTTL: a
// restore that takes longer must renew it by calling again. It is one
// round trip; safe for concurrent use.
//
// All marks of an app live in one hash (RestoringKey), so serving reads
// them all with one command whatever the partition count and in Redis
// Cluster; each field carries its own deadline because Redis 7.0 cannot
// expire single hash fields, and the hash itself expires RestoringTTL after
// the last mark, so nothing is left behind when every processor is gone.
func (s *Store) SetPartitionRestoring(ctx context.Context, partition int32, restoring bool) error {
	if partition < 0 {
		return fmt.Errorf("set partition %d restoring: negative partition", partition)
	}
	key := s.keys.Load().restoring
	field := strconv.FormatInt(int64(partition), 10)
	var err error
	if restoring {
		until := s.now().Add(RestoringTTL).UnixMilli()
		_, err = s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.HSet(ctx, key, field, until)
			p.PExpire(ctx, key, RestoringTTL)
			return nil
		})
	} else {
		err = s.client.HDel(ctx, key, field).Err()
	}
	if err != nil {
		s.errors.WithLabelValues("restoring").Inc()
		return fmt.Errorf("redis set partition %d restoring=%t: %w", partition, restoring, err)
	}
	return nil
}

// RestoringPartitions returns, in ascending order, the partitions marked
// restoring whose mark has not expired, in one round trip. It is meant for
// a background refresh, not for every request.
func (s *Store) RestoringPartitions(ctx context.Context) ([]int32, error) {
	return s.restoringPartitions(ctx, s.keys.Load().restoring)
}

// RestoringPartitionsFor is RestoringPartitions of state generation gen,
// for a reader about to switch to it.
func (s *Store) RestoringPartitionsFor(ctx context.Context, gen int) ([]int32, error) {
	return s.restoringPartitions(ctx, RestoringKeyFor(s.top.Spec.App, gen))
}

func (s *Store) restoringPartitions(ctx context.Context, key string) ([]int32, error) {
	marks, err := s.client.HGetAll(ctx, key).Result()
	if err != nil {
		s.errors.WithLabelValues("restoring").Inc()
		return nil, fmt.Errorf("redis read restoring partitions: %w", err)
	}
	nowMs := s.now().UnixMilli()
	var out []int32
	for f, v := range marks {
		p, err := strconv.ParseInt(f, 10, 32)
		if err != nil || p < 0 {
			continue // not ours; never let it hide the others
		}
		// An unreadable deadline counts as live: saying STALE wrongly is
		// the safe mistake.
		if until, err := strconv.ParseInt(v, 10, 64); err == nil && until < nowMs {
			continue
		}
		out = append(out, int32(p))
	}
	slices.Sort(out)
	return out, nil
}
