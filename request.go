// This file reads requests: JSON bodies, decoded strictly and validated
// field by field, and the query parameters of a list. What it refuses
// becomes a 400 or a 422 in writeError.

package main

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// maxBodyBytes bounds every request body; a task is far smaller.
const maxBodyBytes = 64 << 10

// field is one member of a JSON request body. It records whether the member
// was present, whether it was null, and whether its value was unusable (the
// wrong JSON type, or not valid UTF-8), instead of failing the whole decode,
// so that validation can list every bad member at once.
type field[T any] struct {
	Set     bool
	Null    bool
	Invalid bool
	Value   T
}

// UnmarshalJSON implements json.Unmarshaler. It sees the member's raw bytes,
// before encoding/json would quietly replace invalid UTF-8, or an escaped
// half of a surrogate pair, with U+FFFD.
func (f *field[T]) UnmarshalJSON(b []byte) error {
	f.Set = true
	switch {
	case string(b) == "null":
		f.Null = true
	case !utf8.Valid(b) || hasLoneSurrogate(b):
		f.Invalid = true
	default:
		f.Invalid = json.Unmarshal(b, &f.Value) != nil
	}
	return nil
}

// hasLoneSurrogate reports whether the JSON text b has a \u escape of one
// half of a UTF-16 surrogate pair without the other: no character at all,
// which encoding/json would silently store as U+FFFD.
func hasLoneSurrogate(b []byte) bool {
	for i := 0; i < len(b); i++ {
		if b[i] != '\\' {
			continue
		}
		i++ // the escaped character
		if i >= len(b) || b[i] != 'u' {
			continue
		}
		r := hexRune(b[i+1:])
		switch {
		case r < 0xD800 || r > 0xDFFF:
		case r >= 0xDC00: // a low half first
			return true
		case i+10 < len(b) && b[i+5] == '\\' && b[i+6] == 'u' && hexRune(b[i+7:]) >= 0xDC00 && hexRune(b[i+7:]) <= 0xDFFF:
			i += 6 // a whole pair
		default:
			return true
		}
		i += 4
	}
	return false
}

// hexRune reads four hex digits, or returns -1.
func hexRune(b []byte) rune {
	if len(b) < 4 {
		return -1
	}
	n, err := strconv.ParseUint(string(b[:4]), 16, 16)
	if err != nil {
		return -1
	}
	return rune(n)
}

// storableTime reports whether t is an instant whose UTC year is 1 to 9999:
// what PostgreSQL, RFC 3339 and JSON can all hold and give back the same.
func storableTime(t time.Time) bool {
	y := t.UTC().Year()
	return y >= 1 && y <= 9999
}

// taskRequest is the body of a create or an update.
type taskRequest struct {
	Title       field[string]    `json:"title"`
	Description field[string]    `json:"description"`
	Completed   field[bool]      `json:"completed"`
	Priority    field[string]    `json:"priority"`
	DueDate     field[time.Time] `json:"due_date"`
	Tags        field[[]string]  `json:"tags"`
}

// newTask validates req as a create: title is required, the rest default.
func (req *taskRequest) newTask() (NewTask, error) {
	var errs fieldErrors
	if !req.Title.Set {
		errs.add("title", "is required")
	}
	p := req.validate(&errs)
	if err := errs.err(); err != nil {
		return NewTask{}, err
	}
	in := NewTask{Title: *p.Title, Description: p.Description, DueDate: p.DueDate, Priority: "medium", Tags: p.Tags}
	if p.Completed != nil {
		in.Completed = *p.Completed
	}
	if p.Priority != nil {
		in.Priority = *p.Priority
	}
	return in, nil
}

// patch validates req as a partial update.
func (req *taskRequest) patch() (TaskPatch, error) {
	var errs fieldErrors
	p := req.validate(&errs)
	return p, errs.err()
}

