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
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"trackd.dev/trackd/sdk"
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
	// The guide wants a body smaller than 130kB; 130,000 bytes is under it
	// whichever kilobyte is meant.
	maxBodyBytes = 130_000
)

// maxInFlight bounds how many requests of one batch are sent at once: a batch
// from many users becomes many requests.
const maxInFlight = 4

const defaultEndpoint = "https://www.google-analytics.com"

// GA4 sends track events to a Google Analytics 4 web stream through the
// Measurement Protocol.
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

var _ sdk.Destination = (*GA4)(nil)

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

// translate turns a track event into the identity it is sent for and its
// GA4 event, or says why GA4 cannot take it.
func (g *GA4) translate(e sdk.Event) (identity, event, error) {
	id := identity{clientID: e.AnonymousID, userID: e.UserID}
	if id.clientID == "" {
		id.clientID = e.UserID
	}
	if id.clientID == "" {
		return id, event{}, errors.New("the event has neither anonymousId nor userId; GA4 needs one as client_id")
	}
	name, err := eventName(e.Name)
	if err != nil {
		return id, event{}, err
	}
	props, keys, err := properties(e.JSON)
	if err != nil {
		return id, event{}, err
	}
	params, err := g.params(name, props, keys)
	if err != nil {
		return id, event{}, err
	}
	ev := event{Name: name, Params: params}
	if !e.Timestamp.IsZero() {
		ev.TimestampMicros = e.Timestamp.UnixMicro()
	}
	return id, ev, nil
}

// segmentEvents maps the Segment e-commerce and B2B spec event names, lower
// case, to GA4's recommended events, as Segment's own GA4 destination does.
var segmentEvents = map[string]string{
	"order completed":           "purchase",
	"order refunded":            "refund",
	"checkout started":          "begin_checkout",
	"payment info entered":      "add_payment_info",
	"cart viewed":               "view_cart",
	"product added":             "add_to_cart",
	"product removed":           "remove_from_cart",
	"product viewed":            "view_item",
	"product clicked":           "select_item",
	"product list viewed":       "view_item_list",
	"product added to wishlist": "add_to_wishlist",
	"products searched":         "search",
	"promotion viewed":          "view_promotion",
	"promotion clicked":         "select_promotion",
	"signed up":                 "sign_up",
	"signed in":                 "login",
}

// reservedEvents are the event names the Measurement Protocol reference
// reserves for Google's own collection.
var reservedEvents = map[string]bool{
	"ad_activeview": true, "ad_click": true, "ad_exposure": true, "ad_impression": true,
	"ad_query": true, "ad_reward": true, "adunit_exposure": true, "app_background": true,
	"app_clear_data": true, "app_exception": true, "app_install": true, "app_remove": true,
	"app_store_refund": true, "app_store_subscription_cancel": true,
	"app_store_subscription_convert": true, "app_store_subscription_renew": true,
	"app_update": true, "app_upgrade": true, "dynamic_link_app_open": true,
	"dynamic_link_app_update": true, "dynamic_link_first_open": true, "error": true,
	"firebase_campaign": true, "firebase_in_app_message_action": true,
	"firebase_in_app_message_dismiss": true, "firebase_in_app_message_impression": true,
	"first_open": true, "first_visit": true, "in_app_purchase": true,
	"notification_dismiss": true, "notification_foreground": true, "notification_open": true,
	"notification_receive": true, "notification_send": true, "os_update": true,
	"screen_view": true, "session_start": true, "session_start_with_rollout": true,
	"user_engagement": true,
}

// reservedPrefixes start no event or parameter name ("gtag." cannot survive
// safeName, which drops dots).
var reservedPrefixes = []string{"_", "firebase_", "ga_", "google_"}

