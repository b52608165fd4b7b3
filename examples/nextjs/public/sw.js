// The app's service worker: it keeps a copy of the app itself (the page and the scripts and styles under
// /_next/static/) so that a reload while offline still shows the app, with the changes that wait in
// localStorage (lib/sync.ts). Network first: online, each request goes to the server as if there were no
// service worker, and a good answer is kept; only when the server cannot be reached is the copy used.
// Never kept: anything under /api/ (Better Auth's /api/auth/*, the token route) and any other origin
// (taskapi): those are the user's session, tokens and data, never served stale.
const CACHE = "app-v1";
const SHELL = "/"; // the page: the fallback for any navigation while offline

// Keeps the page and what it loads at once, so that one visit is enough for a reload offline.
self.addEventListener("install", (event) => {
  event.waitUntil(
    (async () => {
      const cache = await caches.open(CACHE);
      const page = await fetch(SHELL);
      if (!page.ok) throw new Error(`${SHELL}: HTTP ${page.status}`);
      const html = await page.clone().text();
      await cache.addAll([...new Set(html.match(/\/_next\/static\/[^"'\s\\)]+/g))]);
      await cache.put(SHELL, page);
      await self.skipWaiting();
    })(),
  );
});

// Drops the copies an older version of this file kept, and takes over the open pages.
self.addEventListener("activate", (event) => {
  event.waitUntil(
    (async () => {
      for (const name of await caches.keys()) if (name !== CACHE) await caches.delete(name);
      await self.clients.claim();
    })(),
  );
});

self.addEventListener("fetch", (event) => {
  const req = event.request;
  const url = new URL(req.url);
  if (req.method !== "GET" || url.origin !== self.location.origin || url.pathname.startsWith("/api/")) return;
  if (req.mode === "navigate") event.respondWith(networkFirst(event, url.pathname, SHELL));
  else if (url.pathname.startsWith("/_next/static/")) event.respondWith(networkFirst(event, req));
});

async function networkFirst(event, key, fallback) {
  try {
    const res = await fetch(event.request);
    if (res.ok) {
      const copy = res.clone();
      event.waitUntil(caches.open(CACHE).then((cache) => cache.put(key, copy)));
    }
    return res;
  } catch (err) {
    const cache = await caches.open(CACHE);
    const kept = (await cache.match(key, { ignoreVary: true })) ?? (fallback && (await cache.match(fallback, { ignoreVary: true })));
    if (kept) return kept;
    throw err;
  }
}
