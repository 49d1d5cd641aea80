package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"trackd.dev/trackd/sdk/destinationtest"
)

// TestBrowserSDKs loads each browser SDK from its npm package into a page in
// Chromium, pointed at trackd by nothing but its writeKey and cdnURL, and
// checks that every call it makes reaches a webhook destination once, with
// what the browser adds to it, and that the page asked nothing of any host
// but loopback (SPEC §4c). Each SDK is loaded in both its forms: bundled from
// its npm import, and as the standalone build its snippet loads; and the npm
// form once more with the batching delivery strategy.

// browserPackages are the npm packages TestBrowserSDKs installs: the SDKs at
// the versions trackd's settings were checked against, the bundler that puts
// an SDK's npm import into a page, and Playwright without its browsers.
var browserPackages = []string{
	"@segment/analytics-next@1.84.3",
	"@customerio/cdp-analytics-browser@0.5.11",
	"esbuild@0.28.2",
	"playwright-core@1.65.2",
}

// chromiumPath is Debian's chromium, which .ci/run installs: Playwright
// drives it and never downloads a browser of its own.
const chromiumPath = "/usr/bin/chromium"

// browserSDK is a browser SDK as the test loads it.
type browserSDK struct {
	pkg     string // its npm package
	version string // as browserPackages pins it
	cdnPath string // what its cdnURL adds to trackd's base URL
	// The window property its snippet queues calls in, and the script
	// attribute that tells its standalone build that property's name.
	global, globalAttr string
	integration        string // its one integration, which load options configure
	// Whether it gives a screen call the page's context, as it does every
	// other call: Customer.io's page enrichment leaves screen calls out.
	screenPage bool
}

var (
	analyticsNext = browserSDK{pkg: "@segment/analytics-next", version: "1.84.3",
		global: "analytics", globalAttr: "data-global-segment-analytics-key", integration: "Segment.io", screenPage: true}
	cdpAnalyticsBrowser = browserSDK{pkg: "@customerio/cdp-analytics-browser", version: "0.5.11", cdnPath: "/customerio",
		global: "cioanalytics", globalAttr: "data-global-customerio-analytics-key", integration: "Customer.io Data Pipelines"}
)

// browserCase is one page: an SDK in one of its forms.
type browserCase struct {
	name     string
	sdk      browserSDK
	snippet  bool // loaded by a snippet, as the standalone build; else bundled from its npm import
	batching bool // the batching delivery strategy, posting to /v1/b
}

// library is the context.library the SDK writes into every call: both are
// analytics.js, the npm build's version marked npm.
func (c browserCase) library() map[string]any {
	version := "npm:next-" + c.sdk.version
	if c.snippet {
		version = "next-" + c.sdk.version
	}
	return map[string]any{"name": "analytics.js", "version": version}
}

// browserCallTypes are the calls each page makes (browserCalls), one of each.
var browserCallTypes = []string{"page", "alias", "identify", "track", "screen", "group"}

// browserCalls is the page's script that makes the calls, the same for every
// SDK and form: each call of the Segment spec the SDKs have a method for.
// report sets window.trackdResult, which the driver waits for.
const browserCalls = `'use strict';
function trackdCalls(analytics, name) {
  return [
    () => analytics.page('Docs', 'Pricing', { case: name }),
    // A visitor signs up: alias comes before identify, as the SDKs mean it
    // to (after identify, they overwrite the userId an alias call gives with
    // the identified one), and names its previousId (without it, the SDKs
    // take the user's id when they send the call, which a queued identify
    // may have set by then).
    () => analytics.alias('user-' + name, 'visitor-' + name),
    () => analytics.identify('user-' + name, { email: name + '@example.com', plan: 'pro' }),
    () => analytics.track('Order Completed', { revenue: 9.5, currency: 'EUR', case: name }),
    () => analytics.screen('Home', { case: name }),
    () => analytics.group('group-' + name, { name: 'Acme', employees: 42 }),
  ];
}
function report(anonymousId) {
  Promise.resolve(anonymousId).then(
    (id) => { window.trackdResult = { anonymousId: id, href: location.href, userAgent: navigator.userAgent }; },
    (err) => { window.trackdResult = { error: String((err && err.stack) || err) }; });
}
`