// validate checks every member that is present, adds a message to errs for
// each bad one, and returns the good ones as a patch. Title and tags are
// trimmed; duplicate tags are dropped, keeping the first.
func (req *taskRequest) validate(errs *fieldErrors) TaskPatch {
	var p TaskPatch
	if f := req.Title; f.Set {
		title := trimText(f.Value)
		switch msg := checkText(title, 1, maxTitle); {
		case f.Null || f.Invalid:
			errs.add("title", "must be a string")
		case msg != "":
			errs.add("title", msg)
		default:
			p.Title = &title
		}
	}
	if f := req.Description; f.Set {
		p.SetDescription = true
		switch msg := checkText(f.Value, 0, maxDescription); {
		case f.Null:
		case f.Invalid:
			errs.add("description", "must be a string or null")
		case msg != "":
			errs.add("description", msg)
		default:
			p.Description = &f.Value
		}
	}
	if f := req.Completed; f.Set {
		if f.Null || f.Invalid {
			errs.add("completed", "must be true or false")
		} else {
			p.Completed = &f.Value
		}
	}
	if f := req.Priority; f.Set {
		if f.Null || f.Invalid || !slices.Contains(priorities, f.Value) {
			errs.add("priority", "must be low, medium or high")
		} else {
			p.Priority = &f.Value
		}
	}
	if f := req.DueDate; f.Set {
		p.SetDueDate = true
		switch {
		case f.Null:
		case f.Invalid || !storableTime(f.Value):
			errs.add("due_date", "must be an RFC 3339 timestamp between the years 1 and 9999 in UTC, such as 2026-12-31T17:00:00Z, or null")
		default:
			d := f.Value.UTC()
			p.DueDate = &d
		}
	}
	if f := req.Tags; f.Set {
		if f.Null || f.Invalid {
			errs.add("tags", "must be an array of strings")
		} else {
			p.Tags = cleanTags(f.Value, errs)
		}
	}
	return p
}

// cleanTags trims each tag, drops duplicates (keeping the first) and checks
// the limits. It stops at the first distinct tag past maxTags: no later tag
// can make the list valid, so a body of thousands costs no more than one of
// maxTags+1.
func cleanTags(raw []string, errs *fieldErrors) []string {
	tags := make([]string, 0, min(len(raw), maxTags))
	seen := make(map[string]bool, len(tags))
	for i, tag := range raw {
		tag = trimText(tag)
		if msg := checkText(tag, 1, maxTag); msg != "" {
			errs.add(fmt.Sprintf("tags[%d]", i), msg)
			continue
		}
		if seen[tag] {
			continue
		}
		if len(tags) == maxTags {
			errs.add("tags", fmt.Sprintf("must hold at most %d distinct tags (tags[%d] is one more)", maxTags, i))
			return tags
		}
		seen[tag] = true
		tags = append(tags, tag)
	}
	return tags
}

// decodeCompleted reads the body of PATCH .../complete: no body, or an
// object without completed, toggles (nil); {"completed": bool} sets it.
func decodeCompleted(w http.ResponseWriter, r *http.Request) (*bool, error) {
	body, err := readBody(w, r)
	if err != nil || len(bytes.TrimSpace(body)) == 0 {
		return nil, err
	}
	var req struct {
		Completed field[bool] `json:"completed"`
	}
	if err := unmarshalStrict(body, &req); err != nil {
		return nil, err
	}
	if !req.Completed.Set {
		return nil, nil
	}
	if req.Completed.Null || req.Completed.Invalid {
		var errs fieldErrors
		errs.add("completed", "must be true or false (or leave it out to toggle)")
		return nil, errs.err()
	}
	return &req.Completed.Value, nil
}

// fieldError says what is wrong with one member of a request body.
type fieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// maxListedErrors bounds the fieldErrors a 422 lists; error_count says how
// many there were. A 64 KiB body can hold thousands of bad tags, and the
// answer must not be larger than the question.
const maxListedErrors = 20

// fieldErrors collects the fieldErrors of one request, keeping the first
// maxListedErrors and counting all; writeError answers it with 422.
type fieldErrors struct {
	list  []fieldError
	count int
}

func (e *fieldErrors) add(field, message string) {
	e.count++
	if len(e.list) < maxListedErrors {
		e.list = append(e.list, fieldError{Field: field, Message: message})
	}
}

// err returns e as an error, or nil when it is empty.
func (e *fieldErrors) err() error {
	if e.count == 0 {
		return nil
	}
	return e
}

// detail says what is wrong in a sentence, for clients that show only a
// problem's detail: the first few fields, and how many more there are.
func (e *fieldErrors) detail() string {
	const shown = 3
	parts := make([]string, 0, shown)
	for _, f := range e.list[:min(len(e.list), shown)] {
		parts = append(parts, f.Field+" "+f.Message)
	}
	d := "Some fields are invalid: " + strings.Join(parts, "; ")
	if e.count > shown {
		d += fmt.Sprintf("; and %d more", e.count-shown)
	}
	return d + "."
}

func (e *fieldErrors) Error() string {
	return fmt.Sprintf("%d invalid fields, first %s: %s", e.count, e.list[0].Field, e.list[0].Message)
}

// badRequestError is a request taskapi cannot read: malformed JSON, an
// unknown member, a bad query parameter. writeError answers it with 400 and
// its text as the detail.
type badRequestError string

func (e badRequestError) Error() string { return string(e) }

func badRequest(format string, args ...any) error {
	return badRequestError(fmt.Sprintf(format, args...))
}

// errTooLarge means the body is over maxBodyBytes.
var errTooLarge = fmt.Errorf("The request body is larger than %d bytes; a task is far smaller.", maxBodyBytes)

