package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"trackd.dev/trackd/sdk"
	"trackd.dev/trackd/sdk/httpdest"
)

// signatureHeader carries the HMAC-SHA256 of the body when a secret is set.
const signatureHeader = "X-Signature"

// Webhook sends each event, unchanged, as the body of one HTTP request.
type Webhook struct {
	cfg    settings
	client *httpdest.Client
}

type settings struct {
	URL         string            `toml:"url"`
	Method      string            `toml:"method"`
	Timeout     time.Duration     `toml:"timeout"`
	Concurrency int               `toml:"concurrency"`
	Secret      string            `toml:"secret"`
	Headers     map[string]string `toml:"headers"`
	// Batch sends the calls of a plugin call as one JSON array per request,
	// up to BatchBytes of body, instead of one request per call.
	Batch      bool `toml:"batch"`
	BatchBytes int  `toml:"batch_bytes"`
}

func defaults() settings {
	return settings{Method: http.MethodPost, Timeout: 10 * time.Second, Concurrency: 8, BatchBytes: 1 << 20}
}

var (
	_ sdk.Destination = (*Webhook)(nil)
	_ sdk.Typer       = (*Webhook)(nil)
)

// Types says the webhook takes every call type: it passes each on unchanged.
func (*Webhook) Types() []string { return sdk.AllTypes() }

func (w *Webhook) Configure(_ context.Context, s sdk.Settings) error {
	cfg := defaults()
	if err := s.Decode(&cfg); err != nil {
		return err
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	w.cfg = cfg
	w.client = httpdest.New(httpdest.Options{Timeout: cfg.Timeout, Concurrency: cfg.Concurrency})
	return nil
}

func (c *settings) validate() error {
	if c.URL == "" {
		return errors.New("url is empty; set it to the http(s) address that receives the events")
	}
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("url %q is not an http:// or https:// URL", c.URL)
	}
	c.Method = strings.ToUpper(c.Method)
	if !isToken(c.Method) {
		return fmt.Errorf("method %q is not an HTTP method", c.Method)
	}
	if c.Timeout < time.Millisecond {
		return fmt.Errorf(`timeout %v is too short; set a duration such as "10s"`, c.Timeout)
	}
	if c.Concurrency < 1 {
		return fmt.Errorf("concurrency is %d; set it to 1 or more", c.Concurrency)
	}
	if c.BatchBytes < 1 {
		return fmt.Errorf("batch_bytes is %d; set it to the largest request body the receiver takes, such as 1048576", c.BatchBytes)
	}
	for name, value := range c.Headers {
		if !isToken(name) {
			return fmt.Errorf("headers: %q is not a valid header name", name)
		}
		if strings.ContainsAny(value, "\r\n\x00") {
			return fmt.Errorf("headers.%s: the value contains a line break", name)
		}
	}
	return nil
}

// Deliver sends one request per call, or with batch one per group of calls
// that fits in batch_bytes, at most concurrency at a time. A request's answer
// is the result of each of its calls.
func (w *Webhook) Deliver(ctx context.Context, batch []sdk.Event) []sdk.Result {
	results := make([]sdk.Result, len(batch))
	var groups [][2]int
	if w.cfg.Batch {
		// Each call's JSON and a comma; a call over batch_bytes goes alone.
		groups = httpdest.Split(len(batch), len(batch), w.cfg.BatchBytes-1, func(i int) int { return len(batch[i].JSON) + 1 })
	} else {
		groups = make([][2]int, len(batch))
		for i := range batch {
			groups[i] = [2]int{i, i + 1}
		}
	}
	sem := make(chan struct{}, w.cfg.Concurrency)
	var wg sync.WaitGroup
	for _, g := range groups {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			r := w.send(ctx, w.body(batch[g[0]:g[1]]))
			for i := g[0]; i < g[1]; i++ {
				results[i] = r
			}
		})
	}
	wg.Wait()
	return results
}

// body is the request body of calls: the call itself, or with batch a JSON
// array of them.
func (w *Webhook) body(calls []sdk.Event) []byte {
	if !w.cfg.Batch {
		return calls[0].JSON
	}
	n := 1
	for _, e := range calls {
		n += len(e.JSON) + 1
	}
	body := make([]byte, 0, n)
	body = append(body, '[')
	for i, e := range calls {
		if i > 0 {
			body = append(body, ',')
		}
		body = append(body, e.JSON...)
	}
	return append(body, ']')
}

func (w *Webhook) send(ctx context.Context, body []byte) sdk.Result {
	req, err := http.NewRequestWithContext(ctx, w.cfg.Method, w.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return sdk.Drop(fmt.Sprintf("build request: %v", err))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "trackd-webhook")
	for name, value := range w.cfg.Headers {
		if strings.EqualFold(name, "Host") {
			req.Host = value // net/http ignores a Host in Header
			continue
		}
		req.Header.Set(name, value)
	}
	if w.cfg.Secret != "" {
		req.Header.Set(signatureHeader, sign([]byte(w.cfg.Secret), body))
	}
	return w.client.Do(req)
}

// sign returns the X-Signature value of body: "sha256=" and the hex-encoded
// HMAC-SHA256 of body keyed with secret.
func sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// isToken reports whether s is an RFC 9110 token, as header names and
// methods must be.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r >= 0x80 || !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
			strings.ContainsRune("!#$%&'*+-.^_`|~", r)) {
			return false
		}
	}
	return true
}
