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
	"sync"
	"time"
	"unicode/utf8"

	"trackd.dev/trackd/sdk"
	"trackd.dev/trackd/sdk/httpdest"
	"trackd.dev/trackd/sdk/revenue"
)

// Amplitude's documented limits, per request, and its pauses.
const (
	// /2/httpapi (HTTP V2 API, "Upload limit"): under 2000 events and 1 MB.
	maxEvents = 2000
	maxBytes  = 1_000_000
	// /identify documents no limit of its own and says the HTTP V2 API's
	// guidance applies to it, so it gets the same.
	maxIdentifications = maxEvents
	// /groupidentify ("Considerations"): 1024 group identifies and 1024
	// group properties, counted over the whole request, and 1 MB.
	maxGroupIdentifications = 1024
	maxGroupProperties      = 1024
	// /usermap ("Limits"): 2000 mappings and 1 MB, which cannot be raised.
	maxMappings = 2000

	// defaultMinIDLength is the shortest user_id or device_id Amplitude
	// accepts unless a request's options.min_id_length says otherwise.
	defaultMinIDLength = 5
	// throttledDelay is how long Amplitude asks a throttled user or device
	// to pause when its 429 has no Retry-After; /usermap counts its limit
	// over 30 seconds too.
	throttledDelay = 30 * time.Second
	// identifyThrottledDelay is the pause the Identify API asks for instead.
	identifyThrottledDelay = 15 * time.Second
)

// maxResponseBody bounds how much of a response is read: a 400 from
// /2/httpapi lists the indexes of the events it rejected.
const maxResponseBody = 1 << 20

const formType = "application/x-www-form-urlencoded"

// The APIs the plugin calls, as indexes of Amplitude.apis.
const (
	httpAPI          = iota // /2/httpapi: track, page and screen calls
	identifyAPI             // /identify: identify calls, and the user's side of group calls
	groupIdentifyAPI        // /groupidentify: the group's side of group calls
	userMapAPI              // /usermap: alias calls
	numAPIs
)

// api is one of Amplitude's endpoints, with its limits.
type api struct {
	url         string
	contentType string
	// head and tail wrap the items of a request body, sep goes between two.
	head, sep, tail []byte
	maxItems        int
	maxBytes        int
	// maxProps bounds the properties of a request's items, summed; 0 is no limit.
	maxProps int
	// throttled is the pause after a 429 that has no Retry-After.
	throttled time.Duration
	// indexed400 says that a 400 names the items it rejected by their index,
	// as /2/httpapi's does. The form APIs' 400 names none.
	indexed400 bool
}

// Amplitude sends calls to Amplitude's HTTP V2, Identify, Group Identify and
// User Mapping APIs.
type Amplitude struct {
	cfg    settings
	client *httpdest.Client
	apis   [numAPIs]api
}

type settings struct {
	APIKey      string        `toml:"api_key"`
	Endpoint    string        `toml:"endpoint"`
	Timeout     time.Duration `toml:"timeout"`
	MinIDLength int           `toml:"min_id_length"`
	// GroupType is the group type a group call's groupId is a value of.
	GroupType string `toml:"group_type"`
	revenue.Conversion
}

func defaults() settings {
	return settings{Endpoint: "https://api2.amplitude.com", Timeout: 10 * time.Second, GroupType: "group"}
}

var (
	_ sdk.Destination = (*Amplitude)(nil)
	_ sdk.Typer       = (*Amplitude)(nil)
)