// page is the HTML of c's page, on which the SDK sends to the trackd at
// apiURL with write key key.
func (c browserCase) page(apiURL, key string) string {
	js := func(v any) string {
		b, _ := json.Marshal(v)
		return string(b)
	}
	cdnURL := apiURL + c.sdk.cdnPath
	var load, script string
	if c.snippet {
		// What the vendors' snippets do: a queue of calls under the SDK's
		// global, the write key and trackd as the CDN on it, and the
		// standalone build loaded from the page's own server.
		script = fmt.Sprintf(`
(function () {
  var analytics = window[%[1]s] = [];
  ['page', 'identify', 'track', 'screen', 'group', 'alias', 'ready'].forEach(function (m) {
    analytics[m] = function () { analytics.push([m].concat(Array.prototype.slice.call(arguments))); return analytics; };
  });
  analytics._writeKey = %[2]s;
  analytics._cdn = %[3]s;
  var t = document.createElement('script');
  t.async = true;
  t.setAttribute(%[4]s, %[1]s);
  t.src = %[5]s;
  document.head.appendChild(t);
})();
trackdCalls(window[%[1]s], %[6]s).forEach((call) => call());
window[%[1]s].ready(() => report(window[%[1]s].user().anonymousId()));
`, js(c.sdk.global), js(key), js(cdnURL), js(c.sdk.globalAttr), js(c.sdk.standalonePath()), js(c.name))
	} else {
		load = `<script src="` + c.sdk.bundlePath() + `"></script>`
		settings := js(map[string]any{"writeKey": key, "cdnURL": cdnURL})
		if c.batching {
			// One batch of the page's calls, posted within a second.
			settings += ", " + js(map[string]any{"integrations": map[string]any{c.sdk.integration: map[string]any{
				"deliveryStrategy": map[string]any{"strategy": "batching", "config": map[string]any{"size": 100, "timeout": 1000}},
			}}})
		}
		script = fmt.Sprintf(`
const analytics = %[1]s.AnalyticsBrowser.load(%[2]s);
report((async () => {
  // Each call once the SDK has handled the one before.
  for (const call of trackdCalls(analytics, %[3]s)) await call();
  return (await analytics.user()).anonymousId();
})());
`, c.sdk.bundleGlobal(), settings, js(c.name))
	}
	return `<!doctype html>
<html><head><meta charset="utf-8"><title>trackd: ` + c.name + `</title><link rel="icon" href="data:,"></head>
<body><script src="/calls.js"></script>` + load + `<script>` + script + `</script></body></html>
`
}

// bundlePath is where the page server serves the SDK's npm import, bundled
// by the driver into a script that sets the global bundleGlobal.
func (s browserSDK) bundlePath() string   { return "/npm/" + s.global + ".js" }
func (s browserSDK) bundleGlobal() string { return s.global + "Bundle" }

// standalonePath is where the page server serves the SDK's standalone build.
func (s browserSDK) standalonePath() string { return "/umd/" + s.global + "/standalone.js" }

// browserDriver bundles each SDK's npm import for the pages, then opens each
// page of TRACKD_BROWSER's cases in Chromium, each in a browser context of its
// own (cookies and storage of its own), and prints a JSON line for each: what
// the page reported once its calls were made, or why it never did. Once stdin
// closes (the test has what it waited for; the pages
// stay open until then, their SDKs perhaps still sending), it prints every
// page's log: each request it made, each that failed or was answered 400 or
// more, and its console.
const browserDriver = `'use strict';
const path = require('path');
const esbuild = require('esbuild');
const { chromium } = require('playwright-core');
const cfg = JSON.parse(process.env.TRACKD_BROWSER);
const out = (v) => process.stdout.write(JSON.stringify(v) + '\n');

(async () => {
  for (const b of cfg.bundles) {
    await esbuild.build({
      stdin: { contents: 'export { AnalyticsBrowser } from ' + JSON.stringify(b.pkg) + ';', resolveDir: cfg.resolveDir, loader: 'js' },
      bundle: true, format: 'iife', globalName: b.global, platform: 'browser', target: 'es2020',
      define: { 'process.env.NODE_ENV': '"production"' },
      outfile: path.join(cfg.www, b.file), logLevel: 'error',
    });
  }
  // Playwright gives the browser a fresh --user-data-dir under TMPDIR.
  const browser = await chromium.launch({
    executablePath: cfg.chromium,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const logs = {};
  for (const c of cfg.cases) {
    const context = await browser.newContext();
    const page = await context.newPage();
    const log = logs[c.name] = { requests: [], failed: [], console: [] };
    page.on('request', (r) => log.requests.push({ method: r.method(), url: r.url() }));
    page.on('requestfailed', (r) => log.failed.push(r.method() + ' ' + r.url() + ': ' + (r.failure() || {}).errorText));
    page.on('response', (r) => { if (r.status() >= 400) log.failed.push(r.request().method() + ' ' + r.url() + ': status ' + r.status()); });
    page.on('console', (m) => log.console.push(m.type() + ': ' + m.text()));
    page.on('pageerror', (e) => log.console.push('uncaught: ' + ((e && e.stack) || e)));
    try {
      await page.goto(c.url);
      const result = await page.waitForFunction(() => window.trackdResult, null, { timeout: 60000 });
      out({ case: c.name, result: await result.jsonValue() });
    } catch (err) {
      out({ case: c.name, result: { error: String((err && err.stack) || err) } });
    }
  }
  await new Promise((resolve) => { process.stdin.on('end', resolve); process.stdin.resume(); });
  out({ logs });
  await browser.close();
  process.exit(0);
})().catch((err) => { console.error((err && err.stack) || err); process.exit(1); });
`

