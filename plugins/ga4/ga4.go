package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"trackd.dev/trackd/sdk"
	"trackd.dev/trackd/sdk/clip"
	"trackd.dev/trackd/sdk/httpdest"
	"trackd.dev/trackd/sdk/revenue"
)

// Limits of the Measurement Protocol, from Google's "Send Measurement
// Protocol events" guide.
const (
	maxEventsPerRequest = 25
	maxParams           = 25
	maxNameLen          = 40  // event and parameter names
	maxValueLen         = 100 // parameter values, item parameters included
	// Three page parameters may be longer, says Google's list of
	// automatically collected events.
	maxPageLocationLen = 1000
	maxPageTitleLen    = 300
	maxPageReferrerLen = 420
	// The guide wants a body smaller than 130kB; 130,000 bytes is under it
	// whichever kilobyte is meant.
	maxBodyBytes = 130_000
)

// maxInFlight bounds how many requests of one batch are sent at once: a batch
// from many users becomes many requests.
const maxInFlight = 4

const defaultEndpoint = "https://www.google-analytics.com"

// GA4 sends track, page, screen and group calls to a Google Analytics 4 web
// stream through the Measurement Protocol.
type GA4 struct {
	cfg     settings
	client  *httpdest.Client
	collect string // the /mp/collect URL with its query, which holds the API secret
}

type settings struct {
	MeasurementID string        `toml:"measurement_id"`
	APISecret     string        `toml:"api_secret"`
	Endpoint      string        `toml:"endpoint"`
	Timeout       time.Duration `toml:"timeout"`
	revenue.Conversion
}

func defaults() settings {
	return settings{Endpoint: defaultEndpoint, Timeout: 10 * time.Second}
}

var (
	_ sdk.Destination = (*GA4)(nil)
	_ sdk.Typer       = (*GA4)(nil)
)

func (g *GA4) Configure(_ context.Context, s sdk.Settings) error {
	cfg := defaults()
	if err := s.Decode(&cfg); err != nil {
		return err
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	query := url.Values{"measurement_id": {cfg.MeasurementID}, "api_secret": {cfg.APISecret}}
	g.cfg = cfg
	g.collect = cfg.Endpoint + "/mp/collect?" + query.Encode()
	g.client = httpdest.New(httpdest.Options{Timeout: cfg.Timeout})
	return nil
}

// Types are the calls that become a GA4 event. Identify and alias calls are
// not among them: every Measurement Protocol request carries events, and
// GA4 links a client_id to a user_id by itself when an event has both.
func (*GA4) Types() []string {
	return []string{sdk.TypeTrack, sdk.TypePage, sdk.TypeScreen, sdk.TypeGroup}
}

// measurementID is the shape of a web stream's measurement ID. Universal
// Analytics IDs (UA-...) and Firebase app IDs do not work with this API.
var measurementIDPattern = regexp.MustCompile(`^G-[A-Z0-9]+$`)

// validate checks the settings. Its errors never quote api_secret.
func (c *settings) validate() error {
	switch {
	case c.MeasurementID == "":
		return errors.New(`measurement_id is empty; set it to the web stream's measurement ID, such as "G-XXXXXXXXXX" (Google Analytics: Admin > Data streams)`)
	case !measurementIDPattern.MatchString(c.MeasurementID):
		return fmt.Errorf(`measurement_id %q is not a GA4 measurement ID; they look like "G-XXXXXXXXXX" (Google Analytics: Admin > Data streams)`, c.MeasurementID)
	case c.APISecret == "":
		return errors.New("api_secret is empty; set it or ${GA4_API_SECRET} to a Measurement Protocol API secret " +
			"(Google Analytics: Admin > Data streams > your stream > Measurement Protocol API secrets)")
	case strings.TrimSpace(c.APISecret) != c.APISecret:
		return errors.New("api_secret starts or ends with white space; copy the secret again without it")
	}
	c.Endpoint = strings.TrimRight(c.Endpoint, "/")
	u, err := url.Parse(c.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf(`endpoint %q is not an http:// or https:// base URL such as %q; /mp/collect is added to it`, c.Endpoint, defaultEndpoint)
	}
	if c.Timeout < time.Millisecond {
		return fmt.Errorf(`timeout %v is too short; set a duration such as "10s"`, c.Timeout)
	}
	return c.Conversion.Check()
}

// identity is what one Measurement Protocol request is about: all its events
// share a client_id and a user_id.
type identity struct {
	clientID, userID string
}

// body is a Measurement Protocol request body.
type body struct {
	ClientID        string            `json:"client_id"`
	UserID          string            `json:"user_id,omitempty"`
	TimestampMicros int64             `json:"timestamp_micros,omitempty"`
	Events          []json.RawMessage `json:"events"`
}

// event is one element of a request's events.
type event struct {
	Name   string `json:"name"`
	Params object `json:"params"`
	// Per event, because a request carries up to 25 events of one user
	// that happened at different times.
	TimestampMicros int64 `json:"timestamp_micros,omitempty"`
}

// Deliver translates each event, drops those GA4 would ignore or reject
// (the API answers 2xx either way), and sends the rest grouped by user, at
// most 25 to a request. Every event of a request gets the request's result.
func (g *GA4) Deliver(ctx context.Context, batch []sdk.Event) []sdk.Result {
	results := make([]sdk.Result, len(batch))
	encoded := make([]json.RawMessage, len(batch))
	micros := make([]int64, len(batch))
	var users []identity
	byUser := make(map[identity][]int) // indexes into batch, in batch order
	for i, e := range batch {
		id, ev, err := g.translate(e)
		if err == nil {
			encoded[i], err = json.Marshal(ev)
		}
		if err == nil && len(encoded[i]) > maxBodyBytes-envelopeBytes(id) {
			err = fmt.Errorf("the event is %d bytes as GA4 JSON, too big for a Measurement Protocol request (under 130 kB)", len(encoded[i]))
		}
		if err != nil {
			results[i] = sdk.Drop(err.Error())
			continue
		}
		micros[i] = ev.TimestampMicros
		if _, seen := byUser[id]; !seen {
			users = append(users, id)
		}
		byUser[id] = append(byUser[id], i)
	}

	sem := make(chan struct{}, maxInFlight)
	var wg sync.WaitGroup
	for _, id := range users {
		idx := byUser[id]
		size := func(j int) int { return len(encoded[idx[j]]) + 1 } // and its comma
		for _, span := range httpdest.Split(len(idx), maxEventsPerRequest, maxBodyBytes-envelopeBytes(id), size) {
			part := idx[span[0]:span[1]]
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				b := body{ClientID: id.clientID, UserID: id.userID, TimestampMicros: micros[part[0]]}
				for _, i := range part {
					b.Events = append(b.Events, encoded[i])
				}
				r := g.send(ctx, b)
				for _, i := range part {
					results[i] = r
				}
			})
		}
	}
	wg.Wait()
	return results
}

