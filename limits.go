// This file holds the limits of what taskapi stores and the one rule for
// text. schema.sql's CHECK constraints and openapi.json's maxLength and
// maxItems repeat these numbers; TestLimitsAgree fails when they differ.

package main

import (
	"fmt"
	"strings"
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

// checkText returns what is wrong with s as a text of min to max characters,
// as a message to follow a field's name ("must not be empty"), or "" when
// nothing is. Text must be valid UTF-8 and free of NUL, which PostgreSQL
// cannot store in text. min is 0 or 1.
func checkText(s string, min, max int) string {
	switch n := utf8.RuneCountInString(s); {
	case !utf8.ValidString(s):
		return "must be valid UTF-8"
	case n < min:
		return "must not be empty"
	case n > max:
		return fmt.Sprintf("must be at most %d characters (got %d)", max, n)
	case strings.ContainsRune(s, 0):
		return "must not contain NUL characters"
	}
	return ""
}

// validText reports whether s passes checkText with min 0.
func validText(s string, max int) bool {
	return checkText(s, 0, max) == ""
}