// browserResult is what a page reported once its calls were made.
type browserResult struct {
	AnonymousID string `json:"anonymousId"`
	Href        string `json:"href"`
	UserAgent   string `json:"userAgent"`
	Error       string `json:"error"`
}

// browserLog is what the driver saw a page do.
type browserLog struct {
	Requests []struct {
		Method string `json:"method"`
		URL    string `json:"url"`
	} `json:"requests"`
	Failed  []string `json:"failed"`
	Console []string `json:"console"`
}

func (l browserLog) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "requests:\n")
	for _, r := range l.Requests {
		fmt.Fprintf(&b, "  %s %s\n", r.Method, r.URL)
	}
	fmt.Fprintf(&b, "failed requests:\n  %s\nconsole:\n  %s", strings.Join(l.Failed, "\n  "), strings.Join(l.Console, "\n  "))
	return b.String()
}

func TestBrowserSDKs(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s: %v; CI must run the browser tests (.ci/run installs Debian's chromium)", chromiumPath, err)
		}
		t.Skipf("%s is missing: apt-get install chromium to test the browser SDKs", chromiumPath)
	}
	modules := npmInstall(t, browserPackages...)

	hook := newSDKHook(t)
	d := newDaemon(t, destinationtest.Build(t, "trackd.dev/trackd/daemon"), fmt.Sprintf(`
[destinations.hook]
plugin = %q
name = "Webhook"
[destinations.hook.settings]
url = %q
`, destinationtest.Build(t, "trackd.dev/trackd/plugins/webhook"), hook.URL))
	d.serveHTTP(t)
	d.start(t, "/readyz")
	apiURL := d.apiURL

	cases := []browserCase{
		{name: "analytics-next", sdk: analyticsNext},
		{name: "analytics-next-batching", sdk: analyticsNext, batching: true},
		{name: "analytics-next-snippet", sdk: analyticsNext, snippet: true},
		{name: "cdp-analytics-browser", sdk: cdpAnalyticsBrowser},
		{name: "cdp-analytics-browser-batching", sdk: cdpAnalyticsBrowser, batching: true},
		{name: "cdp-analytics-browser-snippet", sdk: cdpAnalyticsBrowser, snippet: true},
	}

	// The pages are served from another port than the API, so that every
	// call is cross-origin, as from a site's own pages.
	www := t.TempDir()
	pages := httptest.NewServer(http.FileServer(http.Dir(www)))
	t.Cleanup(pages.Close)
	writeFile := func(name, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(www, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(www, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeFile("calls.js", browserCalls)
	type bundle struct {
		Pkg    string `json:"pkg"`
		Global string `json:"global"`
		File   string `json:"file"`
	}
	type pageCase struct {
		Name string `json:"name"`
		URL  string `json:"url"`
	}
	cfg := struct {
		Chromium   string     `json:"chromium"`
		WWW        string     `json:"www"`
		ResolveDir string     `json:"resolveDir"`
		Bundles    []bundle   `json:"bundles"`
		Cases      []pageCase `json:"cases"`
	}{Chromium: chromiumPath, WWW: www, ResolveDir: filepath.Dir(modules)}
	for _, sdk := range []browserSDK{analyticsNext, cdpAnalyticsBrowser} {
		cfg.Bundles = append(cfg.Bundles, bundle{sdk.pkg, sdk.bundleGlobal(), sdk.bundlePath()})
		standalone, err := os.ReadFile(filepath.Join(modules, sdk.pkg, "dist", "umd", "standalone.js"))
		if err != nil {
			t.Fatalf("the standalone build of %s: %v", sdk.pkg, err)
		}
		writeFile(sdk.standalonePath(), string(standalone))
	}
	for _, c := range cases {
		writeFile(c.name+".html", c.page(apiURL, testWriteKey))
		cfg.Cases = append(cfg.Cases, pageCase{c.name, pages.URL + "/" + c.name + ".html"})
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	driver := filepath.Join(t.TempDir(), "driver.js")
	if err := os.WriteFile(driver, []byte(browserDriver), 0o644); err != nil {
		t.Fatal(err)
	}

	// The limit only stops a hung run; it says nothing about speed.
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", driver)
	cmd.Dir = filepath.Dir(driver)
	cmd.Env = append(os.Environ(), "NODE_PATH="+modules, "TRACKD_BROWSER="+string(cfgJSON), "TMPDIR="+t.TempDir())
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	defer func() {
		if t.Failed() {
			t.Logf("the driver's stderr:\n%s", stderr.String())
		}
	}()
	lines := bufio.NewScanner(stdout)
	lines.Buffer(nil, 16<<20)
	next := func(v any) {
		t.Helper()
		if !lines.Scan() {
			_ = cmd.Wait()
			t.Fatalf("the driver stopped (%v, %v); its stderr is below", lines.Err(), cmd.ProcessState)
		}
		if err := json.Unmarshal(lines.Bytes(), v); err != nil {
			t.Fatalf("the driver printed %q: %v", lines.Bytes(), err)
		}
	}

	results := map[string]browserResult{}
	for range cases {
		var line struct {
			Case   string        `json:"case"`
			Result browserResult `json:"result"`
		}
		next(&line)
		results[line.Case] = line.Result
	}
	// Each page's calls, by the anonymousId that every call of its SDK carries.
	byCase := func() map[string][]map[string]any {
		got := map[string][]map[string]any{}
		hook.mu.Lock()
		defer hook.mu.Unlock()
		for _, c := range cases {
			if r := results[c.name]; r.Error == "" {
				for _, ev := range hook.events {
					if ev["anonymousId"] == r.AnonymousID {
						got[c.name] = append(got[c.name], ev)
					}
				}
			}
		}
		return got
	}
	// Every page's calls at the webhook, then counted delivered (so that
	// none can still come twice). A page whose calls never all come is
	// reported with its log below.
	total := len(cases) * len(browserCallTypes)
	arrived := func() bool {
		got := byCase()
		for _, c := range cases {
			if len(got[c.name]) < len(browserCallTypes) {
				return false
			}
		}
		return d.metric(t, `trackd_events_delivered_total{destination="hook"}`) >= float64(total)
	}
	// The limit only stops a broken run from hanging.
	for deadline := time.Now().Add(time.Minute); !arrived() && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	if err := stdin.Close(); err != nil {
		t.Fatal(err)
	}
	var final struct {
		Logs map[string]browserLog `json:"logs"`
	}
	next(&final)

	got := byCase()
	var ids []string
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			log := final.Logs[c.name]
			defer func() {
				if t.Failed() {
					t.Logf("the page's log:\n%s", log)
				}
			}()
			r := results[c.name]
			if r.Error != "" {
				t.Fatalf("the page never finished its calls: %s", r.Error)
			}
			checkBrowserRequests(t, c, log, apiURL)
			for _, ev := range got[c.name] {
				id, _ := ev["messageId"].(string)
				ids = append(ids, id)
				checkBrowserCall(t, c, r, ev)
			}
			var types []string
			for _, ev := range got[c.name] {
				types = append(types, fmt.Sprint(ev["type"]))
			}
			slices.Sort(types)
			if want := slices.Sorted(slices.Values(browserCallTypes)); !slices.Equal(types, want) {
				t.Errorf("the webhook got calls of types %v, want one of each of %v", types, want)
			}
		})
	}
	hook.checkOnce(t, "Webhook", ids)
	if got := d.metric(t, `trackd_events_delivered_total{destination="hook"}`); got != float64(total) {
		t.Errorf(`trackd_events_delivered_total{destination="hook"} = %v, want %d`, got, total)
	}
	checkNoDeadLetters(t, d, ids)
}

