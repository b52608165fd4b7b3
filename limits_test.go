package main

import (
	"encoding/json"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestLimitsAgree fails when schema.sql's CHECK constraints or openapi.json's
// maxLength, maxItems and maximum disagree with the limits in limits.go, or
// when one of the properties and parameters they are for lacks its limit.
func TestLimitsAgree(t *testing.T) {
	t.Parallel()
	schema, err := os.ReadFile("schema.sql")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		pattern string
		want    int
	}{
		{`char_length\(title\) BETWEEN 1 AND (\d+)`, maxTitle},
		{`char_length\(description\) <= (\d+)`, maxDescription},
		{`cardinality\(tags\) <= (\d+)`, maxTags},
		{`char_length\(t\) BETWEEN 1 AND (\d+)`, maxTag},
		{`char_length\(id\) BETWEEN 1 AND (\d+)`, maxUserID},
		{`char_length\(key\) BETWEEN 1 AND (\d+)`, maxIdempotencyKey},
	} {
		m := regexp.MustCompile(c.pattern).FindAllSubmatch(schema, -1)
		if len(m) != 1 {
			t.Errorf("schema.sql: %d matches of %s, want 1", len(m), c.pattern)
			continue
		}
		if got, _ := strconv.Atoi(string(m[0][1])); got != c.want {
			t.Errorf("schema.sql: %s has %d, want %d", c.pattern, got, c.want)
		}
	}

	// Every limit in openapi.json, by what it limits: a schema property
	// (prop:title), a parameter (param:q), [] for an array's items.
	want := map[string]int{
		"prop:title maxLength": maxTitle, "prop:description maxLength": maxDescription,
		"prop:tags maxItems": maxTags, "prop:tags[] maxLength": maxTag, "prop:user_id maxLength": maxUserID,
		"param:user_id maxLength": maxUserID, "param:Idempotency-Key maxLength": maxIdempotencyKey,
		"param:q maxLength": maxQuery, "param:search maxLength": maxQuery, "param:tag[] maxLength": maxTag, "param:limit maximum": maxLimit,
	}
	// Properties with a name above that are not a task's field, and carry
	// no limit: a problem's title is RFC 9457's.
	notLimited := map[string]bool{"/components/schemas/Problem/properties/title": true}
	// subject is what a key of want limits: prop:tags for "prop:tags[] maxLength".
	subject := func(key string) string {
		what, _, _ := strings.Cut(key, " ")
		return strings.TrimSuffix(what, "[]")
	}
	var doc any
	if err := json.Unmarshal([]byte(openAPIDocument), &doc); err != nil {
		t.Fatal(err)
	}
	// child is the JSON pointer of the member k of pointer.
	escape := strings.NewReplacer("~", "~0", "/", "~1")
	child := func(pointer, k string) string { return pointer + "/" + escape.Replace(k) }
	// places are the properties and parameters that a limit is for, by
	// their JSON pointer, each with the limits found in it.
	type place struct {
		what  string // prop:title, param:q
		found map[string]bool
	}
	places := map[string]*place{}
	// enter returns the place at pointer, recorded, when a limit is for
	// what; otherwise nil.
	enter := func(what, pointer string) *place {
		for key := range want {
			if subject(key) == what && !notLimited[pointer] {
				p := &place{what: what, found: map[string]bool{}}
				places[pointer] = p
				return p
			}
		}
		return nil
	}
	found := map[string]bool{}
	var walk func(v any, where, pointer string, in *place)
	walk = func(v any, where, pointer string, in *place) {
		switch v := v.(type) {
		case []any:
			for i, x := range v {
				walk(x, where, child(pointer, strconv.Itoa(i)), in)
			}
		case map[string]any:
			if name, ok := v["name"].(string); ok && v["in"] != nil {
				where = "param:" + name
				in = enter(where, pointer)
			}
			for _, k := range []string{"maxLength", "maxItems", "maximum"} {
				n, ok := v[k].(float64)
				if !ok {
					continue
				}
				key := where + " " + k
				limit, known := want[key]
				switch {
				case !known:
					t.Errorf("openapi.json: %s is %v, a limit that limits.go does not know; want only known limits", key, n)
				case int(n) != limit:
					t.Errorf("openapi.json: %s is %v, want %d", key, n, limit)
				}
				found[key] = true
				if in != nil {
					in.found[key] = true
				}
			}
			for k, x := range v {
				switch {
				case k == "properties":
					for name, p := range x.(map[string]any) {
						at := child(child(pointer, k), name)
						walk(p, "prop:"+name, at, enter("prop:"+name, at))
					}
				case k == "items":
					walk(x, where+"[]", child(pointer, k), in)
				default:
					walk(x, where, child(pointer, k), in)
				}
			}
		}
	}
	walk(doc, "", "", nil)
	for key := range want {
		if !found[key] {
			t.Errorf("openapi.json has no %s; want %d", key, want[key])
		}
	}
	// Every property and parameter that a limit is for carries it, wherever
	// it stands: the limit found in one place does not stand for another.
	for pointer, p := range places {
		for key, limit := range want {
			if subject(key) == p.what && !p.found[key] {
				t.Errorf("openapi.json: %s has no %s; want %d", pointer, key, limit)
			}
		}
	}
	if len(places) == 0 {
		t.Error("openapi.json: found no property or parameter that a limit is for; the test no longer sees them")
	}
}
