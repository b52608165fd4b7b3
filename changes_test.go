package main

import (
	"strings"
	"testing"
)

// TestDeletedTaskLeavesNoHistory checks that the history keeps nothing of a
// deleted task but the fact of its deletion, deleted alone or in bulk.
func TestDeletedTaskLeavesNoHistory(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	tok := e.token("forgetful")
	one := e.do("POST", "/api/me/tasks", tok, `{"title":"secret one"}`).task(t)
	e.do("PATCH", "/api/me/tasks/"+one.ID, tok, `{"description":"secret details"}`)
	e.do("POST", "/api/me/tasks", tok, `{"title":"secret two","completed":true}`)
	e.do("POST", "/api/me/tasks", tok, `{"title":"kept"}`)
	e.do("DELETE", "/api/me/tasks/"+one.ID, tok, nil)
	e.do("DELETE", "/api/me/tasks?status=completed", tok, nil)
	rows, err := e.db.Query(`SELECT event, coalesce(title, '') || coalesce(description, '') FROM task_changes WHERE user_id = 'forgetful' ORDER BY position`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var events []string
	for rows.Next() {
		var event, text string
		rows.Scan(&event, &text)
		if strings.Contains(text, "secret") {
			t.Errorf("the history still holds a deleted task: %s %q, want nothing of it", event, text)
		}
		events = append(events, event)
	}
	if want := "task.created,task.deleted,tasks.deleted"; strings.Join(events, ",") != want {
		t.Errorf("history %v, want %s", events, want)
	}
}
