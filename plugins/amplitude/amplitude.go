package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"trackd.dev/trackd/sdk"
	"trackd.dev/trackd/sdk/httpdest"
	"trackd.dev/trackd/sdk/revenue"
)

// Amplitude's documented limits for /2/httpapi.
const (
	maxEvents = 2000
	maxBytes  = 1_000_000
	// defaultMinIDLength is the shortest user_id or device_id Amplitude
	// accepts unless a request's options.min_id_length says otherwise.
	defaultMinIDLength = 5
	// throttledDelay is how long Amplitude asks a throttled user or device
	// to pause when its 429 has no Retry-After.
	throttledDelay = 30 * time.Second
)

// maxResponseBody bounds how much of a response is read: a 400 lists the
// indexes of the events it rejected.
const maxResponseBody = 1 << 20

// Amplitude sends events to Amplitude's HTTP V2 API.
type Amplitude struct {
	cfg    settings
	url    string
	client *httpdest.Client
	// head and tail wrap the events of a request body.
	head, tail []byte
}

type settings struct {
	APIKey      string        `toml:"api_key"`
	Endpoint    string        `toml:"endpoint"`
	Timeout     time.Duration `toml:"timeout"`
	MinIDLength int           `toml:"min_id_length"`
	revenue.Conversion
}

func defaults() settings {
	return settings{Endpoint: "https://api2.amplitude.com", Timeout: 10 * time.Second}
}

var _ sdk.Destination = (*Amplitude)(nil)

func (a *Amplitude) Configure(_ context.Context, s sdk.Settings) error {
	cfg := defaults()
	if err := s.Decode(&cfg); err != nil {
		return err
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	a.cfg = cfg
	a.url = cfg.Endpoint + "/2/httpapi"
	a.client = httpdest.New(httpdest.Options{Timeout: cfg.Timeout})
	key, _ := json.Marshal(cfg.APIKey)
	a.head = fmt.Appendf(nil, `{"api_key":%s,"events":[`, key)
	a.tail = []byte(`]}`)
	if cfg.MinIDLength > 0 {
		a.tail = fmt.Appendf(nil, `],"options":{"min_id_length":%d}}`, cfg.MinIDLength)
	}
	return nil
}

func (c *settings) validate() error {
	if c.APIKey == "" {
		return errors.New(`api_key is empty; set it to the Amplitude project's API key (Project Settings > General), such as "${AMPLITUDE_API_KEY}"`)
	}
	c.Endpoint = strings.TrimRight(c.Endpoint, "/")
	u, err := url.Parse(c.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
		return fmt.Errorf(`endpoint %q is not an http:// or https:// URL such as "https://api2.amplitude.com"`, c.Endpoint)
	}
	if c.Timeout < time.Millisecond {
		return fmt.Errorf(`timeout %v is too short; set a duration such as "10s"`, c.Timeout)
	}
	if c.MinIDLength < 0 {
		return fmt.Errorf("min_id_length is %d; set it to 1 or more, or leave it out for Amplitude's default of %d", c.MinIDLength, defaultMinIDLength)
	}
	return c.Conversion.Check()
}

// item is one translated event.
type item struct {
	index int    // in the batch
	body  []byte // the event object
}

// Deliver sends the batch in requests of at most maxEvents events and
// maxBytes bytes.
func (a *Amplitude) Deliver(ctx context.Context, batch []sdk.Event) []sdk.Result {
	results := make([]sdk.Result, len(batch))
	items := make([]item, 0, len(batch))
	for i, e := range batch {
		body, err := a.translate(e)
		if err != nil {
			results[i] = sdk.Drop(err.Error())
			continue
		}
		items = append(items, item{index: i, body: body})
	}
	room := maxBytes - len(a.head) - len(a.tail)
	for _, s := range httpdest.Split(len(items), maxEvents, room, func(i int) int { return len(items[i].body) + 1 }) {
		a.send(ctx, items[s[0]:s[1]], results)
	}
	return results
}

// send posts items in one request and sets their results.
func (a *Amplitude) send(ctx context.Context, items []item, results []sdk.Result) {
	var body bytes.Buffer
	body.Write(a.head)
	for i, it := range items {
		if i > 0 {
			body.WriteByte(',')
		}
		body.Write(it.body)
	}
	body.Write(a.tail)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.url, &body)
	if err != nil {
		setAll(results, items, sdk.Drop(fmt.Sprintf("build request: %v", err)))
		return
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "*/*")
	req.Header.Set("User-Agent", "trackd-amplitude")

	res, resp := a.client.DoResponse(req, maxResponseBody)
	switch {
	case resp == nil:
	case resp.StatusCode == http.StatusRequestEntityTooLarge && len(items) > 1:
		// Amplitude measures differently from us: halve until it fits.
		half := len(items) / 2
		a.send(ctx, items[:half], results)
		a.send(ctx, items[half:], results)
		return
	case resp.StatusCode == http.StatusBadRequest:
		if a.rejected(items, resp.Body, results) {
			return
		}
	case resp.StatusCode == http.StatusTooManyRequests && res.RetryAfter == 0:
		res.RetryAfter = throttledDelay
	}
	setAll(results, items, res)
}

