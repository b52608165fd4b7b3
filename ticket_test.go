package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestEventsTickets opens a stream with a ticket instead of a header, and
// refuses forged, expired and other users' tickets. No log line holds one.
func TestEventsTickets(t *testing.T) {
	t.Parallel()
	e := newLiveEnv(t, testEventsConfig())
	tok := e.token("ticketed")
	res := e.do("POST", "/api/me/events/ticket", tok, nil)
	var tk struct {
		Ticket    string    `json:"ticket"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	if err := json.Unmarshal(res.Body, &tk); err != nil || res.Status != 200 || tk.Ticket == "" {
		t.Fatalf("ticket: %d %s, want 200 with a ticket", res.Status, res.Body)
	}
	if d := time.Until(tk.ExpiresAt); d > 61*time.Second || d < 50*time.Second {
		t.Errorf("ticket expires in %v, want about 60 s", d)
	}
	s := openStream(t, e.srv.URL, "/api/ticketed/events?ticket="+tk.Ticket, "", nil)
	e.do("POST", "/api/me/tasks", tok, `{"title":"seen"}`)
	if ev := s.next(); ev.Event != "task.created" {
		t.Errorf("with a ticket: %+v, want task.created", ev)
	}
	if _, status := dialStream(t, e.srv.URL, "/api/me/events?ticket="+tk.Ticket, "", nil); status != 200 {
		t.Errorf("ticket with /me: %d, want 200", status)
	}

	codec := newTicketCodec([]byte("test events key"))
	now := time.Now()
	forged := tk.Ticket[:len(tk.Ticket)-2] + map[bool]string{true: "AA", false: "AB"}[strings.HasSuffix(tk.Ticket, "AB")]
	for _, c := range []struct {
		name, path string
		want       int
	}{
		{"forged", "/api/ticketed/events?ticket=" + forged, 401},
		{"other key", "/api/ticketed/events?ticket=" + newTicketCodec([]byte("another key")).mint("ticketed", now.Add(time.Minute), now.Add(time.Hour)), 401},
		{"expired", "/api/ticketed/events?ticket=" + codec.mint("ticketed", now.Add(-time.Second), now.Add(time.Hour)), 401},
		{"garbage", "/api/ticketed/events?ticket=x.y", 401},
		{"other user", "/api/someone-else/events?ticket=" + tk.Ticket, 403},
		{"another user's ticket", "/api/someone-else/events?ticket=" + codec.mint("ticketed", now.Add(time.Minute), now.Add(time.Hour)), 403},
		{"no ticket, no token", "/api/ticketed/events", 401},
		{"ticket on another route", "/api/me/tasks?ticket=" + tk.Ticket, 401},
		{"ticket on changes", "/api/me/changes?ticket=" + tk.Ticket, 401},
	} {
		if _, status := dialStream(t, e.srv.URL, c.path, "", nil); status != c.want {
			t.Errorf("%s: %d, want %d", c.name, status, c.want)
		}
	}
	// A ticket for the stream ends it when its window does.
	short := codec.mint("ticketed", now.Add(time.Minute), now.Add(1500*time.Millisecond))
	sh := openStream(t, e.srv.URL, "/api/me/events?ticket="+short, "", nil)
	sh.waitEnded(5 * time.Second)

	if logs := e.logs.String(); strings.Contains(logs, tk.Ticket) || strings.Contains(logs, tk.Ticket[:20]) || strings.Contains(logs, "ticket=") {
		t.Errorf("a ticket is in the logs, want none:\n%s", logs)
	}
	if !strings.Contains(e.logs.String(), `"route":"GET /api/{user_id}/events"`) {
		t.Error("the stream's request was not logged by its route")
	}
}

// TestEventsTokenExpiry ends a stream when its token expires.
func TestEventsTokenExpiry(t *testing.T) {
	t.Parallel()
	e := newLiveEnv(t, testEventsConfig())
	// The token's exp is in whole seconds, no earlier than this: 2 to 3 s
	// away, so that the stream opens before it (an expired token is a 401).
	expires := time.Unix(time.Now().Add(3*time.Second).Unix(), 0)
	tok, err := mintToken(testSecret, User{ID: "brief"}, "", "", 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	s := openStream(t, e.srv.URL, "/api/me/events", tok, nil)
	s.waitEnded(6 * time.Second)
	if early := time.Until(expires); early > 0 {
		t.Errorf("the stream ended %v before its token expired, want it open until then", early)
	}
	// The hub counts a stream until its connection is closed, just after
	// the client saw it end.
	waitFor(t, func() bool { return e.hub.count("") == 0 })
}
