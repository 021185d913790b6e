package main

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/featurestream/featurestream/processor"
	"github.com/featurestream/featurestream/state"
)

// TestBrokerFaults injects broker errors into the requests a commit makes
// (produce to the changelog, the transaction's offset commit and end, the
// plain offset commit) while events flow, and checks the processor stays up
// and every value equals the model.
func TestBrokerFaults(t *testing.T) {
	for _, g := range []processor.Guarantee{processor.ExactlyOnce, processor.AtLeastOnce} {
		t.Run(string(g), func(t *testing.T) { testBrokerFaults(t, g) })
	}
}

func testBrokerFaults(t *testing.T, g processor.Guarantee) {
	const users = 300
	c := newCluster(t, 4)
	top, kafka := c.top, c.kafka
	recs, model, poison := chaosEvents(top.Spec.Source.Topic, 20_000, users, 100)

	env := &e2eEnv{t: t, top: top, brokers: kafka.ListenAddrs(), logger: discardLogger()}
	store, client, err := openStore(t.Context(), c.redis.Addr(), false, top, env.logger, newRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	env.store = store
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runProcessor(ctx, processorParams{
			top: top, brokers: env.brokers, stateDir: c.dir, sink: store, reg: newRegistry(), logger: env.logger,
			cfg:       processor.Config{CommitInterval: 50 * time.Millisecond, Guarantee: g},
			adminAddr: "127.0.0.1:0",
		})
	}()

	changelog := state.ChangelogTopic(top.Spec.App)
	faults := [][]kfake.Fault{
		{{Keys: []kmsg.Key{kmsg.Produce}, Topic: changelog, Err: kerr.NotLeaderForPartition, Count: 3}},
		{{Keys: []kmsg.Key{kmsg.Produce}, Topic: changelog, Err: kerr.InvalidRecord, Count: 1}},
		{{Keys: []kmsg.Key{kmsg.Produce}, Topic: processor.DLQTopic(top.Spec.App), Err: kerr.UnknownServerError, Count: 1}},
	}
	if g == processor.ExactlyOnce {
		faults = append(faults,
			[]kfake.Fault{{Keys: []kmsg.Key{kmsg.EndTxn}, TopLevel: true, Err: kerr.UnknownServerError, Count: 2}},
			[]kfake.Fault{{Keys: []kmsg.Key{kmsg.TxnOffsetCommit}, Err: kerr.CoordinatorNotAvailable, Count: 2}},
			[]kfake.Fault{{Keys: []kmsg.Key{kmsg.EndTxn}, TopLevel: true, Err: kerr.ConcurrentTransactions, Count: 1}},
		)
	} else {
		faults = append(faults,
			[]kfake.Fault{{Keys: []kmsg.Key{kmsg.OffsetCommit}, Err: kerr.CoordinatorNotAvailable, Count: 3}},
			[]kfake.Fault{{Keys: []kmsg.Key{kmsg.OffsetCommit}, Err: kerr.UnknownServerError, Count: 1}},
		)
	}
	prod, err := kgo.NewClient(kgo.SeedBrokers(env.brokers...), kgo.ProducerBatchMaxBytes(4<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	var handles []*kfake.FaultHandle
	const slices = 12
	for i := range slices {
		if i > 0 && i-1 < len(faults) {
			handles = append(handles, kafka.Fault(faults[i-1]...))
		}
		lo, hi := i*len(recs)/slices, (i+1)*len(recs)/slices
		if err := prod.ProduceSync(context.Background(), recs[lo:hi]...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
	}
	c.waitCaughtUp(time.Minute)
	time.Sleep(500 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("processor stopped with %v", err)
	}
	for i, h := range handles {
		if h.Hits() == 0 {
			t.Errorf("fault %d (%v) was never hit", i, faults[i][0].Keys)
		}
	}
	if g == processor.ExactlyOnce {
		c.checkNoOpenTransactions()
		c.checkChangelogOrder()
		c.checkDeadLetters(poison)
	}
	c.checkValues(model, users)
}
