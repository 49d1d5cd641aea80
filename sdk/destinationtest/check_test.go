package destinationtest

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"trackd.dev/trackd/sdk"
)

func TestMain(m *testing.M) { Main(m) }

const testPlugin = "trackd.dev/trackd/sdk/internal/testplugin"

// recorder is a testing.TB that keeps the errors a check reports instead of
// failing the test.
type recorder struct {
	testing.TB
	errors []string
}

func (r *recorder) Helper() {}

func (r *recorder) Error(args ...any) { r.errors = append(r.errors, fmt.Sprint(args...)) }

func (r *recorder) Errorf(format string, args ...any) {
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

func TestEvent(t *testing.T) {
	ist := time.FixedZone("IST", 5*60*60+30*60)
	e := Event(t, Track{
		Name:        "Order <Completed>",
		MessageID:   "m-1",
		UserID:      "u-1",
		AnonymousID: "a-1",
		Timestamp:   time.Date(2020, 1, 24, 11, 59, 2, 403_000_000, ist),
		ReceivedAt:  time.Date(2020, 1, 24, 6, 29, 3, 123_456_789, time.UTC),
		Properties:  ` {"revenue":9.99, "currency":"EUR"} `,
		Context:     `{"ip":"203.0.113.7"}`,
	})
	want := `{"anonymousId":"a-1","context":{"ip":"203.0.113.7"},"event":"Order <Completed>","messageId":"m-1",` +
		`"properties":{"revenue":9.99, "currency":"EUR"},"receivedAt":"2020-01-24T06:29:03.123Z",` +
		`"timestamp":"2020-01-24T11:59:02.403+05:30","type":"track","userId":"u-1","version":2}`
	if string(e.JSON) != want {
		t.Errorf("JSON\n%s\nwant\n%s", e.JSON, want)
	}
	wantTime := time.Date(2020, 1, 24, 6, 29, 2, 403_000_000, time.UTC)
	if e.MessageID != "m-1" || e.Name != "Order <Completed>" || e.UserID != "u-1" || e.AnonymousID != "a-1" ||
		!e.Timestamp.Equal(wantTime) || e.Timestamp.Location() != time.UTC {
		t.Errorf("event %+v", e)
	}
}

func TestEventDefaults(t *testing.T) {
	received := time.Date(2025, 3, 1, 12, 30, 0, 123_456_789, time.UTC)
	e := Event(t, Track{Name: "Signed Up", UserID: "u-1", ReceivedAt: received})
	if _, err := uuid.Parse(e.MessageID); err != nil {
		t.Errorf("messageId %q is not a UUID", e.MessageID)
	}
	want := `{"event":"Signed Up","messageId":"` + e.MessageID + `","properties":{},"receivedAt":"2025-03-01T12:30:00.123Z",` +
		`"timestamp":"2025-03-01T12:30:00.123Z","type":"track","userId":"u-1","version":2}`
	if string(e.JSON) != want {
		t.Errorf("JSON\n%s\nwant\n%s", e.JSON, want)
	}
	if !e.Timestamp.Equal(received.Truncate(time.Millisecond)) {
		t.Errorf("timestamp %v, want receivedAt", e.Timestamp)
	}

	at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	e = Event(t, Track{Name: "Signed Up", AnonymousID: "a-1", Timestamp: at})
	if !bytes.Contains(e.JSON, []byte(`"receivedAt":"2025-03-01T12:00:00.000Z","timestamp":"2025-03-01T12:00:00Z"`)) {
		t.Errorf("JSON %s, want receivedAt the timestamp", e.JSON)
	}
}

func TestServer(t *testing.T) {
	srv := NewServer(t, func(r Request) Answer {
		if r.Path == "/slow" {
			return Answer{Status: http.StatusTooManyRequests, Header: map[string]string{"Retry-After": "7"}, Body: "later"}
		}
		return Answer{}
	})

	var zipped bytes.Buffer
	zw := gzip.NewWriter(&zipped)
	_, _ = zw.Write([]byte(`[1,2]`))
	_ = zw.Close()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+"/import?strict=1", &zipped)
	req.Header.Set("Content-Encoding", "gzip")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("status %d, want 200 for a zero Answer", resp.StatusCode)
	}

	req, _ = http.NewRequestWithContext(t.Context(), http.MethodPut, srv.URL+"/slow", strings.NewReader("x"))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	_, _ = body.ReadFrom(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "7" || body.String() != "later" {
		t.Errorf("answer %d, Retry-After %q, body %q; want the Answer", resp.StatusCode, resp.Header.Get("Retry-After"), body.String())
	}

	got := srv.Requests()
	if len(got) != 2 {
		t.Fatalf("%d requests, want 2", len(got))
	}
	if r := got[0]; r.Method != http.MethodPost || r.Path != "/import" || r.Query.Get("strict") != "1" ||
		r.Header.Get("Content-Encoding") != "gzip" || string(r.Body) != "[1,2]" {
		t.Errorf("first request %+v, want POST /import?strict=1 with its body decompressed", r)
	}
	if r := got[1]; r.Method != http.MethodPut || r.Path != "/slow" || string(r.Body) != "x" {
		t.Errorf("second request %+v, want PUT /slow", r)
	}
}

