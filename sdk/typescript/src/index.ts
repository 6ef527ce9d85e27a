/**
 * TypeScript client for the Kiln API.
 *
 * The request and response types are generated from openapi/openapi.yaml into
 * ./schema.d.ts (`npm run generate`); this file adds the client factory, the error
 * type every non-2xx answer maps to, and {@link AuthSession}, which refreshes a user's
 * tokens. ./stream.ts adds `streamChatCompletion`, streamed chat replies as typed events;
 * ./conversations.ts adds `streamConversationMessage` and `resumeReply`, a conversation
 * reply's events, resumable after the last one received.
 */
import createClient, { type Client, type ClientOptions, type Middleware } from "openapi-fetch";
import type { components, operations, paths } from "./schema.js";

export type { components, operations, paths };

/** RFC 9457 problem details, the body of every non-2xx answer. */
export type Problem = components["schemas"]["Problem"];
/** Stable, machine-readable error code from the catalog in docs/errors.md. */
export type ErrorCode = components["schemas"]["ErrorCode"];
/** One invalid field of a validation failure. */
export type FieldError = components["schemas"]["FieldError"];

/** The tokens of a user's session, from sign-up, login and refresh. */
export type TokenPair = components["schemas"]["TokenPair"];

/** The content types of the responses in `P`, by response. */
type ResponseContent<R> = R extends { content: infer C } ? keyof C & string : never;
type Responses<P> = {
  [Path in keyof P]: { [M in keyof P[Path]]: P[Path][M] extends { responses: infer R } ? R[keyof R] : never }[keyof P[Path]];
}[keyof P];
/** The content types of the responses that have no JSON one (a page, a metrics scrape, a file). */
type NonJSONOnly<R> = R extends unknown ? (Extract<ResponseContent<R>, `${string}/${string}json`> extends never ? ResponseContent<R> : never) : never;

/**
 * The media types a {@link KilnClient}'s answers are typed with: JSON wherever an
 * operation answers JSON, else what it answers. An operation that answers JSON or a second
 * type that the request chooses (an SSE stream for `stream: true`, Markdown for
 * `format=markdown`) is typed as JSON; the other answer is read with openapi-fetch's
 * `parseAs` ("stream", "text"), which types it.
 */
export type KilnMediaType = `${string}/${string}json` | Exclude<NonJSONOnly<Responses<paths>>, "text/event-stream">;

/** A typed openapi-fetch client for the Kiln API: `client.GET("/health")`, … */
export type KilnClient = Client<paths, KilnMediaType>;

/** The response header that carries the request's id; Problem.request_id holds the same value. */
export const REQUEST_ID_HEADER = "X-Request-Id";

/** Options of {@link createKilnClient}. */
export interface KilnClientOptions {
  /** The server's root URL, e.g. `https://api.example.com`. */
  baseUrl: string;
  /**
   * A JWT access token or an API key (`kiln_…`), sent as `Authorization: Bearer <token>`.
   * A function is called before every request, so a short-lived token can be refreshed;
   * when it returns undefined the request goes without Authorization.
   */
  token?: string | (() => string | undefined | Promise<string | undefined>) | undefined;
  /** The fetch implementation to use; defaults to `globalThis.fetch`. */
  fetch?: ClientOptions["fetch"] | undefined;
}

/**
 * Creates a client for the Kiln API at `options.baseUrl`. Calls resolve to
 * `{ data, error, response }` as with openapi-fetch; {@link unwrap} turns them into the
 * data or a thrown {@link KilnProblemError}.
 */
export function createKilnClient(options: KilnClientOptions): KilnClient {
  const client = createClient<paths, KilnMediaType>({
    baseUrl: options.baseUrl,
    ...(options.fetch ? { fetch: options.fetch } : {}),
  });
  const { token } = options;
  if (token !== undefined) {
    const auth: Middleware = {
      async onRequest({ request }) {
        const value = typeof token === "function" ? await token() : token;
        if (value) {
          request.headers.set("Authorization", `Bearer ${value}`);
        }
        return request;
      },
    };
    client.use(auth);
  }
  return client;
}

/** Reports whether value is a Kiln problem document (a {@link Problem}). */
export function isProblem(value: unknown): value is Problem {
  if (typeof value !== "object" || value === null) {
    return false;
  }
  const v = value as Record<string, unknown>;
  return (
    typeof v.code === "string" &&
    typeof v.status === "number" &&
    typeof v.title === "string" &&
    typeof v.type === "string" &&
    typeof v.request_id === "string"
  );
}

