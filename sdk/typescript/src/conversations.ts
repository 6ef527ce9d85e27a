/**
 * Streamed conversation replies: {@link streamConversationMessage} sends
 * `POST /v1/conversations/{id}/messages` with `stream: true` (and
 * {@link streamToolResults} `POST …/tool-results`), {@link resumeReply} attaches to a
 * reply's events (`GET …/messages/{message_id}/events`) after the last one received. Each
 * resolves to a {@link ReplyStream}, an async iterable of typed {@link ReplyEvent}s
 * decoded by stream.ts's {@link SSEDecoder}.
 */
import type { components } from "./schema.js";
// A cycle with index.ts, which re-exports this module: fine, as neither uses the other's
// bindings while it is being evaluated.
import { KilnProblemError, type KilnClient } from "./index.js";
import { ChatResult, KilnStreamError, readEvents, type ChatEvent } from "./stream.js";

type Schemas = components["schemas"];
/** The user's message for {@link streamConversationMessage}: the API's ConversationMessageRequest, whose `stream` is always true. */
export type StreamConversationMessageRequest = Omit<Schemas["ConversationMessageRequest"], "stream">;
/** The client tools' results for {@link streamToolResults}: the API's ToolResultsRequest, whose `stream` is always true. */
export type StreamToolResultsRequest = Omit<Schemas["ToolResultsRequest"], "stream">;
export type ReplyStartedEvent = Schemas["ReplyStartedEvent"];

/**
 * One event of a conversation reply's stream: first `reply.started` (the message ids),
 * then the {@link ChatEvent}s of a chat stream, the last one `done` (its `data.id` is the
 * reply's message id). `id` is the event's `id:`, 1, 2, …, the same on every replay of the
 * reply. `error` and `shutdown` events are not yielded: they end the iteration with a
 * thrown {@link KilnProblemError} or {@link KilnStreamError}.
 */
export type ReplyEvent = { type: "reply.started"; id: number; data: ReplyStartedEvent } | ChatEvent;

/** The response header naming the reply's message (the name of its event stream). */
export const MESSAGE_ID_HEADER = "Kiln-Message-Id";

/** Options of {@link streamConversationMessage} and {@link streamToolResults}. */
export interface StreamConversationMessageOptions {
  /** Aborts the request, or the stream once it runs; the reply goes on on the server. */
  signal?: AbortSignal | undefined;
  /** The org a user token acts for (the `Kiln-Org` header; default its personal org). */
  org?: string | undefined;
  /** Makes the request safe to retry (the `Idempotency-Key` header): a finished reply is replayed. */
  idempotencyKey?: string | undefined;
  /** More request headers. */
  headers?: Record<string, string> | undefined;
}

/** Options of {@link streamToolResults}. */
export type StreamToolResultsOptions = StreamConversationMessageOptions;

/** Options of {@link resumeReply}. */
export interface ResumeReplyOptions {
  /**
   * The id of the last event received (a stream's {@link ReplyStream.lastEventId}), sent as
   * `Last-Event-ID`: the stream starts after it. Default 0: every event from `reply.started` on.
   */
  lastEventId?: number | undefined;
  /** Aborts the request, or the stream once it runs; the reply goes on on the server. */
  signal?: AbortSignal | undefined;
  /** The org a user token acts for (the `Kiln-Org` header; default its personal org). */
  org?: string | undefined;
  /** More request headers. */
  headers?: Record<string, string> | undefined;
}

/**
 * Sends `body` to `POST /v1/conversations/{id}/messages` with `stream: true` and resolves
 * to the stream of the reply's events once the server has accepted the message; a refusal
 * (any non-2xx answer: an unknown conversation, a reply already running, …) rejects with a
 * {@link KilnProblemError}. A stream that is cut is picked up with {@link resumeReply}:
 *
 * ```ts
 * const stream = await streamConversationMessage(kiln, conversationId, { content: "Hi" });
 * try {
 *   for await (const event of stream) {
 *     if (event.type === "message.delta") process.stdout.write(event.data.text);
 *   }
 * } catch (err) {
 *   if (!(err instanceof KilnStreamError)) throw err; // the connection was lost: resume
 *   const rest = await resumeReply(kiln, conversationId, stream.messageId!, { lastEventId: stream.lastEventId });
 *   …
 * }
 * ```
 */
export async function streamConversationMessage(
  client: KilnClient,
  conversationId: string,
  body: StreamConversationMessageRequest,
  options: StreamConversationMessageOptions = {},
): Promise<ReplyStream> {
  const result = await client.POST("/v1/conversations/{id}/messages", {
    ...postInit(conversationId, options),
    body: { ...body, stream: true },
  });
  return openReplyStream(result, options.signal, undefined, 0);
}

/**
 * Sends `body` to `POST /v1/conversations/{id}/tool-results` with `stream: true` and
 * resolves to the stream of the next reply's events, as {@link streamConversationMessage}.
 */
export async function streamToolResults(
  client: KilnClient,
  conversationId: string,
  body: StreamToolResultsRequest,
  options: StreamToolResultsOptions = {},
): Promise<ReplyStream> {
  const result = await client.POST("/v1/conversations/{id}/tool-results", {
    ...postInit(conversationId, options),
    body: { ...body, stream: true },
  });
  return openReplyStream(result, options.signal, undefined, 0);
}

/** The request options of a streamed POST to a conversation. */
function postInit(conversationId: string, options: StreamConversationMessageOptions) {
  const { signal, headers } = options;
  return {
    params: { path: { id: conversationId }, header: postHeaders(options) },
    parseAs: "stream" as const,
    headers: { Accept: "text/event-stream", ...headers },
    ...(signal ? { signal } : {}),
  };
}

