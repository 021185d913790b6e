package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
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
	// The users and items drawn so far (up to cacheMax of each), with
	// their ids and JSON made once: making them for every event was half
	// of what the generator cost (BenchmarkShopGenerator), and it shares
	// the machine with what bench e2e measures.
	userCache []*shopUser
	itemCache []*shopItem
	cacheMax  uint64
}

// shopUser is a user's id and its record key and JSON, up to the time:
// {"user_id":"u1","ts":
type shopUser struct {
	id   string
	key  []byte // shared by the records, which franz-go only reads
	json []byte
}

// shopItem is an item's fields and its JSON from its id on:
// ,"item_id":"i1","category":"shoes","price":5.07}
type shopItem struct {
	id, category string
	price        float64
	json         []byte
}

// shopTypes are the event types, and typeJSON their JSON: ,"type":"view"
var (
	shopTypes = [...]string{"view", "click", "purchase"}
	typeJSON  = func() (out [len(shopTypes)][]byte) {
		for i, t := range shopTypes {
			out[i] = appendJSONString([]byte(`,"type":`), t)
		}
		return out
	}()
)

// shopCacheMax bounds the users and items a ShopGenerator keeps: 1 M of
// each is a few hundred MB at most, and more are made per event.
const shopCacheMax = 1 << 20

// NewShopGenerator returns a generator over users and items, seeded for
// reproducible runs.
func NewShopGenerator(seed uint64, users, items uint64) *ShopGenerator {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return &ShopGenerator{
		rng:      rng,
		users:    rand.NewZipf(rng, 1.1, 1, users-1),
		items:    rand.NewZipf(rng, 1.2, 1, items-1),
		cacheMax: shopCacheMax,
	}
}

// draw returns the next event's user, item and type (an index of
// shopTypes).
func (g *ShopGenerator) draw() (*shopUser, *shopItem, int) {
	item := g.item(g.items.Uint64())
	user := g.user(g.users.Uint64())
	typ := 0
	switch r := g.rng.Float64(); {
	case r < 0.05:
		typ = 2
	case r < 0.20:
		typ = 1
	}
	return user, item, typ
}

func (g *ShopGenerator) user(n uint64) *shopUser {
	if n < uint64(len(g.userCache)) && g.userCache[n] != nil {
		return g.userCache[n]
	}
	id := "u" + strconv.FormatUint(n, 10)
	u := &shopUser{id: id, key: []byte(id), json: append(appendJSONString([]byte(`{"user_id":`), id), `,"ts":`...)}
	if n < g.cacheMax {
		if n >= uint64(len(g.userCache)) {
			g.userCache = slices.Grow(g.userCache, int(n+1-uint64(len(g.userCache))))[:n+1]
		}
		g.userCache[n] = u
	}
	return u
}

func (g *ShopGenerator) item(n uint64) *shopItem {
	if n < uint64(len(g.itemCache)) && g.itemCache[n] != nil {
		return g.itemCache[n]
	}
	it := &shopItem{
		id:       "i" + strconv.FormatUint(n, 10),
		category: categories[n%uint64(len(categories))],
		price:    float64(500+(n*7919)%20000) / 100,
	}
	it.json = appendJSONString([]byte(`,"item_id":`), it.id)
	it.json = appendJSONString(append(it.json, `,"category":`...), it.category)
	it.json = append(appendJSONNumber(append(it.json, `,"price":`...), it.price), '}')
	if n < g.cacheMax {
		if n >= uint64(len(g.itemCache)) {
			g.itemCache = slices.Grow(g.itemCache, int(n+1-uint64(len(g.itemCache))))[:n+1]
		}
		g.itemCache[n] = it
	}
	return it
}

// Next returns the next event at time ts.
func (g *ShopGenerator) Next(ts time.Time) ShopEvent {
	user, item, typ := g.draw()
	return ShopEvent{
		UserID: user.id, TS: ts.UnixMilli(), Type: shopTypes[typ],
		ItemID: item.id, Category: item.category, Price: item.price,
	}
}

// NextRecord returns the next event at time ts as a record of topic: what
// Next(ts).Record(topic) returns, from the same draws, at a third of the
// cost (one allocation for the value, none for the key).
func (g *ShopGenerator) NextRecord(ts time.Time, topic string) *kgo.Record {
	user, item, typ := g.draw()
	value := make([]byte, 0, len(user.json)+20+len(typeJSON[typ])+len(item.json))
	value = append(value, user.json...)
	value = strconv.AppendInt(value, ts.UnixMilli(), 10)
	value = append(value, typeJSON[typ]...)
	value = append(value, item.json...)
	return &kgo.Record{Topic: topic, Key: user.key, Value: value}
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
	dst = appendJSONNumber(dst, ev.Price)
	return append(dst, '}')
}

// appendJSONNumber appends f as encoding/json writes a float64.
func appendJSONNumber(dst []byte, f float64) []byte {
	if math.IsInf(f, 0) || math.IsNaN(f) || f != 0 && (math.Abs(f) < 1e-6 || math.Abs(f) >= 1e21) {
		b, _ := json.Marshal(f) // exponent form (or an error, as null)
		return append(dst, cmp.Or(string(b), "null")...)
	}
	return strconv.AppendFloat(dst, f, 'f', -1, 64)
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
				cl.Produce(ctx, gen.NextRecord(now, topic), promise)
			}
			total += n
			if sent != nil && n > 0 {
				sent(now, n)
			}
		}
	}
}
