// Compile-time checks of the published typings (dist/index.d.ts): `tsc -p test` fails when
// a call that should type-check does not, or an @ts-expect-error line stops being an error.
import {
  AuthSession,
  createKilnClient,
  KilnProblemError,
  unwrap,
  type ErrorCode,
  type Problem,
  type TokenPair,
} from "../dist/index.js";

const client = createKilnClient({ baseUrl: "http://127.0.0.1:8080", token: () => undefined });

export async function typedCalls(): Promise<void> {
  const health = await unwrap(client.GET("/health"));
  const ok: "ok" = health.status;

  const ready = await unwrap(client.GET("/ready"));
  const names: string[] = ready.checks.map((check) => check.name);

  const asset = await client.GET("/docs/assets/{file}", { params: { path: { file: "swagger-ui.css" } } });
  const problem: Problem | undefined = asset.error;

  // @ts-expect-error the path is not in the spec
  await client.GET("/nope");
  // @ts-expect-error the operation needs its path parameter
  await client.GET("/docs/assets/{file}");
  // @ts-expect-error /health has no POST
  await client.POST("/health");

  void [ok, names, problem];
}

export function errorCodes(err: unknown): ErrorCode | undefined {
  // @ts-expect-error not a code in the catalog
  const unknown: ErrorCode = "no_such_code";
  void unknown;
  return err instanceof KilnProblemError ? err.code : undefined;
}

export async function authSession(): Promise<void> {
  const tokens: TokenPair = await unwrap(
    client.POST("/v1/auth/login", { body: { email: "a@example.com", password: "correct horse battery staple 9" } }),
  );
  const session = new AuthSession({ baseUrl: "http://127.0.0.1:8080", tokens, onRefresh: (next: TokenPair) => void next });
  const user = createKilnClient({ baseUrl: "http://127.0.0.1:8080", fetch: session.fetch });
  const me = await unwrap(user.GET("/v1/me"));
  const email: string = me.email;
  const refresh: string = session.tokens.refresh_token;

  // @ts-expect-error the refresh body needs refresh_token
  await user.POST("/v1/auth/refresh", { body: {} });
  // @ts-expect-error a TokenPair has a Bearer token_type
  const bad: TokenPair = { ...tokens, token_type: "Basic" };

  void [email, refresh, bad];
}
