// This file makes and checks the opaque cursors of list pages: a cursor
// carries the store's position of a page's end, signed for one user and one
// list.

package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
)

// cursorCodec makes and checks the opaque cursors of list pages. A cursor
// holds the store's position of the last task of a page and an HMAC over it,
// the user and the list's scope, so a cursor that was altered, or made for
// another user or another query, is refused before the store sees it.
type cursorCodec struct {
	key []byte
}

var errBadCursor = badRequestError("The cursor is not valid for this list; start again from the first page, without a cursor.")

func (c cursorCodec) mac(userID, scope, position string) []byte {
	m := hmac.New(sha256.New, c.key)
	for _, part := range []string{userID, scope, position} {
		m.Write([]byte(part))
		m.Write([]byte{0})
	}
	return m.Sum(nil)[:16]
}

// encode returns the cursor of a position (Page.Next) in a list.
func (c cursorCodec) encode(userID, scope, position string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(position)) + "." +
		base64.RawURLEncoding.EncodeToString(c.mac(userID, scope, position))
}

// decode returns the position a cursor made by encode holds, or
// errBadCursor.
func (c cursorCodec) decode(userID, scope, cursor string) (string, error) {
	rawPosition, rawMAC, ok := strings.Cut(cursor, ".")
	if !ok || len(cursor) > 2048 {
		return "", errBadCursor
	}
	position, err1 := base64.RawURLEncoding.DecodeString(rawPosition)
	mac, err2 := base64.RawURLEncoding.DecodeString(rawMAC)
	if err1 != nil || err2 != nil || !hmac.Equal(mac, c.mac(userID, scope, string(position))) {
		return "", errBadCursor
	}
	return string(position), nil
}

// listScope describes what a list selects and in which order, but not where
// a page starts or how long it is (those members are not marshalled). A
// cursor is only valid within its scope.
func listScope(opts ListOptions) string {
	b, _ := json.Marshal(opts) // plain data: cannot fail
	return string(b)
}
