// taskapi from the browser: every call sends the signed-in user's short-lived JWT (kept until shortly before
// it expires) as a bearer token to taskapi's origin. No cookies go to taskapi (no credentials: "include"): it needs only the token.
import { authClient } from "./auth-client";

export type Priority = "low" | "medium" | "high";
export type Task = {
  id: string;
  title: string;
  description: string | null;
  completed: boolean;
  priority: Priority;
  due_date: string | null; // RFC 3339, in UTC
  tags: string[];
  created_at: string;
  updated_at: string;
  version: number; // the ETag is this number in quotes
};
export type TaskInput = {
  title: string;
  description?: string | null;
  priority?: Priority;
  due_date?: string | null;
  tags?: string[];
};
export type ListQuery = {
  status?: "all" | "pending" | "completed";
  sort?: "created" | "updated" | "title" | "due_date" | "priority";
  order?: "asc" | "desc";
};
export type TokenMode = "jwks" | "hs256";
/** What the event stream says happened (account.deleted and reload both mean: refetch the list). */
export type TaskEvent =
  | { type: "task.created" | "task.updated"; task: Task }
  | { type: "task.deleted"; id: string }
  | { type: "tasks.deleted"; ids: string[] }
  | { type: "account.deleted" | "reload" };

/** taskapi's answer to a failed request: an RFC 9457 problem (detail, and errors for each invalid field). */
export class TaskApiError extends Error {
  constructor(
    readonly status: number,
    readonly problem: { title?: string; detail?: string; errors?: { field: string; message: string }[] },
  ) {
    const fields = problem.errors?.map((e) => `${e.field} ${e.message}`).join("; ");
    super(fields || problem.detail || problem.title || `HTTP ${status}`);
  }
}

// jwks: Better Auth's JWT plugin signs the token (EdDSA); taskapi checks it with the keys at /api/auth/jwks.
// hs256: this app's route /api/taskapi-token signs it with the BETTER_AUTH_SECRET that taskapi shares.
async function fetchToken(mode: TokenMode): Promise<string> {
  if (mode === "hs256") {
    const res = await fetch("/api/taskapi-token");
    if (!res.ok) throw new Error(`no token (HTTP ${res.status})`);
    return (await res.json()).token;
  }
  const { data, error } = await authClient.token();
  if (!data) throw new Error(error?.message || "no token: not signed in");
  return data.token;
}

// One token per lifetime: it is kept (in memory, never in storage) until a minute before its exp, and
// calls made meanwhile share one request for the next. Sign-out must call forgetToken().
let cached: { token: string; exp: number } | undefined;
let pending: Promise<string> | undefined;
function getToken(mode: TokenMode): Promise<string> {
  if (cached && Date.now() < cached.exp - 60_000) return Promise.resolve(cached.token);
  pending ??= fetchToken(mode)
    .then((token) => {
      const claims = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
      cached = { token, exp: claims.exp * 1000 };
      return token;
    })
    .finally(() => (pending = undefined));
  return pending;
}
/** Drops the cached token: at sign-out, and when taskapi refuses it (401). */
export function forgetToken() {
  cached = undefined;
}

