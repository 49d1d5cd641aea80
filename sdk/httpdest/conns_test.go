package httpdest

import (
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"trackd.dev/trackd/sdk"
)

// Under sustained load a client reuses its connections: the connections a
// server accepts do not grow with the requests it is sent, as they do with
// net/http's default of 2 idle connections per host.
func TestConnectionsAreReused(t *testing.T) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)

	// Four Deliver calls at once, each with 8 requests at once, 20 times over.
	const calls, perCall, rounds = 4, 8, 20
	c := New(Options{Concurrency: perCall})
	for range rounds {
		var wg sync.WaitGroup
		for range calls * perCall {
			wg.Go(func() {
				req, err := http.NewRequest(http.MethodPost, srv.URL+"/track", nil)
				if err != nil {
					t.Error(err)
					return
				}
				if r := c.Do(req); r.Status != sdk.StatusOK {
					t.Errorf("request failed: %v %s", r.Status, r.Reason)
				}
			})
		}
		wg.Wait()
	}
	// A kept connection is still given up now and then: net/http closes it
	// rather than reuse it when the goroutine that wrote the request has not
	// reported back within 50 ms of a body-less response
	// (maxWriteWaitBeforeConnReuse), which a slow, loaded machine (a CI runner
	// under -race) can take, and the next request opens a new one. The slack
	// allows for that; without idle connections kept, nearly every request of
	// a round after the first opens one, hundreds in all.
	const most = 2 * calls * perCall
	if n := conns.Load(); n > most {
		t.Errorf("the server accepted %d connections for %d requests, %d at most at once; want at most %d: idle connections are not kept",
			n, rounds*calls*perCall, calls*perCall, most)
	}
}