func (a *Amplitude) Configure(_ context.Context, s sdk.Settings) error {
	cfg := defaults()
	if err := s.Decode(&cfg); err != nil {
		return err
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	a.cfg = cfg
	a.client = httpdest.New(httpdest.Options{Timeout: cfg.Timeout})

	key, _ := json.Marshal(cfg.APIKey)
	events := api{
		url:         cfg.Endpoint + "/2/httpapi",
		contentType: "application/json",
		head:        fmt.Appendf(nil, `{"api_key":%s,"events":[`, key),
		sep:         []byte(","),
		tail:        []byte(`]}`),
		maxItems:    maxEvents,
		maxBytes:    maxBytes,
		throttled:   throttledDelay,
		indexed400:  true,
	}
	identifyTail := "%5D"
	if cfg.MinIDLength > 0 {
		events.tail = fmt.Appendf(nil, `],"options":{"min_id_length":%d}}`, cfg.MinIDLength)
		// The Identify API documents no options; Segment sends them as a
		// form field, as here, so that short ids pass there too.
		identifyTail += "&options=" + url.QueryEscape(fmt.Sprintf(`{"min_id_length":%d}`, cfg.MinIDLength))
	}
	a.apis = [numAPIs]api{
		httpAPI:          events,
		identifyAPI:      a.form("/identify", "identification", identifyTail, maxIdentifications, identifyThrottledDelay),
		groupIdentifyAPI: a.form("/groupidentify", "identification", "%5D", maxGroupIdentifications, throttledDelay),
		userMapAPI:       a.form("/usermap", "mapping", "%5D", maxMappings, throttledDelay),
	}
	a.apis[groupIdentifyAPI].maxProps = maxGroupProperties
	return nil
}

// form describes an API that takes a form: api_key, and field holding a JSON
// array of items, each of which is query-escaped so that sizes are measured
// as sent.
func (a *Amplitude) form(path, field, tail string, maxItems int, throttled time.Duration) api {
	return api{
		url:         a.cfg.Endpoint + path,
		contentType: formType,
		head:        []byte("api_key=" + url.QueryEscape(a.cfg.APIKey) + "&" + field + "=%5B"),
		sep:         []byte("%2C"),
		tail:        []byte(tail),
		maxItems:    maxItems,
		maxBytes:    maxBytes,
		throttled:   throttled,
	}
}

// Types says that Amplitude takes every call type.
func (a *Amplitude) Types() []string { return sdk.AllTypes() }

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
	if strings.TrimSpace(c.GroupType) == "" {
		return errors.New(`group_type is empty; set it to the Amplitude group type that groupIds are values of, such as "company", or leave it out for "group"`)
	}
	return c.Conversion.Check()
}

// item is one translated call, or one of a call's parts, for one API.
type item struct {
	index int    // in the batch
	body  []byte // as it goes into the request body: a JSON object, query-escaped for a form
	props int    // the group properties it sets, for /groupidentify's limit
}

// part is an item before it is placed in a batch.
type part struct {
	api   int
	body  []byte
	props int
}

// Deliver sends the batch's calls to the APIs that take them, each API's
// within its limits and alongside the others. A call that needs two APIs (a
// group call) is ok only when both took it.
func (a *Amplitude) Deliver(ctx context.Context, batch []sdk.Event) []sdk.Result {
	results := make([]sdk.Result, len(batch))
	var items [numAPIs][]item
	for i, e := range batch {
		parts, err := a.translate(e)
		if err != nil {
			results[i] = sdk.Drop(err.Error())
			continue
		}
		for _, p := range parts {
			items[p.api] = append(items[p.api], item{index: i, body: p.body, props: p.props})
		}
	}
	// Each API answers for its own items, so that one failing does not
	// fail the calls of the others.
	var answers [numAPIs][]sdk.Result
	var wg sync.WaitGroup
	for k := range items {
		if len(items[k]) == 0 {
			continue
		}
		answers[k] = make([]sdk.Result, len(batch))
		wg.Go(func() { a.deliver(ctx, &a.apis[k], items[k], answers[k]) })
	}
	wg.Wait()
	for k := range items {
		for _, it := range items[k] {
			results[it.index] = httpdest.Worst(results[it.index], answers[k][it.index])
		}
	}
	return results
}

// deliver sends items to ap in requests within its limits.
func (a *Amplitude) deliver(ctx context.Context, ap *api, items []item, results []sdk.Result) {
	room := ap.maxBytes - len(ap.head) - len(ap.tail)
	for _, s := range httpdest.Split(len(items), ap.maxItems, room, func(i int) int { return len(items[i].body) + len(ap.sep) }) {
		chunk := items[s[0]:s[1]]
		for _, p := range httpdest.Split(len(chunk), 0, ap.maxProps, func(i int) int { return chunk[i].props }) {
			a.sendAll(ctx, ap, chunk[p[0]:p[1]], results)
		}
	}
}

// sendAll sends items and, when a form API refuses them without saying
// which, narrows down the ones at fault.
func (a *Amplitude) sendAll(ctx context.Context, ap *api, items []item, results []sdk.Result) {
	if a.send(ctx, ap, items, results) && len(items) > 1 {
		a.isolate(ctx, ap, items, results)
	}
}

