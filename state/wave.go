package state

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// A wave is the restores that start at about the same time, as an
// assignment's do. They share one listing of the changelog's end (each
// listing is of every partition: a metadata request and a ListOffsets) and
// clients that read several of their partitions each (readerPartitions),
// as a raw consume of the changelog would, instead of a client each: on a
// small changelog a restore was mostly its client's set-up (a connection,
// ApiVersions, metadata) and a fetch of its own, which the broker serves
// one after another (docs/performance.md, decision 0022).
//
// A restore joins the wave that has not started, which starts when the one
// under way has listed the ends, or at once if none is: so what a restore
// reads includes everything committed before it joined (the partition's
// previous owner committed its last transaction before the assignment).
type waves struct {
	list func(context.Context) (kadm.ListedOffsets, error)
	// open returns a client reading the changelog's partitions from the
	// given offsets; nil in tests of the listing alone.
	open  func(map[int32]kgo.Offset) (*kgo.Client, error)
	topic string
	// pauseRecords is how many records a restore may have waiting before
	// its partition's fetching pauses: feedPauseRecords, smaller in tests.
	pauseRecords int

	mu sync.Mutex
	// next is the wave that has not started, which a restore joining now
	// joins; running is whether one is listing.
	next    *wave
	running bool
}

type wave struct {
	// ready is closed when the wave has listed the ends and its readers,
	// if any, run.
	ready chan struct{}
	// members are the wave's restores by partition, written under
	// waves.mu until the wave starts.
	members map[int32]*feed
	ends    kadm.ListedOffsets
	err     error
}

// endsListTimeout bounds a wave's listing, which no one restore's context
// can cancel.
const endsListTimeout = 30 * time.Second

// join adds a restore of partition, reading from offset from, to the next
// wave, and returns its feed. The caller waits for feed.ready and must call
// feed.leave when done, also when it gives up early.
func (l *waves) join(partition int32, from int64) (*feed, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.next == nil {
		l.next = &wave{ready: make(chan struct{}), members: map[int32]*feed{}}
	}
	w := l.next
	if w.members[partition] != nil {
		return nil, fmt.Errorf("restore partition %d: already restoring", partition)
	}
	f := &feed{partition: partition, from: from, w: w, pauseAt: l.pauseRecords, signal: make(chan struct{}, 1)}
	w.members[partition] = f
	if !l.running {
		l.startLocked()
	}
	return f, nil
}

// startLocked starts the next wave; when it has listed, the one restores
// joined meanwhile starts.
func (l *waves) startLocked() {
	w := l.next
	l.next, l.running = nil, true
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), endsListTimeout)
		w.ends, w.err = l.list(ctx)
		cancel()
		if w.err != nil {
			w.err = fmt.Errorf("list changelog end: %w", w.err)
		} else {
			w.err = l.read(w)
		}
		close(w.ready)
		l.mu.Lock()
		defer l.mu.Unlock()
		l.running = false
		if l.next != nil {
			l.startLocked()
		}
	}()
}

// read sets each member's end and starts readers for the members with
// records to read, readerPartitions or fewer each.
func (l *waves) read(w *wave) error {
	var feeds []*feed
	for p, f := range w.members {
		end, found := w.ends.Lookup(l.topic, p)
		f.mu.Lock()
		switch {
		case f.left:
		case !found:
			f.err = fmt.Errorf("list changelog end: topic %s has no partition %d", l.topic, p)
		case end.Err != nil:
			f.err = fmt.Errorf("list changelog end: %w", end.Err)
		default:
			f.end = end.Offset
			if f.from < f.end {
				feeds = append(feeds, f)
			}
		}
		f.mu.Unlock()
	}
	slices.SortFunc(feeds, func(a, b *feed) int { return cmp.Compare(a.partition, b.partition) })
	n := (len(feeds) + readerPartitions - 1) / readerPartitions
	for i := range n {
		if err := l.startReader(feeds[i*len(feeds)/n : (i+1)*len(feeds)/n]); err != nil {
			return err
		}
	}
	return nil
}

// readerPartitions is how many partitions of a wave one client reads.
// One client for all was slower than a few: the broker serves one
// client's fetch while another's restores apply what they got.
const readerPartitions = 4

