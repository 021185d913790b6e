package processor

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
)

// Warm standbys. With Config.StandbyReplicas n, each partition's state is
// also kept by the n group members after its owner, in the order of their
// instance ids (member ids without static membership), tailing the
// changelog with a state.Follower. Placement is recomputed from the group's
// assignment every standbyInterval and after each rebalance; a partition
// assigned to this instance is released by the follower before its restore,
// so the restore starts from the standby copy and replays only the tail.

// standbyInterval is how often standby placement is recomputed.
const standbyInterval = 2 * time.Second

// runStandbys places and keeps this instance's standby copies until ctx is
// done.
func (p *Processor) runStandbys(ctx context.Context, adm *kadm.Client) {
	var follower sync.WaitGroup
	defer follower.Wait()
	follower.Go(func() { p.follower.Run(ctx) })
	t := time.NewTicker(standbyInterval)
	defer t.Stop()
	for {
		p.placeStandbys(ctx, adm)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.rebalanced:
		}
	}
}

// placeStandbys sets the follower to this instance's standby partitions.
func (p *Processor) placeStandbys(ctx context.Context, adm *kadm.Client) {
	self, _ := p.cl.GroupMetadata()
	if self == "" {
		return
	}
	groups, err := adm.DescribeGroups(ctx, p.cfg.Group)
	if err != nil {
		return
	}
	g, ok := groups[p.cfg.Group]
	if !ok || g.Err != nil {
		return
	}
	type member struct{ key, id string }
	var members []member
	owners := make(map[int32]string)
	for _, m := range g.Members {
		key := m.MemberID
		if m.InstanceID != nil {
			key = *m.InstanceID
		}
		members = append(members, member{key, m.MemberID})
		if c, ok := m.Assigned.AsConsumer(); ok {
			for _, t := range c.Topics {
				if t.Topic == p.inTopic {
					for _, part := range t.Partitions {
						owners[part] = m.MemberID
					}
				}
			}
		}
	}
	slices.SortFunc(members, func(a, b member) int { return cmp.Compare(a.key, b.key) })
	order := make([]string, len(members))
	for i, m := range members {
		order[i] = m.id
	}
	parts := standbyPartitions(owners, order, self, p.cfg.StandbyReplicas)
	// Under the processor's lock, so a partition being assigned here is
	// never handed to the follower again.
	p.mu.Lock()
	defer p.mu.Unlock()
	parts = slices.DeleteFunc(parts, func(part int32) bool { return p.ownedLocked(part) })
	p.follower.Set(parts)
}

// standbyPartitions returns the partitions self keeps a standby copy of:
// those whose owner is among the n members before self in order (cyclic).
func standbyPartitions(owners map[int32]string, order []string, self string, n int) []int32 {
	at := slices.Index(order, self)
	if at < 0 || n <= 0 {
		return nil
	}
	n = min(n, len(order)-1)
	var out []int32
	for part, owner := range owners {
		o := slices.Index(order, owner)
		if o < 0 || owner == self {
			continue
		}
		// self follows owner if it is 1..n places after it.
		if d := (at - o + len(order)) % len(order); d >= 1 && d <= n {
			out = append(out, part)
		}
	}
	slices.Sort(out)
	return out
}
