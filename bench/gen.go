package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
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
func (ev ShopEvent) Record(topic string) *kgo.Record {
	return &kgo.Record{Topic: topic, Key: []byte(ev.UserID), Value: ev.AppendJSON(nil)}
}

// AppendJSON appends ev as JSON, byte for byte what encoding/json makes of
// it, several times faster: the load generator shares the machine with
// what it measures, so its own cost is kept small.
func (ev ShopEvent) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"user_id":`...)
	dst = appendJSONString(dst, ev.UserID)
	dst = append(dst, `,"ts":`...)
	dst = strconv.AppendInt(dst, ev.TS, 10)
	dst = append(dst, `,"type":`...)
	dst = appendJSONString(dst, ev.Type)
	dst = append(dst, `,"item_id":`...)
	dst = appendJSONString(dst, ev.ItemID)
	dst = append(dst, `,"category":`...)
	dst = appendJSONString(dst, ev.Category)
	dst = append(dst, `,"price":`...)
	if math.IsInf(ev.Price, 0) || math.IsNaN(ev.Price) || ev.Price != 0 && (math.Abs(ev.Price) < 1e-6 || math.Abs(ev.Price) >= 1e21) {
		b, _ := json.Marshal(ev.Price) // exponent form (or an error, as null)
		dst = append(dst, cmp.Or(string(b), "null")...)
	} else {
		dst = strconv.AppendFloat(dst, ev.Price, 'f', -1, 64)
	}
	return append(dst, '}')
}

// appendJSONString appends s quoted; only plain ASCII is written
// directly, anything else as encoding/json writes it.
func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(s)
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// ProduceDemo sends rate events per second of live shop traffic to topic
// until ctx is done.
func ProduceDemo(ctx context.Context, cl *kgo.Client, topic string, rate int, seed uint64) error {
	if rate <= 0 {
		return fmt.Errorf("demo rate %d: want at least 1 event per second", rate)
	}
	produceAtRate(ctx, ctx, cl, NewShopGenerator(seed, 1000, 5000), topic, rate, nil, nil)
	return nil
}

// produceAtRate sends rate shop events per second, stamped with the time
// they are sent, to topic until stop is done, calling sent (if set) after
// each batch and counting in acked (if set) each record the broker
// acknowledges. Records are produced with ctx, which must outlive stop, so
// stopping does not fail the ones still buffered. It sends every 10 ms
// what is due by then, so a slow moment is made up for at the next tick.
func produceAtRate(ctx, stop context.Context, cl *kgo.Client, gen *ShopGenerator, topic string, rate int, acked *atomic.Int64, sent func(now time.Time, n int)) {
	var promise func(*kgo.Record, error)
	if acked != nil {
		promise = func(_ *kgo.Record, err error) {
			if err == nil {
				acked.Add(1)
			}
		}
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	start, total := time.Now(), 0
	for {
		select {
		case <-stop.Done():
			return
		case now := <-tick.C:
			n := int(float64(rate)*now.Sub(start).Seconds()) - total
			for range n {
				cl.Produce(ctx, gen.Next(now).Record(topic), promise)
			}
			total += n
			if sent != nil && n > 0 {
				sent(now, n)
			}
		}
	}
}
