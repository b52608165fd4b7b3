// Runs once when the server starts: creates or updates Better Auth's tables (user, session, account,
// verification, jwks) in its database, as `npx @better-auth/cli migrate` would.
export async function register() {
  if (process.env.NEXT_RUNTIME !== "nodejs") return;
  const { databaseURL, devURLFile } = await import("./lib/database-url");
  if (!databaseURL()) {
    throw new Error(
      `No database for Better Auth: set DATABASE_URL, or start taskapi first with \`go run .\` in the repository ` +
        `root (without DATABASE_URL): it offers one, at the URL it writes to ${devURLFile()}.`,
    );
  }
  const { getMigrations } = await import("better-auth/db/migration");
  const { auth } = await import("./lib/auth");
  const { runMigrations } = await getMigrations(auth.options);
  await runMigrations();
}
