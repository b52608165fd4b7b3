// The user's tasks as the page shows them: what taskapi has confirmed, with the user's changes that are not
// saved yet laid on top. Those changes wait in a queue in localStorage, so a reload or a lost network keeps
// them, and go to taskapi in order, one at a time, whenever it can be reached. Each is safe to send twice: a
// create carries the Idempotency-Key made when the user pressed Add, an edit or a delete the version it
// started from (If-Match), so a replay never makes a second task and never overwrites a change made
// elsewhere; that is a conflict, which the user settles (keep mine, or take theirs). Live updates are
// applied as they come: the whole list is fetched only when the stream says reload. The last list is kept
// too, so that a page opened while taskapi cannot be reached shows it, and what waits. No framework: a
// component calls subscribe() and reads snapshot(). Tabs of one user share the queue; a Web Lock lets one
// tab at a time send it.
import { TaskApiError, type Task, type TaskApi, type TaskEvent, type TaskInput } from "./taskapi";

/** A change the user made, as it waits in the queue. base is the task's version the change started from. */
export type Change =
  | { op: "create"; id: string; key: string; input: TaskInput; twin?: string } // id: a local id until saved
  | { op: "update"; id: string; base: number; changes: Partial<TaskInput> }
  | { op: "complete"; id: string; base: number; completed: boolean }
  | { op: "delete"; id: string; base: number; title: string; holdUntil: number } // undo is possible until then
  | { op: "clear" };
type Queued = Change & { n: string };
/** taskapi refused a change because the task changed elsewhere: mine is the task with my change, theirs as it is now. */
export type Conflict = { n: string; change: Change; mine: Task | null; theirs: Task };
export type Notice = { n: string; text: string };
export type ShownTask = Task & { pending?: boolean };
export type Snapshot = {
  tasks: ShownTask[] | null; // null until the first list arrives
  waiting: number; // changes not saved yet
  online: boolean;
  saving: boolean;
  saved: boolean; // something was saved since the page opened, and nothing waits
  conflicts: Conflict[];
  notices: Notice[];
  error: string; // the list could not be loaded
};
type Stored = { queue: Queued[]; conflicts: Conflict[]; notices: Notice[] };

const undoWindow = 5000; // ms a delete waits, so that Undo can take it back

