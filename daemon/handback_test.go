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

	"trackd.dev/trackd/sdk/destinationtest"
)

// A clean stop hands work back: a daemon stopped while its destination's
// plugin call hangs hands the call's events back rather than holding them to
// the end of shutdown.timeout, and the daemon started again right after
// delivers every one.
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
	if code := d.stop(t); code != 0 {
		t.Fatalf("the daemon exited %d on SIGTERM", code)
	}
	// Without the hand-back, the hung call holds its events until the
	// process exits, and they wait out the ack wait after the restart.
	if !strings.Contains(d.logs.String(), "stopping: handing back the events of a plugin call still under way") {
		t.Error("the daemon did not hand back the events of its hung plugin call")
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
	waitFor(t, "every event delivered after the restart", all)
}
