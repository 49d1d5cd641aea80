package httpdest

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"trackd.dev/trackd/sdk"
	"trackd.dev/trackd/sdk/destinationtest"
)

func TestDo(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		header     map[string]string
		body       string
		want       sdk.Status
		retryAfter time.Duration
		reason     []string // substrings of the reason
	}{
		{name: "200", status: 200, want: sdk.StatusOK},
		{name: "204", status: 204, want: sdk.StatusOK},
		{name: "400 drops with body", status: 400, body: "bad thing\n", want: sdk.StatusDrop,
			reason: []string{"POST", "/track", "400 Bad Request", "bad thing"}},
		{name: "401 drops", status: 401, want: sdk.StatusDrop, reason: []string{"401 Unauthorized"}},
		{name: "404 drops", status: 404, want: sdk.StatusDrop, reason: []string{"404"}},
		{name: "408 retries", status: 408, want: sdk.StatusRetry, reason: []string{"408"}},
		{name: "429 retries", status: 429, want: sdk.StatusRetry, reason: []string{"429 Too Many Requests"}},
		{name: "429 retry-after seconds", status: 429, header: map[string]string{"Retry-After": "30"},
			want: sdk.StatusRetry, retryAfter: 30 * time.Second},
		{name: "500 retries", status: 500, body: "oops", want: sdk.StatusRetry, reason: []string{"500", "oops"}},
		{name: "503 retry-after", status: 503, header: map[string]string{"Retry-After": "7"},
			want: sdk.StatusRetry, retryAfter: 7 * time.Second},
		{name: "503 bad retry-after", status: 503, header: map[string]string{"Retry-After": "soon"},
			want: sdk.StatusRetry},
		{name: "long body is cut", status: 422, body: strings.Repeat("x", 5000), want: sdk.StatusDrop,
			reason: []string{"422 Unprocessable Entity: " + strings.Repeat("x", 200)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tt.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			}))
			defer srv.Close()

			req, err := http.NewRequest("POST", srv.URL+"/track?api_key=secret", strings.NewReader("{}"))
			if err != nil {
				t.Fatal(err)
			}
			got := New(Options{}).Do(req)
			if got.Status != tt.want || got.RetryAfter != tt.retryAfter {
				t.Errorf("Do = %v after %v (%q), want %v after %v", got.Status, got.RetryAfter, got.Reason, tt.want, tt.retryAfter)
			}
			for _, s := range tt.reason {
				if !strings.Contains(got.Reason, s) {
					t.Errorf("reason %q does not contain %q", got.Reason, s)
				}
			}
			if strings.Contains(got.Reason, "secret") {
				t.Errorf("reason %q leaks the query", got.Reason)
			}
			if strings.Contains(got.Reason, strings.Repeat("x", 201)) {
				t.Errorf("reason quotes more than 200 bytes of the body")
			}
		})
	}
}

func TestDoNetworkErrorRetries(t *testing.T) {
	url := destinationtest.HangUpURL(t) + "/hook?token=secret"
	req, _ := http.NewRequest("POST", url, strings.NewReader("{}"))
	got := New(Options{}).Do(req)
	if got.Status != sdk.StatusRetry {
		t.Fatalf("Do to a server that hangs up = %v (%q), want retry", got.Status, got.Reason)
	}
	if !strings.Contains(got.Reason, "/hook") || strings.Contains(got.Reason, "secret") {
		t.Errorf("reason %q: want the path without the query", got.Reason)
	}
}

func TestDoTimeoutRetries(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	defer srv.Close()
	defer close(release)

	req, _ := http.NewRequest("GET", srv.URL, nil)
	got := New(Options{Timeout: 50 * time.Millisecond}).Do(req)
	if got.Status != sdk.StatusRetry {
		t.Fatalf("Do past the timeout = %v (%q), want retry", got.Status, got.Reason)
	}
}

