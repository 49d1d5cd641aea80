package revenue_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"trackd.dev/trackd/sdk"
	"trackd.dev/trackd/sdk/revenue"
)

func props(t *testing.T, s string) map[string]json.RawMessage {
	t.Helper()
	var p map[string]json.RawMessage
	if err := json.Unmarshal([]byte(s), &p); err != nil {
		t.Fatalf("props %s: %v", s, err)
	}
	return p
}

func TestNumber(t *testing.T) {
	tests := []struct {
		props  string
		want   float64
		wantOK bool
		err    string // substring of the error; "" for none
	}{
		{props: `{"revenue":19.99}`, want: 19.99, wantOK: true},
		{props: `{"revenue":-5}`, want: -5, wantOK: true},
		{props: `{"revenue":0}`, want: 0, wantOK: true},
		{props: `{"revenue":1e3}`, want: 1000, wantOK: true},
		{props: `{"revenue":"19.99"}`, want: 19.99, wantOK: true},
		{props: `{"revenue":" 7 "}`, want: 7, wantOK: true},
		{props: `{}`},
		{props: `{"revenue":null}`},
		{props: `{"revenue":"abc"}`, err: `properties.revenue is "abc"`},
		{props: `{"revenue":""}`, err: `properties.revenue is ""`},
		{props: `{"revenue":"NaN"}`, err: "properties.revenue"},
		{props: `{"revenue":"Inf"}`, err: "properties.revenue"},
		{props: `{"revenue":"0x10"}`, err: "properties.revenue"},
		{props: `{"revenue":"1e999"}`, err: "properties.revenue"},
		{props: `{"revenue":1e999}`, err: "properties.revenue is 1e999"},
		{props: `{"revenue":true}`, err: "properties.revenue is true"},
		{props: `{"revenue":{"amount":3}}`, err: `properties.revenue is {"amount":3}`},
		{props: `{"revenue":[1]}`, err: "properties.revenue is [1]"},
		{props: `{"revenue":"` + strings.Repeat("9", 60) + `x"}`, err: "…"},
	}
	for _, tt := range tests {
		t.Run(tt.props, func(t *testing.T) {
			v, ok, err := revenue.Number(props(t, tt.props), "revenue")
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Number = %v, %v, %v; want an error containing %q", v, ok, err, tt.err)
				}
				if ok {
					t.Errorf("ok is true with an error")
				}
				return
			}
			if err != nil || ok != tt.wantOK || v != tt.want {
				t.Errorf("Number = %v, %v, %v; want %v, %v, nil", v, ok, err, tt.want, tt.wantOK)
			}
		})
	}
}

func TestCurrency(t *testing.T) {
	tests := []struct {
		props string
		want  string
		err   string
	}{
		{props: `{}`, want: "USD"},
		{props: `{"currency":null}`, want: "USD"},
		{props: `{"currency":""}`, want: "USD"},
		{props: `{"currency":"USD"}`, want: "USD"},
		{props: `{"currency":"eur"}`, want: "EUR"},
		{props: `{"currency":" gbp "}`, want: "GBP"},
		{props: `{"currency":"US$"}`, err: `properties.currency "US$" is not a three-letter ISO 4217 code`},
		{props: `{"currency":"euro"}`, err: `properties.currency "euro"`},
		{props: `{"currency":"é€u"}`, err: `properties.currency "é€u"`},
		{props: `{"currency":840}`, err: "properties.currency is 840"},
		{props: `{"currency":["USD"]}`, err: `properties.currency is ["USD"]`},
	}
	for _, tt := range tests {
		t.Run(tt.props, func(t *testing.T) {
			got, err := revenue.Currency(props(t, tt.props))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Currency = %q, %v; want an error containing %q", got, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("Currency = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestPresent(t *testing.T) {
	p := props(t, `{"a":1,"b":"","c":null,"d":false,"e":{}}`)
	for field, want := range map[string]bool{"a": true, "b": true, "c": false, "d": true, "e": true, "f": false} {
		if got := revenue.Present(p, field); got != want {
			t.Errorf("Present(%s) = %v, want %v", field, got, want)
		}
	}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name string
		c    revenue.Conversion
		err  string
	}{
		{name: "zero", c: revenue.Conversion{}},
		{name: "target only", c: revenue.Conversion{ConvertTo: "USD"}},
		{name: "rates", c: revenue.Conversion{ConvertTo: "USD", Rates: map[string]float64{"EUR": 1.08, "JPY": 0.0067}}},
		{name: "rate of the target", c: revenue.Conversion{ConvertTo: "USD", Rates: map[string]float64{"USD": 1}}},
		{name: "lower-case target", c: revenue.Conversion{ConvertTo: "usd"}, err: `convert_to "usd"`},
		{name: "bad target", c: revenue.Conversion{ConvertTo: "dollars"}, err: `convert_to "dollars"`},
		{name: "rates without target", c: revenue.Conversion{Rates: map[string]float64{"EUR": 1.08}}, err: "convert_to is empty"},
		{name: "bad key", c: revenue.Conversion{ConvertTo: "USD", Rates: map[string]float64{"Euro": 1.08}}, err: `rates: "Euro"`},
		{name: "zero rate", c: revenue.Conversion{ConvertTo: "USD", Rates: map[string]float64{"EUR": 0}}, err: "rates.EUR is 0"},
		{name: "negative rate", c: revenue.Conversion{ConvertTo: "USD", Rates: map[string]float64{"EUR": -1}}, err: "rates.EUR is -1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.c.Check()
			if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
				t.Errorf("Check() = %v, want an error containing %q", err, tt.err)
			}
		})
	}
}

func TestConvert(t *testing.T) {
	c := revenue.Conversion{ConvertTo: "USD", Rates: map[string]float64{"EUR": 1.08, "JPY": 0.0067}}
	tests := []struct {
		name     string
		c        revenue.Conversion
		amount   float64
		currency string
		want     float64
		wantCur  string
		err      string
	}{
		{name: "off", amount: 10, currency: "EUR", want: 10, wantCur: "EUR"},
		{name: "same currency", c: c, amount: 10, currency: "USD", want: 10, wantCur: "USD"},
		{name: "rate", c: c, amount: 18.9, currency: "EUR", want: 20.412, wantCur: "USD"},
		{name: "small rate", c: c, amount: 1500, currency: "JPY", want: 10.05, wantCur: "USD"},
		{name: "negative amount", c: c, amount: -10, currency: "EUR", want: -10.8, wantCur: "USD"},
		{name: "no rate", c: c, amount: 10, currency: "GBP", err: "currency GBP has no rate to USD"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, cur, err := tt.c.Convert(tt.amount, tt.currency)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Convert = %v, %q, %v; want an error containing %q", got, cur, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want || cur != tt.wantCur {
				t.Errorf("Convert = %v, %q, %v; want %v, %q", got, cur, err, tt.want, tt.wantCur)
			}
		})
	}
}

