// Package clustertest runs a three-node NATS JetStream cluster inside a test
// process, so that tests can use replicated streams and shut down the server
// leading one of them.
package clustertest

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Size is the number of servers: the smallest cluster that keeps a quorum
// of R3 streams when one server is lost.
const Size = 3

// Account is the account of clients on servers without accounts configured.
const Account = server.DEFAULT_GLOBAL_ACCOUNT

// Cluster is a running JetStream cluster of Size servers on 127.0.0.1.
type Cluster struct {
	t       testing.TB
	mu      sync.Mutex
	servers []*server.Server // nil once shut down
	urls    []string
}

// Start runs the cluster, each server with its store in a temporary
// directory, waits until JetStream is ready for R3 streams and shuts it all
// down when the test ends. Call it before starting anything that connects to
// the cluster, so that their cleanups run first.
func Start(t testing.TB) *Cluster {
	t.Helper()
	// Routes must name fixed ports, so the cluster ports are picked first;
	// client ports may be anything.
	clusterPorts := freePorts(t, Size)
	routes := make([]string, Size)
	for i, port := range clusterPorts {
		routes[i] = "nats-route://127.0.0.1:" + strconv.Itoa(port)
	}
	// The stores are made before the shutdown is registered, so that they are
	// removed after it (cleanups run last first).
	stores := make([]string, Size)
	for i := range stores {
		stores[i] = t.TempDir()
	}
	c := &Cluster{t: t}
	t.Cleanup(c.shutdownAll)
	for i := range Size {
		srv, err := server.NewServer(&server.Options{
			ServerName: fmt.Sprintf("n%d", i),
			Host:       "127.0.0.1",
			Port:       server.RANDOM_PORT,
			JetStream:  true,
			StoreDir:   stores[i],
			Cluster: server.ClusterOpts{
				Name: "trackd-test",
				Host: "127.0.0.1",
				Port: clusterPorts[i],
			},
			Routes: server.RoutesFromStr(strings.Join(routes, ",")),
			NoSigs: true,
			NoLog:  true,
		})
		if err != nil {
			t.Fatalf("cluster server %d: %v", i, err)
		}
		srv.Start()
		c.mu.Lock()
		c.servers = append(c.servers, srv)
		c.mu.Unlock()
		if !srv.ReadyForConnections(10 * time.Second) {
			t.Fatalf("cluster server %d did not start listening", i)
		}
		c.urls = append(c.urls, srv.ClientURL())
	}
	c.waitReady()
	return c
}

// waitReady waits for the meta leader to be elected and to know every
// server as a JetStream peer, so that an R3 stream can be placed at once.
func (c *Cluster) waitReady() {
	c.t.Helper()
	nc, err := nats.Connect(c.URLs())
	if err != nil {
		c.t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		c.t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		// Until there is a meta leader an API call goes unanswered: each try
		// is short so that the next one asks again.
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		_, err := js.AccountInfo(ctx)
		cancel()
		if err == nil && c.peersKnown() {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("the JetStream cluster did not become ready within a minute: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// peersKnown reports whether the meta leader sees all servers with JetStream.
func (c *Cluster) peersKnown() bool {
	for _, srv := range c.running() {
		if srv.JetStreamIsLeader() {
			return len(srv.JetStreamClusterPeers()) == Size
		}
	}
	return false
}

// URLs is the client URL of every server, comma-separated, as [nats] url and
// nats.Connect take them. A server shut down stays in the list, as it would
// in a real config.
func (c *Cluster) URLs() string { return strings.Join(c.urls, ",") }

// StreamLeader returns the index of the server leading the stream in the
// global account, waiting up to a minute for one to be elected.
func (c *Cluster) StreamLeader(stream string) int {
	c.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		c.mu.Lock()
		for i, srv := range c.servers {
			if srv != nil && srv.JetStreamIsStreamLeader(Account, stream) {
				c.mu.Unlock()
				return i
			}
		}
		c.mu.Unlock()
		if time.Now().After(deadline) {
			c.t.Fatalf("no server leads stream %s", stream)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Shutdown stops server i as a crash would look to its clients: their
// connections drop and the other servers elect new leaders.
func (c *Cluster) Shutdown(i int) {
	c.mu.Lock()
	srv := c.servers[i]
	c.servers[i] = nil
	c.mu.Unlock()
	if srv == nil {
		return
	}
	srv.Shutdown()
	srv.WaitForShutdown()
}

// MoveStreamLeader makes server to the stream's leader, asking the leader to
// step down until the election picks it.
func (c *Cluster) MoveStreamLeader(stream string, to int) {
	c.t.Helper()
	for range 30 {
		leader := c.StreamLeader(stream)
		if leader == to {
			return
		}
		c.mu.Lock()
		srv := c.servers[leader]
		c.mu.Unlock()
		if srv == nil {
			c.t.Fatalf("server %d was shut down", leader)
		}
		if err := srv.JetStreamStepdownStream(Account, stream); err != nil {
			c.t.Fatalf("step down the leader of %s: %v", stream, err)
		}
		// The old leader reports itself as such until the new one is elected.
		deadline := time.Now().Add(time.Minute)
		for srv.JetStreamIsStreamLeader(Account, stream) {
			if time.Now().After(deadline) {
				c.t.Fatalf("server %d still leads %s a minute after stepping down", leader, stream)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	c.t.Fatalf("30 elections did not make server %d the leader of %s", to, stream)
}

// Clients counts, per server, the open client connections with the given
// name (nats.Name); a server shut down has none.
func (c *Cluster) Clients(name string) [Size]int {
	c.t.Helper()
	var n [Size]int
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, srv := range c.servers {
		if srv == nil {
			continue
		}
		cz, err := srv.Connz(&server.ConnzOptions{Limit: 10000})
		if err != nil {
			c.t.Fatal(err)
		}
		for _, ci := range cz.Conns {
			if ci.Name == name {
				n[i]++
			}
		}
	}
	return n
}

// ShutdownStreamLeader shuts down the server leading the stream and returns its index.
func (c *Cluster) ShutdownStreamLeader(stream string) int {
	c.t.Helper()
	i := c.StreamLeader(stream)
	c.Shutdown(i)
	return i
}

func (c *Cluster) running() []*server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*server.Server
	for _, srv := range c.servers {
		if srv != nil {
			out = append(out, srv)
		}
	}
	return out
}

func (c *Cluster) shutdownAll() {
	c.mu.Lock()
	n := len(c.servers)
	c.mu.Unlock()
	for i := range n {
		c.Shutdown(i)
	}
}

// freePorts returns n distinct ports free on 127.0.0.1: all are held open
// until all are picked, so that none is picked twice.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	return ports
}
