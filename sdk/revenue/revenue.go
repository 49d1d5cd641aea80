// Package revenue reads the reserved amount properties of a track event
// (revenue, value, currency, ...) the same way in every destination plugin,
// and converts amounts into one currency when a destination asks for it.
//
// Its errors are one sentence each, written to become the reason of an
// sdk.Drop.
package revenue

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"

	"trackd.dev/trackd/sdk/clip"
)

// DefaultCurrency is the currency of an event that names none.
const DefaultCurrency = "USD"

// Number reads a numeric property: a JSON number, or a string holding one
// ("19.99"). ok is false when the field is absent or null; err names the
// field when it is something else.
func Number(props map[string]json.RawMessage, field string) (v float64, ok bool, err error) {
	raw := bytes.TrimSpace(props[field])
	if len(raw) == 0 || string(raw) == "null" {
		return 0, false, nil
	}
	text := string(raw)
	if raw[0] == '"' {
		if err := json.Unmarshal(raw, &text); err != nil {
			return 0, false, fmt.Errorf("properties.%s is not valid JSON", field)
		}
		text = strings.TrimSpace(text)
	} else if raw[0] != '-' && (raw[0] < '0' || raw[0] > '9') {
		return 0, false, fmt.Errorf("properties.%s is %s; want a number or a string holding one", field, quote(raw))
	}
	v, perr := strconv.ParseFloat(text, 64)
	if perr != nil || !isDecimal(text) || math.IsInf(v, 0) {
		return 0, false, fmt.Errorf("properties.%s is %s; want a number or a string holding one", field, quote(raw))
	}
	return v, true, nil
}

// Present reports whether props has field with a value other than null:
// whether the producer set it.
func Present(props map[string]json.RawMessage, field string) bool {
	raw := bytes.TrimSpace(props[field])
	return len(raw) > 0 && string(raw) != "null"
}

// Currency reads properties.currency as an upper-cased ISO 4217 code (three
// letters A–Z after upper-casing); absent, null or "" means "USD"; anything
// else is an error naming currency and quoting the value.
func Currency(props map[string]json.RawMessage) (string, error) {
	raw := bytes.TrimSpace(props["currency"])
	if len(raw) == 0 || string(raw) == "null" {
		return DefaultCurrency, nil
	}
	var s string
	if raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return "", fmt.Errorf("properties.currency is %s; want a three-letter ISO 4217 code such as \"USD\"", quote(raw))
	}
	code := strings.ToUpper(strings.TrimSpace(s))
	if code == "" {
		return DefaultCurrency, nil
	}
	if !IsCode(code) {
		return "", fmt.Errorf("properties.currency %q is not a three-letter ISO 4217 code such as \"USD\"", s)
	}
	return code, nil
}

// IsCode reports whether s has the shape of an ISO 4217 code: three letters
// A–Z. It does not check that the code is assigned.
func IsCode(s string) bool {
	if len(s) != 3 {
		return false
	}
	for i := range len(s) {
		if s[i] < 'A' || s[i] > 'Z' {
			return false
		}
	}
	return true
}

// Conversion is the optional settings a destination embeds to send every
// amount in one currency:
//
//	convert_to = "USD"
//	[destinations.<id>.settings.rates]   # units of convert_to per one unit of each currency
//	EUR = 1.08
//
// Embedded anonymously in a settings struct, its keys sit next to the
// destination's own keys. The zero value converts nothing.
type Conversion struct {
	ConvertTo string             `toml:"convert_to"`
	Rates     map[string]float64 `toml:"rates"`
}

// Check validates the settings, for a destination's Configure: convert_to is
// empty or a code, and every rate is keyed by a code and greater than zero.
// Codes are written in upper case, as in ISO 4217.
func (c Conversion) Check() error {
	if c.ConvertTo == "" {
		if len(c.Rates) > 0 {
			return fmt.Errorf("rates is set but convert_to is empty; set convert_to to the currency the rates convert into, such as \"USD\"")
		}
		return nil
	}
	if !IsCode(c.ConvertTo) {
		return fmt.Errorf("convert_to %q is not an upper-case three-letter ISO 4217 code such as \"USD\"", c.ConvertTo)
	}
	for _, code := range slices.Sorted(maps.Keys(c.Rates)) { // the same key reported first on every run
		if !IsCode(code) {
			return fmt.Errorf("rates: %q is not an upper-case three-letter ISO 4217 code such as \"EUR\"", code)
		}
		if r := c.Rates[code]; !(r > 0) || math.IsInf(r, 0) {
			return fmt.Errorf("rates.%s is %v; set it to the number of %s one %s is worth, greater than 0", code, r, c.ConvertTo, code)
		}
	}
	return nil
}

// Convert returns amount, in currency, converted to ConvertTo, and the
// currency it is now in. It changes nothing when ConvertTo is empty or
// already the currency. A converted amount is rounded to 6 decimal places,
// which removes floating-point noise (18.9 × 1.08 is 20.412, not
// 20.412000000000003) without rounding to a currency's minor unit. A
// currency without a rate is an error naming it.
func (c Conversion) Convert(amount float64, currency string) (float64, string, error) {
	if c.ConvertTo == "" || currency == c.ConvertTo {
		return amount, currency, nil
	}
	rate, ok := c.Rates[currency]
	if !ok {
		return 0, "", fmt.Errorf("currency %s has no rate to %s; add %s to the destination's rates setting", currency, c.ConvertTo, currency)
	}
	return math.Round(amount*rate*1e6) / 1e6, c.ConvertTo, nil
}

// amountFields are the Segment properties that hold an amount of money in the
// event's currency.
var amountFields = [...]string{"revenue", "value", "total", "subtotal", "price", "tax", "shipping", "discount"}

// ConvertAmounts converts, in place, each of the Segment properties that hold
// an amount of money in the event's currency (revenue, value, total,
// subtotal, price, tax, shipping and discount) from currency to ConvertTo,
// and returns the currency they are now in: ConvertTo if props has any of
// them, else currency. A converted property is written back as a JSON number,
// even where the producer sent a string.
//
// It changes nothing when ConvertTo is empty. The error of a property that is
// not an amount, or of a currency without a rate, is the first one found,
// checking the properties in the order above.
func (c Conversion) ConvertAmounts(props map[string]json.RawMessage, currency string) (string, error) {
	if c.ConvertTo == "" {
		return currency, nil
	}
	converted := false
	for _, f := range amountFields {
		v, ok, err := Number(props, f)
		if err != nil {
			return "", err
		}
		if !ok {
			continue
		}
		if v, _, err = c.Convert(v, currency); err != nil {
			return "", err
		}
		props[f], _ = json.Marshal(v) // Number and Convert return finite numbers
		converted = true
	}
	if converted {
		return c.ConvertTo, nil
	}
	return currency, nil
}

// isDecimal reports whether s is written in decimal: ParseFloat also accepts
// "NaN", "Inf" and hexadecimal, which no destination takes as an amount.
func isDecimal(s string) bool {
	for i := range len(s) {
		if !strings.ContainsRune("0123456789.+-eE", rune(s[i])) {
			return false
		}
	}
	return true
}

// quote shows a raw JSON value in a one-line reason, cut short if long.
func quote(raw []byte) string {
	return strings.Join(strings.Fields(clip.Text(string(raw), 40)), " ")
}
