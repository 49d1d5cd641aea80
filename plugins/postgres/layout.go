package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"trackd.dev/trackd/sdk"
)

// The tables of the layout (SPEC §7b), besides one table per track event.
const (
	tracksTable     = "tracks"
	identifiesTable = "identifies"
	usersTable      = "users"
	pagesTable      = "pages"
	screensTable    = "screens"
	groupsTable     = "groups"
	aliasesTable    = "aliases"
	discardsTable   = "discards"
)

// maxNameBytes is the longest name PostgreSQL keeps (NAMEDATALEN - 1). It
// would cut a longer one itself; the plugin cuts first, so that the names it
// knows are the names in the database.
const maxNameBytes = 63

// kind is what a column holds, as far as the plugin is concerned.
type kind uint8

const (
	kindNull    kind = iota // a null value: says nothing of a column's type
	kindText                // text
	kindNumber              // double precision
	kindBoolean             // boolean
	kindTime                // timestamp with time zone
	kindOther               // a column of another type, or a value no column of the plugin holds
)

// sqlType is the type of the columns the plugin makes for values of kind k.
func (k kind) sqlType() string {
	switch k {
	case kindText:
		return "text"
	case kindNumber:
		return "double precision"
	case kindBoolean:
		return "boolean"
	case kindTime:
		return "timestamp with time zone"
	}
	return ""
}

// kindOfType is the kind of a column whose information_schema.columns
// data_type is dataType.
func kindOfType(dataType string) kind {
	for _, k := range []kind{kindText, kindNumber, kindBoolean, kindTime} {
		if dataType == k.sqlType() {
			return k
		}
	}
	return kindOther
}

// unfit is a value that no column of the plugin can hold, such as a number
// beyond double precision or a time that does not parse: it always goes to
// discards, as it was sent.
type unfit string

// kindOf is the kind of a row's value.
func kindOf(v any) kind {
	switch v.(type) {
	case nil:
		return kindNull
	case string:
		return kindText
	case float64:
		return kindNumber
	case bool:
		return kindBoolean
	case time.Time:
		return kindTime
	}
	return kindOther
}

// valueText is a value as the discards table records it.
func valueText(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case unfit:
		return string(v)
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64)
	case bool:
		return strconv.FormatBool(v)
	case time.Time:
		return v.UTC().Format(time.RFC3339Nano)
	}
	return fmt.Sprint(v)
}

// column is a column the plugin writes, by name and kind.
type column struct {
	name string
	kind kind
}

// The reserved columns: every call's, and each table's own. A property or
// trait that would land on one of them is dropped.
var (
	callColumns = []column{
		{"id", kindText}, {"anonymous_id", kindText}, {"user_id", kindText},
		{"received_at", kindTime}, {"sent_at", kindTime}, {"timestamp", kindTime}, {"original_timestamp", kindTime},
	}
	trackColumns    = append(slices.Clip(callColumns), column{"event", kindText}, column{"event_text", kindText})
	pageColumns     = append(slices.Clip(callColumns), column{"name", kindText}, column{"category", kindText})
	groupColumns    = append(slices.Clip(callColumns), column{"group_id", kindText})
	aliasColumns    = append(slices.Clip(callColumns), column{"previous_id", kindText})
	userColumns     = []column{{"id", kindText}, {"received_at", kindTime}}
	discardsColumns = []column{
		{"table_name", kindText}, {"column_name", kindText}, {"row_id", kindText},
		{"value", kindText}, {"received_at", kindTime},
	}
)

// table says how the plugin makes and fills one table.
type table struct {
	reserved []column
	// key is the table's primary key, the target of ON CONFLICT.
	key string
	// upsert: a row whose key is there already updates it (users) instead
	// of being left out.
	upsert bool
}

var (
	fixedTables = map[string]*table{
		tracksTable:     {reserved: trackColumns, key: "id"},
		identifiesTable: {reserved: callColumns, key: "id"},
		usersTable:      {reserved: userColumns, key: "id", upsert: true},
		pagesTable:      {reserved: pageColumns, key: "id"},
		screensTable:    {reserved: pageColumns, key: "id"},
		groupsTable:     {reserved: groupColumns, key: "id"},
		aliasesTable:    {reserved: aliasColumns, key: "id"},
		discardsTable:   {reserved: discardsColumns, key: "row_id, table_name, column_name"},
	}
	eventTable = &table{reserved: trackColumns, key: "id"}
)

// tableOf says how the table name is made and filled.
func tableOf(name string) *table {
	if t, ok := fixedTables[name]; ok {
		return t
	}
	return eventTable
}

// isReserved says whether name is one of t's reserved columns.
func (t *table) isReserved(name string) bool {
	for _, c := range t.reserved {
		if c.name == name {
			return true
		}
	}
	return false
}

// row is one row a call writes: its table, id and received_at (kept apart
// for discards and for the users upsert), and its fields.
type row struct {
	table      string
	id         string
	receivedAt time.Time
	// fields are the row's values by column: string, float64, bool,
	// time.Time or unfit. Of two fields for one column, the later wins.
	fields []field
}

