// Where Better Auth keeps its users: DATABASE_URL, or in development the database that taskapi's own
// development PostgreSQL (`go run .` without DATABASE_URL) offers it, whose URL taskapi writes to
// <TASKAPI_DATA_DIR>/better-auth-database-url at each start (default: ../../.data, the repository root's).
// The URL names a socket directory that is new at each start of taskapi: restart the app after it.
import fs from "node:fs";
import path from "node:path";

export const devURLFile = () =>
  path.join(process.env.TASKAPI_DATA_DIR || path.join(process.cwd(), "../../.data"), "better-auth-database-url");

/** DATABASE_URL, else the development database's URL, else "" (nothing to connect to). */
export function databaseURL(): string {
  if (process.env.DATABASE_URL) return process.env.DATABASE_URL;
  try {
    return fs.readFileSync(devURLFile(), "utf8").trim();
  } catch {
    return "";
  }
}