export function taskSync(api: TaskApi, userId: string) {
  const storageKey = `taskapi-sync:${userId}`;
  const confirmed = new Map<string, Task>(); // as taskapi last said
  const gone = new Set<string>(); // deleted: a late event must not bring one back
  let loaded = false, error = "", online = navigator.onLine, saving = false, saved = false;
  let retry: ReturnType<typeof setTimeout> | undefined, wait = 1000, snap: Snapshot;
  const listeners = new Set<() => void>();
  const waiters = new Map<string, { resolve: (r: "saved" | "waiting" | "conflict") => void; reject: (e: Error) => void }>();

  // The tasks as last confirmed, for a page opened while taskapi cannot be reached; forgotten at sign-out.
  const listKey = `taskapi-tasks:${userId}`;
  const kept = localStorage.getItem(listKey);
  if (kept) (JSON.parse(kept) as Task[]).forEach((t) => confirmed.set(t.id, t));
  loaded = kept !== null;

  const read = (): Stored => ({ queue: [], conflicts: [], notices: [], ...JSON.parse(localStorage.getItem(storageKey) || "{}") });
  function update(fn: (s: Stored) => void) {
    const s = read();
    fn(s);
    localStorage.setItem(storageKey, JSON.stringify(s));
    changed();
  }
  const newId = () => crypto.randomUUID();

  // What the page shows: confirmed tasks with every queued change applied, in queue order.
  function changed() {
    const s = read();
    const tasks = new Map<string, ShownTask>(confirmed);
    const alias = new Map<string, string>(); // a queued create's local id -> its twin's id
    for (const c of s.queue) {
      const id = "id" in c ? (alias.get(c.id) ?? c.id) : "";
      const t = tasks.get(id);
      if (c.op === "create" && c.twin && confirmed.has(c.twin)) alias.set(c.id, c.twin);
      else if (c.op === "create") {
        const now = new Date().toISOString();
        tasks.set(c.id, {
          id: c.id, title: c.input.title, description: c.input.description ?? null, completed: false,
          priority: c.input.priority ?? "medium", due_date: c.input.due_date ?? null, tags: c.input.tags ?? [],
          created_at: now, updated_at: now, version: 0, pending: true,
        });
      } else if (c.op === "update" && t) tasks.set(id, { ...t, ...c.changes, pending: true } as ShownTask);
      else if (c.op === "complete" && t) tasks.set(id, { ...t, completed: c.completed, pending: true });
      else if (c.op === "delete") tasks.delete(id);
      else if (c.op === "clear") for (const [id, t] of tasks) if (t.completed) tasks.delete(id);
    }
    if (loaded) localStorage.setItem(listKey, JSON.stringify([...confirmed.values()]));
    snap = {
      tasks: loaded ? [...tasks.values()] : null,
      waiting: s.queue.length, online, saving, saved: saved && s.queue.length === 0,
      conflicts: s.conflicts, notices: s.notices, error,
    };
    listeners.forEach((l) => l());
  }

  function confirm(task: Task) {
    const had = confirmed.get(task.id);
    if (!gone.has(task.id) && (!had || had.version < task.version)) confirmed.set(task.id, task);
  }
  function forget(id: string) {
    confirmed.delete(id);
    gone.add(id);
  }

  // The whole list: at the start, and when the event stream says reload (it cannot say what changed).
  let loading: Promise<void> | undefined, loadAgain = false, retryLoad: ReturnType<typeof setTimeout> | undefined;
  async function load(): Promise<void> {
    if (loading) {
      loadAgain = true;
      return loading;
    }
    loading = api
      .list()
      .then((list) => {
        confirmed.clear();
        gone.clear();
        list.forEach((t) => confirmed.set(t.id, t));
        loaded = true;
        error = "";
        online = true;
        if (read().queue.length) flush(); // taskapi answers again: what waits need not wait for its backoff
      })
      .catch((e: Error) => {
        if (e instanceof TaskApiError) error = e.message;
        else if (loaded) online = false; // the last list is on screen: the status says offline
        else error = `taskapi cannot be reached (${e.message})`;
        if (!(e instanceof TaskApiError)) retryLoad = setTimeout(load, 5000);
      })
      .finally(() => {
        loading = undefined;
        changed();
        if (loadAgain) {
          loadAgain = false;
          load();
        }
      });
    return loading;
  }

  // The stream can tell of a create before taskapi's answer to it comes (or when the answer was lost): the
  // queued create with the same fields is marked as that task's twin, and not shown twice.
  function findTwin(task: Task) {
    const same = (i: TaskInput) =>
      task.title === i.title && task.description === (i.description ?? null) && task.priority === (i.priority ?? "medium") &&
      task.due_date === (i.due_date ?? null) && JSON.stringify(task.tags) === JSON.stringify(i.tags ?? []);
    const s = read();
    if (s.queue.some((c) => c.op === "create" && c.twin === task.id)) return;
    const c = s.queue.find((c) => c.op === "create" && !c.twin && same(c.input));
    if (c) update((s) => s.queue.forEach((q) => q.n === c.n && q.op === "create" && (q.twin = task.id)));
  }

  function onEvent(e: TaskEvent) {
    if (e.type === "task.created") findTwin(e.task);
    if (e.type === "task.created" || e.type === "task.updated") confirm(e.task);
    else if (e.type === "task.deleted") forget(e.id);
    else if (e.type === "tasks.deleted") e.ids.forEach(forget);
    else load();
    changed();
  }

  // Sends one change. Returns the task taskapi answered with, if any.
  function send(c: Change): Promise<Task | void | { deleted: number }> {
    switch (c.op) {
      case "create": return api.create(c.input, c.key);
      case "update": return api.update(c.id, c.base, c.changes);
      case "complete": return api.setCompleted(c.id, c.completed);
      case "delete": return api.remove(c.id, c.base);
      case "clear": return api.clearCompleted();
    }
  }

  // Settles a change taskapi answered: takes it off the queue; what it says happened goes to confirmed,
  // to the changes after it (the task's real id and new version), to a conflict or to a notice.
  async function settle(c: Queued, result: Task | void | { deleted: number } | TaskApiError) {
    let outcome: "saved" | "conflict" | TaskApiError = "saved";
    const notices: string[] = [];
    let conflict: Conflict | undefined;
    const title = c.op === "create" ? c.input.title : c.op === "delete" ? c.title : "id" in c ? confirmed.get(c.id)?.title : "";
    if (result instanceof TaskApiError) {
      const s = result.status;
      if (c.op === "clear") notices.push(`Clearing completed tasks failed: ${result.message}`);
      else if (s === 404 && c.op === "delete") forget(c.id); // already gone: what the user wanted
      else if (s === 404) {
        forget(c.id);
        notices.push(`“${title}” was deleted elsewhere; your change to it was not saved.`);
      } else if (s === 412 && (c.op === "update" || c.op === "delete")) {
        const theirs = await api.get(c.id).catch((e: Error) => e);
        if (theirs instanceof TaskApiError && theirs.status === 404) {
          forget(c.id);
          if (c.op === "update") notices.push(`“${title}” was deleted elsewhere; your change to it was not saved.`);
        } else if (theirs instanceof Error) {
          throw theirs; // cannot tell: the change stays queued and is tried again
        } else {
          confirm(theirs);
          const mine = c.op === "update" ? { ...theirs, ...c.changes } as Task : null;
          conflict = { n: c.n, change: c, mine, theirs };
          outcome = "conflict";
        }
      } else if (s === 409 && c.op === "create" && result.message.includes("deleted")) {
        // A replay of a create whose task was made and then deleted elsewhere: nothing to do.
      } else {
        outcome = result;
        if (!waiters.has(c.n)) notices.push(`${title ? `“${title}”: ` : ""}not saved: ${result.message}`);
      }
    } else if (result && "id" in result) {
      confirm(result);
    } else if (c.op === "delete") {
      forget(c.id);
    }
    update((s) => {
      s.queue = s.queue.filter((q) => q.n !== c.n);
      // The changes queued after this one started from the version it had (0 for a task not created yet).
      if (result && !(result instanceof TaskApiError) && "id" in result && "id" in c) {
        const from = c.op === "create" ? 0 : (c as { base: number }).base;
        for (const q of s.queue) {
          if (!("id" in q) || q.id !== c.id) continue;
          q.id = result.id;
          if ("base" in q && q.base === from) q.base = result.version;
        }
      }
      if (conflict) s.conflicts.push(conflict);
      for (const text of notices) s.notices.push({ n: newId(), text });
    });
    const w = waiters.get(c.n);
    waiters.delete(c.n);
    if (outcome instanceof TaskApiError) w?.reject(outcome);
    else w?.resolve(outcome);
  }

  // Sends the queue, oldest first, until it is empty or taskapi cannot be reached. One tab at a time.
  let flushing = false, flushAgain = false;
  async function flush() {
    if (flushing) return void (flushAgain = true);
    flushing = true;
    clearTimeout(retry);
    const work = async () => {
      for (;;) {
        const now = Date.now();
        const c = read().queue.find((q) => !(q.op === "delete" && q.holdUntil > now));
        if (!c) break;
        saving = true;
        changed();
        try {
          let result: Awaited<ReturnType<typeof send>> | TaskApiError;
          try {
            result = await send(c);
          } catch (e) {
            if (!(e instanceof TaskApiError) || e.status >= 500 || e.status === 429 || e.status === 401) throw e;
            result = e;
          }
          await settle(c, result);
          online = true;
          saved = true;
          wait = 1000;
        } catch {
          // The network, or taskapi, is down: everything stays queued and is tried again later.
          online = false;
          retry = setTimeout(flush, wait);
          wait = Math.min(wait * 2, 30_000);
          for (const n of [...waiters.keys()]) release(n, "waiting");
          return;
        } finally {
          saving = false;
        }
      }
      // Deletes held for undo: flush again when the first one is due.
      const held = read().queue.filter((q) => q.op === "delete").map((q) => (q as { holdUntil: number }).holdUntil);
      if (held.length) retry = setTimeout(flush, Math.max(0, Math.min(...held) - Date.now()) + 50);
    };
    try {
      if (navigator.locks) await navigator.locks.request(storageKey, work);
      else await work();
    } finally {
      flushing = false;
      // Changes another tab sent while this one waited for the lock: their waiters here are done.
      const queued = new Set(read().queue.map((q) => q.n));
      for (const n of [...waiters.keys()]) if (!queued.has(n)) release(n, "saved");
      changed();
      if (flushAgain) {
        flushAgain = false;
        flush();
      }
    }
  }

  // Queues a change and starts sending. Resolves when it is saved, waits (offline, or no answer within
  // 5 s), or conflicts; rejects with taskapi's answer when refused (a 422: the form keeps what the user
  // typed). A refusal that comes after the change was reported waiting becomes a notice.
  function enqueue(c: Change): Promise<"saved" | "waiting" | "conflict"> {
    const n = newId();
    const done = new Promise<"saved" | "waiting" | "conflict">((resolve, reject) => waiters.set(n, { resolve, reject }));
    update((s) => s.queue.push({ ...c, n } as Queued));
    if (!online && !navigator.onLine) release(n, "waiting");
    else setTimeout(() => release(n, "waiting"), 5000);
    flush();
    return done;
  }
  function release(n: string, outcome: "saved" | "waiting" | "conflict") {
    waiters.get(n)?.resolve(outcome);
    waiters.delete(n);
  }

  const goOnline = () => ((online = true), (wait = 1000), flush());
  const goOffline = () => ((online = false), changed());
  const otherTab = (e: StorageEvent) => e.key === storageKey && changed();
  let stopEvents = () => {};

  changed();
  return {
    /** Starts: loads the list, opens the event stream, sends what waits from before. Returns stop. */
    start() {
      changed();
      load();
      stopEvents = api.events(onEvent);
      window.addEventListener("online", goOnline);
      window.addEventListener("offline", goOffline);
      window.addEventListener("storage", otherTab);
      flush();
      return () => {
        stopEvents();
        clearTimeout(retry);
        clearTimeout(retryLoad);
        window.removeEventListener("online", goOnline);
        window.removeEventListener("offline", goOffline);
        window.removeEventListener("storage", otherTab);
      };
    },
    subscribe(l: () => void) {
      listeners.add(l);
      return () => listeners.delete(l);
    },
    snapshot: () => snap,
    create: (input: TaskInput, key: string) => enqueue({ op: "create", id: `local-${key}`, key, input }),
    edit: (task: Task, base: number, changes: Partial<TaskInput>) => enqueue({ op: "update", id: task.id, base, changes }),
    setCompleted: (task: Task, completed: boolean) => enqueue({ op: "complete", id: task.id, base: task.version, completed }),
    /** Deletes after the undo window; returns the change's id for undo(). */
    remove(task: Task) {
      const n = newId();
      update((s) => s.queue.push({ op: "delete", id: task.id, base: task.version, title: task.title, holdUntil: Date.now() + undoWindow, n }));
      flush();
      return n;
    },
    /** Takes back a delete not sent yet; false if it is too late. */
    undo(n: string) {
      let undone = false;
      update((s) => {
        const i = s.queue.findIndex((q) => q.n === n && q.op === "delete" && q.holdUntil > Date.now());
        if (i >= 0) (s.queue.splice(i, 1), (undone = true));
      });
      return undone;
    },
    clearCompleted: () => enqueue({ op: "clear" }),
    /** Settles a conflict: mine sends my change again over their version; theirs drops it. */
    resolve(conflict: Conflict, keep: "mine" | "theirs") {
      update((s) => (s.conflicts = s.conflicts.filter((c) => c.n !== conflict.n)));
      const { change, theirs } = conflict;
      if (keep === "theirs") return;
      if (change.op === "update") enqueue({ ...change, base: theirs.version });
      if (change.op === "delete") enqueue({ ...change, base: theirs.version, holdUntil: 0 });
    },
    dismiss: (n: string) => update((s) => (s.notices = s.notices.filter((x) => x.n !== n))),
  };
}
export type TaskSync = ReturnType<typeof taskSync>;

/** At sign-out: drops the user's last list from this browser (changes not yet saved stay, to be sent later). */
export function forgetList(userId: string) {
  localStorage.removeItem(`taskapi-tasks:${userId}`);
}
