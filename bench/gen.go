package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// ShopEvent is one event of the shop example, as producers send it.
type ShopEvent struct {
	UserID   string  `json:"user_id"`
	TS       int64   `json:"ts"`
	Type     string  `json:"type"`
	ItemID   string  `json:"item_id"`
	Category string  `json:"category"`
	Price    float64 `json:"price"`
}

var categories = []string{"shoes", "shirts", "books", "toys", "garden", "kitchen", "music", "games"}

// ShopGenerator makes shop events: users and items Zipf-distributed, most
// events views, some clicks, a few purchases. It is not safe for
// concurrent use.
type ShopGenerator struct {
	rng   *rand.Rand
	users *rand.Zipf
	items *rand.Zipf
}

// NewShopGenerator returns a generator over users and items, seeded for
// reproducible runs.
func NewShopGenerator(seed uint64, users, items uint64) *ShopGenerator {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return &ShopGenerator{
		rng:   rng,
		users: rand.NewZipf(rng, 1.1, 1, users-1),
		items: rand.NewZipf(rng, 1.2, 1, items-1),
	}
}

// Next returns the next event at time ts.
func (g *ShopGenerator) Next(ts time.Time) ShopEvent {
	item := g.items.Uint64()
	ev := ShopEvent{
		UserID:   "u" + strconv.FormatUint(g.users.Uint64(), 10),
		TS:       ts.UnixMilli(),
		Type:     "view",
		ItemID:   "i" + strconv.FormatUint(item, 10),
		Category: categories[item%uint64(len(categories))],
		Price:    float64(500+(item*7919)%20000) / 100,
	}
	switch r := g.rng.Float64(); {
	case r < 0.05:
		ev.Type = "purchase"
	case r < 0.20:
		ev.Type = "click"
	}
	return ev
}

// Record encodes ev as a Kafka record of topic, keyed by user id.
func (ev ShopEvent) Record(topic string) (*kgo.Record, error) {
	v, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("encode shop event: %w", err)
	}
	return &kgo.Record{Topic: topic, Key: []byte(ev.UserID), Value: v}, nil
}

// ProduceDemo sends rate events per second of live shop traffic to topic
// until ctx is done.
func ProduceDemo(ctx context.Context, cl *kgo.Client, topic string, rate int, seed uint64) error {
	if rate <= 0 {
		return fmt.Errorf("demo rate %d: want at least 1 event per second", rate)
	}
	gen := NewShopGenerator(seed, 1000, 5000)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	perTick := max(rate/10, 1)
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-tick.C:
			for range perTick {
				rec, err := gen.Next(now).Record(topic)
				if err != nil {
					return err
				}
				cl.Produce(ctx, rec, nil)
			}
		}
	}
}
