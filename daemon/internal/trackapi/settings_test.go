package trackapi

import (
	"crypto/tls"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

// wantSettings is the whole settings answer for an SDK whose one integration
// is integration: nothing in it may make the SDK load code from a CDN, so
// nothing more may be in it.
func wantSettings(integration, key, apiHost, protocol string) map[string]any {
	return map[string]any{
		"integrations": map[string]any{integration: map[string]any{
			"apiKey":                key,
			"apiHost":               apiHost,
			"protocol":              protocol,
			"addBundledMetadata":    true,
			"unbundledIntegrations": []any{},
			"maybeBundledConfigIds": map[string]any{},
		}},
		"plan":                      map[string]any{},
		"middlewareSettings":        map[string]any{},
		"enabledMiddleware":         map[string]any{},
		"remotePlugins":             []any{},
		"legacyVideoPluginsEnabled": false,
		"metrics":                   map[string]any{"sampleRate": 0.0},
	}
}

func TestBrowserSettings(t *testing.T) {
	s := newAPIServer(t)
	host := strings.TrimPrefix(s.URL, "http://")
	tests := []struct {
		name      string
		path      string
		header    map[string]string
		publicURL string
		want      map[string]any
	}{
		{"analytics-next", "/v1/projects/" + webKey + "/settings", nil, "",
			wantSettings("Segment.io", webKey, host+"/v1", "http")},
		{"customer.io", "/customerio/v1/projects/" + webKey + "/settings", nil, "",
			wantSettings("Customer.io Data Pipelines", webKey, host+"/v1", "http")},
		{"another source's key", "/v1/projects/" + iosKey + "/settings", nil, "",
			wantSettings("Segment.io", iosKey, host+"/v1", "http")},
		{"a cdnURL with a trailing slash", "//customerio//v1/projects/" + webKey + "/settings", nil, "",
			wantSettings("Customer.io Data Pipelines", webKey, host+"/v1", "http")},
		{"behind a TLS proxy", "/v1/projects/" + webKey + "/settings", map[string]string{"X-Forwarded-Proto": "https"}, "",
			wantSettings("Segment.io", webKey, host+"/v1", "https")},
		{"behind a chain of proxies", "/v1/projects/" + webKey + "/settings", map[string]string{"X-Forwarded-Proto": "HTTPS, http"}, "",
			wantSettings("Segment.io", webKey, host+"/v1", "https")},
		{"under another name", "/customerio/v1/projects/" + webKey + "/settings", map[string]string{"Host": "trackd.internal:8088"}, "",
			wantSettings("Customer.io Data Pipelines", webKey, "trackd.internal:8088/v1", "http")},
		{"public_url", "/v1/projects/" + webKey + "/settings", map[string]string{"Host": "10.0.0.7:8088"}, "https://trackd.example.com",
			wantSettings("Segment.io", webKey, "trackd.example.com/v1", "https")},
		{"public_url wins over X-Forwarded-Proto", "/customerio/v1/projects/" + webKey + "/settings", map[string]string{"X-Forwarded-Proto": "https"}, "http://trackd.example.com:8080/collect",
			wantSettings("Customer.io Data Pipelines", webKey, "trackd.example.com:8080/collect/v1", "http")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.api.SetSources(NewSources("track", map[string]string{"web": webKey, "ios": iosKey}, tt.publicURL))
			before := lastSeq(t, s.topo.Ingest)
			resp, got := s.do(t, req{method: http.MethodGet, path: tt.path, header: tt.header})
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("status %d, Content-Type %q: %v", resp.StatusCode, resp.Header.Get("Content-Type"), got)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("settings\n%v\nwant\n%v", got, tt.want)
			}
			if n := len(since(t, s.topo.Ingest, before)); n != 0 {
				t.Errorf("a settings request published %d calls", n)
			}
		})
	}
	s.api.SetSources(NewSources("track", map[string]string{"web": webKey}, ""))
	if got := count(s.metrics.HTTPRequests.WithLabelValues("web", "200")); got == 0 {
		t.Errorf("trackd_http_requests_total{source=web,code=200} = %v after settings requests", got)
	}

	for _, tt := range []struct {
		method, path string
		status       int
		message      string
	}{
		{http.MethodGet, "/v1/projects/nope/settings", 404, "no source has this write key"},
		{http.MethodGet, "/customerio/v1/projects/" + webKey[:3] + "/settings", 404, "no source has this write key"},
		// The key a reload took away.
		{http.MethodGet, "/v1/projects/" + iosKey + "/settings", 404, "no source has this write key"},
		{http.MethodGet, "/v1/projects//settings", 404, "no such endpoint"},
		{http.MethodGet, "/other/v1/projects/" + webKey + "/settings", 404, "no such endpoint"},
		{http.MethodPost, "/v1/projects/" + webKey + "/settings", 405, "read with GET"},
	} {
		resp, answer := s.do(t, req{method: tt.method, path: tt.path})
		if msg, _ := answer["message"].(string); resp.StatusCode != tt.status || !strings.Contains(msg, tt.message) {
			t.Errorf("%s %s: status %d %v, want %d saying %q", tt.method, tt.path, resp.StatusCode, answer, tt.status, tt.message)
		}
		if tt.status == 405 && !strings.Contains(resp.Header.Get("Allow"), "GET") {
			t.Errorf("%s %s: Allow %q", tt.method, tt.path, resp.Header.Get("Allow"))
		}
	}
}