// checkBrowserRequests checks what a page asked for: its own files, the
// settings of its SDK from trackd, and the calls, through the endpoints of its
// delivery strategy; nothing from any host but loopback, and nothing that
// failed or was answered 400 or more. Its console has no error.
func checkBrowserRequests(t *testing.T, c browserCase, log browserLog, apiURL string) {
	t.Helper()
	settings := apiURL + c.sdk.cdnPath + "/v1/projects/" + testWriteKey + "/settings"
	var gotSettings bool
	posts := map[string]int{} // calls posted to trackd, by path
	for _, r := range log.Requests {
		u, err := url.Parse(r.URL)
		if err != nil {
			t.Errorf("the page requested %q: %v", r.URL, err)
			continue
		}
		switch u.Scheme {
		case "data", "blob", "about":
			continue
		}
		if host := u.Hostname(); host != "127.0.0.1" && host != "localhost" && host != "::1" {
			t.Errorf("the page requested %s %s, from a host that is not loopback", r.Method, r.URL)
		}
		gotSettings = gotSettings || r.Method == http.MethodGet && r.URL == settings
		if r.Method == http.MethodPost && strings.HasPrefix(r.URL, apiURL+"/") {
			posts[strings.TrimPrefix(r.URL, apiURL)]++
		}
	}
	if !gotSettings {
		t.Errorf("the page never requested GET %s", settings)
	}
	if len(posts) == 0 {
		t.Errorf("the page posted nothing to trackd")
	}
	for path := range posts {
		if c.batching != (path == "/v1/b") {
			t.Errorf("the page posted to %s (%v), with the batching delivery strategy %v", path, posts, c.batching)
		}
	}
	for _, f := range log.Failed {
		t.Errorf("failed request: %s", f)
	}
	for _, line := range log.Console {
		if strings.HasPrefix(line, "error: ") || strings.HasPrefix(line, "uncaught: ") {
			t.Errorf("console: %s", line)
		}
	}
}

