package state

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/featurestream/featurestream/internal/testshop"
)

// TestWavesShareListings: restores joining while a wave is listing the
// changelog's end share the next wave's listing, which starts when that one
// ends; none gets a listing that started before it joined; a restore whose
// context ends stops waiting; a failed listing fails those that joined it.
func TestWavesShareListings(t *testing.T) {
	var (
		mu      sync.Mutex
		calls   int
		release = make(chan error)
	)
	// Each restore asks for a partition of its own; all read from the end,
	// so no wave opens a client.
	const partitions = 16
	l := waves{topic: "t", list: func(context.Context) (kadm.ListedOffsets, error) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if err := <-release; err != nil {
			return nil, err
		}
		// The listing's number, as the end of every partition.
		ends := kadm.ListedOffsets{"t": {}}
		for p := range int32(partitions) {
			ends["t"][p] = kadm.ListedOffset{Topic: "t", Partition: p, Offset: int64(n)}
		}
		return ends, nil
	}}
	var asked atomic.Int32
	type result struct {
		listing int64
		err     error
	}
	ask := func(ctx context.Context) <-chan result {
		out := make(chan result, 1)
		go func() {
			f, err := l.join(asked.Add(1)%partitions, math.MaxInt64)
			if err != nil {
				out <- result{0, err}
				return
			}
			defer f.leave()
			n, err := f.ready(ctx)
			out <- result{n, err}
		}()
		return out
	}
	waitCalls := func(want int) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
			mu.Lock()
			n := calls
			mu.Unlock()
			if n == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d listings started, want %d", n, want)
			}
		}
	}
	get := func(r <-chan result) result {
		t.Helper()
		select {
		case x := <-r:
			return x
		case <-time.After(5 * time.Second):
			t.Fatal("a restore still waits for the end")
			return result{}
		}
	}

	first := ask(context.Background())
	waitCalls(1)
	// Five ask while the first listing is under way, one of them gives up.
	var joined []<-chan result
	for range 5 {
		joined = append(joined, ask(context.Background()))
	}
	cctx, cancel := context.WithCancel(context.Background())
	gaveUp := ask(cctx)
	time.Sleep(20 * time.Millisecond) // let them join
	cancel()
	if r := get(gaveUp); !errors.Is(r.err, context.Canceled) {
		t.Errorf("a restore whose context ended got %+v, want context.Canceled", r)
	}
	release <- nil
	if r := get(first); r.err != nil || r.listing != 1 {
		t.Errorf("first restore got %+v, want listing 1", r)
	}
	waitCalls(2) // the joined ones' listing, started after the first ended
	release <- nil
	for i, r := range joined {
		if x := get(r); x.err != nil || x.listing != 2 {
			t.Errorf("restore %d asking during listing 1 got %+v, want listing 2", i, x)
		}
	}

	// Nothing under way: a listing starts at once, and its error is each
	// joiner's.
	failed := ask(context.Background())
	waitCalls(3)
	down := errors.New("broker down")
	release <- down
	if r := get(failed); !errors.Is(r.err, down) {
		t.Errorf("failed listing gave %+v", r)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls != 3 {
		t.Errorf("%d listings for three rounds of restores", calls)
	}
}

// TestRestoreWaves: partitions restored at once share clients, which read
// them in small fetches and pause each after a few records waiting; each
// restore ends with exactly its partition's newest states. A restore
// canceled at a random moment leaves the others exact, and its partition's
// next restore ends exact too.
func TestRestoreWaves(t *testing.T) {
	top := testshop.Topology(t)
	ctx := context.Background()
	const partitions = 6
	cc := newChangelogCluster(t, "waves", partitions)
	rng := rand.New(rand.NewPCG(5, 6))
	states := make([][]byte, 16)
	for i := range states {
		states[i] = top.AppendState(nil, stateOf(t, top, "u", 1+i))
	}
	want := make([]map[string][]byte, partitions)
	ends := make([]int64, partitions)
	for p := range int32(partitions) {
		want[p] = map[string][]byte{}
		n := 300 + rng.IntN(900)
		// Batches of 20, so that a fetch of 2 KiB takes one or two.
		for from := 0; from < n; from += 20 {
			recs := make([]*kgo.Record, min(20, n-from))
			for i := range recs {
				key := fmt.Sprintf("u%d", rng.IntN(200))
				var v []byte
				if rng.IntN(10) > 0 {
					v = states[rng.IntN(len(states))]
					want[p][key] = v
				} else {
					delete(want[p], key)
				}
				recs[i] = &kgo.Record{Topic: cc.topic, Partition: p, Key: []byte(key), Value: v}
			}
			recs[len(recs)-1].Headers = []kgo.RecordHeader{InputNextHeader(int64(from + len(recs)))}
			if err := cc.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		ends[p] = int64(n)
	}

	s := openMem(t, top)
	r := NewRestorer(s, cc.adm, []kgo.Opt{kgo.SeedBrokers(cc.c.ListenAddrs()...), kgo.FetchMaxPartitionBytes(2 << 10)},
		cc.topic, slog.New(slog.DiscardHandler), nil)
	r.waves.pauseRecords = 15
	check := func(p int32, meta Meta) {
		t.Helper()
		if meta.ChangelogNext != ends[p] {
			t.Errorf("partition %d restored to %d, want %d", p, meta.ChangelogNext, ends[p])
		}
		got := storedStates(t, s, p)
		if len(got) != len(want[p]) {
			t.Errorf("partition %d: %d states stored, want %d", p, len(got), len(want[p]))
		}
		for k, v := range want[p] {
			if !bytes.Equal(got[k], v) {
				t.Errorf("partition %d: state of %s is %d bytes, want %d", p, k, len(got[k]), len(v))
			}
		}
	}

	const canceled = partitions - 1
	cctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	metas := make([]Meta, partitions)
	errs := make([]error, partitions)
	for p := range int32(partitions) {
		rctx := ctx
		if p == canceled {
			rctx = cctx
		}
		wg.Go(func() { metas[p], _, errs[p] = r.Restore(rctx, p, cc.gen) })
	}
	time.Sleep(time.Duration(rng.IntN(20_000)) * time.Microsecond)
	cancel()
	wg.Wait()
	for p := range int32(canceled) {
		if errs[p] != nil {
			t.Fatalf("restore partition %d: %v", p, errs[p])
		}
		check(p, metas[p])
	}
	if err := errs[canceled]; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled restore: %v", err)
	}
	meta, _, err := r.Restore(ctx, canceled, cc.gen)
	if err != nil {
		t.Fatal(err)
	}
	check(canceled, meta)
}