/**
 * Attaches to the events of the reply `messageId` of the conversation
 * (`GET /v1/conversations/{id}/messages/{message_id}/events`): those after
 * `options.lastEventId`, then the live ones until the reply ends. The events keep their
 * ids, so a stream that was cut and resumed yields each event exactly once. Rejects with a
 * {@link KilnProblemError}: `not_found` for an unknown reply, `stream_expired` (410) once
 * its events are no longer kept.
 */
export async function resumeReply(
  client: KilnClient,
  conversationId: string,
  messageId: string,
  options: ResumeReplyOptions = {},
): Promise<ReplyStream> {
  const { lastEventId = 0, signal, org, headers } = options;
  if (!Number.isSafeInteger(lastEventId) || lastEventId < 0) {
    throw new RangeError(`lastEventId ${lastEventId} is not an event id`);
  }
  const header: { "Kiln-Org"?: string; "Last-Event-ID"?: string } = {};
  if (org !== undefined) {
    header["Kiln-Org"] = org;
  }
  if (lastEventId > 0) {
    header["Last-Event-ID"] = String(lastEventId);
  }
  const result = await client.GET("/v1/conversations/{id}/messages/{message_id}/events", {
    params: { path: { id: conversationId, message_id: messageId }, header },
    parseAs: "stream",
    headers: { Accept: "text/event-stream", ...headers },
    ...(signal ? { signal } : {}),
  });
  return openReplyStream(result, signal, messageId, lastEventId);
}

/** The typed header parameters of the two POSTs. */
function postHeaders(options: StreamConversationMessageOptions): { "Idempotency-Key"?: string; "Kiln-Org"?: string } {
  const header: { "Idempotency-Key"?: string; "Kiln-Org"?: string } = {};
  if (options.idempotencyKey !== undefined) {
    header["Idempotency-Key"] = options.idempotencyKey;
  }
  if (options.org !== undefined) {
    header["Kiln-Org"] = options.org;
  }
  return header;
}

/** The stream of an accepted request, or the error of a refused one. */
async function openReplyStream(
  result: { error?: unknown; response: Response },
  signal: AbortSignal | undefined,
  messageId: string | undefined,
  lastEventId: number,
): Promise<ReplyStream> {
  const { response } = result;
  if (!response.ok) {
    throw new KilnProblemError(response, result.error);
  }
  const contentType = response.headers.get("Content-Type") ?? "";
  if (!/^text\/event-stream\s*(;|$)/i.test(contentType) || !response.body) {
    await response.body?.cancel();
    throw new KilnStreamError(
      "invalid",
      `reply stream answered ${response.status} with Content-Type ${JSON.stringify(contentType)}, want text/event-stream`,
    );
  }
  return new ReplyStream(response, {
    messageId: messageId ?? response.headers.get(MESSAGE_ID_HEADER) ?? undefined,
    lastEventId,
    ...(signal ? { signal } : {}),
  });
}

const replyEventTypes: ReadonlySet<string> = new Set<ReplyEvent["type"]>([
  "reply.started",
  "citations",
  "message.delta",
  "tool_call.delta",
  "tool_call",
  "tool_result",
  "usage",
  "done",
]);

/**
 * The events of one conversation reply. Iterate it once with `for await`; the iteration
 * ends after the `done` event, or throws: a {@link KilnProblemError} for an `error` event,
 * a {@link KilnStreamError} for a `shutdown`, a cut stream or a malformed event, and the
 * signal's reason once it aborts. The reply is generated apart from the connection:
 * leaving the loop early (break, throw) closes the connection and the reply goes on;
 * {@link resumeReply} with {@link messageId} and {@link lastEventId} yields the events
 * not seen yet. Heartbeats and event types this SDK does not know are skipped.
 */
export class ReplyStream implements AsyncIterable<ReplyEvent> {
  /** The HTTP response. */
  readonly response: Response;
  readonly #signal: AbortSignal | undefined;
  #messageId: string | undefined;
  #lastEventId: number;
  #used = false;

  constructor(response: Response, options: { signal?: AbortSignal; messageId?: string | undefined; lastEventId?: number } = {}) {
    this.response = response;
    this.#signal = options.signal;
    this.#messageId = options.messageId;
    this.#lastEventId = options.lastEventId ?? 0;
  }

  /**
   * The reply's message id, which names its events for {@link resumeReply}, its feedback
   * and cancel: from the `Kiln-Message-Id` header, else from `reply.started`.
   */
  get messageId(): string | undefined {
    return this.#messageId;
  }

  /**
   * The id of the last event yielded; before the first, the id the stream was resumed
   * after (0 for a new reply). {@link resumeReply} with it yields exactly the events this
   * stream has not.
   */
  get lastEventId(): number {
    return this.#lastEventId;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<ReplyEvent> {
    if (this.#used || !this.response.body) {
      throw new Error("a ReplyStream can be iterated once only");
    }
    this.#used = true;
    for await (const event of readEvents<ReplyEvent>(this.response, this.#signal, replyEventTypes, "reply")) {
      if (event.type === "reply.started") {
        this.#messageId ??= event.data.message_id;
      }
      this.#lastEventId = event.id;
      yield event;
    }
  }

  /** Reads the rest of the stream and returns what its chat events add up to; `done.id` is the reply's message id. */
  async collect(): Promise<ChatResult> {
    const result = new ChatResult();
    for await (const event of this) {
      if (event.type !== "reply.started") {
        result.add(event);
      }
    }
    return result;
  }

}