// checkBrowserCall checks a call that page r of case c sent, as the webhook
// got it: what the browser adds (the page's URL, the user agent) and the
// SDK's library are there, the page's own fields are as sent, and the write
// key is not.
func checkBrowserCall(t *testing.T, c browserCase, r browserResult, ev map[string]any) {
	t.Helper()
	what := fmt.Sprint(ev["type"], " ", ev["messageId"])
	ctx, _ := ev["context"].(map[string]any)
	page, _ := ctx["page"].(map[string]any)
	if page["url"] != r.Href && (ev["type"] != "screen" || c.sdk.screenPage) {
		t.Errorf("%s: context.page = %v, want url %s", what, page, r.Href)
	}
	if ctx["userAgent"] != r.UserAgent || r.UserAgent == "" {
		t.Errorf("%s: context.userAgent = %v, want the browser's %q", what, ctx["userAgent"], r.UserAgent)
	}
	if lib := ctx["library"]; !reflect.DeepEqual(lib, c.library()) {
		t.Errorf("%s: context.library = %v, want %v", what, lib, c.library())
	}
	want := map[string]map[string]any{
		"page":     {"name": "Pricing", "category": "Docs", "properties": map[string]any{"case": c.name}},
		"identify": {"userId": "user-" + c.name, "traits": map[string]any{"email": c.name + "@example.com", "plan": "pro"}},
		"track":    {"event": "Order Completed", "userId": "user-" + c.name, "properties": map[string]any{"revenue": 9.5, "currency": "EUR", "case": c.name}},
		"screen":   {"name": "Home", "userId": "user-" + c.name, "properties": map[string]any{"case": c.name}},
		"group":    {"groupId": "group-" + c.name, "userId": "user-" + c.name, "traits": map[string]any{"name": "Acme", "employees": 42.0}},
		"alias":    {"userId": "user-" + c.name, "previousId": "visitor-" + c.name},
	}[fmt.Sprint(ev["type"])]
	if want == nil {
		t.Errorf("%s: a call of a type the page never made: %v", what, ev)
	}
	checkSentSubset(t, what, want, ev)
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("writeKey")) || bytes.Contains(b, []byte(testWriteKey)) {
		t.Errorf("%s: the write key reached the destination: %s", what, b)
	}
}
