package httpdest

import (
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"trackd.dev/trackd/sdk"
	"trackd.dev/trackd/sdk/destinationtest"
)

func TestDoResponse(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		header     map[string]string
		body       string
		limit      int
		want       sdk.Status
		retryAfter time.Duration
		wantBody   string
		reason     []string
	}{
		{name: "200 returns the body", status: 200, body: `{"status":1}`, limit: 100,
			want: sdk.StatusOK, wantBody: `{"status":1}`},
		{name: "body beyond limit is cut", status: 200, body: "0123456789", limit: 4,
			want: sdk.StatusOK, wantBody: "0123"},
		{name: "400 drops and returns the whole body", status: 400, body: `{"failed_records":[` + strings.Repeat(" ", 300) + `]}`, limit: 1000,
			want: sdk.StatusDrop, wantBody: `{"failed_records":[` + strings.Repeat(" ", 300) + `]}`, reason: []string{"400 Bad Request", "failed_records"}},
		{name: "reason quotes the body under a small limit", status: 400, body: "bad thing", limit: 0,
			want: sdk.StatusDrop, wantBody: "", reason: []string{"bad thing"}},
		{name: "429 retry-after", status: 429, header: map[string]string{"Retry-After": "7"}, body: "slow", limit: 10,
			want: sdk.StatusRetry, retryAfter: 7 * time.Second, wantBody: "slow"},
		{name: "500 retries", status: 500, limit: 10, want: sdk.StatusRetry, reason: []string{"500"}},
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

			req, err := http.NewRequest("POST", srv.URL+"/import?secret=x", strings.NewReader("[]"))
			if err != nil {
				t.Fatal(err)
			}
			got, resp := New(Options{}).DoResponse(req, tt.limit)
			if got.Status != tt.want || got.RetryAfter != tt.retryAfter {
				t.Errorf("result %v after %v (%q), want %v after %v", got.Status, got.RetryAfter, got.Reason, tt.want, tt.retryAfter)
			}
			for _, s := range append(tt.reason, "/import") {
				if got.Status != sdk.StatusOK && !strings.Contains(got.Reason, s) {
					t.Errorf("reason %q does not contain %q", got.Reason, s)
				}
			}
			if strings.Contains(got.Reason, "secret") {
				t.Errorf("reason %q shows the query", got.Reason)
			}
			if resp == nil {
				t.Fatal("no response")
			}
			if resp.StatusCode != tt.status || string(resp.Body) != tt.wantBody {
				t.Errorf("response %d %q, want %d %q", resp.StatusCode, resp.Body, tt.status, tt.wantBody)
			}
			for k, v := range tt.header {
				if resp.Header.Get(k) != v {
					t.Errorf("header %s = %q, want %q", k, resp.Header.Get(k), v)
				}
			}
		})
	}
}

func TestDoResponseGzipAndNoResponse(t *testing.T) {
	var got string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			t.Errorf("body is not gzip: %v", err)
			return
		}
		b, _ := io.ReadAll(zr)
		got = string(b)
	}))
	defer srv.Close()
	req, _ := http.NewRequest("POST", srv.URL, strings.NewReader("[1,2]"))
	if r, resp := New(Options{Gzip: true}).DoResponse(req, 10); r.Status != sdk.StatusOK || resp == nil {
		t.Fatalf("DoResponse = %+v, %v", r, resp)
	}
	if got != "[1,2]" {
		t.Errorf("server read %q", got)
	}

	req, _ = http.NewRequest("POST", destinationtest.HangUpURL(t), strings.NewReader("[]"))
	r, resp := New(Options{}).DoResponse(req, 10)
	if r.Status != sdk.StatusRetry || resp != nil {
		t.Errorf("server that hangs up: %+v, %v; want retry and no response", r, resp)
	}
}

func TestWorst(t *testing.T) {
	tests := []struct {
		in   []sdk.Result
		want sdk.Result
	}{
		{nil, sdk.OK()},
		{[]sdk.Result{{}, sdk.OK()}, sdk.OK()},
		{[]sdk.Result{sdk.OK(), sdk.Drop("bad"), {}}, sdk.Drop("bad")},
		{[]sdk.Result{sdk.Drop("bad"), sdk.Retry(time.Second, "a"), sdk.Retry(3*time.Second, "b"), sdk.Retry(2*time.Second, "c")}, sdk.Retry(3*time.Second, "b")},
	}
	for _, tt := range tests {
		if got := Worst(tt.in...); got != tt.want {
			t.Errorf("Worst(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}
