// Compile-time checks of the published typings (dist/index.d.ts): `tsc -p test` fails when
// a call that should type-check does not, or an @ts-expect-error line stops being an error.
import {
  AuthSession,
  createKilnClient,
  KilnProblemError,
  unwrap,
  type ApiKeyWithSecret,
  type ChatCompletion,
  type Conversation,
  type ErrorCode,
  type Me,
  type Message,
  type Problem,
  type Schema,
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

export async function successData(): Promise<void> {
  // unwrap resolves to the 2xx data: no `undefined` to rule out first.
  const me: Me = await unwrap(client.GET("/v1/me"));
  // @ts-expect-error the data of a 200 is never undefined
  const none: undefined = me;
  // An answer without a body (204) resolves to undefined.
  const revoked: undefined = await unwrap(client.DELETE("/v1/api-keys/{id}", { params: { path: { id: "k" } } }));
  void [none, revoked];
}

export async function namedModels(): Promise<Message | undefined> {
  const key: ApiKeyWithSecret = await unwrap(client.POST("/v1/api-keys", { body: { name: "ci", scopes: ["chat"] } }));
  const secret: string = key.key;
  // Fields with a default in the spec may be left out: model, stream, is_error.
  const reply: ChatCompletion = await unwrap(client.POST("/v1/chat/completions", { body: { messages: [{ role: "user", content: "Hi" }] } }));
  const conversation: Conversation = await unwrap(client.POST("/v1/conversations", { body: {} }));
  const path = { id: conversation.id };
  await client.POST("/v1/conversations/{id}/tool-results", { params: { path }, body: { results: [{ tool_call_id: "c", content: "42" }] } });
  const page = await unwrap(client.GET("/v1/conversations/{id}/messages", { params: { path } }));
  const diff: Schema<"PromptDiff"> | undefined = undefined;
  void [secret, reply.message, diff];
  return page.data[0];
}

export async function mediaTypes(): Promise<void> {
  // An operation answering JSON or a stream is typed as JSON; the stream is read with parseAs.
  const exported = await unwrap(client.GET("/v1/conversations/{id}/export", { params: { path: { id: "c" } } }));
  const markdown: string = await unwrap(
    client.GET("/v1/conversations/{id}/export", { params: { path: { id: "c" }, query: { format: "markdown" } }, parseAs: "text" }),
  );
  const events: ReadableStream<Uint8Array> | null = await unwrap(
    client.GET("/v1/jobs/{id}/events", { params: { path: { id: "j" } }, parseAs: "stream" }),
  );
  // Operations with no JSON answer keep their own type.
  const metrics: string = await unwrap(client.GET("/metrics"));
  void [exported.conversation.id, markdown, events, metrics];
}