// envelopeBytes is an upper bound on what a request body for id holds
// besides its events.
func envelopeBytes(id identity) int {
	b, _ := json.Marshal(body{ClientID: id.clientID, UserID: id.userID, TimestampMicros: math.MaxInt64})
	return len(b)
}

func (g *GA4) send(ctx context.Context, b body) sdk.Result {
	payload, err := json.Marshal(b)
	if err != nil {
		return sdk.Drop(fmt.Sprintf("encode GA4 request: %v", err))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.collect, bytes.NewReader(payload))
	if err != nil {
		return sdk.Drop(g.hideSecret(fmt.Sprintf("build GA4 request: %v", err)))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "trackd-ga4")
	r := g.client.Do(req)
	r.Reason = g.hideSecret(r.Reason)
	return r
}

// hideSecret removes the API secret from a reason. httpdest already leaves
// the query out of the URLs it quotes; this also covers a response body that
// echoes the request.
func (g *GA4) hideSecret(reason string) string {
	for _, s := range []string{g.cfg.APISecret, url.QueryEscape(g.cfg.APISecret)} {
		if s != "" {
			reason = strings.ReplaceAll(reason, s, "[api_secret]")
		}
	}
	return reason
}

// translate turns a call into the identity it is sent for and its GA4
// event, or says why GA4 cannot take it.
func (g *GA4) translate(e sdk.Event) (identity, event, error) {
	id := identity{clientID: e.AnonymousID, userID: e.UserID}
	if id.clientID == "" {
		id.clientID = e.UserID
	}
	if id.clientID == "" {
		return id, event{}, errors.New("the event has neither anonymousId nor userId; GA4 needs one as client_id")
	}
	c, err := decodeCall(e.JSON)
	if err != nil {
		return id, event{}, err
	}
	var name string
	var fixed object // parameters of the call itself, ahead of its properties'
	switch e.Type {
	case sdk.TypeTrack:
		if name, err = eventName(e.Name); err != nil {
			return id, event{}, err
		}
	case sdk.TypePage:
		name, fixed = "page_view", c.pageParams()
	case sdk.TypeScreen:
		// Google's Measurement Protocol reference lists screen_view among
		// its reserved names, which eventName refuses to track calls; trackd
		// sends screen calls as it anyway, as README.md explains.
		name = "screen_view"
		if e.Name != "" {
			fixed = object{{"screen_name", clip.Runes(e.Name, maxValueLen)}}
		}
	case sdk.TypeGroup:
		// A group call's traits describe the group, not this event: they
		// are not parameters.
		name, fixed = "join_group", object{{"group_id", clip.Runes(e.GroupID, maxValueLen)}}
	default:
		return id, event{}, fmt.Errorf("GA4 takes track, page, screen and group calls, not %s calls", quote(e.Type))
	}
	params, err := g.params(name, fixed, c.props, c.keys)
	if err != nil {
		return id, event{}, err
	}
	ev := event{Name: name, Params: params}
	if !e.Timestamp.IsZero() {
		ev.TimestampMicros = e.Timestamp.UnixMicro()
	}
	return id, ev, nil
}
