// Package eventtest makes the realistic calls the benchmarks share, so that
// every stage is measured on the same shape.
package eventtest

import "fmt"

// OrderCompleted is an Order Completed event of about 1 KB, as analytics.js
// sends it, varied by i.
func OrderCompleted(i int, messageID string) []byte {
	return fmt.Appendf(nil, `{"type":"track","event":"Order Completed","userId":"user_%06d","anonymousId":"507f191e810c19729de8%04x",`+
		`"messageId":%q,"timestamp":"2024-01-24T11:59:02.403Z","sentAt":"2024-01-24T11:59:02.410Z","originalTimestamp":"2024-01-24T11:59:02.403Z",`+
		`"properties":{"checkout_id":"fksdjfsdjfisjf9sdfjsd9f","order_id":"50314b8e9bcf%012d","affiliation":"Google Store","total":%d.50,"subtotal":22.50,`+
		`"revenue":%d.00,"shipping":3,"tax":2,"discount":2.5,"coupon":"hasbros","currency":"usd","products":[`+
		`{"product_id":"507f1f77bcf86cd799439011","sku":"45790-32","name":"Monopoly: 3rd Edition","price":19,"quantity":1,"category":"Games"},`+
		`{"product_id":"505bd76785ebb509fc183733","sku":"46493-32","name":"Uno Card Game","price":3,"quantity":2,"category":"Games"}]},`+
		`"context":{"ip":"203.0.113.%d","locale":"en-US","library":{"name":"analytics.js","version":"next-1.64.0"},`+
		`"page":{"path":"/checkout/complete","url":"https://shop.example.com/checkout/complete"},`+
		`"userAgent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"},`+
		`"integrations":{"All":true,"Mixpanel":false,"Amplitude":{"session_id":1706097500000}}}`,
		i%50000, i%65536, messageID, i, 20+i%80, 20+i%80, i%250)
}

// MessageID is the analytics.js-style messageId of event i.
func MessageID(i int) string {
	return fmt.Sprintf("ajs-next-1706097542403-%08x-9b1d-4c55-8a7e-0b6f2d9c1e44", i)
}

// PageViewed is a page call of about 1 KB, as analytics.js sends one on every
// page load, varied by i.
func PageViewed(i int, messageID string) []byte {
	return fmt.Appendf(nil, `{"type":"page","name":"Product","category":"Shop","anonymousId":"507f191e810c19729de8%04x",`+
		`"messageId":%q,"timestamp":"2024-01-24T11:59:02.403Z","sentAt":"2024-01-24T11:59:02.410Z","originalTimestamp":"2024-01-24T11:59:02.403Z",`+
		`"properties":{"path":"/products/%d","referrer":"https://www.google.com/","search":"","title":"Monopoly: 3rd Edition - Google Store",`+
		`"url":"https://shop.example.com/products/%d"},`+
		`"context":{"ip":"203.0.113.%d","locale":"en-US","library":{"name":"analytics.js","version":"next-1.64.0"},`+
		`"page":{"path":"/products/%d","referrer":"https://www.google.com/","title":"Monopoly: 3rd Edition - Google Store","url":"https://shop.example.com/products/%d"},`+
		`"campaign":{"name":"winter","source":"newsletter","medium":"email"},`+
		`"userAgent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"},`+
		`"integrations":{"All":true,"Mixpanel":false}}`,
		i%65536, messageID, i%5000, i%5000, i%250, i%5000, i%5000)
}

// Identified is an identify call of about 800 B, varied by i.
func Identified(i int, messageID string) []byte {
	return fmt.Appendf(nil, `{"type":"identify","userId":"user_%06d","anonymousId":"507f191e810c19729de8%04x",`+
		`"messageId":%q,"timestamp":"2024-01-24T11:59:02.403Z","sentAt":"2024-01-24T11:59:02.410Z","originalTimestamp":"2024-01-24T11:59:02.403Z",`+
		`"traits":{"email":"user_%06d@example.com","firstName":"Ada","lastName":"Lovelace","plan":"pro","createdAt":"2023-06-01T10:00:00Z",`+
		`"address":{"city":"London","country":"GB"},"logins":%d},`+
		`"context":{"ip":"203.0.113.%d","locale":"en-US","library":{"name":"analytics.js","version":"next-1.64.0"},`+
		`"userAgent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"},`+
		`"integrations":{"All":true}}`,
		i%50000, i%65536, messageID, i%50000, i%1000, i%250)
}

// Mix is call i of a realistic mix: of every ten calls, seven are track
// calls (OrderCompleted), two page calls and one an identify call.
func Mix(i int, messageID string) []byte {
	switch i % 10 {
	case 3, 7:
		return PageViewed(i, messageID)
	case 9:
		return Identified(i, messageID)
	}
	return OrderCompleted(i, messageID)
}