/**
 * A non-2xx answer from the API, as an Error. Branch on `code`, the stable error code:
 *
 * ```ts
 * if (err instanceof KilnProblemError && err.code === "not_found") { … }
 * ```
 *
 * When the body was not a Kiln problem document (an error page from a proxy in front of
 * Kiln, say), `code` and `problem` are undefined and `status` and `message` describe the
 * HTTP response.
 */
export class KilnProblemError extends Error {
  /** The HTTP status code. */
  readonly status: number;
  /** The stable error code; undefined when the body was not a problem document. */
  readonly code: ErrorCode | undefined;
  /** The request's id, from the body or else the X-Request-Id header; "" when neither has one. */
  readonly requestId: string;
  /** The decoded problem document (with operation-specific members such as `checks`), if any. */
  readonly problem: Problem | undefined;
  /** The HTTP response, when known; its body has been read. */
  readonly response: Response | undefined;

  /**
   * Builds the error for a non-2xx response from its body, parsed (an openapi-fetch
   * `error`) or as text.
   */
  constructor(response: Response, body: unknown) {
    const problem = isProblem(body) ? body : undefined;
    const requestId = problem?.request_id || response.headers.get(REQUEST_ID_HEADER) || "";
    super(describe(response, problem, body, requestId));
    this.name = "KilnProblemError";
    this.status = problem?.status ?? response.status;
    this.code = problem?.code;
    this.requestId = requestId;
    this.problem = problem;
    this.response = response;
  }
}

const maxFallbackDetail = 512;

/** The message: "not_found (404): detail (request_id …)", or "HTTP 502: …" without a problem. */
function describe(response: Response, problem: Problem | undefined, body: unknown, requestId: string): string {
  let text: string;
  if (problem) {
    text = `${problem.code} (${problem.status}): ${problem.detail || problem.title}`;
  } else {
    let detail = typeof body === "string" ? body : body === undefined ? "" : JSON.stringify(body);
    detail = detail.slice(0, maxFallbackDetail).trim();
    text = `HTTP ${response.status}: ${detail || response.statusText || "error"}`;
  }
  return requestId ? `${text} (request_id ${requestId})` : text;
}

/** The result of any client call: openapi-fetch's `{ data, error, response }`. */
export type Result<Data> =
  | { data: Data; error?: never; response: Response }
  | { data?: never; error: unknown; response: Response };

/**
 * The data of a call's 2xx answer, what {@link unwrap} resolves to: the success branch of
 * `{ data, error, response }` alone, so `undefined` is not part of it (except for an
 * operation that answers without a body, such as a 204).
 */
export type SuccessData<R> = R extends { data: infer Data; error?: never } ? ([Data] extends [never] ? undefined : Data) : never;

/**
 * Waits for a client call and returns its data, or throws a {@link KilnProblemError} for
 * a non-2xx answer. Network failures reject as they do with fetch.
 *
 * ```ts
 * const health = await unwrap(client.GET("/health")); // health.status: "ok"
 * ```
 */
export async function unwrap<R extends Result<unknown>>(call: Promise<R> | R): Promise<SuccessData<R>> {
  const result = await call;
  if (!result.response.ok) {
    throw new KilnProblemError(result.response, result.error);
  }
  return result.data as SuccessData<R>;
}

/** Options of {@link AuthSession}. */
export interface AuthSessionOptions {
  /** The server's root URL, as for {@link createKilnClient}. */
  baseUrl: string;
  /** The pair to start from, from `POST /v1/auth/signup`, `/login` or `/refresh`. */
  tokens: TokenPair;
  /** Called with each new pair, e.g. to save it: refresh tokens rotate, the old one is spent. */
  onRefresh?: ((tokens: TokenPair) => void) | undefined;
  /** The fetch implementation to send requests with; defaults to `globalThis.fetch`. */
  fetch?: ClientOptions["fetch"] | undefined;
}

/**
 * Signs a user's requests in with a {@link TokenPair}. Its {@link AuthSession.fetch} gives
 * each request without an Authorization header the current access token; when the API
 * answers 401 (the access token expired), it spends the refresh token once, stores the
 * new pair and sends the request again. When the refresh is refused too (the session was
 * revoked), the first 401 is returned as it is. Concurrent 401s cause a single refresh.
 *
 * ```ts
 * const session = new AuthSession({ baseUrl, tokens: await unwrap(kiln.POST("/v1/auth/login", { body })) });
 * const client = createKilnClient({ baseUrl, fetch: session.fetch }); // no `token` option
 * ```
 */
