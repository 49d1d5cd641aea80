package admin

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"trackd.dev/trackd/daemon/internal/config"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func start(t *testing.T, pprof bool) string {
	t.Helper()
	s, err := Start(config.Admin{Listen: "127.0.0.1:0", Pprof: pprof}, prometheus.NewRegistry(), func() error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return "http://" + s.Addr()
}

// The profiles are served only when admin.pprof asks for them.
func TestPprof(t *testing.T) {
	off := start(t, false)
	if code, _ := get(t, off+"/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("admin.pprof = false: /debug/pprof/ answered %d, want 404", code)
	}
	if code, _ := get(t, off+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz answered %d, want 200", code)
	}

	on := start(t, true)
	for path, want := range map[string]string{
		"/debug/pprof/":                  "goroutine",
		"/debug/pprof/heap?debug=1":      "heap profile",
		"/debug/pprof/goroutine?debug=1": "goroutine profile",
	} {
		code, body := get(t, on+path)
		if code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("admin.pprof = true: %s answered %d, want 200 with %q", path, code, want)
		}
	}
	if code, body := get(t, on+"/debug/pprof/trace?seconds=0.05"); code != http.StatusOK || !strings.HasPrefix(body, "go 1.") {
		t.Errorf("/debug/pprof/trace answered %d with %.20q, want an execution trace", code, body)
	}
}
