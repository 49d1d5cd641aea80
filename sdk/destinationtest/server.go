package destinationtest

import (
	"compress/gzip"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"
)

// Request is what a [Server] received of one request.
type Request struct {
	Method string
	Path   string
	Query  url.Values
	Header http.Header
	// Body is the request body, decompressed when Content-Encoding is gzip
	// (httpdest.Options.Gzip); Header still says gzip.
	Body []byte
}

// Answer is how a [Server] responds to a request.
type Answer struct {
	Status int               // 0 means 200
	Header map[string]string // set on the response
	Body   string
}

// Server plays a destination's API in a test: it records every request and
// answers it. It is an httptest.Server, so its URL is the endpoint to
// configure the plugin with.
type Server struct {
	*httptest.Server
	mu       sync.Mutex
	requests []Request
}

// NewServer starts a Server that answers each request with answer(r), called
// after r is recorded; a nil answer, or a zero Answer, is 200 OK with no body.
// answer runs on the server's goroutines, concurrently when the plugin sends
// requests concurrently, and may block to hold a request in flight. A gzip
// body that does not decompress fails the test and is answered 400 without
// being recorded. The server is closed when the test ends.
func NewServer(t testing.TB, answer func(r Request) Answer) *Server {
	s := &Server{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				t.Errorf("%s %s: Content-Encoding gzip but %v", r.Method, r.URL.Path, err)
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			body = zr
		}
		// A body cut short (the plugin gave up on the request) is recorded
		// as far as it came.
		b, _ := io.ReadAll(body)
		req := Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Header: r.Header.Clone(), Body: b}
		s.mu.Lock()
		s.requests = append(s.requests, req)
		s.mu.Unlock()

		var a Answer
		if answer != nil {
			a = answer(req)
		}
		for k, v := range a.Header {
			w.Header().Set(k, v)
		}
		if a.Status == 0 {
			a.Status = http.StatusOK
		}
		w.WriteHeader(a.Status)
		_, _ = io.WriteString(w, a.Body)
	}))
	t.Cleanup(s.Close)
	return s
}

// Requests returns the requests received so far, in the order they arrived.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// InFlightWait is how long [InFlight] holds a request for the others to
// arrive before answering it anyway. A plugin sending fewer requests at a
// time than the limit fails the test only once it has passed, so it is
// generous: on a slow, loaded machine (a CI runner under -race) the plugin
// may need several seconds to send its requests, large bodies above all,
// and a shorter wait would fail a plugin that is right. Configure the
// plugin's request timeout above it, or the plugin gives up on a request
// that is still being held.
const InFlightWait = 30 * time.Second

// InFlight is an API for [NewServer] that checks a plugin's concurrency: it
// holds each request until limit of them are in flight together (or
// [InFlightWait] passes, so that a plugin sending fewer at a time fails
// rather than hangs), and records the most that were.
//
//	inFlight := destinationtest.NewInFlight(3)
//	srv := destinationtest.NewServer(t, inFlight.Answer)
//	... start the plugin with a request timeout above InFlightWait ...
//	... deliver a batch that makes more than 3 requests ...
//	if inFlight.Most() != 3 { ... }
type InFlight struct {
	limit int
	full  chan struct{} // closed once limit requests are in flight together

	mu   sync.Mutex
	now  int
	most int
}

// NewInFlight returns an InFlight that waits for limit requests at once.
func NewInFlight(limit int) *InFlight {
	return &InFlight{limit: limit, full: make(chan struct{})}
}

// Answer holds the request as InFlight says, then answers 200.
func (f *InFlight) Answer(Request) Answer {
	f.mu.Lock()
	f.now++
	f.most = max(f.most, f.now)
	if f.now == f.limit && f.most == f.limit {
		close(f.full)
	}
	f.mu.Unlock()
	select {
	case <-f.full:
	case <-time.After(InFlightWait):
	}
	f.mu.Lock()
	f.now--
	f.mu.Unlock()
	return Answer{}
}

// Most is the most requests that were in flight together.
func (f *InFlight) Most() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.most
}

// HangUpURL returns the http URL of a loopback listener that accepts each
// connection and closes it at once, for a test of a destination that cannot
// be reached: a request to it fails with a network error (the connection
// reset or closed before any response), which httpdest reports as a retry.
// The URL of a closed [Server] would not do: once its port is free, a test
// running at the same time, in this package or another, may start a server
// on it whose answer (a 404, say) the plugin would drop rather than retry.
// The listener keeps the port until the test ends.
func HangUpURL(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen for HangUpURL: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				// Closed when the test ends. (Another error leaves later
				// requests to time out: a network error all the same.)
				return
			}
			_ = conn.Close()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
	})
	return "http://" + ln.Addr().String()
}
