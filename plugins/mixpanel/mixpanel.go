package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
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
	maxInsertID      = 36         // bytes of $insert_id
)

// maxResponseBody bounds how much of a response is read: a 400 from /import
// lists every failed record, up to 2000 of them.
const maxResponseBody = 4 << 20

// Mixpanel sends events to Mixpanel's Ingestion API: /import for the events,
// /engage for the revenue they carry.
type Mixpanel struct {
	cfg       settings
	importURL string
	engageURL string
	imports   *httpdest.Client // gzip as configured
	engage    *httpdest.Client // /engage does not accept gzip
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
	revenue.Conversion
}

func defaults() settings {
	return settings{Endpoint: "https://api.mixpanel.com", Timeout: 10 * time.Second, Gzip: true}
}

var _ sdk.Destination = (*Mixpanel)(nil)

func (m *Mixpanel) Configure(_ context.Context, s sdk.Settings) error {
	cfg := defaults()
	if err := s.Decode(&cfg); err != nil {
		return err
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	m.cfg = cfg
	m.importURL = cfg.Endpoint + "/import?strict=1"
	if cfg.ProjectID != "" {
		m.importURL += "&project_id=" + url.QueryEscape(cfg.ProjectID)
	}
	// ip=0: the request comes from trackd's host, which says nothing about
	// where the user is.
	m.engageURL = cfg.Endpoint + "/engage?verbose=1&ip=0"
	m.imports = httpdest.New(httpdest.Options{Timeout: cfg.Timeout, Gzip: cfg.Gzip})
	m.engage = httpdest.New(httpdest.Options{Timeout: cfg.Timeout})
	return nil
}

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
	return c.Conversion.Check()
}

// record is one event as /import takes it, with what /engage needs.
type record struct {
	index      int    // in the batch
	body       []byte // the /import object
	distinctID string
	time       time.Time
	amount     float64 // the revenue /engage records; 0 for none
}

// Deliver imports the batch in requests of at most maxImportEvents events and
// maxImportBytes bytes, then records the revenue of the events imported.
func (m *Mixpanel) Deliver(ctx context.Context, batch []sdk.Event) []sdk.Result {
	results := make([]sdk.Result, len(batch))
	recs := make([]record, 0, len(batch))
	for i, e := range batch {
		r, err := m.translate(e)
		if err != nil {
			results[i] = sdk.Drop(err.Error())
			continue
		}
		r.index = i
		recs = append(recs, r)
	}
	// The body is a JSON array: brackets and commas.
	spans := httpdest.Split(len(recs), maxImportEvents, maxImportBytes-2, func(i int) int { return len(recs[i].body) + 1 })
	for _, s := range spans {
		part := recs[s[0]:s[1]]
		m.importRecords(ctx, part, results)
		m.chargeImported(ctx, part, results)
	}
	return results
}

// importRecords sends recs to /import and sets their results.
func (m *Mixpanel) importRecords(ctx context.Context, recs []record, results []sdk.Result) {
	req, err := m.request(ctx, m.importURL, recs, func(r record) []byte { return r.body })
	if err != nil {
		setAll(results, recs, sdk.Drop(err.Error()))
		return
	}
	if m.cfg.ServiceAccountUsername != "" {
		req.SetBasicAuth(m.cfg.ServiceAccountUsername, m.cfg.ServiceAccountSecret)
	} else {
		req.SetBasicAuth(m.cfg.APISecret, "")
	}
	res, resp := m.imports.DoResponse(req, maxResponseBody)
	switch {
	case resp == nil:
	case resp.StatusCode == http.StatusRequestEntityTooLarge && len(recs) > 1:
		// Mixpanel's limit is lower than ours: halve until it fits.
		half := len(recs) / 2
		m.importRecords(ctx, recs[:half], results)
		m.importRecords(ctx, recs[half:], results)
		return
	case resp.StatusCode == http.StatusBadRequest:
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
			setAll(results, recs, sdk.OK())
			for _, f := range body.FailedRecords {
				if f.Index < 0 || f.Index >= len(recs) {
					continue
				}
				msg := f.Message
				if f.Field != "" && !strings.Contains(msg, f.Field) {
					msg = f.Field + ": " + msg
				}
				results[recs[f.Index].index] = sdk.Drop(fmt.Sprintf("POST %s/import: Mixpanel rejected the event: %s", m.cfg.Endpoint, httpdest.OneLine(msg)))
			}
			return
		}
	}
	setAll(results, recs, res)
}

