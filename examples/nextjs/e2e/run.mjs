// The example app in a real browser, against a real taskapi and a real Better Auth: Debian's Chromium
// driven by playwright-core. Alice signs up, makes, edits, completes, filters, sorts, deletes and clears
// tasks, reloads, watches a second tab follow her changes live (through taskapi's event stream), signs out
// and in again; Bob, in a fresh browser context, sees none of it and cannot reach it through taskapi either.
// Any console error, page error, failed request or unexpected HTTP error fails the run. A screenshot of
// each step goes to SCREENSHOT_DIR (default e2e/screenshots/).
//
//   APP_URL=http://127.0.0.1:3000 TASKAPI_URL=http://127.0.0.1:8080 [TOKEN_MODE=hs256] node e2e/run.mjs
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

const appUrl = process.env.APP_URL || "http://localhost:3000";
const apiUrl = process.env.TASKAPI_URL || "http://localhost:8080";
const tokenMode = process.env.TOKEN_MODE || "jwks";
const shots = process.env.SCREENSHOT_DIR || path.join(import.meta.dirname, "screenshots");
fs.mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});

// What went wrong in any page, and the error answers the test provokes on purpose. A problem ends the
// step it happens in at once, with every problem seen so far.
const problems = [];
let stepFailed = () => {};
const problem = (text) => {
  problems.push(text);
  stepFailed(new Error(`${problems.join("\n  ")}`));
};
const expected = []; // { method, url, status }
const isExpected = (method, url, status) => {
  const i = expected.findIndex((e) => e.method === method && e.url === url && e.status === status);
  if (i >= 0) expected.splice(i, 1);
  return i >= 0;
};
const provoked = new Set(); // URLs answered with an expected error: Chromium logs each to the console too
// The task list keeps an event stream open (GET /api/me/events?ticket=...). Leaving the list (reload,
// sign-out, closing the tab) closes it, which Chromium reports as an aborted request: each time the test
// leaves, it allows the page one aborted event stream, and no other failed request.
const isStream = (url) => url.startsWith(`${apiUrl}/api/me/events?`);
const leaves = new Map(); // page -> aborted event streams allowed
const leaving = (page) => leaves.set(page, (leaves.get(page) ?? 0) + 1);
const inFlight = new Map(); // page -> its requests still waiting for an answer, but event streams
function watch(page, who) {
  const requests = new Set();
  inFlight.set(page, requests);
  page.on("request", (r) => isStream(r.url()) || requests.add(r));
  page.on("response", (r) => requests.delete(r.request()));
  page.setDefaultTimeout(10_000);
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    if (m.text().startsWith("Failed to load resource") && provoked.has(m.location().url)) return;
    problem(`${who}: console error: ${m.text()} (${m.location().url})`);
  });
  page.on("pageerror", (e) => problem(`${who}: page error: ${e.message}`));
  page.on("requestfailed", (r) => {
    requests.delete(r);
    if (isStream(r.url()) && r.failure()?.errorText === "net::ERR_ABORTED" && leaves.get(page) > 0) {
      leaves.set(page, leaves.get(page) - 1);
      return;
    }
    problem(`${who}: request failed: ${r.method()} ${r.url()}: ${r.failure()?.errorText}`);
  });
  page.on("response", (r) => {
    if (r.status() < 400) return;
    if (isExpected(r.request().method(), r.url(), r.status())) provoked.add(r.url());
    else problem(`${who}: unexpected HTTP ${r.status()}: ${r.request().method()} ${r.url()}`);
  });
}

let stepNo = 0;
async function step(name, page, fn) {
  const started = Date.now();
  const failed = new Promise((_, reject) => (stepFailed = reject));
  failed.catch(() => {});
  try {
    await Promise.race([fn(), failed]);
    if (problems.length) throw new Error(problems.join("\n  "));
  } catch (e) {
    const seen = problems.length ? `\n  problems seen: ${problems.join("\n  ")}` : "";
    throw new Error(`step ${stepNo + 1} "${name}" failed: ${e.message}${seen}`);
  } finally {
    const file = path.join(shots, `${String(++stepNo).padStart(2, "0")}-${name}.png`);
    await page.screenshot({ path: file, fullPage: true }).catch(() => {});
  }
  console.log(`ok ${stepNo} ${name} (${Date.now() - started} ms)`);
}