// rejected handles a 400 that names the events it rejected by index: those
// are dropped with Amplitude's reason and the others, which Amplitude did not
// ingest either, are retried. It reports false for a 400 that names no
// event, which is about the whole request.
func (a *Amplitude) rejected(items []item, body []byte, results []sdk.Result) bool {
	var r struct {
		Error                      string           `json:"error"`
		EventsWithInvalidFields    map[string][]int `json:"events_with_invalid_fields"`
		EventsWithMissingFields    map[string][]int `json:"events_with_missing_fields"`
		EventsWithInvalidIDLengths map[string][]int `json:"events_with_invalid_id_lengths"`
		SilencedEvents             []int            `json:"silenced_events"`
	}
	if json.Unmarshal(body, &r) != nil {
		return false
	}
	why := make(map[int][]string)
	add := func(problem string, fields map[string][]int) {
		for _, f := range slices.Sorted(maps.Keys(fields)) {
			for _, i := range fields[f] {
				why[i] = append(why[i], fmt.Sprintf(problem, f))
			}
		}
	}
	add("invalid %s", r.EventsWithInvalidFields)
	add("missing %s", r.EventsWithMissingFields)
	add("%s too short", r.EventsWithInvalidIDLengths)
	for _, i := range r.SilencedEvents {
		why[i] = append(why[i], "silenced: Amplitude blocks its user or device")
	}
	named := false
	for i := range why {
		named = named || i >= 0 && i < len(items)
	}
	if !named {
		return false
	}
	msg := httpdest.OneLine(r.Error)
	if msg == "" {
		msg = "400 Bad Request"
	}
	for i, it := range items {
		if w := why[i]; len(w) > 0 {
			results[it.index] = sdk.Drop(fmt.Sprintf("POST %s: Amplitude rejected the event: %s: %s", a.url, msg, strings.Join(w, ", ")))
		} else {
			results[it.index] = sdk.Retry(0, fmt.Sprintf("POST %s: Amplitude rejected other events of the request, and so this one; it is sent again without them", a.url))
		}
	}
	return true
}

// revenueFields are the properties that go to the event's root when it has a
// revenue, and so leave event_properties.
var revenueFields = []string{"price", "quantity", "revenue", "product_id", "revenueType", "revenue_type"}

// event is an Amplitude event, as /2/httpapi takes it.
type event struct {
	EventType       string                     `json:"event_type"`
	UserID          string                     `json:"user_id,omitempty"`
	DeviceID        string                     `json:"device_id,omitempty"`
	Time            int64                      `json:"time"`
	InsertID        string                     `json:"insert_id,omitempty"`
	EventProperties map[string]json.RawMessage `json:"event_properties"`
	Price           *float64                   `json:"price,omitempty"`
	Quantity        *int64                     `json:"quantity,omitempty"`
	Revenue         *float64                   `json:"revenue,omitempty"`
	RevenueType     string                     `json:"revenueType,omitempty"`
	ProductID       string                     `json:"productId,omitempty"`
}