// isolate sends the halves of items, which a form API refused with a 400, to
// find the calls at fault, so that the others are not dropped with them.
// When both halves are refused, the fault is taken to be the request's (a
// bad api_key, say) and no more requests are spent on it: they stay dropped.
func (a *Amplitude) isolate(ctx context.Context, ap *api, items []item, results []sdk.Result) {
	half := len(items) / 2
	lo, hi := items[:half], items[half:]
	loRefused := a.send(ctx, ap, lo, results)
	hiRefused := a.send(ctx, ap, hi, results)
	if loRefused && hiRefused {
		return
	}
	if loRefused && len(lo) > 1 {
		a.isolate(ctx, ap, lo, results)
	}
	if hiRefused && len(hi) > 1 {
		a.isolate(ctx, ap, hi, results)
	}
}

// send posts items in one request and sets their results. It reports
// whether a form API refused them with a 400, which names no item: they
// are then dropped, for the caller to narrow down.
func (a *Amplitude) send(ctx context.Context, ap *api, items []item, results []sdk.Result) (refused bool) {
	var body bytes.Buffer
	body.Write(ap.head)
	for i, it := range items {
		if i > 0 {
			body.Write(ap.sep)
		}
		body.Write(it.body)
	}
	body.Write(ap.tail)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ap.url, &body)
	if err != nil {
		setAll(results, items, sdk.Drop(fmt.Sprintf("build request: %v", err)))
		return false
	}
	req.Header.Set("Content-Type", ap.contentType)
	req.Header.Set("Accept", "*/*")
	req.Header.Set("User-Agent", "trackd-amplitude")

	res, resp := a.client.DoResponse(req, maxResponseBody)
	switch {
	case resp == nil:
	case resp.StatusCode == http.StatusRequestEntityTooLarge && len(items) > 1:
		// Amplitude measures differently from us: halve until it fits.
		half := len(items) / 2
		a.sendAll(ctx, ap, items[:half], results)
		a.sendAll(ctx, ap, items[half:], results)
		return false
	case resp.StatusCode == http.StatusBadRequest && ap.indexed400:
		if a.rejected(ap, items, resp.Body, results) {
			return false
		}
	case resp.StatusCode == http.StatusBadRequest:
		refused = true
	case resp.StatusCode == http.StatusTooManyRequests && res.RetryAfter == 0:
		res.RetryAfter = ap.throttled
	}
	setAll(results, items, res)
	return refused
}

// rejected handles a 400 from /2/httpapi that names the events it rejected
// by index: those are dropped with Amplitude's reason and the others, which
// Amplitude did not ingest either, are retried. It reports false for a 400
// that names no event, which is about the whole request.
func (a *Amplitude) rejected(ap *api, items []item, body []byte, results []sdk.Result) bool {
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
			results[it.index] = sdk.Drop(fmt.Sprintf("POST %s: Amplitude rejected the event: %s: %s", ap.url, msg, strings.Join(w, ", ")))
		} else {
			results[it.index] = sdk.Retry(0, fmt.Sprintf("POST %s: Amplitude rejected other events of the request, and so this one; it is sent again without them", ap.url))
		}
	}
	return true
}

// translate turns a call into what the APIs that take it need. An error is
// the reason to drop it.
func (a *Amplitude) translate(e sdk.Event) ([]part, error) {
	switch e.Type {
	case sdk.TypeTrack, sdk.TypePage, sdk.TypeScreen:
		b, err := a.event(e)
		if err != nil {
			return nil, err
		}
		return []part{{api: httpAPI, body: b}}, nil
	case sdk.TypeIdentify:
		return a.identify(e)
	case sdk.TypeGroup:
		return a.group(e)
	case sdk.TypeAlias:
		return a.alias(e)
	}
	return nil, fmt.Errorf("call type %q is not one Amplitude takes", e.Type)
}

// setOperation is a user_properties or group_properties object that sets
// the properties it holds.
type setOperation struct {
	Set map[string]json.RawMessage `json:"$set"`
}

// setting returns the operation setting values, nil when there are none.
func setting(values map[string]json.RawMessage) *setOperation {
	if len(values) == 0 {
		return nil
	}
	return &setOperation{Set: values}
}