// startReader starts a reader of feeds' partitions.
func (l *waves) startReader(feeds []*feed) error {
	offsets := map[int32]kgo.Offset{}
	for _, f := range feeds {
		offsets[f.partition] = kgo.NewOffset().At(f.from)
	}
	cl, err := l.open(offsets)
	if err != nil {
		return fmt.Errorf("open changelog client: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rd := &reader{cl: cl, topic: l.topic, cancel: cancel, feeds: map[int32]*feed{}}
	for _, f := range feeds {
		f.mu.Lock()
		if !f.left {
			f.reader = rd
			rd.feeds[f.partition] = f
		}
		f.mu.Unlock()
	}
	// Members that left meanwhile are not read; with none left, the
	// loop ends at once.
	rd.mu.Lock()
	for p := range offsets {
		if rd.feeds[p] == nil {
			rd.removeLocked(p)
		}
	}
	rd.mu.Unlock()
	go rd.run(ctx)
	return nil
}

// A reader polls one client for a wave's partitions and hands each
// partition's records to its restore. A restore that falls behind has its
// partition paused, not the others held up: the reader never waits for a
// restore.
type reader struct {
	cl     *kgo.Client
	topic  string
	cancel context.CancelFunc

	mu    sync.Mutex
	feeds map[int32]*feed
}

// run polls until every member has left, then closes the client.
func (rd *reader) run(ctx context.Context) {
	defer rd.cl.Close()
	for {
		fetches := rd.cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return
		}
		fetches.EachError(func(_ string, p int32, err error) {
			rd.mu.Lock()
			defer rd.mu.Unlock()
			for q, f := range rd.feeds {
				if p < 0 || p == q {
					f.fail(err)
				}
			}
		})
		fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
			if len(fp.Records) == 0 {
				return
			}
			rd.mu.Lock()
			f := rd.feeds[fp.Partition]
			rd.mu.Unlock()
			if f != nil {
				f.push(fp.FetchPartition)
			}
		})
	}
}

// removeLocked stops reading partition p, and ends the reader with its
// last member. It pauses the partition rather than remove it from the
// client: removing stops the fetch session, which waits for the fetch in
// flight, and held each restore of a wave until the slowest was done.
func (rd *reader) removeLocked(p int32) {
	delete(rd.feeds, p)
	if len(rd.feeds) == 0 {
		rd.cancel()
		return
	}
	rd.cl.PauseFetchPartitions(map[string][]int32{rd.topic: {p}})
}

// feedPauseRecords is how many records a restore may have waiting before
// its partition's fetching pauses: about one fetch beyond the batch it
// applies.
const feedPauseRecords = restoreBatchRecords

// A feed is one restore's membership of a wave: its end, and the records
// read for it that it has not taken.
type feed struct {
	partition int32
	from      int64
	w         *wave

	// end is the partition's listed end, set before w.ready closes.
	end     int64
	pauseAt int
	// signal has a value when queue or err changed.
	signal chan struct{}

	mu     sync.Mutex
	reader *reader
	queue  []kgo.FetchPartition
	queued int // records in queue
	paused bool
	// read is whether the partition has been read to its end; it stays
	// paused from then on.
	read bool
	err  error
	left bool
}

// push queues fp for the restore, pausing its partition once it has
// pauseAt records waiting, and for good once it is read to its end: a
// partition at its end would make the broker hold each fetch of the
// others for the fetch's maximum wait. Pausing is under mu, so that take,
// which resumes, never leaves it paused with nothing queued.
func (f *feed) push(fp kgo.FetchPartition) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.left {
		return
	}
	f.queue = append(f.queue, fp)
	f.queued += len(fp.Records)
	f.read = f.read || fp.Records[len(fp.Records)-1].Offset+1 >= f.end
	if (f.queued >= f.pauseAt || f.read) && !f.paused {
		f.paused = true
		f.reader.cl.PauseFetchPartitions(map[string][]int32{f.reader.topic: {f.partition}})
	}
	f.notify()
}

// fail records the first fetch error of the partition for the restore.
func (f *feed) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.err = err
	}
	f.notify()
}

func (f *feed) notify() {
	select {
	case f.signal <- struct{}{}:
	default:
	}
}

// take returns the fetched records waiting, oldest first, or the
// partition's fetch error once none wait; nothing if none came within
// wait. It resumes the partition's fetching.
func (f *feed) take(ctx context.Context, wait time.Duration) ([]kgo.FetchPartition, error) {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		f.mu.Lock()
		q, err := f.queue, f.err
		if len(q) > 0 {
			f.queue, f.queued = nil, 0
			if f.paused && !f.read {
				f.paused = false
				f.reader.cl.ResumeFetchPartitions(map[string][]int32{f.reader.topic: {f.partition}})
			}
		}
		f.mu.Unlock()
		if len(q) > 0 {
			return q, nil
		}
		if err != nil {
			return nil, err
		}
		select {
		case <-f.signal:
		case <-timer.C:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// ready waits for the wave to list the ends, and returns the partition's.
func (f *feed) ready(ctx context.Context) (int64, error) {
	select {
	case <-f.w.ready:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.end, errors.Join(f.w.err, f.err)
}

// leave ends the restore's membership: its partition is no longer read.
func (f *feed) leave() {
	f.mu.Lock()
	f.left, f.queue = true, nil
	rd := f.reader
	f.mu.Unlock()
	if rd != nil {
		rd.mu.Lock()
		defer rd.mu.Unlock()
		if rd.feeds[f.partition] == f {
			rd.removeLocked(f.partition)
		}
	}
}
