package main

import (
	"fmt"
	"math/rand/v2"
	"net/url"
	"slices"
	"testing"
)

// TestRandomInterleavingKeepsUsersApart runs a random sequence of two
// users' operations, including attempts on each other's tasks, and checks
// after every step that each user's tasks are exactly what their own
// operations made of them.
func TestRandomInterleavingKeepsUsersApart(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	users := []string{"ann", "ben"}
	tokens := map[string]string{"ann": e.token("ann"), "ben": e.token("ben")}
	model := map[string]map[string]Task{"ann": {}, "ben": {}}

	pick := func(user string) (string, bool) {
		for id := range model[user] {
			return id, true // map order is random enough
		}
		return "", false
	}
	for step := range 300 {
		user := users[rng.IntN(2)]
		other := users[1-slices.Index(users, user)]
		tok := tokens[user]
		op := rng.IntN(9)
		switch op {
		case 0, 1: // create
			res := e.do("POST", "/api/me/tasks", tok, map[string]any{
				"title": fmt.Sprintf("%s %d", user, step), "priority": priorities[rng.IntN(3)],
				"tags": []string{fmt.Sprintf("t%d", rng.IntN(3))},
			})
			if res.Status != 201 {
				t.Fatalf("step %d: create: %d, want 201", step, res.Status)
			}
			task := res.task(t)
			model[user][task.ID] = task
		case 2: // update own
			if id, ok := pick(user); ok {
				res := e.do("PATCH", "/api/me/tasks/"+id, tok, map[string]any{"title": fmt.Sprintf("%s edited %d", user, step)})
				if res.Status != 200 {
					t.Fatalf("step %d: update: %d, want 200", step, res.Status)
				}
				model[user][id] = res.task(t)
			}
		case 3: // complete own
			if id, ok := pick(user); ok {
				res := e.do("PATCH", "/api/me/tasks/"+id+"/complete", tok, nil)
				if res.Status != 200 {
					t.Fatalf("step %d: complete: %d, want 200", step, res.Status)
				}
				model[user][id] = res.task(t)
			}
		case 4: // delete own
			if id, ok := pick(user); ok {
				if res := e.do("DELETE", "/api/me/tasks/"+id, tok, nil); res.Status != 204 {
					t.Fatalf("step %d: delete: %d, want 204", step, res.Status)
				}
				delete(model[user], id)
			}
		case 5: // every write on the other user's task, through one's own path
			if id, ok := pick(other); ok {
				for _, c := range []struct{ method, path, body string }{
					{"GET", "/api/me/tasks/" + id, ""},
					{"PUT", "/api/me/tasks/" + id, `{"title":"hijacked"}`},
					{"PATCH", "/api/me/tasks/" + id + "/complete", `{"completed":true}`},
					{"DELETE", "/api/me/tasks/" + id, ""},
				} {
					var body any
					if c.body != "" {
						body = c.body
					}
					if res := e.do(c.method, c.path, tok, body); res.Status != 404 {
						t.Fatalf("step %d: %s %s on %s's task as %s: %d, want 404", step, c.method, c.path, other, user, res.Status)
					}
				}
			}
		case 6: // the other user's path
			if res := e.do("GET", "/api/"+other+"/tasks", tok, nil); res.Status != 403 {
				t.Fatalf("step %d: %s listing %s's tasks: %d, want 403", step, user, other, res.Status)
			}
		case 7: // bulk delete of own completed tasks
			if res := e.do("DELETE", "/api/me/tasks?status=completed", tok, nil); res.Status != 200 {
				t.Fatalf("step %d: bulk delete: %d, want 200", step, res.Status)
			}
			for id, task := range model[user] {
				if task.Completed {
					delete(model[user], id)
				}
			}
		case 8: // a filtered list holds only one's own matching tasks
			q := url.Values{}
			q.Set("status", []string{"all", "pending", "completed"}[rng.IntN(3)])
			q.Set("sort", []string{"created", "updated", "title", "due_date", "priority"}[rng.IntN(5)])
			q.Set("tag", fmt.Sprintf("t%d", rng.IntN(3)))
			q.Set("q", user)
			res := e.do("GET", "/api/me/tasks?"+q.Encode(), tok, nil)
			if res.Status != 200 {
				t.Fatalf("step %d: list ?%s: %d, want 200", step, q.Encode(), res.Status)
			}
			for _, task := range res.tasks(t) {
				if task.UserID != user {
					t.Fatalf("step %d: %s's list holds %s's task %s, want only %s's", step, user, task.UserID, task.ID, user)
				}
				if _, ok := model[user][task.ID]; !ok {
					t.Fatalf("step %d: %s's list holds %s, a task they do not have; want only theirs", step, user, task.ID)
				}
			}
		}
		// After every step: each user's tasks are exactly the model's.
		for _, u := range users {
			got := e.do("GET", "/api/me/tasks?limit=500", tokens[u], nil).tasks(t)
			if len(got) != len(model[u]) {
				t.Fatalf("step %d (op %d by %s): %s has %d tasks, want %d", step, op, user, u, len(got), len(model[u]))
			}
			for _, task := range got {
				want, ok := model[u][task.ID]
				if !ok || task.UserID != u || task.Title != want.Title || task.Completed != want.Completed || task.Version != want.Version {
					t.Fatalf("step %d (op %d by %s): %s's task %s is %+v, want %+v", step, op, user, u, task.ID, task, want)
				}
			}
		}
	}
}
