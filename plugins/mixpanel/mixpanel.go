package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"trackd.dev/trackd/sdk"
	"trackd.dev/trackd/sdk/httpdest"
	"trackd.dev/trackd/sdk/revenue"
)

// Mixpanel's documented limits.
const (
	maxImportEvents  = 2000       // events per /import request
	maxImportBytes   = 10_000_000 // uncompressed /import body
	maxEngageUpdates = 2000       // profile updates per /engage request
	maxGroupUpdates  = 2000       // group profile updates per /groups request
	maxUpdateBytes   = 1_000_000  // one /engage or /groups update
	maxInsertID      = 36         // bytes of $insert_id
)

// maxResponseBody bounds how much of a response is read: a 400 from /import
// lists every failed record, up to 2000 of them.
const maxResponseBody = 4 << 20

// Mixpanel sends calls to Mixpanel's Ingestion API: events to /import, user
// profile updates (traits, group membership, revenue) to /engage and group
// profile updates to /groups.
type Mixpanel struct {
	cfg     settings
	imports api
	engage  api
	groups  api
}

// api is how the plugin calls one endpoint of the Ingestion API.
type api struct {
	path     string // "/import", for reasons
	url      string
	client   *httpdest.Client
	maxItems int
	maxBytes int  // of the JSON array; 0 for no limit
	auth     bool // basic auth with the /import credentials
	form     bool // the JSON array is the form field data, as /groups documents it
	// strict: a 400 lists the records that failed validation (/import?strict=1).
	strict bool
	// verbose: a 200 says in its body whether Mixpanel took the updates
	// (/engage and /groups with verbose=1).
	verbose bool
}

type settings struct {
	Token                  string        `toml:"token"`
	APISecret              string        `toml:"api_secret"`
	ServiceAccountUsername string        `toml:"service_account_username"`
	ServiceAccountSecret   string        `toml:"service_account_secret"`
	ProjectID              string        `toml:"project_id"`
	Endpoint               string        `toml:"endpoint"`
	Timeout                time.Duration `toml:"timeout"`
	Gzip                   bool          `toml:"gzip"`
	GroupKey               string        `toml:"group_key"`
	revenue.Conversion
}

func defaults() settings {
	return settings{Endpoint: "https://api.mixpanel.com", Timeout: 10 * time.Second, Gzip: true, GroupKey: "$group_id"}
}

var (
	_ sdk.Destination = (*Mixpanel)(nil)
	_ sdk.Typer       = (*Mixpanel)(nil)
)