/** The routes of taskapi the app uses, at baseUrl (taskapi's origin, e.g. http://localhost:8080). */
export function taskapi(baseUrl: string, mode: TokenMode = "jwks") {
  async function call<T>(path: string, init: RequestInit = {}, retried = false): Promise<T> {
    const token = await getToken(mode);
    const res = await fetch(`${baseUrl}/api/me${path}`, {
      ...init,
      headers: {
        Authorization: `Bearer ${token}`,
        ...(init.body ? { "Content-Type": "application/json" } : {}),
        ...init.headers,
      },
    });
    if (res.status === 401 && !retried) {
      forgetToken(); // expired early, or signed by a key taskapi no longer trusts: one fresh token, once
      return call<T>(path, init, true);
    }
    if (!res.ok) throw new TaskApiError(res.status, await res.json().catch(() => ({})));
    return res.status === 204 ? (undefined as T) : res.json();
  }
  const json = (body: unknown) => JSON.stringify(body);

  // A ticket opens an event stream for 60 seconds: an EventSource cannot send the token in a header.
  const ticket = () => call<{ ticket: string; expires_at: string }>("/events/ticket", { method: "POST" });

  /**
   * Live updates: calls onEvent with each change to the user's tasks, made anywhere, until the returned
   * function is called. A stream ends when its token expires and a ticket is good for a minute only, so
   * on any error it opens a new stream with a fresh ticket, resuming after the last event it saw
   * (?since=; EventSource sends Last-Event-ID only on reconnects of its own). A stream that starts from
   * now (the first, or one before any event) reports a reload: a change may have come before it. When the
   * browser comes back online, a stream waiting to reconnect does so at once.
   */
  function events(onEvent: (e: TaskEvent) => void): () => void {
    let source: EventSource | undefined, lastId = "", stopped = false, wait = 1000;
    let retry: ReturnType<typeof setTimeout> | undefined;
    const again = () => {
      source?.close();
      if (!stopped) retry = setTimeout(open, wait);
      wait = Math.min(wait * 2, 30_000);
    };
    const online = () => {
      if (retry === undefined) return; // open, or opening
      clearTimeout(retry);
      wait = 1000;
      open();
    };
    async function open() {
      retry = undefined;
      let t: string;
      try {
        t = (await ticket()).ticket;
      } catch {
        return again(); // signed out, or taskapi unreachable: try later
      }
      if (stopped) return;
      const since = lastId ? `&since=${lastId}` : "";
      const es = (source = new EventSource(`${baseUrl}/api/me/events?ticket=${encodeURIComponent(t)}${since}`));
      es.onopen = () => {
        wait = 1000;
        if (!since) onEvent({ type: "reload" });
      };
      es.onerror = again;
      for (const type of ["task.created", "task.updated", "task.deleted", "tasks.deleted", "account.deleted", "reload"] as const) {
        es.addEventListener(type, (m) => {
          lastId = m.lastEventId || lastId;
          const data = JSON.parse(m.data); // a task, {id}, {ids} or {}
          onEvent(type === "task.created" || type === "task.updated" ? { type, task: data } : { type, ...data });
        });
      }
    }
    open();
    window.addEventListener("online", online);
    return () => {
      stopped = true;
      clearTimeout(retry);
      source?.close();
      window.removeEventListener("online", online);
    };
  }

  return {
    list: (q: ListQuery = {}) => call<Task[]>(`/tasks?${new URLSearchParams(q as Record<string, string>)}`),
    get: (id: string) => call<Task>(`/tasks/${id}`),
    // Idempotency-Key: a retry of the same create (a double click, a replay after a lost answer) makes no second task.
    create: (task: TaskInput, key: string) =>
      call<Task>("/tasks", { method: "POST", body: json(task), headers: { "Idempotency-Key": key } }),
    // If-Match: the edit goes through only if nobody changed the task since version (else 412).
    update: (id: string, version: number, changes: Partial<TaskInput>) =>
      call<Task>(`/tasks/${id}`, { method: "PATCH", body: json(changes), headers: { "If-Match": `"${version}"` } }),
    // Sets completed rather than toggling it, so that a replay cannot undo it.
    setCompleted: (id: string, completed: boolean) =>
      call<Task>(`/tasks/${id}/complete`, { method: "PATCH", body: json({ completed }) }),
    remove: (id: string, version: number) =>
      call<void>(`/tasks/${id}`, { method: "DELETE", headers: { "If-Match": `"${version}"` } }),
    clearCompleted: () => call<{ deleted: number }>("/tasks?status=completed", { method: "DELETE" }),
    ticket,
    events,
  };
}
export type TaskApi = ReturnType<typeof taskapi>;
