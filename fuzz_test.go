package main

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgtype"
)

// The fuzz targets check that nothing a client sends gets a 500 or a
// panic, and that a refused request changes nothing. Their seed corpora are
// in testdata/fuzz; .ci/run fuzzes each for a short while on top of them.

// FuzzTaskBody sends arbitrary bodies to create and to update.
func FuzzTaskBody(f *testing.F) {
	for _, seed := range []string{
		`{"title":"a"}`, `{"title":" b ","description":null,"tags":["x","x"],"priority":"low","due_date":"2026-01-01T00:00:00Z","completed":true}`,
		`{"title":"` + strings.Repeat("😀", 200) + `"}`, "{\"title\":\"\xff\"}", `{"title":"a\u0000"}`, `{"tags":[1,2]}`,
		`{"due_date":"2026-13-45T99:99:99Z"}`, `[]`, `null`, `{"title":"a"} x`, `{"title":{"nested":true}}`, ``,
	} {
		f.Add([]byte(seed))
	}
	e := newTestEnv(f, nil)
	tok := e.token("fuzzer")
	victim := e.do("POST", "/api/me/tasks", tok, `{"title":"victim","description":"keep"}`).task(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		fe := *e
		fe.t = t
		before := countTasksIn(t, &fe, "fuzzer")
		res := fe.do("POST", "/api/me/tasks", tok, body)
		switch {
		case res.Status >= 500:
			t.Fatalf("create: %d for %q: %s", res.Status, body, res.Body)
		case res.Status == 201:
			if n := countTasksIn(t, &fe, "fuzzer"); n != before+1 {
				t.Fatalf("a 201 left %d tasks, want %d", n, before+1)
			}
		default:
			if n := countTasksIn(t, &fe, "fuzzer"); n != before {
				t.Fatalf("a refused create (%d) changed the task count %d → %d", res.Status, before, n)
			}
		}
		current := fe.do("GET", "/api/me/tasks/"+victim.ID, tok, nil).task(t)
		res = fe.do("PATCH", "/api/me/tasks/"+victim.ID, tok, body)
		switch {
		case res.Status >= 500:
			t.Fatalf("update: %d for %q: %s", res.Status, body, res.Body)
		case res.Status != 200:
			if after := fe.do("GET", "/api/me/tasks/"+victim.ID, tok, nil).task(t); after.Version != current.Version {
				t.Fatalf("a refused update (%d) changed the task", res.Status)
			}
		}
	})
}

// FuzzBearer sends arbitrary Authorization headers through token checking.
func FuzzBearer(f *testing.F) {
	ed := newEd25519Key(f, "ed-1")
	jwks := newJWKSServer(f, ed.jwk(f))
	valid, err := mintToken(testSecret, User{ID: "fuzz"}, "", "", time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		"Bearer " + valid, "Bearer " + ed.sign(f, betterAuthClaims("fuzz")), "bearer x.y.z", "Bearer", "Basic abc",
		"Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "Bearer " + strings.Repeat("a.", 5000),
	} {
		f.Add(seed)
	}
	v := NewVerifier(*jwksConfig(jwks.URL), testLogger())
	f.Fuzz(func(t *testing.T, header string) {
		raw, ok := bearerToken(header)
		if !ok {
			return
		}
		u, err := v.Verify(context.Background(), raw)
		if err == nil && u.ID != "fuzz" {
			t.Fatalf("header %q verified as %+v", header, u)
		}
		if err != nil && !isAuthError(err) {
			t.Fatalf("header %q: unexpected error kind %v", header, err)
		}
	})
}

// FuzzListQuery sends arbitrary query strings, cursors included, to the list.
func FuzzListQuery(f *testing.F) {
	for _, seed := range []string{
		"limit=2&sort=title", "status=pending&sort=due_date&order=desc&tag=a&tag=b&q=%25_", "cursor=abc.def",
		"limit=-1", "due_before=2026-01-01T00:00:00Z&overdue=true", "sort=priority&cursor=" + strings.Repeat("A", 100) + ".AA",
		"q=%00", "tag=&limit=500", "%zz",
	} {
		f.Add(seed)
	}
	e := newTestEnv(f, nil)
	tok := e.token("lister")
	for i := range 5 {
		e.do("POST", "/api/me/tasks", tok, map[string]any{"title": strings.Repeat("t", i+1), "tags": []string{"a"}})
	}
	f.Fuzz(func(t *testing.T, query string) {
		fe := *e
		fe.t = t
		if strings.ContainsFunc(query, func(r rune) bool { return r <= ' ' || r == '#' || r == 0x7f }) {
			return // not a query string a client can send
		}
		res := fe.do("GET", "/api/me/tasks?"+query, tok, nil)
		if res.Status >= 500 {
			t.Fatalf("?%s: %d %s", query, res.Status, res.Body)
		}
	})
}

// FuzzAppendTask checks the hand-written task encoder against encoding/json
// on arbitrary strings (invalid UTF-8 included) and times. The encoder is
// pure, so this target needs no database and runs fast.
func FuzzAppendTask(f *testing.F) {
	for _, seed := range []string{"", "plain", "<a href=\"x\">&amp;</a>", "tab\tnew\nline\r\\back", "\x00\x01\x1f\x7f",
		"\u2028\u2029", "é😀", "\xff\xfe", "a\xc3", "\xed\xa0\x80"} {
		f.Add(seed, int64(1767225600123456789), true)
	}
	f.Fuzz(func(t *testing.T, s string, nanos int64, flag bool) {
		at := time.Unix(0, nanos).UTC()
		task := Task{ID: s, UserID: s, Title: s, Completed: flag, Priority: s, Tags: []string{s, s + s},
			CreatedAt: at, UpdatedAt: at.Add(time.Duration(len(s))), Version: nanos}
		if flag {
			task.Description, task.DueDate = &s, &at
		}
		want, err := json.Marshal(task)
		if err != nil {
			return // a time json.Marshal refuses; tasks come from the database and never have one
		}
		if got := appendTask(nil, &task); !bytes.Equal(got, want) {
			t.Fatalf("appendTask(%+v)\n got %s\nwant %s", task, got, want)
		}
	})
}

// FuzzParseTextArray checks parseTextArray against PostgreSQL: whatever it
// accepts, PostgreSQL reads as the same elements.
func FuzzParseTextArray(f *testing.F) {
	for _, seed := range []string{"{}", "{a}", `{a,"b c","\\"","\\\\",NULLX,"NULL",""}`, `{"{}",",","a\\b"}`, "{a,}", `{"`, "{é,😀}"} {
		f.Add(seed)
	}
	db, _ := newTestDB(f)
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) || strings.ContainsRune(s, 0) {
			return // text PostgreSQL cannot hold, so cannot send
		}
		got, err := parseTextArray(s)
		if err != nil {
			return
		}
		var want []string
		if err := db.QueryRow(`SELECT $1::text::text[]`, s).Scan(pgtype.NewMap().SQLScanner(&want)); err != nil {
			t.Fatalf("parseTextArray(%q) = %q, but PostgreSQL refuses it: %v", s, got, err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("parseTextArray(%q) = %q, PostgreSQL reads %q", s, got, want)
		}
	})
}