export class AuthSession {
  #tokens: TokenPair;
  #refreshing: Promise<string> | undefined;
  readonly #send: (request: Request) => Promise<Response>;
  readonly #client: KilnClient;
  readonly #onRefresh: ((tokens: TokenPair) => void) | undefined;

  constructor(options: AuthSessionOptions) {
    this.#tokens = options.tokens;
    this.#onRefresh = options.onRefresh;
    const send = options.fetch ?? ((request: Request) => globalThis.fetch(request));
    this.#send = send;
    this.#client = createKilnClient({ baseUrl: options.baseUrl, fetch: send });
  }

  /** The current token pair. */
  get tokens(): TokenPair {
    return this.#tokens;
  }

  /** A fetch for {@link createKilnClient}'s `fetch` option (bound: pass it as it is). */
  readonly fetch = async (request: Request): Promise<Response> => {
    if (request.headers.has("Authorization")) {
      return this.#send(request);
    }
    const stale = this.#tokens.access_token;
    const retry = request.clone(); // the body can be sent once only
    request.headers.set("Authorization", `Bearer ${stale}`);
    const response = await this.#send(request);
    if (response.status !== 401) {
      return response;
    }
    let fresh: string;
    try {
      fresh = await this.#refreshAfter(stale);
    } catch (err) {
      if (err instanceof KilnProblemError && err.status === 401) {
        return response; // the session is over: the caller sees the first 401
      }
      throw err;
    }
    await response.body?.cancel();
    retry.headers.set("Authorization", `Bearer ${fresh}`);
    return this.#send(retry);
  };

  /** An access token newer than stale: the current one if a refresh has happened since, else a refreshed one. */
  #refreshAfter(stale: string): Promise<string> {
    if (this.#tokens.access_token !== stale) {
      return Promise.resolve(this.#tokens.access_token);
    }
    this.#refreshing ??= (async () => {
      try {
        const body = { refresh_token: this.#tokens.refresh_token };
        this.#tokens = await unwrap(this.#client.POST("/v1/auth/refresh", { body }));
        this.#onRefresh?.(this.#tokens);
        return this.#tokens.access_token;
      } finally {
        this.#refreshing = undefined;
      }
    })();
    return this.#refreshing;
  }
}

// Streamed chat replies (stream.ts).
export {
  ChatResult,
  ChatStream,
  KilnStreamError,
  MAX_EVENT_LENGTH,
  SSEDecoder,
  streamChatCompletion,
  type ChatDeltaEvent,
  type Citation,
  type CitationsEvent,
  type ChatDoneEvent,
  type ChatEvent,
  type ChatEventType,
  type ChatMessage,
  type ChatUsage,
  type ServerSentEvent,
  type StreamChatCompletionOptions,
  type StreamChatRequest,
  type StreamErrorKind,
  type ToolCall,
  type ToolCallDeltaEvent,
  type ToolCallEvent,
  type ToolResultEvent,
} from "./stream.js";

// Streamed conversation replies, resumable (conversations.ts).
export {
  MESSAGE_ID_HEADER,
  ReplyStream,
  resumeReply,
  streamConversationMessage,
  streamToolResults,
  type ReplyEvent,
  type ReplyStartedEvent,
  type ResumeReplyOptions,
  type StreamConversationMessageOptions,
  type StreamConversationMessageRequest,
  type StreamToolResultsOptions,
  type StreamToolResultsRequest,
} from "./conversations.js";
export {
  followJob,
  type FollowJobOptions,
  type Job,
  type JobEndEvent,
  type JobEvent,
  type JobProgressEvent,
} from "./jobs.js";

// The API's main objects under their own names (models.ts).
export type {
  ApiKey,
  ApiKeyWithSecret,
  AuditEvent,
  ChatCompletion,
  ChatRequest,
  Conversation,
  ConversationMessageRequest,
  ConversationReply,
  Health,
  Identity,
  Invitation,
  JobState,
  Me,
  Member,
  Message,
  MessageFeedback,
  Model,
  Notification,
  NotificationPreferences,
  Org,
  OrgMembership,
  OrgSettings,
  Prompt,
  PromptLabel,
  PromptVersion,
  ProviderKey,
  Readiness,
  RenderedPrompt,
  Role,
  Schema,
  Scope,
  Session,
  Usage,
  UsageBucket,
} from "./models.js";