// translate turns an event into an Amplitude event. An error is the reason
// to drop it.
func (a *Amplitude) translate(e sdk.Event) ([]byte, error) {
	props, err := e.Properties()
	if err != nil {
		return nil, err
	}
	if err := a.checkIDs(e); err != nil {
		return nil, err
	}
	if e.Timestamp.IsZero() {
		return nil, errors.New("event has no timestamp; Amplitude needs one as time")
	}
	out := event{
		EventType: e.Name,
		UserID:    e.UserID,
		DeviceID:  e.AnonymousID,
		Time:      e.Timestamp.UnixMilli(),
		InsertID:  e.MessageID,
	}

	hasCurrency := revenue.Present(props, "currency")
	currency, err := revenue.Currency(props)
	if err != nil {
		return nil, err
	}
	if currency, err = a.cfg.ConvertAmounts(props, currency); err != nil {
		return nil, err
	}
	amount, hasRevenue, err := revenue.Number(props, "revenue")
	if err != nil {
		return nil, err
	}
	if hasCurrency || hasRevenue {
		props["currency"], _ = json.Marshal(currency)
	}
	if hasRevenue {
		if err := moveRevenue(&out, props, amount); err != nil {
			return nil, err
		}
	}
	out.EventProperties = props
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("event properties are invalid JSON: %v", err)
	}
	return b, nil
}

// moveRevenue sets the revenue fields at the root of out, which is where
// Amplitude reads revenue from, and takes them out of props.
func moveRevenue(out *event, props map[string]json.RawMessage, amount float64) error {
	price, hasPrice, err := revenue.Number(props, "price")
	if err != nil {
		return err
	}
	quantity := int64(1)
	if hasPrice {
		q, ok, err := revenue.Number(props, "quantity")
		if err != nil {
			return err
		}
		if ok {
			if q != math.Trunc(q) || math.Abs(q) > 1<<53 {
				return fmt.Errorf("properties.quantity is %v; want a whole number", q)
			}
			quantity = int64(q)
		}
	} else {
		price = amount
	}
	revenueType := "Purchased"
	for _, f := range []string{"revenueType", "revenue_type"} {
		if s, ok, err := text(props, f, false); err != nil {
			return err
		} else if ok && s != "" {
			revenueType = s
			break
		}
	}
	productID, _, err := text(props, "product_id", true)
	if err != nil {
		return err
	}
	out.Price, out.Quantity, out.Revenue = &price, &quantity, &amount
	out.RevenueType, out.ProductID = revenueType, productID
	for _, f := range revenueFields {
		delete(props, f)
	}
	return nil
}

// text reads a string property; with numbers true, a number is accepted and
// read as written (product ids are often numeric).
func text(props map[string]json.RawMessage, field string, numbers bool) (string, bool, error) {
	raw := bytes.TrimSpace(props[field])
	if len(raw) == 0 || string(raw) == "null" {
		return "", false, nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, true, nil
	}
	var n json.Number
	if numbers && json.Unmarshal(raw, &n) == nil {
		return n.String(), true, nil
	}
	want := "a string"
	if numbers {
		want = "a string or a number"
	}
	return "", false, fmt.Errorf("properties.%s is %s; want %s", field, httpdest.OneLine(string(raw[:min(len(raw), 40)])), want)
}

// checkIDs drops an event whose ids Amplitude would reject for being short:
// sending it would only earn a 400.
func (a *Amplitude) checkIDs(e sdk.Event) error {
	if e.UserID == "" && e.AnonymousID == "" {
		return errors.New("event has neither userId nor anonymousId; Amplitude needs one as user_id or device_id")
	}
	least := a.cfg.MinIDLength
	if least == 0 {
		least = defaultMinIDLength
	}
	for _, id := range []struct{ name, value string }{{"userId", e.UserID}, {"anonymousId", e.AnonymousID}} {
		if id.value != "" && utf8.RuneCountInString(id.value) < least {
			return fmt.Errorf("%s %q is shorter than %d characters, the least Amplitude accepts; set min_id_length to accept shorter ids", id.name, id.value, least)
		}
	}
	return nil
}

func setAll(results []sdk.Result, items []item, r sdk.Result) {
	for _, it := range items {
		results[it.index] = r
	}
}
