// This file makes and checks the opaque cursors of list pages: a cursor
// carries the store's position of a page's end, encrypted and bound to one
// user and one list, so that it reveals nothing of the tasks.

package main

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
)

// cursorCodec makes and checks the cursors of list pages. A cursor is the
// store's position of the last task of a page (which holds its sort key: a
// title, say) sealed with AES-256-GCM, with the user and the list's scope as
// additional data: it reveals nothing of the task, and a cursor that was
// altered, or made for another user or another query, is refused before the
// store sees it. It is safe for concurrent use.
type cursorCodec struct {
	aead cipher.AEAD
}

// newCursorCodec returns a codec whose key is derived from secret, which
// every instance shares (the "cursor" server key).
func newCursorCodec(secret []byte) cursorCodec {
	key := sha256.Sum256(append([]byte("taskapi cursor\x00"), secret...))
	block, err := aes.NewCipher(key[:])
	if err != nil {
		panic(err) // a 32-byte key is always valid
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return cursorCodec{aead: aead}
}

var errBadCursor = badRequestError("The cursor is not valid for this list; start again from the first page, without a cursor.")

// additionalData binds a cursor to a user and a list.
func additionalData(userID, scope string) []byte {
	return []byte(userID + "\x00" + scope)
}

// encode returns the cursor of a position (Page.Next) in a list: a random
// nonce and the sealed position, each in base64url, joined by a dot.
func (c cursorCodec) encode(userID, scope, position string) string {
	nonce := make([]byte, c.aead.NonceSize())
	rand.Read(nonce)
	sealed := c.aead.Seal(nil, nonce, []byte(position), additionalData(userID, scope))
	return base64.RawURLEncoding.EncodeToString(nonce) + "." + base64.RawURLEncoding.EncodeToString(sealed)
}

// decode returns the position a cursor made by encode holds, or
// errBadCursor.
func (c cursorCodec) decode(userID, scope, cursor string) (string, error) {
	rawNonce, rawSealed, ok := strings.Cut(cursor, ".")
	if !ok || len(cursor) > 2048 {
		return "", errBadCursor
	}
	nonce, err1 := base64.RawURLEncoding.DecodeString(rawNonce)
	sealed, err2 := base64.RawURLEncoding.DecodeString(rawSealed)
	if err1 != nil || err2 != nil || len(nonce) != c.aead.NonceSize() {
		return "", errBadCursor
	}
	position, err := c.aead.Open(nil, nonce, sealed, additionalData(userID, scope))
	if err != nil {
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