// readBody reads the whole body, up to maxBodyBytes.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if maxErr := (*http.MaxBytesError)(nil); errors.As(err, &maxErr) {
		return nil, errTooLarge
	}
	if err != nil {
		return nil, badRequest("The request body could not be read; send it again.")
	}
	return body, nil
}

// decodeJSON reads the body into dst with unmarshalStrict.
func decodeJSON(w http.ResponseWriter, r *http.Request, dst any) error {
	body, err := readBody(w, r)
	if err != nil {
		return err
	}
	return unmarshalStrict(body, dst)
}

// unmarshalStrict decodes exactly one JSON object into dst, refusing
// unknown members and anything after the object.
func unmarshalStrict(body []byte, dst any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		var syntaxErr *json.SyntaxError
		var typeErr *json.UnmarshalTypeError
		switch {
		case errors.Is(err, io.EOF):
			return badRequest("The body must be a JSON object, such as {\"title\": \"Buy milk\"}.")
		case errors.As(err, &syntaxErr):
			return badRequest("The body is not valid JSON (the error is at byte %d).", syntaxErr.Offset)
		case errors.As(err, &typeErr):
			return badRequest("The body must be a JSON object, such as {\"title\": \"Buy milk\"}.")
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			return badRequest("The body has a member taskapi does not know: %s; see /openapi.json for the task's members.",
				truncate(strings.TrimPrefix(err.Error(), "json: unknown field "), 60))
		default:
			return badRequest("The body is not valid JSON.")
		}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badRequest("The body must hold a single JSON object and nothing after it.")
	}
	return nil
}

// listParams are the query parameters of a list, each with the other names
// that frontends written for other backends give it. A parameter whose name
// starts with "_" (a cache buster) is ignored; any other is refused, so that
// a filter taskapi does not know is never silently dropped.
var listParams = []struct{ name, alias string }{
	{"status", "completed"}, {"sort", "sort_by"}, {"order", "sort_order"}, {"limit", ""}, {"cursor", ""},
	{"q", "search"}, {"priority", ""}, {"tag", ""}, {"due_before", ""}, {"due_after", ""}, {"overdue", ""},
}

// listParamNames lists listParams for messages: "status (or completed), ...".
func listParamNames() string {
	names := make([]string, len(listParams))
	for i, p := range listParams {
		names[i] = p.name
		if p.alias != "" {
			names[i] += " (or " + p.alias + ")"
		}
	}
	return strings.Join(names, ", ")
}

// listParam returns the value of the list parameter name, given under its
// own name or its alias (whose value translate turns into the name's), in
// the form norm gives both (nil: as sent). Both at once must agree.
func listParam(q url.Values, name, alias string, translate, norm func(string) string) (string, error) {
	v, a := q.Get(name), q.Get(alias)
	if a != "" && translate != nil {
		a = translate(a)
	}
	if norm != nil {
		v, a = norm(v), norm(a)
	}
	if v != "" && a != "" && v != a {
		return "", badRequest("The %s and %s parameters say different things; send only one of them.", name, alias)
	}
	return cmp.Or(v, a), nil
}

// isListParam reports whether name is one of listParams, by its own name or
// its alias.
func isListParam(name string) bool {
	return slices.ContainsFunc(listParams, func(p struct{ name, alias string }) bool {
		return name == p.name || p.alias != "" && name == p.alias
	})
}

// unknownParam returns a parameter of q that known does not accept, and
// whether there is one. A parameter whose name starts with "_" (a cache
// buster) is ignored; any other is for the caller to refuse, so that a
// parameter taskapi does not know is never silently dropped.
func unknownParam(q url.Values, known func(name string) bool) (name string, ok bool) {
	for name := range q {
		if !strings.HasPrefix(name, "_") && !known(name) {
			return name, true
		}
	}
	return "", false
}

// asksForCompleted reports whether q names the completed tasks, as the bulk
// delete requires: status=completed, or completed=true as frontends written
// for other backends say it; cache busters (_...) aside, nothing else.
func asksForCompleted(q url.Values) bool {
	named := false
	for name, values := range q {
		switch {
		case strings.HasPrefix(name, "_"):
		case len(values) == 1 && (name == "status" && values[0] == "completed" || name == "completed" && values[0] == "true"):
			named = true
		default:
			return false
		}
	}
	return named
}

// parseLimit reads the limit parameter of a list or of /changes: def when
// it is absent, else a whole number from 1 to maxLimit; any other value is
// a 400.
func parseLimit(q url.Values, def int) (int, error) {
	v := q.Get("limit")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxLimit {
		return 0, badRequest("The limit parameter must be a whole number from 1 to %d.", maxLimit)
	}
	return n, nil
}