// eventName is the GA4 name of a track event's name, or why there is none.
func eventName(name string) (string, error) {
	if ga, ok := segmentEvents[strings.ToLower(strings.TrimSpace(name))]; ok {
		return ga, nil
	}
	safe := safeName(name)
	what := "event name " + quote(name)
	if safe != name {
		what += " (" + quote(safe) + " in GA4)"
	}
	switch {
	case safe == "":
		return "", fmt.Errorf("%s has none of the letters, digits and underscores GA4 event names are made of", what)
	case !isLetter(safe[0]):
		return "", fmt.Errorf("%s does not start with a letter, as GA4 event names must", what)
	}
	lower := strings.ToLower(safe)
	for _, p := range reservedPrefixes {
		if strings.HasPrefix(lower, p) {
			return "", fmt.Errorf("%s starts with %q, a prefix GA4 reserves for its own events", what, p)
		}
	}
	if reservedEvents[lower] {
		return "", fmt.Errorf("%s is reserved for an event GA4 collects itself", what)
	}
	return safe, nil
}

// paramName is the GA4 name of a property, or false when it has none: it
// does not start with a letter or uses a reserved prefix.
func paramName(key string) (string, bool) {
	safe := safeName(key)
	if safe == "" || !isLetter(safe[0]) || safe == "firebase_conversion" {
		return "", false
	}
	lower := strings.ToLower(safe)
	for _, p := range reservedPrefixes {
		if strings.HasPrefix(lower, p) {
			return "", false
		}
	}
	return safe, true
}

// safeName makes s fit GA4's rules for names as far as rewriting can: white
// space becomes "_", characters other than ASCII letters, digits and "_" are
// dropped, and the result is cut to 40 characters. It may still start with
// something other than a letter.
func safeName(s string) string {
	var b strings.Builder
	for _, r := range strings.TrimSpace(s) {
		switch {
		case unicode.IsSpace(r):
			b.WriteByte('_')
		case r == '_' || r < utf8.RuneSelf && (isLetter(byte(r)) || '0' <= r && r <= '9'):
			b.WriteRune(r)
		}
	}
	name := b.String()
	if len(name) > maxNameLen {
		name = name[:maxNameLen]
	}
	return name
}

func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

// properties returns an event's properties and their keys in the order the
// producer wrote them, which decides which custom parameters fit in 25.
func properties(event []byte) (map[string]json.RawMessage, []string, error) {
	var ev struct {
		Properties json.RawMessage `json:"properties"`
	}
	if err := json.Unmarshal(event, &ev); err != nil {
		return nil, nil, fmt.Errorf("the event is not a valid JSON object: %v", err)
	}
	var props map[string]json.RawMessage
	if len(ev.Properties) == 0 || string(ev.Properties) == "null" {
		return props, nil, nil
	}
	if err := json.Unmarshal(ev.Properties, &props); err != nil {
		return nil, nil, fmt.Errorf("properties is not an object: %v", err)
	}
	var keys []string
	dec := json.NewDecoder(bytes.NewReader(ev.Properties))
	_, _ = dec.Token() // the opening brace
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			break
		}
		if key, ok := tok.(string); ok && !slices.Contains(keys, key) {
			keys = append(keys, key)
		}
	}
	return props, keys, nil
}

// rename is a property that becomes a differently named GA4 parameter.
type rename struct{ from, to string }

// eventRenames are the properties that only some GA4 events have a
// parameter for.
var eventRenames = map[string][]rename{
	"search":           {{"query", "search_term"}},
	"view_item_list":   {{"list_id", "item_list_id"}, {"category", "item_list_name"}},
	"view_promotion":   promotionRenames,
	"select_promotion": promotionRenames,
	"add_payment_info": {{"payment_method", "payment_type"}},
}

var promotionRenames = []rename{
	{"promotion_id", "promotion_id"},
	{"name", "promotion_name"},
	{"creative", "creative_name"},
	{"position", "creative_slot"},
}

// singleProduct are the GA4 events whose Segment counterparts describe one
// product in their top-level properties rather than in products.
var singleProduct = map[string]bool{
	"view_item": true, "add_to_cart": true, "remove_from_cart": true,
	"select_item": true, "add_to_wishlist": true,
}