type field struct {
	name  string
	value any
}

// namer turns keys into column names and event names into table names,
// remembering the names it made: the same keys come again in every call.
type namer struct {
	mu      sync.Mutex
	columns map[string]string // by key, or path of keys joined with "_"
	tables  map[string]string // by event name
}

// maxNamesKept bounds the names a namer remembers, so that a producer
// sending ever new keys costs time, not memory.
const maxNamesKept = 100_000

// column is columnName(path).
func (n *namer) column(path []byte) string {
	n.mu.Lock()
	name, ok := n.columns[string(path)]
	n.mu.Unlock()
	if !ok {
		name = columnName(string(path))
		n.remember(&n.columns, string(path), name)
	}
	return name
}

// table is eventTableName(event).
func (n *namer) table(event string) string {
	n.mu.Lock()
	name, ok := n.tables[event]
	n.mu.Unlock()
	if !ok {
		name = eventTableName(event)
		n.remember(&n.tables, event, name)
	}
	return name
}

func (n *namer) remember(names *map[string]string, key, name string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if *names == nil {
		*names = map[string]string{}
	}
	if len(*names) < maxNamesKept {
		(*names)[key] = name
	}
}

// columnName is the column a key, or a path of keys joined with "_", becomes:
// snake_case, "_" before a leading digit, "_" for a key with no letter or
// digit, at most 63 bytes.
func columnName(key string) string {
	s := snake(key)
	switch {
	case s == "":
		s = "_"
	case s[0] >= '0' && s[0] <= '9':
		s = "_" + s
	}
	return cut(s, maxNameBytes)
}

// eventTableName is the table of a track event's name: its column name, with
// "_" before a name that is one of the layout's own tables ("Tracks" →
// "_tracks").
func eventTableName(event string) string {
	name := columnName(event)
	if _, ok := fixedTables[name]; ok {
		name = cut("_"+name, maxNameBytes)
	}
	return name
}

// snake turns a key into snake_case: lower case; "_" between a lower-case
// letter and an upper-case one (firstName → first_name), and between a digit
// or an upper-case letter and an upper-case one followed by a lower-case one
// (HTMLParser → html_parser, page2Count → page2_count, but 3DSecure →
// 3d_secure); every run of other characters (spaces, punctuation, "_") one
// "_", none at either end.
func snake(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 4)
	pending := false // a "_" is due before the next letter or digit
	var prev rune    // the letter or digit before, 0 after a separator
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		switch {
		case unicode.IsUpper(r) || unicode.IsTitle(r):
			if unicode.IsLower(prev) {
				pending = true
			} else if prev != 0 {
				if next, _ := utf8.DecodeRuneInString(s[i:]); unicode.IsLower(next) {
					pending = true
				}
			}
		case unicode.IsLetter(r) || unicode.IsDigit(r):
		default:
			pending, prev = true, 0
			continue
		}
		if pending && b.Len() > 0 {
			b.WriteByte('_')
		}
		pending, prev = false, r
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}

// cut shortens s to at most n bytes, on a character boundary.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// parsed is what the plugin reads of a call's JSON besides the fields of
// sdk.Event: its times and category as sent, and its context and its
// properties or traits (members) as fields.
type parsed struct {
	receivedAt, sentAt, originalTimestamp, category string

	context, members []field
}

// parse reads a call's JSON in one pass; object names the member whose
// object becomes columns ("properties", "traits", or "" for none). A field
// that the daemon passes through unchecked (sentAt, category, ...) is read
// when it is a string and ignored otherwise.
func (n *namer) parse(js []byte, object string) (parsed, error) {
	var p parsed
	s := scanner{b: js}
	path := make([]byte, 0, 128)
	err := s.object(func(key []byte) error {
		var err error
		switch k := string(key); {
		case k == "receivedAt":
			p.receivedAt, err = s.optString()
		case k == "sentAt":
			p.sentAt, err = s.optString()
		case k == "originalTimestamp":
			p.originalTimestamp, err = s.optString()
		case k == "category":
			p.category, err = s.optString()
		case k == "context" && s.peek() == '{':
			p.context, err = n.flatten(&s, make([]field, 0, 16), &path, 0, "context", 1)
		case k == object && object != "" && s.peek() == '{':
			p.members, err = n.flatten(&s, make([]field, 0, 32), &path, 0, "", 1)
		default:
			_, err = s.skip()
		}
		return err
	})
	if err == nil && s.peek() != 0 {
		err = s.errorf("more after the call's object")
	}
	return p, err
}

// flatten reads an object into fields, each member under its column name:
// the path of keys to it joined with "_" (prefix first), nested objects
// flattened the same way; null members are left out. path is a buffer for
// the paths, of which the first plen bytes are the parent's.
func (n *namer) flatten(s *scanner, fields []field, path *[]byte, plen int, prefix string, depth int) ([]field, error) {
	if depth > maxDepth {
		return fields, s.errorf("objects nested deeper than %d", maxDepth)
	}
	if prefix != "" {
		*path = append((*path)[:plen], prefix...)
		plen = len(*path)
	}
	err := s.object(func(key []byte) error {
		p := (*path)[:plen]
		if plen > 0 {
			p = append(p, '_')
		}
		p = append(p, key...)
		*path = p
		var err error
		if s.peek() == '{' {
			fields, err = n.flatten(s, fields, path, len(p), "", depth+1)
			return err
		}
		v, err := s.leaf()
		if err == nil && v != nil {
			fields = append(fields, field{n.column(p), v})
		}
		return err
	})
	return fields, err
}

