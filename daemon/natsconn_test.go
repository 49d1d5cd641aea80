package main

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"trackd.dev/trackd/sdk/destinationtest"
)

// The connection to NATS is visible: a nats-server stopped under a running
// daemon is logged, shown in /metrics and /readyz, and once it is back the
// daemon says so and delivers again.
func TestNATSConnectionVisible(t *testing.T) {
	store := t.TempDir()
	var addr string
	// startServer starts nats-server on addr, or says why it could not.
	startServer := func() (*server.Server, error) {
		t.Helper()
		host, portStr, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		port, _ := strconv.Atoi(portStr)
		srv, err := server.NewServer(&server.Options{Host: host, Port: port, JetStream: true, StoreDir: store, NoSigs: true, NoLog: true})
		if err != nil {
			t.Fatal(err)
		}
		srv.Start()
		if !srv.ReadyForConnections(10 * time.Second) {
			srv.Shutdown()
			return nil, fmt.Errorf("nats-server did not start listening on %s; is the port in use?", addr)
		}
		return srv, nil
	}
	// The port from freePort may be taken by another process before the
	// server listens on it; then the test takes another.
	var srv *server.Server
	for attempt := 1; srv == nil; attempt++ {
		addr = freePort(t)
		var err error
		if srv, err = startServer(); err != nil {
			if attempt == 3 {
				t.Fatal(err)
			}
			t.Log(err)
		}
	}
	t.Cleanup(func() { srv.Shutdown() })

	h := newHook(t)
	d := newDaemon(t, destinationtest.Build(t, "trackd.dev/trackd/daemon"), fmt.Sprintf(
		"[destinations.hook]\nplugin = %q\n[destinations.hook.settings]\nurl = %q\n",
		destinationtest.Build(t, "trackd.dev/trackd/plugins/webhook"), h.URL))
	d.natsURL = "nats://" + addr
	d.header = fmt.Sprintf("[nats]\nurl = %q\n[ingest]\nmax_bytes = \"512MiB\"\n[dlq]\nmax_bytes = \"64MiB\"\n[admin]\nlisten = %q\n[log]\nlevel = \"debug\"\n",
		d.natsURL, strings.TrimPrefix(d.adminURL, "http://"))
	d.writeConfig(t, d.dests)
	d.start(t, "/readyz")
	readyz := func() int {
		resp, err := http.Get(d.adminURL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	publishBody(t, d.natsURL, `{"event":"Before","userId":"u","messageId":"before"}`)
	waitFor(t, "the first event", func() bool { return h.event("before") != nil })
	if got := d.metric(t, "trackd_nats_connected"); got != 1 {
		t.Errorf("trackd_nats_connected = %v while connected, want 1", got)
	}

	srv.Shutdown()
	srv.WaitForShutdown()
	waitFor(t, "the log to say the connection was lost", func() bool {
		return strings.Contains(d.logs.String(), "lost the connection to NATS")
	})
	if got := d.metric(t, "trackd_nats_connected"); got != 0 {
		t.Errorf("trackd_nats_connected = %v while disconnected, want 0", got)
	}
	if code := readyz(); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz = %d while disconnected, want 503", code)
	}

	// On the same port, where the daemon reconnects: one taken in the
	// meantime cannot be helped.
	var err error
	if srv, err = startServer(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the log to say it reconnected", func() bool { return strings.Contains(d.logs.String(), "reconnected to NATS") })
	waitFor(t, "/readyz to answer 200 again", func() bool { return readyz() == http.StatusOK })
	if got := d.metric(t, "trackd_nats_reconnects_total"); got < 1 {
		t.Errorf("trackd_nats_reconnects_total = %v, want at least 1", got)
	}
	if got := d.metric(t, "trackd_nats_connected"); got != 1 {
		t.Errorf("trackd_nats_connected = %v after reconnecting, want 1", got)
	}
	publishBody(t, d.natsURL, `{"event":"After","userId":"u","messageId":"after"}`)
	waitFor(t, "an event after the server came back", func() bool { return h.event("after") != nil })
}