func TestCheckResults(t *testing.T) {
	results := []sdk.Result{
		sdk.OK(),
		sdk.Retry(7*time.Second, "POST /x: 429 Too Many Requests"),
		sdk.Drop("properties.revenue is \"abc\""),
	}
	r := &recorder{TB: t}
	CheckResults(r, results, []sdk.Result{sdk.OK(), sdk.Retry(7*time.Second, "429"), sdk.Drop("")})
	if len(r.errors) != 0 {
		t.Errorf("matching results reported %q", r.errors)
	}
	CheckResults(r, results, []sdk.Result{sdk.Drop(""), sdk.Retry(0, "429"), sdk.Drop("currency")})
	if len(r.errors) != 3 {
		t.Errorf("three mismatches reported %q", r.errors)
	}
}

func TestCheckConfigureError(t *testing.T) {
	bin := Build(t, testPlugin)
	r := &recorder{TB: t}
	if err := CheckConfigureError(r, bin, map[string]any{"fail": "retries is -1"}, "retries"); err == nil || len(r.errors) != 0 {
		t.Errorf("an expected error: %v, reported %q", err, r.errors)
	}
	CheckConfigureError(r, bin, map[string]any{"fail": "retries is -1"}, "timeout")
	CheckConfigureError(r, bin, nil, "retries")
	if len(r.errors) != 2 {
		t.Errorf("another error and none reported %q", r.errors)
	}
}

func TestCheckSampleConfig(t *testing.T) {
	bin := Build(t, testPlugin)
	const sample = "# sample settings\nanswer = \"echo\"\n"
	dir := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("sample.toml", sample)
	write("README.md", "# testplugin\n\n```toml\n"+sample+"```\n")

	r := &recorder{TB: t}
	CheckSampleConfig(r, dir, bin, strings.NewReplacer(`"echo"`, `"retry"`).Replace)
	if len(r.errors) != 0 {
		t.Errorf("a good sample reported %q", r.errors)
	}

	write("README.md", "# testplugin\n\n```toml\nanswer = \"echo\"\n```\n")
	r = &recorder{TB: t}
	CheckSampleConfig(r, dir, bin, strings.NewReplacer("answer", "fail").Replace)
	if len(r.errors) != 2 || !strings.Contains(r.errors[0], "README.md") || !strings.Contains(r.errors[1], "variant 1") {
		t.Errorf("a README without the sample and a bad variant reported %q", r.errors)
	}

	write("sample.toml", "answer = \"echo\"\n")
	r = &recorder{TB: t}
	CheckSampleConfig(r, dir, bin)
	if len(r.errors) != 1 || !strings.Contains(r.errors[0], "--sample-config printed") {
		t.Errorf("a sample.toml the plugin does not print reported %q", r.errors)
	}
}

func TestCanonicalJSON(t *testing.T) {
	a := CanonicalJSON(t, []byte(`{"b": [1.50, {"d":2, "c":1}], "a": "<x>"}`))
	b := CanonicalJSON(t, []byte(`{"a":"<x>","b":[1.50,{"c":1,"d":2}]}`))
	if a != b || !strings.Contains(a, "1.50") {
		t.Errorf("CanonicalJSON gave %s and %s, want the same, numbers as written", a, b)
	}
}