func TestDoGzip(t *testing.T) {
	body := []byte(`{"event":"Order Completed"}`)
	var gotBody []byte
	var gotEncoding string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotEncoding = r.Header.Get("Content-Encoding")
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			w.WriteHeader(400)
			return
		}
		gotBody, _ = io.ReadAll(zr)
	}))
	defer srv.Close()

	req, _ := http.NewRequest("POST", srv.URL, bytes.NewReader(body))
	if got := New(Options{Gzip: true}).Do(req); got.Status != sdk.StatusOK {
		t.Fatalf("Do = %v (%q), want ok", got.Status, got.Reason)
	}
	if gotEncoding != "gzip" || !bytes.Equal(gotBody, body) {
		t.Errorf("server got Content-Encoding %q and body %q, want gzip of %q", gotEncoding, gotBody, body)
	}
}

func TestDoRedirects(t *testing.T) {
	var gotMethod, gotBody string
	mux := http.NewServeMux()
	mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/new?key=secret", http.StatusFound)
	})
	mux.HandleFunc("/temporary", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/new", http.StatusTemporaryRedirect)
	})
	mux.HandleFunc("/new", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		gotMethod, gotBody = r.Method, string(b)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c := New(Options{})

	req, _ := http.NewRequest("POST", srv.URL+"/temporary", strings.NewReader(`{"a":1}`))
	if got := c.Do(req); got.Status != sdk.StatusOK || gotMethod != "POST" || gotBody != `{"a":1}` {
		t.Errorf("307: Do = %v (%s), target got %s %q; want ok and the POST body followed", got.Status, got.Reason, gotMethod, gotBody)
	}

	gotMethod = ""
	req, _ = http.NewRequest("POST", srv.URL+"/moved", strings.NewReader(`{"a":1}`))
	got := c.Do(req)
	if got.Status != sdk.StatusDrop || !strings.Contains(got.Reason, "302 Found to "+srv.URL+"/new") {
		t.Errorf("302: Do = %v (%q), want a drop naming the status and the new location", got.Status, got.Reason)
	}
	if strings.Contains(got.Reason, "secret") {
		t.Errorf("302: reason %q leaks the location's query", got.Reason)
	}
	if gotMethod != "" {
		t.Errorf("302 was followed with a %s", gotMethod)
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"-3", 0},
		{"120", 2 * time.Minute},
		{" 5 ", 5 * time.Second},
		{"Sat, 01 Mar 2025 12:00:30 GMT", 30 * time.Second},
		{"Sat, 01 Mar 2025 11:00:00 GMT", 0},
		{"tomorrow", 0},
	}
	for _, tt := range tests {
		if got := retryAfter(tt.in, now); got != tt.want {
			t.Errorf("retryAfter(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestSplit(t *testing.T) {
	sizes := []int{10, 10, 10, 50, 10, 10}
	size := func(i int) int { return sizes[i] }
	tests := []struct {
		name               string
		n, count, maxBytes int
		want               [][2]int
	}{
		{"empty", 0, 2, 0, nil},
		{"no limits", 6, 0, 0, [][2]int{{0, 6}}},
		{"by count", 6, 4, 0, [][2]int{{0, 4}, {4, 6}}},
		{"count of one", 3, 1, 0, [][2]int{{0, 1}, {1, 2}, {2, 3}}},
		{"by bytes", 6, 0, 30, [][2]int{{0, 3}, {3, 4}, {4, 6}}},
		{"oversized item alone", 6, 0, 40, [][2]int{{0, 3}, {3, 4}, {4, 6}}},
		{"both", 6, 2, 59, [][2]int{{0, 2}, {2, 3}, {3, 4}, {4, 6}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Split(tt.n, tt.count, tt.maxBytes, size); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Split = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestOneLine(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"Invalid API key", "Invalid API key"},
		{"  missing\n\tfield  time\r\n", "missing field time"},
		{"bad \xff byte", "bad byte"},
		{"bad\xffbyte", "badbyte"},
	}
	for _, tt := range tests {
		if got := OneLine(tt.in); got != tt.want {
			t.Errorf("OneLine(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