func TestConvertAmounts(t *testing.T) {
	c := revenue.Conversion{ConvertTo: "USD", Rates: map[string]float64{"EUR": 1.08}}
	tests := []struct {
		name     string
		c        revenue.Conversion
		props    string
		currency string
		want     string // the properties after
		wantCur  string
		err      string
	}{
		{name: "off", props: `{"revenue":"10","price":5}`, currency: "EUR",
			want: `{"revenue":"10","price":5}`, wantCur: "EUR"},
		{name: "every amount", c: c, props: `{"revenue":18.9,"value":"10","total":1,"subtotal":1,"price":1,"tax":1,"shipping":1,"discount":1,"quantity":2,"name":"x"}`, currency: "EUR",
			want: `{"revenue":20.412,"value":10.8,"total":1.08,"subtotal":1.08,"price":1.08,"tax":1.08,"shipping":1.08,"discount":1.08,"quantity":2,"name":"x"}`, wantCur: "USD"},
		{name: "same currency makes numbers", c: c, props: `{"revenue":"5","value":null}`, currency: "USD",
			want: `{"revenue":5,"value":null}`, wantCur: "USD"},
		{name: "no amounts keeps the currency", c: c, props: `{"quantity":2}`, currency: "GBP",
			want: `{"quantity":2}`, wantCur: "GBP"},
		{name: "no rate", c: c, props: `{"tax":1}`, currency: "GBP", err: "currency GBP has no rate to USD"},
		{name: "first bad amount", c: c, props: `{"price":"free","tax":true}`, currency: "EUR", err: `properties.price is "free"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := props(t, tt.props)
			cur, err := tt.c.ConvertAmounts(p, tt.currency)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ConvertAmounts = %q, %v; want an error containing %q", cur, err, tt.err)
				}
				return
			}
			got, _ := json.Marshal(p)
			want, _ := json.Marshal(props(t, tt.want))
			if err != nil || cur != tt.wantCur || string(got) != string(want) {
				t.Errorf("ConvertAmounts = %q, %v with properties %s; want %q with %s", cur, err, got, tt.wantCur, want)
			}
		})
	}
}

// A plugin embeds Conversion in its settings; its keys then sit at the top
// level of the settings table, beside the plugin's own.
func TestConversionEmbedsInSettings(t *testing.T) {
	type settings struct {
		Token string `toml:"token"`
		revenue.Conversion
	}
	s, err := sdk.NewSettings(map[string]any{
		"token":      "t",
		"convert_to": "USD",
		"rates":      map[string]any{"EUR": 1.08, "JPY": int64(1)},
	})
	if err != nil {
		t.Fatal(err)
	}
	var got settings
	if err := s.Decode(&got); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if got.Token != "t" || got.ConvertTo != "USD" || got.Rates["EUR"] != 1.08 || got.Rates["JPY"] != 1 || len(got.Rates) != 2 {
		t.Errorf("decoded %+v", got)
	}

	s, err = sdk.NewSettings(map[string]any{"rates": map[string]any{"EUR": "high"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Decode(&got); err == nil || !strings.Contains(err.Error(), "rates.EUR") {
		t.Errorf("Decode of a string rate: %v, want an error naming rates.EUR", err)
	}
}

func Example() {
	var props map[string]json.RawMessage
	_ = json.Unmarshal([]byte(`{"revenue":"18.90","currency":"eur"}`), &props)

	amount, ok, err := revenue.Number(props, "revenue")
	if err != nil || !ok {
		return
	}
	currency, err := revenue.Currency(props)
	if err != nil {
		return
	}
	conv := revenue.Conversion{ConvertTo: "USD", Rates: map[string]float64{"EUR": 1.08}}
	amount, currency, err = conv.Convert(amount, currency)
	fmt.Println(amount, currency, err)

	_, _, err = revenue.Number(map[string]json.RawMessage{"revenue": json.RawMessage(`"abc"`)}, "revenue")
	fmt.Println(err)
	// Output:
	// 20.412 USD <nil>
	// properties.revenue is "abc"; want a number or a string holding one
}
