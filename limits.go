// This file holds the limits of what taskapi stores and answers, and the one
// rule for text. schema.sql's CHECK constraints and openapi.json's
// maxLength, maxItems and maximum repeat these numbers; TestLimitsAgree
// fails when they differ.

package main

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits of a task's fields and of the identifiers taskapi stores, in
// characters (Unicode code points), as PostgreSQL's char_length counts them.
const (
	maxTitle          = 200
	maxDescription    = 1000
	maxTags           = 20 // distinct tags on one task
	maxTag            = 50
	maxUserID         = 255
	maxIdempotencyKey = 255
	maxQuery          = 200 // the q search text of a list
)

// Limits of the profile claims of a token that taskapi keeps (cleanClaim),
// in characters: an email address has at most 320 (RFC 5321: 64 before the
// @ and 255 after it). A longer claim is dropped, not refused.
const (
	maxEmailClaim = 320
	maxNameClaim  = 255
)

// Limits of an answer: the limit parameter of a list and of /changes is 1 to
// maxLimit. A list without a limit is one full page, so that clients that
// never read the Link header see every task of a list of up to maxLimit.
const (
	maxLimit            = 500
	defaultListLimit    = maxLimit
	defaultChangesLimit = 100
)

// checkText returns what is wrong with s as a text of min to max characters,
// as a message to follow a field's name ("must not be empty"), or "" when
// nothing is. Text must be valid UTF-8 and free of NUL, which PostgreSQL
// cannot store in text. min is 0 or 1; with 1, the text must also show
// something: a title of only invisible characters is empty.
func checkText(s string, min, max int) string {
	switch n := utf8.RuneCountInString(s); {
	case !utf8.ValidString(s):
		return "must be valid UTF-8"
	case n < min || min > 0 && !strings.ContainsFunc(s, visible):
		return "must not be empty"
	case n > max:
		return fmt.Sprintf("must be at most %d characters (got %d)", max, n)
	case strings.ContainsRune(s, 0):
		return "must not contain NUL characters"
	}
	return ""
}

// visible reports whether r shows as something: not white space, not a
// control or format character (such as a zero-width space, a joiner or a
// byte order mark), not a combining mark alone, and not one of the filler
// characters that render as blank.
func visible(r rune) bool {
	return !blankFiller(r) && !unicode.IsSpace(r) && !unicode.In(r, unicode.Cc, unicode.Cf, unicode.Co, unicode.Cs, unicode.Mn, unicode.Me, unicode.Zs, unicode.Zl, unicode.Zp)
}

// trimText trims white space, format characters (such as a zero-width space
// or a byte order mark) and blank fillers from both ends of s: how titles
// and tags are stored, so that "a" and "a\u200b" are one tag. Nothing else
// is changed: no case folding and no Unicode normalization, and control
// characters stay, to be refused.
func trimText(s string) string {
	return strings.TrimFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.Is(unicode.Cf, r) || blankFiller(r) })
}

// blankFiller reports whether r is one of the letters that render as blank.
func blankFiller(r rune) bool {
	return r == '\u115F' || r == '\u1160' || r == '\u2800' || r == '\u3164' || r == '\uFFA0'
}

// validText reports whether s passes checkText with min 0.
func validText(s string, max int) bool {
	return checkText(s, 0, max) == ""
}

// truncate shortens s to at most n bytes of whole characters, for quoting
// what a client sent in a message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
