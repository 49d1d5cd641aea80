package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"trackd.dev/trackd/daemon/internal/bus"
	"trackd.dev/trackd/sdk/destinationtest"
)

// A clean stop hands work back: a daemon stopped while its destination's
// plugin calls hang hands their events back rather than holding them to the
// end of shutdown.timeout (30 s), and the daemon started again right after
// delivers every one well before the ack wait (30 s) has passed since the
// SIGTERM, which is what they would otherwise wait out.
func TestStopHandsWorkBack(t *testing.T) {
	var (
		hanging atomic.Bool
		held    atomic.Int64
		mu      sync.Mutex
		got     = map[string]bool{}
	)
	hanging.Store(true)
	release := make(chan struct{})
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev struct {
			MessageID string `json:"messageId"`
		}
		if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if hanging.Load() {
			held.Add(1)
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		mu.Lock()
		got[ev.MessageID] = true
		mu.Unlock()
	}))
	t.Cleanup(hook.Close)
	t.Cleanup(func() {
		if hanging.Swap(false) {
			close(release)
		}
	})

	d := startDaemon(t, fmt.Sprintf("[destinations.hook]\nplugin = %q\n[destinations.hook.settings]\nurl = %q\ntimeout = \"5m\"\n",
		destinationtest.Build(t, "trackd.dev/trackd/plugins/webhook"), hook.URL))
	ids := publishEvents(t, d.natsURL, "back", 60)
	waitFor(t, "plugin calls hanging", func() bool { return held.Load() > 0 })
	stopped := time.Now()
	if code := d.stop(t); code != 0 {
		t.Fatalf("the daemon exited %d on SIGTERM", code)
	}
	if strings.Contains(d.logs.String(), "shutdown.timeout passed with batches still in hand") {
		t.Error("the daemon stopped with batches in hand rather than handing them back")
	}
	hanging.Store(false)
	close(release)

	d.start(t, "/readyz")
	all := func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, id := range ids {
			if !got[id] {
				return false
			}
		}
		return true
	}
	// Generous: the hand-back takes 5 s (stopGrace), the restart and the
	// retry a few more; without it the stop alone takes 30 s.
	waitWithin(t, 2*bus.AckWait/3-time.Since(stopped), "every event, delivered well before the ack wait from the SIGTERM", all)
}
