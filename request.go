// This file reads requests: JSON bodies, decoded strictly and validated
// field by field, and the query parameters of a list. What it refuses
// becomes a 400 or a 422 in writeError.

package main

import (
	"bytes"
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
// before encoding/json would quietly replace invalid UTF-8 with U+FFFD.
func (f *field[T]) UnmarshalJSON(b []byte) error {
	f.Set = true
	switch {
	case string(b) == "null":
		f.Null = true
	case !utf8.Valid(b):
		f.Invalid = true
	default:
		f.Invalid = json.Unmarshal(b, &f.Value) != nil
	}
	return nil
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
		title := strings.TrimSpace(f.Value)
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
		case f.Invalid:
			errs.add("due_date", "must be an RFC 3339 timestamp, such as 2026-12-31T17:00:00Z, or null")
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
// the limits.
func cleanTags(raw []string, errs *fieldErrors) []string {
	tags := make([]string, 0, min(len(raw), maxTags+1))
	seen := make(map[string]bool, len(tags))
	for i, tag := range raw {
		tag = strings.TrimSpace(tag)
		if msg := checkText(tag, 1, maxTag); msg != "" {
			errs.add(fmt.Sprintf("tags[%d]", i), msg)
		} else if !seen[tag] {
			seen[tag] = true
			tags = append(tags, tag)
		}
	}
	if len(tags) > maxTags {
		errs.add("tags", fmt.Sprintf("must hold at most %d distinct tags (got %d)", maxTags, len(tags)))
	}
	return tags
}

// decodeCompleted reads the body of PATCH .../complete: no body toggles
// (nil); {"completed": bool} sets it.
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
	if !req.Completed.Set || req.Completed.Null || req.Completed.Invalid {
		return nil, fieldErrors{{"completed", "must be true or false (or send no body to toggle)"}}
	}
	return &req.Completed.Value, nil
}

// fieldError says what is wrong with one member of a request body.
type fieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// fieldErrors collects every fieldError of one request; writeError answers
// it with 422.
type fieldErrors []fieldError

func (e *fieldErrors) add(field, message string) {
	*e = append(*e, fieldError{Field: field, Message: message})
}

// err returns e as an error, or nil when it is empty.
func (e fieldErrors) err() error {
	if len(e) == 0 {
		return nil
	}
	return e
}

func (e fieldErrors) Error() string {
	return fmt.Sprintf("%d invalid fields, first %s: %s", len(e), e[0].Field, e[0].Message)
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
var errTooLarge = fmt.Errorf("request body is larger than %d bytes", maxBodyBytes)

// readBody reads the whole body, up to maxBodyBytes.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if maxErr := (*http.MaxBytesError)(nil); errors.As(err, &maxErr) {
		return nil, errTooLarge
	}
	if err != nil {
		return nil, badRequest("could not read the body: %v", err)
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
			return badRequest("the body must be a JSON object")
		case errors.As(err, &syntaxErr):
			return badRequest("the body is not valid JSON (at byte %d)", syntaxErr.Offset)
		case errors.As(err, &typeErr):
			return badRequest("the body must be a JSON object")
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			return badRequest("the body has an unknown member %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
		default:
			return badRequest("the body is not valid JSON: %v", err)
		}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badRequest("the body must hold a single JSON object and nothing after it")
	}
	return nil
}

// Limits of the list query parameters.
const (
	defaultLimit = 100
	maxLimit     = 500
)

// parseListOptions reads the list query parameters, naming the one that has a
// value it cannot use:
//
//	status=all|pending|completed  sort=created|updated|title|due_date|priority
//	order=asc|desc                limit=1..500 (default 100)
//	q=text                        priority=low|medium|high
//	tag=t (repeatable)            due_before=, due_after= (RFC 3339)
//	overdue=true|false
//
// The default order is newest first for created and updated, ascending
// otherwise. The cursor parameter is read by the caller.
func parseListOptions(q url.Values) (ListOptions, error) {
	opts := ListOptions{Sort: SortCreated, Limit: defaultLimit}
	switch status := q.Get("status"); status {
	case "", "all":
	case "pending", "completed":
		completed := status == "completed"
		opts.Completed = &completed
	default:
		return ListOptions{}, badRequest("status must be all, pending or completed")
	}
	if v := q.Get("sort"); v != "" {
		sort, ok := ParseSort(v)
		if !ok {
			return ListOptions{}, badRequest("sort must be created, updated, title, due_date or priority")
		}
		opts.Sort = sort
	}
	switch order := q.Get("order"); order {
	case "":
		opts.Desc = opts.Sort == SortCreated || opts.Sort == SortUpdated // newest first
	case "asc", "desc":
		opts.Desc = order == "desc"
	default:
		return ListOptions{}, badRequest("order must be asc or desc")
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxLimit {
			return ListOptions{}, badRequest("limit must be a whole number from 1 to %d", maxLimit)
		}
		opts.Limit = n
	}
	if v := q.Get("q"); v != "" {
		if !validText(v, maxQuery) {
			return ListOptions{}, badRequest("q must be text of at most %d characters", maxQuery)
		}
		opts.Query = v
	}
	if v := q.Get("priority"); v != "" {
		if !slices.Contains(priorities, v) {
			return ListOptions{}, badRequest("priority must be low, medium or high")
		}
		opts.Priority = v
	}
	for _, tag := range q["tag"] {
		tag = strings.TrimSpace(tag)
		if checkText(tag, 1, maxTag) != "" {
			return ListOptions{}, badRequest("tag must be 1 to %d characters", maxTag)
		}
		if !slices.Contains(opts.Tags, tag) {
			opts.Tags = append(opts.Tags, tag)
		}
	}
	for _, p := range []struct {
		name string
		dst  **time.Time
	}{{"due_before", &opts.DueBefore}, {"due_after", &opts.DueAfter}} {
		if v := q.Get(p.name); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return ListOptions{}, badRequest("%s must be an RFC 3339 timestamp, such as 2026-12-31T00:00:00Z", p.name)
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
		return ListOptions{}, badRequest("overdue must be true or false")
	}
	return opts, nil
}

// validIdempotencyKey accepts 1 to 255 visible ASCII characters.
func validIdempotencyKey(key string) bool {
	if key == "" || len(key) > 255 {
		return false
	}
	for _, c := range []byte(key) {
		if c < 0x21 || c > 0x7e {
			return false
		}
	}
	return true
}