// Retries an assertion until it holds (the UI updates after taskapi answers), at most 10 s.
async function eventually(assertion) {
  for (let deadline = Date.now() + 10_000; ; ) {
    try {
      return await assertion();
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

// Waits until no request of the page (its event stream aside) has waited for an answer for half a second.
// An event makes the page fetch the list again, even for its own changes: leaving the page would abort that.
async function settle(page) {
  const requests = inFlight.get(page);
  for (let quiet = 0, deadline = Date.now() + 10_000; quiet < 5; ) {
    if (Date.now() > deadline) throw new Error(`still waiting for an answer: ${[...requests].map((r) => r.url()).join(", ")}`);
    await new Promise((r) => setTimeout(r, 100));
    quiet = requests.size ? 0 : quiet + 1;
  }
}
async function reload(page) {
  await settle(page);
  leaving(page);
  await page.reload();
}
// Resolves when the page's event stream is open (taskapi has answered 200 and the page is listening).
const streamOpen = (page) => page.waitForResponse((r) => isStream(r.url()) && r.status() === 200);

const items = (page) => page.getByRole("list", { name: "Tasks" }).getByRole("listitem");
const item = (page, title) => items(page).filter({ has: page.locator(".title", { hasText: new RegExp(`^${title}$`) }) });
const titles = (page) => page.locator("ul[aria-label=Tasks] li .title").allTextContents();
const expectTitles = (page, want) => eventually(async () => assert.deepEqual(await titles(page), want));
const expectEmpty = (page) => page.getByText("No tasks here.").waitFor();
// A taskapi response to wait for while doing something: resolves to the parsed body.
const taskapiAnswer = (page, method, status) =>
  page
    .waitForResponse((r) => r.url().startsWith(apiUrl) && r.request().method() === method && r.status() === status)
    .then((r) => (status === 204 ? null : r.json()));

async function signUp(page, name, email) {
  await page.goto(appUrl);
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  await page.getByRole("button", { name: "Create an account" }).click();
  await page.getByLabel("Name").fill(name);
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill("correct horse battery staple");
  await page.getByRole("button", { name: "Sign up" }).click();
  await page.getByText(`Signed in as ${email}`).waitFor();
  await expectEmpty(page); // a new account: taskapi answered an empty list
}

async function addTask(page, { title, priority, due, tags }) {
  const form = page.getByRole("form", { name: "New task" });
  await form.getByLabel("Title").fill(title);
  if (priority) await form.getByLabel("Priority").selectOption(priority);
  if (due) await form.getByLabel("Due date").fill(due);
  if (tags) await form.getByLabel("Tags").fill(tags);
  const created = taskapiAnswer(page, "POST", 201);
  await form.getByRole("button", { name: "Add" }).click();
  const task = await created;
  await item(page, title).waitFor();
  return task;
}

async function signOut(page) {
  leaving(page);
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
}

// How the page gets its taskapi token, for calls the test makes from inside the page.
const tokenPath = tokenMode === "hs256" ? "/api/taskapi-token" : "/api/auth/token";

const alice = await browser.newContext();
const page = await alice.newPage();
watch(page, "alice");
let milk, call;

try {
  await step("alice-signs-up", page, () => signUp(page, "Alice", "alice@example.com"));

  await step("alice-creates-three-tasks", page, async () => {
    milk = await addTask(page, { title: "Buy milk", priority: "high", due: "2026-12-01", tags: "shopping, errands" });
    assert.equal(milk.priority, "high");
    assert.equal(milk.due_date, "2026-12-01T00:00:00Z");
    assert.deepEqual(milk.tags, ["shopping", "errands"]);
    await addTask(page, { title: "Write report" });
    call = await addTask(page, { title: "Call mom", priority: "low" });
    await expectTitles(page, ["Call mom", "Write report", "Buy milk"]); // newest first
    const text = await item(page, "Buy milk").innerText();
    for (const want of ["high", "due 2026-12-01", "#shopping", "#errands"]) assert.ok(text.includes(want), `${want} in ${text}`);
    assert.ok((await item(page, "Write report").innerText()).includes("medium"));
  });

  await step("alice-completes-one", page, async () => {
    const toggled = taskapiAnswer(page, "PATCH", 200);
    await page.getByLabel("Completed: Write report").click();
    assert.equal((await toggled).completed, true);
    await eventually(async () => assert.ok(await page.getByLabel("Completed: Write report").isChecked()));
    assert.equal(await item(page, "Write report").getAttribute("class"), "done");
  });

  const show = page.getByLabel("Show");
  await step("filter-pending", page, async () => {
    await show.selectOption("pending");
    await expectTitles(page, ["Call mom", "Buy milk"]);
  });
  await step("filter-completed", page, async () => {
    await show.selectOption("completed");
    await expectTitles(page, ["Write report"]);
  });
  await step("filter-all-sort-by-priority", page, async () => {
    await show.selectOption("all");
    await expectTitles(page, ["Call mom", "Write report", "Buy milk"]);
    await page.getByLabel("Sort by").selectOption("Priority");
    await expectTitles(page, ["Buy milk", "Write report", "Call mom"]); // high, medium, low
    await page.getByLabel("Sort by").selectOption("Title");
    await expectTitles(page, ["Buy milk", "Call mom", "Write report"]);
    await page.getByLabel("Sort by").selectOption("Newest first");
    await expectTitles(page, ["Call mom", "Write report", "Buy milk"]);
  });

  await step("alice-edits-one", page, async () => {
    await item(page, "Call mom").getByRole("button", { name: "Edit" }).click();
    const form = page.getByRole("form", { name: "Edit Call mom" });
    await form.getByLabel("Title").fill("Call mom on Sunday");
    await form.getByLabel("Priority").selectOption("medium");
    await form.getByLabel("Tags").fill("family");
    const updated = taskapiAnswer(page, "PATCH", 200);
    await form.getByRole("button", { name: "Save" }).click();
    const task = await updated;
    assert.equal(task.title, "Call mom on Sunday");
    assert.equal(task.version, call.version + 1);
    await expectTitles(page, ["Call mom on Sunday", "Write report", "Buy milk"]);
    const text = await item(page, "Call mom on Sunday").innerText();
    assert.ok(text.includes("medium") && text.includes("#family"), text);
  });

  await step("reload-keeps-everything", page, async () => {
    await reload(page);
    await page.getByText("Signed in as alice@example.com").waitFor();
    await expectTitles(page, ["Call mom on Sunday", "Write report", "Buy milk"]);
    assert.ok(await page.getByLabel("Completed: Write report").isChecked());
    assert.ok(!(await page.getByLabel("Completed: Buy milk").isChecked()));
    assert.ok((await item(page, "Buy milk").innerText()).includes("due 2026-12-01"));
  });

  await step("alice-deletes-one", page, async () => {
    const deleted = taskapiAnswer(page, "DELETE", 204);
    await item(page, "Buy milk").getByRole("button", { name: "Delete" }).click();
    await deleted;
    await expectTitles(page, ["Call mom on Sunday", "Write report"]);
  });

  await step("alice-clears-completed", page, async () => {
    const cleared = taskapiAnswer(page, "DELETE", 200);
    await page.getByRole("button", { name: "Clear completed" }).click();
    assert.deepEqual(await cleared, { deleted: 1 });
    await expectTitles(page, ["Call mom on Sunday"]);
  });

  // A second tab of Alice's (the same browser context: the same session) follows what she does in the first
  // through taskapi's event stream: each change shows there within a second of taskapi's answer to the
  // first tab, without a reload.
  const tab = await alice.newPage();
  watch(tab, "alice's second tab");
  await step("second-tab-follows-live", page, async () => {
    const opened = streamOpen(tab);
    await tab.goto(appUrl);
    await tab.getByText("Signed in as alice@example.com").waitFor();
    await opened;
    await expectTitles(tab, ["Call mom on Sunday"]);
    await settle(tab); // what changes from now on reaches it through the stream
    await tab.evaluate(() => (window.notReloaded = true));
    const inTab = async (what, answered, shown) => {
      await answered;
      const started = Date.now();
      await shown({ timeout: 1000 });
      console.log(`  ${what}: shown in the second tab ${Date.now() - started} ms after taskapi answered the first`);
    };

    const form = page.getByRole("form", { name: "New task" });
    await form.getByLabel("Title").fill("Water the plants");
    const created = taskapiAnswer(page, "POST", 201);
    await form.getByRole("button", { name: "Add" }).click();
    await inTab("create", created, (o) => item(tab, "Water the plants").waitFor(o));
    await item(page, "Water the plants").waitFor();

    const toggled = taskapiAnswer(page, "PATCH", 200);
    await page.getByLabel("Completed: Water the plants").click();
    await inTab("toggle", toggled, (o) => tab.locator('input[aria-label="Completed: Water the plants"]:checked').waitFor(o));
    for (const [p, which] of [[page, "first"], [tab, "second"]]) {
      await eventually(async () => assert.ok(await p.getByLabel("Completed: Water the plants").isChecked()));
      const file = `${String(stepNo + 1).padStart(2, "0")}-second-tab-follows-live-${which}-tab.png`;
      await p.screenshot({ path: path.join(shots, file), fullPage: true });
    }

    const deleted = taskapiAnswer(page, "DELETE", 204);
    await item(page, "Water the plants").getByRole("button", { name: "Delete" }).click();
    await inTab("delete", deleted, (o) => item(tab, "Water the plants").waitFor({ state: "detached", ...o }));

    assert.equal(await tab.evaluate(() => window.notReloaded), true, "the second tab was reloaded");
    await expectTitles(page, ["Call mom on Sunday"]);
    await expectTitles(tab, ["Call mom on Sunday"]);
    await settle(tab);
    leaving(tab);
    await tab.close();
  });

  // Bob, in a browser context of his own (no cookies of Alice's).
  const bobContext = await browser.newContext();
  const bob = await bobContext.newPage();
  watch(bob, "bob");
  await step("bob-signs-up-and-sees-nothing-of-alices", bob, async () => {
    await signUp(bob, "Bob", "bob@example.com");
    assert.equal(await bob.getByText("Call mom on Sunday").count(), 0);
    // Straight at taskapi with Bob's token: Alice's list by her id is 403, her task by its id 404.
    const aliceList = `${apiUrl}/api/${encodeURIComponent(call.user_id)}/tasks`;
    const aliceTask = `${apiUrl}/api/me/tasks/${call.id}`;
    expected.push({ method: "GET", url: aliceList, status: 403 }, { method: "GET", url: aliceTask, status: 404 });
    const statuses = await bob.evaluate(
      async ({ tokenPath, urls }) => {
        const { token } = await (await fetch(tokenPath)).json();
        const get = (u) => fetch(u, { headers: { Authorization: `Bearer ${token}` } });
        const out = [];
        for (const u of urls) out.push((await get(u)).status);
        out.push(await (await get(urls[2])).json());
        return out;
      },
      { tokenPath, urls: [aliceList, aliceTask, `${apiUrl}/api/me/tasks`] },
    );
    assert.deepEqual(statuses, [403, 404, 200, []]);
    assert.equal(expected.length, 0, "the provoked errors were seen");
    const own = await addTask(bob, { title: "Bob's own task" });
    assert.notEqual(own.user_id, call.user_id);
  });
  await step("bob-signs-out", bob, () => signOut(bob));
  await settle(bob);
  await bobContext.close();

  await step("alice-still-sees-only-hers", page, async () => {
    await reload(page);
    await expectTitles(page, ["Call mom on Sunday"]);
  });

  await step("alice-signs-out", page, () => signOut(page));

  await step("wrong-password-is-refused", page, async () => {
    await page.getByLabel("Email").fill("alice@example.com");
    await page.getByLabel("Password").fill("not her password");
    expected.push({ method: "POST", url: `${appUrl}/api/auth/sign-in/email`, status: 401 });
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("alert").filter({ hasText: /invalid/i }).waitFor();
    assert.equal(expected.length, 0);
  });

  await step("alice-signs-in-again", page, async () => {
    await page.getByLabel("Password").fill("correct horse battery staple");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByText("Signed in as alice@example.com").waitFor();
    await expectTitles(page, ["Call mom on Sunday"]);
  });

  await step("alice-signs-out-again", page, () => signOut(page));
  console.log(`e2e (${tokenMode}): all ${stepNo} steps passed; screenshots in ${shots}`);
} catch (e) {
  console.error(`e2e (${tokenMode}): FAIL: ${e.message}\nscreenshots in ${shots}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
