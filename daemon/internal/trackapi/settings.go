package trackapi

import (
	"encoding/json"
	"net/http"
	"strings"
)

// The browser SDKs load their settings from
// <cdnURL>/v1/projects/<writeKey>/settings before they send anything, from
// their vendor's CDN unless told otherwise. trackd answers that request
// itself, so that a page pointed at it needs nothing from Segment or
// Customer.io: the one integration each SDK sends through, aimed at trackd's
// own /v1, and nothing that makes the SDK load code. What each field does in
// the SDKs' source (@segment/analytics-next 1.84, its Customer.io fork 0.5):
//   - integrations: one key, the SDK's own, so no classic destination is
//     loaded (more than one key loads the ajs-destination chunk and each
//     destination's script from the CDN). Its apiKey is the write key put in
//     every call; apiHost and protocol are where calls go; the bundled-metadata
//     fields only fill each call's _metadata.
//   - plan, middlewareSettings, enabledMiddleware empty and remotePlugins []:
//     no tracking plan (read by device-mode destinations only), routing rules
//     (the tsub-middleware chunk), source middleware or action destinations
//     (scripts from the CDN).
//   - legacyVideoPluginsEnabled false: the video plugins are a chunk too.
//   - metrics.sampleRate 0: the SDK's usage counters are never sent. Their
//     host is the vendor's API, unless analytics-next is given an apiHost
//     load option: then they go to trackd's /v1/m, which drops them.

// browserSDK is a browser SDK whose settings trackd serves.
type browserSDK struct {
	prefix      string // what its cdnURL adds to trackd's base URL
	integration string // the key of the one integration it sends calls through
}

var browserSDKs = [...]browserSDK{
	{prefix: "", integration: "Segment.io"},                            // @segment/analytics-next
	{prefix: "/customerio", integration: "Customer.io Data Pipelines"}, // @customerio/cdp-analytics-browser
}

// settingsDoc is one SDK's settings for one write key, marshaled once per
// reload but for trackd's apiHost and protocol, which the settings request
// gives when http.public_url is not set. The answer is head, apiHost,
// `,"protocol":`, protocol, tail.
type settingsDoc struct{ head, tail []byte }

func newSettingsDoc(sdk browserSDK, writeKey string) settingsDoc {
	integration, _ := json.Marshal(sdk.integration)
	key, _ := json.Marshal(writeKey)
	var d settingsDoc
	d.head = append(d.head, `{"integrations":{`...)
	d.head = append(d.head, integration...)
	d.head = append(d.head, `:{"apiKey":`...)
	d.head = append(d.head, key...)
	d.head = append(d.head, `,"addBundledMetadata":true,"unbundledIntegrations":[],"maybeBundledConfigIds":{},"apiHost":`...)
	d.tail = []byte(`}},"plan":{},"middlewareSettings":{},"enabledMiddleware":{},"remotePlugins":[],"legacyVideoPluginsEnabled":false,"metrics":{"sampleRate":0}}`)
	return d
}

func (d settingsDoc) appendTo(b []byte, apiHost, protocol string) []byte {
	b = append(b, d.head...)
	b = appendString(b, apiHost)
	b = append(b, `,"protocol":`...)
	b = appendString(b, protocol)
	return append(b, d.tail...)
}

func appendString(b []byte, s string) []byte {
	q, _ := json.Marshal(s)
	return append(b, q...)
}

// settingsRequest says whether path (trimmed of slashes at both ends, with a
// leading one) asks for an SDK's settings, and for which SDK and write key.
func settingsRequest(path string) (sdk int, key string, ok bool) {
	for i, s := range browserSDKs {
		rest, ok := strings.CutPrefix(path, s.prefix+"/v1/projects/")
		if !ok {
			continue
		}
		key, ok = strings.CutSuffix(rest, "/settings")
		return i, key, ok && key != ""
	}
	return 0, "", false
}

// settings answers a settings request of SDK sdk for write key key.
func (a *API) settings(r *http.Request, sdk int, key string) answer {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return answer{status: http.StatusMethodNotAllowed, allow: "GET, HEAD, OPTIONS", message: r.Method + " is not allowed; the settings are read with GET"}
	}
	sources := a.sources.Load()
	src := sources.lookup(key)
	if src == nil {
		return answer{status: http.StatusNotFound, message: "no source has this write key; the browser SDK's writeKey must be one of http.write_keys"}
	}
	apiHost, protocol := sources.apiHost, sources.protocol
	if apiHost == "" {
		apiHost, protocol = r.Host+"/v1", requestScheme(r)
	}
	return answer{status: http.StatusOK, source: src.name, body: src.settings[sdk].appendTo(nil, apiHost, protocol)}
}

// requestScheme is the scheme a request was made with: X-Forwarded-Proto's
// (its first value, for a chain of proxies) when it says http or https, else
// the connection's.
func requestScheme(r *http.Request) string {
	proto, _, _ := strings.Cut(r.Header.Get("X-Forwarded-Proto"), ",")
	switch proto = strings.ToLower(strings.TrimSpace(proto)); proto {
	case "http", "https":
		return proto
	}
	if r.TLS != nil {
		return "https"
	}
	return "http"
}
