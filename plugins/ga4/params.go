package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"

	"trackd.dev/trackd/sdk/clip"
	"trackd.dev/trackd/sdk/revenue"
)

// call is what a GA4 event is made of besides the fields of sdk.Event.
type call struct {
	props map[string]json.RawMessage
	// keys are the properties' keys in the order the producer wrote them,
	// which decides which custom parameters fit in 25.
	keys    []string
	context json.RawMessage
}

func decodeCall(event []byte) (call, error) {
	var ev struct {
		Properties json.RawMessage `json:"properties"`
		Context    json.RawMessage `json:"context"`
	}
	if err := json.Unmarshal(event, &ev); err != nil {
		return call{}, fmt.Errorf("the event is not a valid JSON object: %v", err)
	}
	c := call{context: ev.Context}
	if len(ev.Properties) == 0 || string(ev.Properties) == "null" {
		return c, nil
	}
	if err := json.Unmarshal(ev.Properties, &c.props); err != nil {
		return call{}, fmt.Errorf("properties is not an object: %v", err)
	}
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
		if key, ok := tok.(string); ok && !slices.Contains(c.keys, key) {
			c.keys = append(c.keys, key)
		}
	}
	return c, nil
}

// pageParams are a page call's page_location, page_title and page_referrer,
// each from context.page, where the browser SDKs put what they know of the
// page, else from the property the SDKs copy it to. It takes those
// properties out of c, so that they are not sent again as custom parameters.
func (c *call) pageParams() object {
	var ctx struct {
		Page map[string]json.RawMessage `json:"page"`
	}
	// A context.page that is not an object is as good as none.
	_ = json.Unmarshal(c.context, &ctx)
	var p object
	for _, f := range []struct {
		param, key string
		limit      int
	}{
		{"page_location", "url", maxPageLocationLen},
		{"page_title", "title", maxPageTitleLen},
		{"page_referrer", "referrer", maxPageReferrerLen},
	} {
		v, ok := textUpTo(ctx.Page[f.key], f.limit)
		if !ok {
			v, ok = textUpTo(c.props[f.key], f.limit)
		}
		if ok {
			p = append(p, member{f.param, v})
		}
		delete(c.props, f.key)
	}
	return p
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

// params translates an event's properties into GA4 parameters: fixed (the
// parameters the call type sets) first, then the mapped ones, then the others
// that fit, up to 25.
func (g *GA4) params(name string, fixed object, props map[string]json.RawMessage, keys []string) (object, error) {
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

	p := fixed
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

// textUpTo is text with a limit of n characters for strings, for the
// parameters that may be longer than others.
func textUpTo(raw json.RawMessage, n int) (string, bool) {
	if len(raw) == 0 || raw[0] != '"' {
		return text(raw)
	}
	var s string
	if json.Unmarshal(raw, &s) != nil || s == "" {
		return "", false
	}
	return clip.Runes(s, n), true
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
		return clip.Runes(s, maxValueLen), true
	case c == 't' || c == 'f':
		return strconv.FormatBool(c == 't'), true
	case c == '-' || '0' <= c && c <= '9':
		return json.Number(raw), true
	}
	return nil, false
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
