package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"trackd.dev/trackd/sdk/destinationtest"
)

// exampleConfig returns the last TOML block of a plugin README that holds a
// [destinations.…] table: the example a user copies into config.toml.
func exampleConfig(t *testing.T, plugin string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "plugins", plugin, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var found string
	for _, block := range strings.Split(string(data), "```toml\n")[1:] {
		block, _, _ = strings.Cut(block, "```")
		if strings.Contains(block, "[destinations.") {
			found = block
		}
	}
	if found == "" {
		t.Fatalf("plugins/%s/README.md has no example [destinations.…] block", plugin)
	}
	return found
}

// The example destination in each plugin's README, pointed at a local server
// playing the API, delivers through the real daemon.
func TestReadmeExamplesDeliver(t *testing.T) {
	var (
		mu    sync.Mutex
		paths = map[string]int{}
	)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths[r.URL.Path]++
		mu.Unlock()
		// What Mixpanel's /import and /engage (verbose) and Amplitude answer on success.
		fmt.Fprint(w, `{"code":200,"status":1,"error":null,"num_records_imported":1,"events_ingested":1}`)
	}))
	defer api.Close()

	pluginDir := t.TempDir()
	endpoint := regexp.MustCompile(`endpoint = "http://127\.0\.0\.1:\d+"`)
	var destinations strings.Builder
	for _, p := range []string{"mixpanel", "amplitude", "ga4"} {
		if err := os.Symlink(destinationtest.Build(t, "trackd.dev/trackd/plugins/"+p), filepath.Join(pluginDir, p)); err != nil {
			t.Fatal(err)
		}
		example := exampleConfig(t, p)
		if !endpoint.MatchString(example) {
			t.Fatalf("the %s example does not point endpoint at a local server", p)
		}
		destinations.WriteString(endpoint.ReplaceAllLiteralString(example, fmt.Sprintf("endpoint = %q", api.URL)))
	}
	d := newDaemon(t, destinationtest.Build(t, "trackd.dev/trackd/daemon"),
		fmt.Sprintf("[plugins]\ndir = %q\n", pluginDir)+destinations.String())
	d.start(t, "/readyz",
		"MIXPANEL_TOKEN=tok", "MIXPANEL_API_SECRET=secret", "AMPLITUDE_API_KEY=key", "GA4_API_SECRET=secret")
	publishBody(t, d.natsURL, `{"event":"Order Completed","userId":"user-0001","anonymousId":"anon-0001",
		"properties":{"order_id":"T_1","total":12.21,"revenue":10,"currency":"eur"}}`)

	for _, id := range []string{"mixpanel", "amplitude", "ga4"} {
		waitFor(t, id+" to deliver", func() bool {
			return d.metric(t, fmt.Sprintf(`trackd_events_delivered_total{destination=%q}`, id)) == 1
		})
	}
	mu.Lock()
	defer mu.Unlock()
	for _, p := range []string{"/import", "/engage", "/2/httpapi", "/mp/collect"} {
		if paths[p] == 0 {
			t.Errorf("no request to %s; got %v", p, paths)
		}
	}
}
