package bench

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/featurestream/featurestream/internal/testshop"
	"github.com/featurestream/featurestream/sinks/redisserver"
	"github.com/featurestream/featurestream/topology"
)

// testEnv is what every bench test needs: a kfake broker on TCP, a real
// redis-server and the shop spec, all stopped at the end of the test.
type testEnv struct {
	brokers   []string
	redisAddr string
	top       *topology.Topology
}

func newTestEnv(t *testing.T) testEnv {
	t.Helper()
	kafka, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kafka.Close)
	rs := redisserver.StartForTest(t)
	return testEnv{brokers: kafka.ListenAddrs(), redisAddr: rs.Addr(), top: testshop.Topology(t)}
}
