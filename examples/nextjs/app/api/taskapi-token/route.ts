// HS256 mode (TASKAPI_TOKEN_MODE=hs256): a token for the signed-in user, signed with the BETTER_AUTH_SECRET
// that taskapi shares, for a taskapi run with BETTER_AUTH_SECRET instead of BETTER_AUTH_URL.
import { headers } from "next/headers";
import { SignJWT } from "jose";
import { auth } from "@/lib/auth";

export async function GET() {
  if (process.env.TASKAPI_TOKEN_MODE !== "hs256") {
    return Response.json({ error: "TASKAPI_TOKEN_MODE is not hs256" }, { status: 404 });
  }
  const session = await auth.api.getSession({ headers: await headers() });
  if (!session) return Response.json({ error: "not signed in" }, { status: 401 });
  const token = await new SignJWT({ email: session.user.email, name: session.user.name })
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setSubject(session.user.id)
    .setIssuedAt()
    .setExpirationTime("15m")
    .sign(new TextEncoder().encode(process.env.BETTER_AUTH_SECRET));
  return Response.json({ token }, { headers: { "Cache-Control": "no-store" } });
}