func (m *Mixpanel) Configure(_ context.Context, s sdk.Settings) error {
	cfg := defaults()
	if err := s.Decode(&cfg); err != nil {
		return err
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	m.cfg = cfg
	importURL := cfg.Endpoint + "/import?strict=1"
	if cfg.ProjectID != "" {
		importURL += "&project_id=" + url.QueryEscape(cfg.ProjectID)
	}
	m.imports = api{
		path: "/import", url: importURL, client: httpdest.New(httpdest.Options{Timeout: cfg.Timeout, Gzip: cfg.Gzip}),
		maxItems: maxImportEvents, maxBytes: maxImportBytes, auth: true, strict: true,
	}
	// Neither /engage nor /groups accepts gzip. ip=0: the request comes from
	// trackd's host, which says nothing about where the user is; an update's
	// own $ip still counts.
	plain := httpdest.New(httpdest.Options{Timeout: cfg.Timeout})
	m.engage = api{
		path: "/engage", url: cfg.Endpoint + "/engage?verbose=1&ip=0", client: plain,
		maxItems: maxEngageUpdates, verbose: true,
	}
	m.groups = api{
		path: "/groups", url: cfg.Endpoint + "/groups?verbose=1&ip=0", client: plain,
		maxItems: maxGroupUpdates, form: true, verbose: true,
	}
	return nil
}

// Types says the plugin takes every call type.
func (m *Mixpanel) Types() []string { return sdk.AllTypes() }

func (c *settings) validate() error {
	if c.Token == "" {
		return errors.New(`token is empty; set it to the Mixpanel project token (Project Settings > Access Keys), such as "${MIXPANEL_TOKEN}"`)
	}
	account := c.ServiceAccountUsername != "" || c.ServiceAccountSecret != "" || c.ProjectID != ""
	switch {
	case c.APISecret != "" && account:
		return errors.New("api_secret and service_account_username/service_account_secret/project_id are both set; set only one way of authenticating to /import")
	case account:
		for _, s := range []struct{ name, value string }{
			{"service_account_username", c.ServiceAccountUsername},
			{"service_account_secret", c.ServiceAccountSecret},
			{"project_id", c.ProjectID},
		} {
			if s.value == "" {
				return fmt.Errorf("%s is empty; a service account needs service_account_username, service_account_secret and project_id", s.name)
			}
		}
	case c.APISecret == "":
		return errors.New("no credentials for /import; set service_account_username, service_account_secret and project_id (a Mixpanel service account), or api_secret (the project's API secret)")
	}
	c.Endpoint = strings.TrimRight(c.Endpoint, "/")
	u, err := url.Parse(c.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
		return fmt.Errorf(`endpoint %q is not an http:// or https:// URL such as "https://api.mixpanel.com"`, c.Endpoint)
	}
	if c.Timeout < time.Millisecond {
		return fmt.Errorf(`timeout %v is too short; set a duration such as "10s"`, c.Timeout)
	}
	if c.GroupKey == "" {
		return errors.New(`group_key is empty; set it to a group key of the project (Project Settings > Group Keys), such as "company_id", or leave it out for "$group_id"`)
	}
	return c.Conversion.Check()
}

// plan is what one call becomes: at most one object for each endpoint.
type plan struct {
	event  []byte // for /import
	update []byte // for /engage
	group  []byte // for /groups
	// charge says update records the revenue of event, so it is sent only
	// once the event is imported.
	charge bool
}

// item is one object of a request body, for the call at index in the batch.
type item struct {
	index int
	body  []byte
}

// Deliver imports the batch's events, then sends the profile updates: those
// of identify and group calls, and the revenue of the track calls imported.
// Each endpoint gets requests within its limits, and a call is ok only when
// every request it needed is.
func (m *Mixpanel) Deliver(ctx context.Context, batch []sdk.Event) []sdk.Result {
	results := make([]sdk.Result, len(batch))
	plans := make([]plan, len(batch))
	var events, groups []item
	for i, e := range batch {
		p, err := m.translate(e)
		if err != nil {
			results[i] = sdk.Drop(err.Error())
			continue
		}
		plans[i] = p
		if p.event != nil {
			events = append(events, item{i, p.event})
		}
		if p.group != nil {
			groups = append(groups, item{i, p.group})
		}
	}

	imported := make([]sdk.Result, len(batch))
	m.send(ctx, &m.imports, events, imported)

	var updates []item
	for i, p := range plans {
		if p.update != nil && (!p.charge || imported[i].Status == sdk.StatusOK) {
			updates = append(updates, item{i, p.update})
		}
	}
	engaged := make([]sdk.Result, len(batch))
	m.send(ctx, &m.engage, updates, engaged)
	grouped := make([]sdk.Result, len(batch))
	m.send(ctx, &m.groups, groups, grouped)

	for i, p := range plans {
		if results[i].Status != 0 {
			continue
		}
		if p.charge && engaged[i].Status != 0 && engaged[i].Status != sdk.StatusOK {
			engaged[i].Reason = "the event was imported but its revenue was not recorded: " + engaged[i].Reason
		}
		results[i] = httpdest.Worst(imported[i], engaged[i], grouped[i])
	}
	return results
}

// send posts items to a in requests within its limits and sets the result of
// each item's call.
func (m *Mixpanel) send(ctx context.Context, a *api, items []item, results []sdk.Result) {
	// The body is a JSON array: brackets and commas.
	for _, s := range httpdest.Split(len(items), a.maxItems, a.maxBytes-2, func(i int) int { return len(items[i].body) + 1 }) {
		m.post(ctx, a, items[s[0]:s[1]], results)
	}
}

// post sends items to a in one request and sets their results.
func (m *Mixpanel) post(ctx context.Context, a *api, items []item, results []sdk.Result) {
	req, err := m.request(ctx, a, items)
	if err != nil {
		setAll(results, items, sdk.Drop(err.Error()))
		return
	}
	res, resp := a.client.DoResponse(req, maxResponseBody)
	switch {
	case resp == nil:
	case resp.StatusCode == http.StatusRequestEntityTooLarge && len(items) > 1:
		// Mixpanel's limit is lower than ours: halve until it fits.
		half := len(items) / 2
		m.post(ctx, a, items[:half], results)
		m.post(ctx, a, items[half:], results)
		return
	case resp.StatusCode == http.StatusBadRequest && a.strict:
		// With strict=1 a 400 lists the records that failed validation;
		// Mixpanel imported all the others.
		var body struct {
			FailedRecords []struct {
				Index   int    `json:"index"`
				Field   string `json:"field"`
				Message string `json:"message"`
			} `json:"failed_records"`
		}
		if json.Unmarshal(resp.Body, &body) == nil && len(body.FailedRecords) > 0 {
			setAll(results, items, sdk.OK())
			for _, f := range body.FailedRecords {
				if f.Index < 0 || f.Index >= len(items) {
					continue
				}
				msg := f.Message
				if f.Field != "" && !strings.Contains(msg, f.Field) {
					msg = f.Field + ": " + msg
				}
				results[items[f.Index].index] = sdk.Drop(fmt.Sprintf("POST %s%s: Mixpanel rejected the event: %s", m.cfg.Endpoint, a.path, httpdest.OneLine(msg)))
			}
			return
		}
	case res.Status == sdk.StatusOK && a.verbose:
		res = verboseResult(a.path, resp.Body)
	}
	setAll(results, items, res)
}

// verboseResult reads the body of a 200 from an endpoint called with
// verbose=1, which is how /engage and /groups report updates they rejected.
func verboseResult(path string, body []byte) sdk.Result {
	var v struct {
		Status json.RawMessage `json:"status"`
		Error  string          `json:"error"`
	}
	if json.Unmarshal(body, &v) == nil && string(v.Status) == "1" {
		return sdk.OK()
	}
	msg := v.Error
	if msg == "" {
		msg = "unexpected answer " + strconv.Quote(httpdest.OneLine(string(body[:min(len(body), 200)])))
	}
	return sdk.Drop("POST " + path + ": Mixpanel rejected the update: " + httpdest.OneLine(msg))
}

// request builds a POST of the JSON array of the items' bodies to a.
func (m *Mixpanel) request(ctx context.Context, a *api, items []item) (*http.Request, error) {
	var array bytes.Buffer
	array.WriteByte('[')
	for i, it := range items {
		if i > 0 {
			array.WriteByte(',')
		}
		array.Write(it.body)
	}
	array.WriteByte(']')
	var body io.Reader = &array
	contentType := "application/json"
	if a.form {
		body = strings.NewReader(url.Values{"data": {array.String()}}.Encode())
		contentType = "application/x-www-form-urlencoded"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.url, body)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("User-Agent", "trackd-mixpanel")
	if a.auth {
		if m.cfg.ServiceAccountUsername != "" {
			req.SetBasicAuth(m.cfg.ServiceAccountUsername, m.cfg.ServiceAccountSecret)
		} else {
			req.SetBasicAuth(m.cfg.APISecret, "")
		}
	}
	return req, nil
}

// translate turns a call into what it becomes in Mixpanel. An error is the
// reason to drop it.
func (m *Mixpanel) translate(e sdk.Event) (plan, error) {
	distinctID := e.UserID
	if distinctID == "" {
		distinctID = e.AnonymousID
	}
	if distinctID == "" {
		return plan{}, errors.New("event has neither userId nor anonymousId; Mixpanel needs one as distinct_id")
	}
	if e.Timestamp.IsZero() {
		return plan{}, errors.New("event has no timestamp; Mixpanel needs one as time")
	}
	switch e.Type {
	case sdk.TypeTrack:
		return m.track(e, distinctID)
	case sdk.TypePage, sdk.TypeScreen:
		return m.page(e, distinctID)
	case sdk.TypeIdentify:
		return m.identify(e, distinctID)
	case sdk.TypeGroup:
		return m.group(e, distinctID)
	case sdk.TypeAlias:
		return m.alias(e)
	}
	return plan{}, fmt.Errorf("call type %q is not one the mixpanel plugin knows", e.Type)
}

// track is an event named as the call, with its revenue recorded on the
// user's profile (Mixpanel's track_charge).
func (m *Mixpanel) track(e sdk.Event, distinctID string) (plan, error) {
	props, err := e.Properties()
	if err != nil {
		return plan{}, err
	}
	hasCurrency := revenue.Present(props, "currency")
	currency, err := revenue.Currency(props)
	if err != nil {
		return plan{}, err
	}
	if currency, err = m.cfg.ConvertAmounts(props, currency); err != nil {
		return plan{}, err
	}
	amount, hasRevenue, err := revenue.Number(props, "revenue")
	if err != nil {
		return plan{}, err
	}
	if hasRevenue {
		props["revenue"], _ = json.Marshal(amount) // a numeric string becomes a number
	}
	if hasCurrency || hasRevenue {
		props["currency"] = str(currency)
	}
	var p plan
	if p.event, err = m.event(e, e.Name, distinctID, props); err != nil {
		return plan{}, err
	}
	if hasRevenue && amount != 0 {
		p.update, p.charge = m.charge(distinctID, e.Timestamp, amount), true
	}
	return p, nil
}

// page is an event named by the page or screen call's title, with its name
// and category among the properties.
func (m *Mixpanel) page(e sdk.Event, distinctID string) (plan, error) {
	props, err := e.Properties()
	if err != nil {
		return plan{}, err
	}
	f, err := fieldsOf(e)
	if err != nil {
		return plan{}, err
	}
	kind := "Page"
	if e.Type == sdk.TypeScreen {
		kind = "Screen"
	}
	title := "Loaded a " + kind
	if e.Name != "" {
		title = "Viewed " + e.Name + " " + kind
		props["name"] = str(e.Name)
	}
	if category := f.category(); category != "" {
		props["category"] = str(category)
	}
	event, err := m.event(e, title, distinctID, props)
	return plan{event: event}, err
}

// profileTraits are the Segment special traits that Mixpanel reserves a
// profile property for, by their Mixpanel name.
var profileTraits = map[string]string{
	"email":     "$email",
	"firstName": "$first_name",
	"lastName":  "$last_name",
	"name":      "$name",
	"phone":     "$phone",
	"username":  "$username",
	"avatar":    "$avatar",
	"createdAt": "$created",
}

// identify sets the traits on the user's profile and, when the call ties an
// anonymousId to a userId, tells Mixpanel so with an $identify event.
func (m *Mixpanel) identify(e sdk.Event, distinctID string) (plan, error) {
	traits, err := e.Traits()
	if err != nil {
		return plan{}, err
	}
	f, err := fieldsOf(e)
	if err != nil {
		return plan{}, err
	}
	var p plan
	if len(traits) > 0 {
		for from, to := range profileTraits {
			if v, ok := traits[from]; ok {
				delete(traits, from)
				traits[to] = v
			}
		}
		p.update, err = updateJSON(struct {
			Token      string                     `json:"$token"`
			DistinctID string                     `json:"$distinct_id"`
			IP         string                     `json:"$ip,omitempty"`
			Time       int64                      `json:"$time"`
			Set        map[string]json.RawMessage `json:"$set"`
		}{m.cfg.Token, distinctID, f.ip(), e.Timestamp.UnixMilli(), traits})
		if err != nil {
			return plan{}, err
		}
	}
	if e.UserID != "" && e.AnonymousID != "" && e.UserID != e.AnonymousID {
		p.event, err = m.event(e, "$identify", e.UserID, map[string]json.RawMessage{
			"$identified_id": str(e.UserID),
			"$anon_id":       str(e.AnonymousID),
		})
	}
	return p, err
}

// group sets the traits on the group's profile and adds the group to the
// user's.
func (m *Mixpanel) group(e sdk.Event, distinctID string) (plan, error) {
	if e.GroupID == "" {
		return plan{}, errors.New("group call has no groupId; Mixpanel needs one as $group_id")
	}
	traits, err := e.Traits()
	if err != nil {
		return plan{}, err
	}
	var p plan
	if len(traits) > 0 {
		p.group, err = updateJSON(struct {
			Token    string                     `json:"$token"`
			GroupKey string                     `json:"$group_key"`
			GroupID  string                     `json:"$group_id"`
			Time     int64                      `json:"$time"`
			Set      map[string]json.RawMessage `json:"$set"`
		}{m.cfg.Token, m.cfg.GroupKey, e.GroupID, e.Timestamp.UnixMilli(), traits})
		if err != nil {
			return plan{}, err
		}
	}
	p.update, err = updateJSON(struct {
		Token      string              `json:"$token"`
		DistinctID string              `json:"$distinct_id"`
		Time       int64               `json:"$time"`
		Union      map[string][]string `json:"$union"`
	}{m.cfg.Token, distinctID, e.Timestamp.UnixMilli(), map[string][]string{m.cfg.GroupKey: {e.GroupID}}})
	return p, err
}

// alias is a $create_alias event making userId another name of previousId.
func (m *Mixpanel) alias(e sdk.Event) (plan, error) {
	if e.PreviousID == "" || e.UserID == "" {
		return plan{}, errors.New("alias call needs both previousId and userId; Mixpanel needs them as distinct_id and alias")
	}
	event, err := m.event(e, "$create_alias", e.PreviousID, map[string]json.RawMessage{"alias": str(e.UserID)})
	return plan{event: event}, err
}

// event is the /import object of an event of the call e named name, with
// props, to which it adds the properties Mixpanel requires.
func (m *Mixpanel) event(e sdk.Event, name, distinctID string, props map[string]json.RawMessage) ([]byte, error) {
	props["token"] = str(m.cfg.Token)
	props["distinct_id"] = str(distinctID)
	props["time"] = json.RawMessage(strconv.FormatInt(e.Timestamp.UnixMilli(), 10))
	props["$insert_id"] = str(insertID(e))
	body, err := json.Marshal(struct {
		Event      string                     `json:"event"`
		Properties map[string]json.RawMessage `json:"properties"`
	}{name, props})
	if err != nil {
		return nil, fmt.Errorf("event properties are invalid JSON: %v", err)
	}
	return body, nil
}

// updateJSON encodes a profile update, which Mixpanel takes up to
// maxUpdateBytes of.
func updateJSON(u any) ([]byte, error) {
	body, err := json.Marshal(u)
	if err != nil {
		return nil, fmt.Errorf("traits are invalid JSON: %v", err)
	}
	if len(body) > maxUpdateBytes {
		return nil, fmt.Errorf("the profile update is %d bytes of JSON; Mixpanel takes at most %d", len(body), maxUpdateBytes)
	}
	return body, nil
}

// charge is the /engage update that appends a transaction of amount at t to
// the user's $transactions.
func (m *Mixpanel) charge(distinctID string, t time.Time, amount float64) []byte {
	type transaction struct {
		Time   string  `json:"$time"`
		Amount float64 `json:"$amount"`
	}
	b, _ := json.Marshal(struct {
		Token      string                 `json:"$token"`
		DistinctID string                 `json:"$distinct_id"`
		Append     map[string]transaction `json:"$append"`
	}{
		Token:      m.cfg.Token,
		DistinctID: distinctID,
		Append: map[string]transaction{"$transactions": {
			Time:   t.UTC().Format("2006-01-02T15:04:05.000Z"),
			Amount: amount,
		}},
	})
	return b
}

// fields are the parts of a call's JSON that sdk.Event does not carry.
type fields struct {
	Category json.RawMessage `json:"category"`
	Context  struct {
		IP json.RawMessage `json:"ip"`
	} `json:"context"`
}

func fieldsOf(e sdk.Event) (fields, error) {
	var f fields
	if err := json.Unmarshal(e.JSON, &f); err != nil {
		return fields{}, fmt.Errorf("event JSON is invalid: %v", err)
	}
	return f, nil
}

// category is the page or screen call's category; "" if none.
func (f fields) category() string { return stringOf(f.Category) }

// ip is context.ip; "" if none.
func (f fields) ip() string { return stringOf(f.Context.IP) }

// stringOf is the JSON string v, or "" if v is anything else.
func stringOf(v json.RawMessage) string {
	var s string
	if json.Unmarshal(v, &s) != nil {
		return ""
	}
	return s
}

// insertID is the event's $insert_id: its messageId when that fits
// Mixpanel's rule (at most 36 bytes of letters, digits and '-', and not a
// placeholder Mixpanel rejects, such as "null"). Otherwise it is the first 36
// hex digits of the SHA-256 of the messageId, which stays the same every time
// the event is retried.
func insertID(e sdk.Event) string {
	id := e.MessageID
	if validInsertID(id) {
		return id
	}
	src := []byte(id)
	if id == "" {
		src = e.JSON // the daemon always sets a messageId; this is a fallback
	}
	sum := sha256.Sum256(src)
	return hex.EncodeToString(sum[:])[:maxInsertID]
}

func validInsertID(id string) bool {
	if id == "" || len(id) > maxInsertID {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	switch strings.ToLower(id) {
	case "00000000-0000-0000-0000-000000000000", "anon", "anonymous", "nil", "none", "null",
		"na", "undefined", "unknown", "0", "-1", "true", "false":
		return false
	}
	return true
}

func str(s string) json.RawMessage {
	b, _ := json.Marshal(s)
	return b
}

func setAll(results []sdk.Result, items []item, r sdk.Result) {
	for _, it := range items {
		results[it.index] = r
	}
}