// objectOf names the member of a call of type typ whose object becomes
// columns.
func objectOf(typ string) string {
	switch typ {
	case sdk.TypeTrack, sdk.TypePage, sdk.TypeScreen:
		return "properties"
	case sdk.TypeIdentify, sdk.TypeGroup:
		return "traits"
	}
	return ""
}

// rows turns a call into the rows it writes: a track call a row of tracks
// and one of its event's table; an identify call one of identifies and, with
// a userId, one of users; the other calls one row of their type's table.
func (n *namer) rows(e sdk.Event) ([]row, error) {
	p, err := n.parse(e.JSON, objectOf(e.Type))
	if err != nil {
		return nil, fmt.Errorf("event JSON is invalid: %w", err)
	}
	// The fields of a row: its properties or traits first, then the
	// call's own, which win over a member that lands on one of them.
	fields := make([]field, 0, len(p.members)+len(p.context)+12)
	var name string
	var t *table
	switch e.Type {
	case sdk.TypeTrack:
		name = n.table(e.Name)
		t = eventTable
	case sdk.TypeIdentify:
		name, t = identifiesTable, fixedTables[identifiesTable]
	case sdk.TypePage:
		name, t = pagesTable, fixedTables[pagesTable]
	case sdk.TypeScreen:
		name, t = screensTable, fixedTables[screensTable]
	case sdk.TypeGroup:
		name, t = groupsTable, fixedTables[groupsTable]
	case sdk.TypeAlias:
		name, t = aliasesTable, fixedTables[aliasesTable]
	default:
		return nil, fmt.Errorf("the plugin does not take %q calls", e.Type)
	}
	fields = appendMembers(fields, t, p.members, p.context)
	members := len(fields)
	fields = append(fields, field{"id", e.MessageID})
	fields = appendString(fields, "anonymous_id", e.AnonymousID)
	fields = appendString(fields, "user_id", e.UserID)
	fields, receivedAt := appendTime(fields, "received_at", p.receivedAt)
	fields, _ = appendTime(fields, "sent_at", p.sentAt)
	fields, _ = appendTime(fields, "original_timestamp", p.originalTimestamp)
	if !e.Timestamp.IsZero() {
		fields = append(fields, field{"timestamp", e.Timestamp})
	}
	fields = append(fields, p.context...)
	switch e.Type {
	case sdk.TypeTrack:
		fields = append(fields, field{"event", name}, field{"event_text", e.Name})
	case sdk.TypePage, sdk.TypeScreen:
		fields = appendString(fields, "name", e.Name)
		fields = appendString(fields, "category", p.category)
	case sdk.TypeGroup:
		fields = appendString(fields, "group_id", e.GroupID)
	case sdk.TypeAlias:
		fields = appendString(fields, "previous_id", e.PreviousID)
	}
	rows := []row{{table: name, id: e.MessageID, receivedAt: receivedAt, fields: fields}}

	switch {
	case e.Type == sdk.TypeTrack:
		// tracks has the call's own columns, without the properties.
		rows = append(rows, row{table: tracksTable, id: e.MessageID, receivedAt: receivedAt, fields: fields[members:]})
	case e.Type == sdk.TypeIdentify && e.UserID != "":
		user := appendMembers(make([]field, 0, len(p.members)+2), fixedTables[usersTable], p.members, nil)
		user = append(user, field{"id", e.UserID})
		if !receivedAt.IsZero() {
			user = append(user, field{"received_at", receivedAt})
		}
		rows = append(rows, row{table: usersTable, id: e.UserID, receivedAt: receivedAt, fields: user})
	}
	return rows, nil
}

// appendMembers appends the properties or traits to fields but for those that
// would take one of t's reserved columns or a context_* column of the call.
func appendMembers(fields []field, t *table, members, context []field) []field {
	for _, m := range members {
		if t.isReserved(m.name) || strings.HasPrefix(m.name, "context_") && has(context, m.name) {
			continue
		}
		fields = append(fields, m)
	}
	return fields
}

func has(fields []field, name string) bool {
	for _, f := range fields {
		if f.name == name {
			return true
		}
	}
	return false
}

func appendString(fields []field, name, s string) []field {
	if s == "" {
		return fields
	}
	return append(fields, field{name, s})
}

// appendTime appends a time field from an RFC 3339 string and returns the
// time; one that does not parse is unfit, for discards.
func appendTime(fields []field, name, s string) ([]field, time.Time) {
	if s == "" {
		return fields, time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return append(fields, field{name, unfit(s)}), time.Time{}
	}
	return append(fields, field{name, t}), t
}