// parseListOptions reads the list query parameters, naming the one that has a
// value it cannot use:
//
//	status=all|pending|completed (or completed=true|false)
//	sort=created|updated|title|due_date|priority (or sort_by=, also created_at, updated_at)
//	order=asc|desc (or sort_order=)   limit=1..500 (default 500)
//	q=text (or search=)               priority=low|medium|high|all
//	tag=t (repeatable)                due_before=, due_after= (RFC 3339)
//	overdue=true|false
//
// The default order is newest first for created and updated, ascending
// otherwise. The cursor parameter is read by the caller.
func parseListOptions(q url.Values) (ListOptions, error) {
	if name, ok := unknownParam(q, isListParam); ok {
		return ListOptions{}, badRequest("The query parameter %q is not one a list accepts; use %s.", truncate(name, 40), listParamNames())
	}
	opts := ListOptions{Sort: SortCreated}
	status, err := listParam(q, "status", "completed", func(v string) string {
		switch v {
		case "true":
			return "completed"
		case "false":
			return "pending"
		}
		return "completed=" + v // never valid: refused below
	}, nil)
	if err != nil {
		return ListOptions{}, err
	}
	switch status {
	case "", "all":
	case "pending", "completed":
		completed := status == "completed"
		opts.Completed = &completed
	default:
		return ListOptions{}, badRequest("The status parameter must be all, pending or completed (or completed=true or false).")
	}
	sortName, err := listParam(q, "sort", "sort_by", nil, func(v string) string {
		switch v { // the column names, as other backends take them
		case "created_at":
			return string(SortCreated)
		case "updated_at":
			return string(SortUpdated)
		}
		return v
	})
	if err != nil {
		return ListOptions{}, err
	}
	if sortName != "" {
		sort, ok := ParseSort(sortName)
		if !ok {
			return ListOptions{}, badRequest("The sort (or sort_by) parameter must be created, updated, title, due_date or priority.")
		}
		opts.Sort = sort
	}
	order, err := listParam(q, "order", "sort_order", nil, strings.ToLower)
	if err != nil {
		return ListOptions{}, err
	}
	switch order {
	case "":
		opts.Desc = opts.Sort == SortCreated || opts.Sort == SortUpdated // newest first
	case "asc", "desc":
		opts.Desc = order == "desc"
	default:
		return ListOptions{}, badRequest("The order (or sort_order) parameter must be asc or desc.")
	}
	limit, err := parseLimit(q, defaultListLimit)
	if err != nil {
		return ListOptions{}, err
	}
	opts.Limit = limit
	search, err := listParam(q, "q", "search", nil, nil)
	if err != nil {
		return ListOptions{}, err
	}
	if search != "" {
		if !validText(search, maxQuery) {
			return ListOptions{}, badRequest("The q (or search) parameter must be text of at most %d characters.", maxQuery)
		}
		opts.Query = search
	}
	if v := q.Get("priority"); v != "" && v != "all" {
		if !slices.Contains(priorities, v) {
			return ListOptions{}, badRequest("The priority parameter must be low, medium, high or all.")
		}
		opts.Priority = v
	}
	for _, tag := range q["tag"] {
		tag = trimText(tag)
		if checkText(tag, 1, maxTag) != "" {
			return ListOptions{}, badRequest("Each tag parameter must be 1 to %d characters.", maxTag)
		}
		if !slices.Contains(opts.Tags, tag) {
			if len(opts.Tags) == maxTags { // no task has more tags: nothing could match
				return ListOptions{}, badRequest("Give at most %d different tag parameters.", maxTags)
			}
			opts.Tags = append(opts.Tags, tag)
		}
	}
	for _, p := range []struct {
		name string
		dst  **time.Time
	}{{"due_before", &opts.DueBefore}, {"due_after", &opts.DueAfter}} {
		if v := q.Get(p.name); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil || !storableTime(t) {
				return ListOptions{}, badRequest("The %s parameter must be an RFC 3339 timestamp, such as 2026-12-31T00:00:00Z.", p.name)
			}
			t = t.UTC()
			*p.dst = &t
		}
	}
	switch v := q.Get("overdue"); v {
	case "":
	case "true", "false":
		overdue := v == "true"
		opts.Overdue = &overdue
	default:
		return ListOptions{}, badRequest("The overdue parameter must be true or false.")
	}
	return opts, nil
}

// validIdempotencyKey accepts 1 to maxIdempotencyKey visible ASCII
// characters.
func validIdempotencyKey(key string) bool {
	if key == "" || len(key) > maxIdempotencyKey {
		return false
	}
	for _, c := range []byte(key) {
		if c < 0x21 || c > 0x7e {
			return false
		}
	}
	return true
}