// identification is an item of /identify's identification array.
type identification struct {
	UserID         string            `json:"user_id,omitempty"`
	DeviceID       string            `json:"device_id,omitempty"`
	UserProperties *setOperation     `json:"user_properties,omitempty"`
	Groups         map[string]string `json:"groups,omitempty"`
}

// groupIdentification is an item of /groupidentify's identification array.
type groupIdentification struct {
	GroupType       string        `json:"group_type"`
	GroupValue      string        `json:"group_value"`
	GroupProperties *setOperation `json:"group_properties,omitempty"`
}

// mapping is an item of /usermap's mapping array.
type mapping struct {
	UserID       string `json:"user_id"`
	GlobalUserID string `json:"global_user_id"`
}

// identify sets the user's traits as user properties.
func (a *Amplitude) identify(e sdk.Event) ([]part, error) {
	traits, err := e.Traits()
	if err != nil {
		return nil, err
	}
	if err := a.checkIDs(e); err != nil {
		return nil, err
	}
	p, err := formPart(identifyAPI, identification{UserID: e.UserID, DeviceID: e.AnonymousID, UserProperties: setting(traits)}, 0)
	if err != nil {
		return nil, err
	}
	return []part{p}, nil
}

// group sets the group's traits as its properties, and adds the user to it.
func (a *Amplitude) group(e sdk.Event) ([]part, error) {
	traits, err := e.Traits()
	if err != nil {
		return nil, err
	}
	if e.GroupID == "" {
		return nil, errors.New("group call has no groupId; Amplitude needs one as group_value")
	}
	if err := a.checkIDs(e); err != nil {
		return nil, err
	}
	typ := a.cfg.GroupType
	g, err := formPart(groupIdentifyAPI, groupIdentification{GroupType: typ, GroupValue: e.GroupID, GroupProperties: setting(traits)}, len(traits))
	if err != nil {
		return nil, err
	}
	u, err := formPart(identifyAPI, identification{UserID: e.UserID, DeviceID: e.AnonymousID, Groups: map[string]string{typ: e.GroupID}}, 0)
	if err != nil {
		return nil, err
	}
	return []part{g, u}, nil
}

// alias maps previousId to userId, Amplitude's global user id.
func (a *Amplitude) alias(e sdk.Event) ([]part, error) {
	if e.UserID == "" || e.PreviousID == "" {
		return nil, errors.New("alias call needs both userId and previousId; Amplitude maps previousId (user_id) to userId (global_user_id)")
	}
	p, err := formPart(userMapAPI, mapping{UserID: e.PreviousID, GlobalUserID: e.UserID}, 0)
	if err != nil {
		return nil, err
	}
	return []part{p}, nil
}

// formPart encodes v as an item of a form API's JSON array. It leaves <, >
// and & as they are: escaped for HTML, each would take 8 bytes of the
// request's 1 MB once URL-encoded, not 3.
func formPart(to int, v any, props int) (part, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return part{}, fmt.Errorf("traits are invalid JSON: %v", err)
	}
	return part{api: to, body: []byte(url.QueryEscape(string(bytes.TrimSuffix(b.Bytes(), []byte("\n"))))), props: props}, nil
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

// event turns a track, page or screen call into an Amplitude event.
func (a *Amplitude) event(e sdk.Event) ([]byte, error) {
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
	eventType := e.Name
	if e.Type == sdk.TypePage || e.Type == sdk.TypeScreen {
		if eventType, err = viewed(e, props); err != nil {
			return nil, err
		}
	}
	out := event{
		EventType: eventType,
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

// viewed returns the event type of a page or screen call, Segment's title
// for it, and adds the call's name and category to its properties, where
// Amplitude can chart them.
func viewed(e sdk.Event, props map[string]json.RawMessage) (string, error) {
	var call struct {
		Category *string `json:"category"`
	}
	if err := json.Unmarshal(e.JSON, &call); err != nil {
		return "", fmt.Errorf("event JSON is invalid: %v", err)
	}
	if call.Category != nil && *call.Category != "" {
		props["category"], _ = json.Marshal(*call.Category)
	}
	what := "Page"
	if e.Type == sdk.TypeScreen {
		what = "Screen"
	}
	if e.Name == "" {
		return "Loaded a " + what, nil
	}
	props["name"], _ = json.Marshal(e.Name)
	return "Viewed " + e.Name + " " + what, nil
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
