package state

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
)

// TestEndsListerShares: restores asking for the changelog's end while a
// listing is under way share the next listing, which starts when that one
// ends; none gets a listing that started before it asked; a restore whose
// context ends stops waiting; a failed listing fails those that joined it.
func TestEndsListerShares(t *testing.T) {
	var (
		mu      sync.Mutex
		calls   int
		release = make(chan error)
	)
	l := endsLister{list: func(context.Context) (kadm.ListedOffsets, error) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if err := <-release; err != nil {
			return nil, err
		}
		// The listing's number, as the end of partition 0.
		return kadm.ListedOffsets{"t": {0: {Topic: "t", Partition: 0, Offset: int64(n)}}}, nil
	}}
	type result struct {
		listing int64
		err     error
	}
	ask := func(ctx context.Context) <-chan result {
		out := make(chan result, 1)
		go func() {
			ends, err := l.listed(ctx)
			var n int64
			if err == nil {
				o, _ := ends.Lookup("t", 0)
				n = o.Offset
			}
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
	release <- errors.New("broker down")
	if r := get(failed); r.err == nil || r.err.Error() != "broker down" {
		t.Errorf("failed listing gave %+v", r)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls != 3 {
		t.Errorf("%d listings for three rounds of restores", calls)
	}
}
