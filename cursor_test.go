package main

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func TestCursorTampering(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	alice, bob := e.token("alice"), e.token("bob")
	seedVaried(t, e, alice, 6)
	seedVaried(t, e, bob, 6)

	res := e.do("GET", "/api/me/tasks?limit=2&sort=title", alice, nil)
	next := nextLink(t, res.Header)
	u, err := url.Parse(next)
	if err != nil {
		t.Fatal(err)
	}
	cursor := u.Query().Get("cursor")
	payload, mac, _ := strings.Cut(cursor, ".")

	flip := func(s string) string {
		b := []byte(s)
		b[len(b)/2] ^= 1
		return string(b)
	}
	for name, path := range map[string]string{
		"another user's cursor":    "/api/me/tasks?limit=2&sort=title&cursor=" + url.QueryEscape(cursor), // sent by bob
		"another sort":             "/api/me/tasks?limit=2&sort=created&cursor=" + url.QueryEscape(cursor),
		"another filter":           "/api/me/tasks?limit=2&sort=title&status=pending&cursor=" + url.QueryEscape(cursor),
		"altered payload":          "/api/me/tasks?limit=2&sort=title&cursor=" + url.QueryEscape(flip(payload)+"."+mac),
		"altered mac":              "/api/me/tasks?limit=2&sort=title&cursor=" + url.QueryEscape(payload+"."+flip(mac)),
		"not base64":               "/api/me/tasks?sort=title&cursor=%25%25%25.%25%25",
		"no mac":                   "/api/me/tasks?sort=title&cursor=" + payload,
		"empty parts":              "/api/me/tasks?sort=title&cursor=.",
		"huge":                     "/api/me/tasks?sort=title&cursor=" + strings.Repeat("A", 5000) + ".AA",
		"made-up position, no key": "/api/me/tasks?sort=title&cursor=" + "eCAwMDAwMDAwMC0wMDAwLTQwMDAtODAwMC0wMDAwMDAwMDAwMDA.AAAAAAAAAAAAAAAAAAAAAA",
	} {
		tok := alice
		if name == "another user's cursor" {
			tok = bob
		}
		res := e.do("GET", path, tok, nil)
		if res.Status != 400 {
			t.Errorf("%s: status %d, want 400 (%s)", name, res.Status, res.Body)
			continue
		}
		if p := res.problem(t); !strings.Contains(p.Detail, "cursor") {
			t.Errorf("%s: detail %q, want it to name the cursor", name, p.Detail)
		}
	}
	// The genuine cursor still works, and limit may change between pages.
	if res := e.do("GET", strings.Replace(next, "limit=2", "limit=3", 1), alice, nil); res.Status != 200 || len(res.tasks(t)) != 3 {
		t.Errorf("genuine cursor with a new limit: %d %s, want 200 with 3 tasks", res.Status, res.Body)
	}
}

// TestCursorRevealsNothing checks that a cursor carries nothing of the task
// it points after, in any decoding, though the position holds its title.
func TestCursorRevealsNothing(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	tok := e.token("private")
	for _, title := range []string{"aaa-secret-diagnosis", "bbb-secret-salary"} {
		e.do("POST", "/api/me/tasks", tok, `{"title":"`+title+`"}`)
	}
	link := e.do("GET", "/api/me/tasks?sort=title&limit=1", tok, nil).Header.Get("Link")
	u, err := url.Parse(nextLink(t, http.Header{"Link": {link}}))
	if err != nil {
		t.Fatal(err)
	}
	cursor := u.Query().Get("cursor")
	seen := []string{link, cursor}
	for _, part := range strings.Split(cursor, ".") {
		b, _ := base64.RawURLEncoding.DecodeString(part)
		seen = append(seen, string(b))
	}
	for _, s := range seen {
		if strings.Contains(s, "secret") || strings.Contains(s, "aaa") {
			t.Errorf("the cursor reveals the title: %q, want nothing of it", s)
		}
	}
	if res := e.do("GET", u.String(), tok, nil); res.Status != 200 || len(res.tasks(t)) != 1 || res.tasks(t)[0].Title != "bbb-secret-salary" {
		t.Errorf("next page: %d %s, want 200 with the one task \"bbb-secret-salary\"", res.Status, res.Body)
	}
}