func TestSettingsOfAWriteKeyToEscape(t *testing.T) {
	key := `a"b\c</script>é`
	doc := newSettingsDoc(browserSDKs[0], key).appendTo(nil, `h"ost/v1`, "https")
	var got map[string]any
	if err := json.Unmarshal(doc, &got); err != nil {
		t.Fatalf("%s is not JSON: %v", doc, err)
	}
	if want := wantSettings("Segment.io", key, `h"ost/v1`, "https"); !reflect.DeepEqual(got, want) {
		t.Errorf("settings %v, want %v", got, want)
	}
}

// The browser SDKs' usage counters are taken and published nowhere.
func TestUsageCounters(t *testing.T) {
	s := newAPIServer(t)
	before := lastSeq(t, s.topo.Ingest)
	body := `{"series":[{"type":"Counter","metric":"analytics_js.invoke","value":1,"tags":{"type":"track","library":"analytics.js"}}]}`
	resp, answer := s.do(t, req{path: "/v1/m", body: body, header: map[string]string{"Content-Type": "text/plain", "Origin": "https://shop.example.com"}})
	if resp.StatusCode/100 != 2 || answer["success"] != true {
		t.Errorf("POST /v1/m: status %d %v, want 2xx", resp.StatusCode, answer)
	}
	if resp.Header.Get("Access-Control-Allow-Origin") != "https://shop.example.com" {
		t.Errorf("POST /v1/m answered without CORS: %v", resp.Header)
	}
	if resp, _ := s.do(t, req{method: http.MethodGet, path: "/v1/m"}); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /v1/m: status %d, want 405", resp.StatusCode)
	}
	if got := since(t, s.topo.Ingest, before); len(got) != 0 {
		t.Errorf("/v1/m published %v", got)
	}
}

func TestRequestScheme(t *testing.T) {
	for _, tt := range []struct {
		forwarded string
		tls       bool
		want      string
	}{
		{"", false, "http"},
		{"", true, "https"},
		{"https", false, "https"},
		{" HTTPS ,http", false, "https"},
		{"http", true, "http"},
		{"wss", false, "http"},
		{"wss", true, "https"},
	} {
		r := httptest.NewRequest(http.MethodGet, "/v1/projects/k/settings", nil)
		if tt.forwarded != "" {
			r.Header.Set("X-Forwarded-Proto", tt.forwarded)
		}
		if tt.tls {
			r.TLS = &tls.ConnectionState{}
		}
		if got := requestScheme(r); got != tt.want {
			t.Errorf("X-Forwarded-Proto %q, TLS %v: scheme %q, want %q", tt.forwarded, tt.tls, got, tt.want)
		}
	}
}