// chargeImported appends the revenue of each imported event in recs to its
// user's $transactions through /engage, Mixpanel's track_charges. If that
// fails the event is retried as a whole: /import again, which $insert_id
// makes harmless, then /engage.
func (m *Mixpanel) chargeImported(ctx context.Context, recs []record, results []sdk.Result) {
	var charges []record
	for _, r := range recs {
		if r.amount != 0 && results[r.index].Status == sdk.StatusOK {
			charges = append(charges, r)
		}
	}
	for _, s := range httpdest.Split(len(charges), maxEngageUpdates, 0, nil) {
		part := charges[s[0]:s[1]]
		req, err := m.request(ctx, m.engageURL, part, m.charge)
		if err != nil {
			setAll(results, part, sdk.Drop(err.Error()))
			continue
		}
		res, resp := m.engage.DoResponse(req, 64<<10)
		if res.Status == sdk.StatusOK {
			res = engageResult(resp.Body)
		}
		if res.Status != sdk.StatusOK {
			res.Reason = "the event was imported but its revenue was not recorded: " + res.Reason
		}
		setAll(results, part, res)
	}
}

// engageResult reads the body of a 200 from /engage?verbose=1, which is how
// /engage reports updates it rejected.
func engageResult(body []byte) sdk.Result {
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
	return sdk.Drop("POST /engage: Mixpanel rejected the update: " + httpdest.OneLine(msg))
}

// charge is the /engage update that appends r's revenue to its user's
// $transactions.
func (m *Mixpanel) charge(r record) []byte {
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
		DistinctID: r.distinctID,
		Append: map[string]transaction{"$transactions": {
			Time:   r.time.UTC().Format("2006-01-02T15:04:05.000Z"),
			Amount: r.amount,
		}},
	})
	return b
}

// request builds a POST of the JSON array of item(r) for each of recs.
func (m *Mixpanel) request(ctx context.Context, u string, recs []record, item func(record) []byte) (*http.Request, error) {
	var body bytes.Buffer
	body.WriteByte('[')
	for i, r := range recs {
		if i > 0 {
			body.WriteByte(',')
		}
		body.Write(item(r))
	}
	body.WriteByte(']')
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, &body)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "trackd-mixpanel")
	return req, nil
}

// translate turns an event into a Mixpanel event. An error is the reason to
// drop it.
func (m *Mixpanel) translate(e sdk.Event) (record, error) {
	props, err := e.Properties()
	if err != nil {
		return record{}, err
	}
	distinctID := e.UserID
	if distinctID == "" {
		distinctID = e.AnonymousID
	}
	if distinctID == "" {
		return record{}, errors.New("event has neither userId nor anonymousId; Mixpanel needs one as distinct_id")
	}
	if e.Timestamp.IsZero() {
		return record{}, errors.New("event has no timestamp; Mixpanel needs one as time")
	}

	hasCurrency := revenue.Present(props, "currency")
	currency, err := revenue.Currency(props)
	if err != nil {
		return record{}, err
	}
	if currency, err = m.cfg.ConvertAmounts(props, currency); err != nil {
		return record{}, err
	}
	amount, hasRevenue, err := revenue.Number(props, "revenue")
	if err != nil {
		return record{}, err
	}
	if hasRevenue {
		props["revenue"], _ = json.Marshal(amount) // a numeric string becomes a number
	}
	if hasCurrency || hasRevenue {
		props["currency"] = str(currency)
	}

	props["token"] = str(m.cfg.Token)
	props["distinct_id"] = str(distinctID)
	props["time"] = json.RawMessage(strconv.FormatInt(e.Timestamp.UnixMilli(), 10))
	props["$insert_id"] = str(insertID(e))
	body, err := json.Marshal(struct {
		Event      string                     `json:"event"`
		Properties map[string]json.RawMessage `json:"properties"`
	}{e.Name, props})
	if err != nil {
		return record{}, fmt.Errorf("event properties are invalid JSON: %v", err)
	}
	r := record{body: body, distinctID: distinctID, time: e.Timestamp}
	if hasRevenue {
		r.amount = amount
	}
	return r, nil
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

func setAll(results []sdk.Result, recs []record, r sdk.Result) {
	for _, rec := range recs {
		results[rec.index] = r
	}
}