// productKeys are the product properties an item is made of.
var productKeys = []string{"product_id", "sku", "name", "coupon", "position", "brand", "category", "variant", "price", "quantity"}

// params translates an event's properties into GA4 parameters: the mapped
// ones first, then the others that fit, up to 25.
func (g *GA4) params(name string, props map[string]json.RawMessage, keys []string) (object, error) {
	used := map[string]bool{"total": true, "value": true, "revenue": true, "currency": true}
	currency, err := revenue.Currency(props)
	if err != nil {
		return nil, err
	}
	// Every amount is converted, so that value, tax, shipping and prices
	// stay in the one currency the event names.
	amounts, sendAs := 0, currency
	amount := func(v float64) (float64, error) {
		amounts++
		converted, to, err := g.cfg.Convert(v, currency)
		sendAs = to
		return converted, err
	}

	var p object
	v, ok, err := firstNumber(props, "total", "value", "revenue")
	if err != nil {
		return nil, err
	}
	if ok {
		if v, err = amount(v); err != nil {
			return nil, err
		}
		p = append(p, member{"value", v})
	}
	currencyAt := len(p)
	p = append(p, member{"currency", nil})

	used["order_id"] = true
	if s, ok := text(props["order_id"]); ok {
		p = append(p, member{"transaction_id", s})
	}
	for _, key := range []string{"coupon", "shipping", "tax", "affiliation"} {
		used[key] = true
		if key == "shipping" || key == "tax" {
			v, ok, err := revenue.Number(props, key)
			if err != nil {
				return nil, err
			}
			if ok {
				if v, err = amount(v); err != nil {
					return nil, err
				}
				p = append(p, member{key, v})
			}
		} else if s, ok := text(props[key]); ok {
			p = append(p, member{key, s})
		}
	}
	for _, r := range eventRenames[name] {
		used[r.from] = true
		if s, ok := text(props[r.from]); ok {
			p = append(p, member{r.to, s})
		}
	}
	items, err := items(name, props, used, amount)
	if err != nil {
		return nil, err
	}
	if len(items) > 0 {
		p = append(p, member{"items", items})
	}

	if _, named := text(props["currency"]); amounts > 0 || named {
		p[currencyAt].value = sendAs
	} else {
		p = slices.Delete(p, currencyAt, currencyAt+1)
	}

	for _, key := range keys {
		if len(p) >= maxParams {
			break
		}
		if used[key] {
			continue
		}
		pn, ok := paramName(key)
		if !ok || p.has(pn) {
			continue
		}
		if v, ok := scalar(props[key]); ok {
			p = append(p, member{pn, v})
		}
	}
	return p, nil
}

// items builds the items parameter: from products when the event has it,
// else from the top-level properties of a single-product event.
func items(name string, props map[string]json.RawMessage, used map[string]bool, amount func(float64) (float64, error)) ([]object, error) {
	if raw, ok := props["products"]; ok {
		used["products"] = true
		var products []json.RawMessage
		if json.Unmarshal(raw, &products) != nil {
			return nil, nil // not an array: left out, like other nested values
		}
		var out []object
		for i, raw := range products {
			var product map[string]json.RawMessage
			if json.Unmarshal(raw, &product) != nil {
				continue
			}
			it, err := item(product, fmt.Sprintf("products[%d].", i), amount)
			if err != nil {
				return nil, err
			}
			if it != nil {
				out = append(out, it)
			}
		}
		return out, nil
	}
	if !singleProduct[name] {
		return nil, nil
	}
	it, err := item(props, "", amount)
	if it == nil || err != nil {
		return nil, err
	}
	for _, key := range productKeys {
		used[key] = true
	}
	return []object{it}, nil
}

