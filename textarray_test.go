package main

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgtype"
)

// TestTextArrayRoundTrip stores arrays of awkward strings in PostgreSQL and
// reads them back through textArray: PostgreSQL quotes and escapes them in
// its text form, and parseTextArray must undo exactly that.
func TestTextArrayRoundTrip(t *testing.T) {
	t.Parallel()
	db, _ := newTestDB(t)
	pieces := []string{"a", "Z", "0", " ", "\t", "\n", "\r", "\v", "\f", `"`, `\`, "{", "}", ",", "NULL", "null", "é", "😀", "'", "[1:2]=", "\u2028"}
	rng := rand.New(rand.NewPCG(1, 2))
	cases := [][]string{{}, {"a"}, {"NULL"}, {"null"}, {`\`}, {`"`}, {" "}, {"a b", "c,d", "{e}"}}
	for range 300 {
		tags := make([]string, rng.IntN(5))
		for i := range tags {
			for range 1 + rng.IntN(4) {
				tags[i] += pieces[rng.IntN(len(pieces))]
			}
		}
		cases = append(cases, tags)
	}
	for _, want := range cases {
		var got textArray
		if err := db.QueryRow(`SELECT $1::text[]`, want).Scan(&got); err != nil {
			t.Fatalf("%q: %v", want, err)
		}
		if got == nil || !slices.Equal(got, want) {
			t.Fatalf("stored %q, read %q", want, []string(got))
		}
	}
}

// TestParseTextArrayRefuses checks that text which is not a one-dimensional
// array without NULLs is an error, never a guess or a panic.
func TestParseTextArrayRefuses(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "{", "}", "a", "{a", "a}", "{a,}", "{,a}", "{a,,b}", `{"a}`, `{"a"b}`, `{a"b}`,
		`{"a\"}`, `{a\b}`, "{{a}}", "{NULL}", "{a,null}", "[0:1]={a,b}", `{"a",}`, "{ }x"} {
		if got, err := parseTextArray(s); err == nil {
			t.Errorf("parseTextArray(%q) = %q, want an error", s, got)
		}
	}
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
			t.Fatalf("parseTextArray(%q) = %q, but PostgreSQL refuses it (%v); want an error", s, got, err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("parseTextArray(%q) = %q, PostgreSQL reads %q", s, got, want)
		}
	})
}
