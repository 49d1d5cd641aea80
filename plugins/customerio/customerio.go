package main

import (
	"bytes"
	"context"
	"encoding/json"
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

// Limits of the tracking API: Customer.io's Pipelines API documentation and
// Segment's HTTP API documentation both give 500 KB a batch request and 32 KB
// a call, and refuse a request that breaks them as a whole, so one call over
// would cost every call sent with it. They do not say which kilobyte; the
// smaller, 1,000 bytes, keeps within either reading.
const (
	maxRequestBytes = 500_000
	maxCallBytes    = 32_000
	// trackd's own tracking API takes at most 2,500 calls a batch; Customer.io
	// and Segment document no count, so this is for a trackd behind.
	maxCallsPerRequest = 2500
)

// maxResponseBody is how much of an error answer is read for its message.
const maxResponseBody = 4 << 10

// The Pipelines API's address in each region Customer.io hosts workspaces in.
var regionEndpoints = map[string]string{
	"us": "https://cdp.customer.io/v1",
	"eu": "https://cdp-eu.customer.io/v1",
}

// The JSON around a request's calls.
const (
	batchOpen  = `{"batch":[`
	batchClose = `]}`
)

// CustomerIO forwards calls of every type, as they are, to the batch
// endpoint of a Segment-compatible tracking API.
type CustomerIO struct {
	cfg      settings
	client   *httpdest.Client
	batchURL string
}

type settings struct {
	APIKey      string        `toml:"api_key"`
	Region      string        `toml:"region"`
	Endpoint    string        `toml:"endpoint"`
	Timeout     time.Duration `toml:"timeout"`
	Concurrency int           `toml:"concurrency"`
	Gzip        bool          `toml:"gzip"`
}

// defaults leaves Endpoint empty: it depends on the region.
func defaults() settings {
	return settings{Region: "us", Timeout: 10 * time.Second, Concurrency: 8}
}

var (
	_ sdk.Destination = (*CustomerIO)(nil)
	_ sdk.Typer       = (*CustomerIO)(nil)
)

// Types says that the plugin takes every call of the Segment spec: the API
// takes them all, and the plugin forwards them as they are.
func (*CustomerIO) Types() []string { return sdk.AllTypes() }

func (c *CustomerIO) Configure(_ context.Context, s sdk.Settings) error {
	cfg := defaults()
	if err := s.Decode(&cfg); err != nil {
		return err
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	c.cfg = cfg
	c.batchURL = cfg.Endpoint + "/batch"
	c.client = httpdest.New(httpdest.Options{Timeout: cfg.Timeout, Gzip: cfg.Gzip, Concurrency: cfg.Concurrency})
	return nil
}

// validate checks the settings and sets Endpoint from Region when it is
// empty. Its errors never quote api_key.
func (c *settings) validate() error {
	switch {
	case c.APIKey == "":
		return errors.New(`api_key is empty; set it to the API key of a Customer.io source (Data & Integrations > Integrations > Customer.io API), such as "${CUSTOMERIO_API_KEY}"`)
	case strings.TrimSpace(c.APIKey) != c.APIKey:
		return errors.New("api_key starts or ends with white space; copy the key again without it")
	}
	c.Region = strings.ToLower(c.Region)
	if c.Region == "" {
		c.Region = "us"
	}
	regional, ok := regionEndpoints[c.Region]
	if !ok {
		return fmt.Errorf(`region %q is not "us" or "eu", the regions Customer.io hosts workspaces in; for another API set endpoint instead`, c.Region)
	}
	if c.Endpoint == "" {
		c.Endpoint = regional
	}
	c.Endpoint = strings.TrimRight(c.Endpoint, "/")
	u, err := url.Parse(c.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf(`endpoint %q is not an http:// or https:// base URL such as %q; /batch is added to it`, c.Endpoint, regionEndpoints["us"])
	}
	if c.Timeout < time.Millisecond {
		return fmt.Errorf(`timeout %v is too short; set a duration such as "10s"`, c.Timeout)
	}
	if c.Concurrency < 1 {
		return fmt.Errorf("concurrency is %d; set it to 1 or more", c.Concurrency)
	}
	return nil
}

// Deliver drops the calls over the API's limit of a call and sends the
// others in requests within its limit of a request, at most concurrency at a
// time. Every call of a request gets the request's result.
func (c *CustomerIO) Deliver(ctx context.Context, batch []sdk.Event) []sdk.Result {
	results := make([]sdk.Result, len(batch))
	var fit []int // indexes into batch of the calls within the limit
	for i, e := range batch {
		if len(e.JSON) > maxCallBytes {
			results[i] = sdk.Drop(fmt.Sprintf("the call is %d bytes, over the tracking API's limit of %d bytes a call", len(e.JSON), maxCallBytes))
			continue
		}
		fit = append(fit, i)
	}

	// A request of n calls is its envelope, the calls and n-1 commas; each
	// call is counted with a comma, so the room is one more than what is
	// left around the envelope.
	room := maxRequestBytes - len(batchOpen) - len(batchClose) + 1
	size := func(j int) int { return len(batch[fit[j]].JSON) + 1 }
	sem := make(chan struct{}, c.cfg.Concurrency)
	var wg sync.WaitGroup
	for _, span := range httpdest.Split(len(fit), maxCallsPerRequest, room, size) {
		part := fit[span[0]:span[1]]
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			r := c.send(ctx, requestBody(batch, part))
			for _, i := range part {
				results[i] = r
			}
		})
	}
	wg.Wait()
	return results
}

// requestBody is the batch request of the calls of batch at indexes part,
// each call's JSON as the daemon gave it.
func requestBody(batch []sdk.Event, part []int) []byte {
	n := len(batchOpen) + len(batchClose) + len(part)
	for _, i := range part {
		n += len(batch[i].JSON)
	}
	b := make([]byte, 0, n)
	b = append(b, batchOpen...)
	for k, i := range part {
		if k > 0 {
			b = append(b, ',')
		}
		b = append(b, batch[i].JSON...)
	}
	return append(b, batchClose...)
}

func (c *CustomerIO) send(ctx context.Context, body []byte) sdk.Result {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.batchURL, bytes.NewReader(body))
	if err != nil {
		return sdk.Drop(fmt.Sprintf("build request: %v", err))
	}
	req.SetBasicAuth(c.cfg.APIKey, "")
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "trackd-customerio")
	r, resp := c.client.DoResponse(req, maxResponseBody)
	if r.Status == sdk.StatusDrop && resp != nil {
		if msg := apiMessage(resp.Body); msg != "" {
			r.Reason = fmt.Sprintf("POST %s: %d %s: %s", c.batchURL, resp.StatusCode, http.StatusText(resp.StatusCode), msg)
		}
	}
	return r
}

// apiMessage is the message of an error answer in the forms Segment-style
// APIs use: {"message": "..."} (trackd's tracking API), {"error": "..."} or
// {"errors": [{"message": "..."}, ...]}. It is "" for any other body, whose
// start httpdest already quotes.
func apiMessage(body []byte) string {
	var answer struct {
		Message string          `json:"message"`
		Error   json.RawMessage `json:"error"`
		Errors  []struct {
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &answer) != nil {
		return ""
	}
	var msgs []string
	if answer.Message != "" {
		msgs = append(msgs, answer.Message)
	}
	var s string
	if json.Unmarshal(answer.Error, &s) == nil && s != "" {
		msgs = append(msgs, s)
	}
	for _, e := range answer.Errors {
		if e.Message != "" {
			msgs = append(msgs, e.Message)
		}
	}
	return httpdest.OneLine(strings.Join(msgs, "; "))
}
