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
}

func defaults() settings {
	return settings{Method: http.MethodPost, Timeout: 10 * time.Second, Concurrency: 8}
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

// Deliver sends one request per event, at most concurrency at a time.
func (w *Webhook) Deliver(ctx context.Context, batch []sdk.Event) []sdk.Result {
	results := make([]sdk.Result, len(batch))
	sem := make(chan struct{}, w.cfg.Concurrency)
	var wg sync.WaitGroup
	for i, e := range batch {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			results[i] = w.send(ctx, e)
		})
	}
	wg.Wait()
	return results
}

func (w *Webhook) send(ctx context.Context, e sdk.Event) sdk.Result {
	req, err := http.NewRequestWithContext(ctx, w.cfg.Method, w.cfg.URL, bytes.NewReader(e.JSON))
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
		req.Header.Set(signatureHeader, sign([]byte(w.cfg.Secret), e.JSON))
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