// item translates one product, or returns nil when it has neither an id nor
// a name, one of which GA4 requires. path locates the product in the
// properties for error messages ("products[2]." or "").
func item(product map[string]json.RawMessage, path string, amount func(float64) (float64, error)) (object, error) {
	id, hasID := text(product["product_id"])
	if !hasID {
		id, hasID = text(product["sku"])
	}
	name, hasName := text(product["name"])
	if !hasID && !hasName {
		return nil, nil
	}
	var it object
	if hasID {
		it = append(it, member{"item_id", id})
	}
	if hasName {
		it = append(it, member{"item_name", name})
	}
	if s, ok := text(product["coupon"]); ok {
		it = append(it, member{"coupon", s})
	}
	if v, ok, err := number(product, path, "position"); err != nil {
		return nil, err
	} else if ok {
		it = append(it, member{"index", v})
	}
	for _, r := range []rename{{"brand", "item_brand"}, {"category", "item_category"}, {"variant", "item_variant"}} {
		if s, ok := text(product[r.from]); ok {
			it = append(it, member{r.to, s})
		}
	}
	v, ok, err := number(product, path, "price")
	if err != nil {
		return nil, err
	}
	if ok {
		if v, err = amount(v); err != nil {
			return nil, err
		}
		it = append(it, member{"price", v})
	}
	if v, ok, err := number(product, path, "quantity"); err != nil {
		return nil, err
	} else if ok {
		it = append(it, member{"quantity", v})
	}
	return it, nil
}

// number reads a numeric product field with revenue.Number, so that its
// error names the field by its full path ("properties.products[2].price").
func number(product map[string]json.RawMessage, path, key string) (float64, bool, error) {
	return revenue.Number(map[string]json.RawMessage{path + key: product[key]}, path+key)
}

// firstNumber reads the first of fields that is present.
func firstNumber(props map[string]json.RawMessage, fields ...string) (float64, bool, error) {
	for _, f := range fields {
		if v, ok, err := revenue.Number(props, f); err != nil || ok {
			return v, ok, err
		}
	}
	return 0, false, nil
}

// text reads a property that GA4 takes as a string: a string (cut to 100
// characters), or a number or boolean written as one. It reports false for
// anything else and for "".
func text(raw json.RawMessage) (string, bool) {
	v, ok := scalar(raw)
	switch v := v.(type) {
	case string:
		return v, ok && v != ""
	case json.Number:
		return v.String(), true
	}
	return "", false
}

// scalar is a property as a GA4 parameter value, which is a string or a
// number: strings are cut to 100 characters, booleans become "true" and
// "false" (as gtag.js sends them), and null, objects and arrays have none.
func scalar(raw json.RawMessage) (any, bool) {
	if len(raw) == 0 {
		return nil, false
	}
	switch c := raw[0]; {
	case c == '"':
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return nil, false
		}
		return truncate(s, maxValueLen), true
	case c == 't' || c == 'f':
		return strconv.FormatBool(c == 't'), true
	case c == '-' || '0' <= c && c <= '9':
		return json.Number(raw), true
	}
	return nil, false
}

// truncate cuts s to at most n characters.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	i := 0
	for range n {
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
	}
	return s[:i]
}

// quote shows a producer's name in a reason without letting a long one
// swamp it.
func quote(s string) string {
	if utf8.RuneCountInString(s) > 64 {
		return strconv.Quote(truncate(s, 64)) + "…"
	}
	return strconv.Quote(s)
}

// object is a JSON object that keeps its members in the order they were
// added, so that mapped parameters come first and payloads are reproducible.
type object []member

type member struct {
	key   string
	value any
}

func (o object) has(key string) bool {
	return slices.ContainsFunc(o, func(m member) bool { return m.key == key })
}

func (o object) MarshalJSON() ([]byte, error) {
	buf := []byte{'{'}
	for i, m := range o {
		if i > 0 {
			buf = append(buf, ',')
		}
		k, err := json.Marshal(m.key)
		if err != nil {
			return nil, err
		}
		v, err := json.Marshal(m.value)
		if err != nil {
			return nil, err
		}
		buf = append(append(append(buf, k...), ':'), v...)
	}
	return append(buf, '}'), nil
}
