/**
 * Streamed chat replies: {@link streamChatCompletion} sends `POST /v1/chat/completions`
 * with `stream: true` and returns a {@link ChatStream}, an async iterable of typed
 * {@link ChatEvent}s decoded from the server-sent events by {@link SSEDecoder}.
 */
import type { components } from "./schema.js";
// A cycle with index.ts, which re-exports this module: fine, as neither uses the other's
// bindings while it is being evaluated.
import { KilnProblemError, type KilnClient } from "./index.js";

type Schemas = components["schemas"];
/** A chat request for {@link streamChatCompletion}: the API's ChatRequest, whose `stream` is always true. */
export type StreamChatRequest = Omit<Schemas["ChatRequest"], "stream">;
export type ChatMessage = Schemas["ChatMessage"];
export type ToolCall = Schemas["ToolCall"];
export type ChatEventType = Schemas["ChatEventType"];
export type CitationsEvent = Schemas["CitationsEvent"];
export type Citation = Schemas["Citation"];
export type ChatDeltaEvent = Schemas["ChatDeltaEvent"];
export type ToolCallDeltaEvent = Schemas["ToolCallDeltaEvent"];
export type ToolCallEvent = Schemas["ToolCallEvent"];
export type ToolResultEvent = Schemas["ToolResultEvent"];
export type ChatUsage = Schemas["ChatUsage"];
export type ChatDoneEvent = Schemas["ChatDoneEvent"];

/**
 * One event of a chat stream; `type` says which data it carries. `id` is the event's
 * `id:`, 1, 2, … within the stream. `error` and `shutdown` events are not yielded: they
 * end the iteration with a thrown {@link KilnProblemError} or {@link KilnStreamError}.
 */
export type ChatEvent =
  | { type: "citations"; id: number; data: CitationsEvent }
  | { type: "message.delta"; id: number; data: ChatDeltaEvent }
  | { type: "tool_call.delta"; id: number; data: ToolCallDeltaEvent }
  | { type: "tool_call"; id: number; data: ToolCallEvent }
  | { type: "tool_result"; id: number; data: ToolResultEvent }
  | { type: "usage"; id: number; data: ChatUsage }
  | { type: "done"; id: number; data: ChatDoneEvent };

/** The largest line or event {@link SSEDecoder} accepts by default, in characters. */
export const MAX_EVENT_LENGTH = 8 << 20;

/** One server-sent event: its `event:` (default "message"), the last `id:` seen, and its data lines joined with "\n". */
export interface ServerSentEvent {
  event: string;
  id: string | undefined;
  data: string;
}

/** Why a {@link KilnStreamError} ended a stream. */
export type StreamErrorKind =
  /** The server is shutting down (a `shutdown` event): send the request again. */
  | "shutdown"
  /** The stream ended before its `done` event. */
  | "truncated"
  /** A line or an event was longer than the decoder's limit. */
  | "too_large"
  /** An event was not what the API describes (bad JSON, a bad id). */
  | "invalid";

/** A chat stream that ended without its `done` event for a reason other than a problem. */
export class KilnStreamError extends Error {
  readonly kind: StreamErrorKind;

  constructor(kind: StreamErrorKind, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "KilnStreamError";
    this.kind = kind;
  }
}

/**
 * Decodes a `text/event-stream` incrementally: feed it chunks of bytes or text as they
 * arrive, split anywhere (inside a line, a UTF-8 sequence or a `\r\n`), and it returns
 * the events each chunk completes. Lines end with `\n`, `\r\n` or `\r`; comments (such as
 * `: heartbeat`) and events without data are skipped; a line or an event longer than
 * `maxEventLength` throws a {@link KilnStreamError} `too_large`.
 */
export class SSEDecoder {
  readonly #utf8 = new TextDecoder();
  readonly #max: number;
  #line = ""; // the start of an unfinished line
  #skipLF = false; // the last chunk ended with \r: a \n starting the next one ends nothing
  #started = false;
  #event = "";
  #data: string[] = [];
  #dataLength = 0;
  #lastId: string | undefined;

  constructor(options: { maxEventLength?: number } = {}) {
    this.#max = options.maxEventLength ?? MAX_EVENT_LENGTH;
  }

  /** Decodes the next chunk and returns the events it completes. */
  decode(chunk: Uint8Array | string): ServerSentEvent[] {
    let text = typeof chunk === "string" ? chunk : this.#utf8.decode(chunk, { stream: true });
    if (!this.#started && text.length > 0) {
      this.#started = true;
      if (text.charCodeAt(0) === 0xfeff) {
        text = text.slice(1);
      }
    }
    const events: ServerSentEvent[] = [];
    let start = 0;
    if (this.#skipLF && text.length > 0) {
      this.#skipLF = false;
      if (text.charCodeAt(0) === 10) {
        start = 1;
      }
    }
    for (let i = start; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c !== 10 && c !== 13) {
        continue;
      }
      const line = this.#line + text.slice(start, i);
      this.#line = "";
      if (c === 13) {
        if (i + 1 < text.length) {
          if (text.charCodeAt(i + 1) === 10) {
            i++;
          }
        } else {
          this.#skipLF = true;
        }
      }
      start = i + 1;
      this.#processLine(line, events);
    }
    this.#line += text.slice(start);
    if (this.#line.length > this.#max) {
      throw new KilnStreamError("too_large", `event stream line over ${this.#max} characters`);
    }
    return events;
  }

  /**
   * Ends the input and returns the events it completes. As the format says, an event
   * that no blank line ended is dropped; {@link pending} reports whether one was.
   */
  flush(): ServerSentEvent[] {
    const events = this.decode(this.#utf8.decode());
    if (this.#line !== "") {
      const line = this.#line;
      this.#line = "";
      this.#processLine(line, events);
    }
    return events;
  }

  /** Reports whether an event has started (a field was read) and was not dispatched yet. */
  get pending(): boolean {
    return this.#data.length > 0 || this.#event !== "" || this.#line !== "";
  }

  #processLine(line: string, events: ServerSentEvent[]): void {
    if (line === "") {
      if (this.#data.length > 0) {
        events.push({ event: this.#event || "message", id: this.#lastId, data: this.#data.join("\n") });
      }
      this.#event = "";
      this.#data = [];
      this.#dataLength = 0;
      return;
    }
    if (line.charCodeAt(0) === 58 /* : */) {
      return; // a comment
    }
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.charCodeAt(0) === 32 /* space */) {
      value = value.slice(1);
    }
    switch (field) {
      case "data":
        this.#dataLength += value.length + 1;
        if (this.#dataLength > this.#max) {
          throw new KilnStreamError("too_large", `event stream event over ${this.#max} characters`);
        }
        this.#data.push(value);
        break;
      case "event":
        this.#event = value;
        break;
      case "id":
        if (!value.includes("\0")) {
          this.#lastId = value;
        }
        break;
    }
  }
}

/** Options of {@link streamChatCompletion}. */
export interface StreamChatCompletionOptions {
  /** Aborts the request, or the stream once it runs (closing the connection cancels the reply). */
  signal?: AbortSignal | undefined;
  /** The org a user token acts for (the `Kiln-Org` header; default its personal org). */
  org?: string | undefined;
  /** More request headers. */
  headers?: Record<string, string> | undefined;
}

/**
 * Sends `body` to `POST /v1/chat/completions` with `stream: true` and resolves to the
 * stream of the reply's events once the server has accepted the request; a refusal (any
 * non-2xx answer: an unknown model, a missing scope, …) rejects with a
 * {@link KilnProblemError}.
 *
 * ```ts
 * const stream = await streamChatCompletion(kiln, { messages: [{ role: "user", content: "Hi" }] });
 * for await (const event of stream) {
 *   if (event.type === "message.delta") process.stdout.write(event.data.text);
 * }
 * ```
 */
export async function streamChatCompletion(
  client: KilnClient,
  body: StreamChatRequest,
  options: StreamChatCompletionOptions = {},
): Promise<ChatStream> {
  const { signal, org, headers } = options;
  const result = await client.POST("/v1/chat/completions", {
    body: { ...body, stream: true },
    parseAs: "stream",
    headers: { Accept: "text/event-stream", ...headers },
    params: { header: org === undefined ? {} : { "Kiln-Org": org } },
    ...(signal ? { signal } : {}),
  });
  const { response } = result;
  if (!response.ok) {
    throw new KilnProblemError(response, result.error);
  }
  const contentType = response.headers.get("Content-Type") ?? "";
  if (!/^text\/event-stream\s*(;|$)/i.test(contentType) || !response.body) {
    await response.body?.cancel();
    throw new KilnStreamError(
      "invalid",
      `chat stream answered ${response.status} with Content-Type ${JSON.stringify(contentType)}, want text/event-stream`,
    );
  }
  return new ChatStream(response, signal);
}

const chatEventTypes: ReadonlySet<string> = new Set<ChatEvent["type"]>([
  "citations",
  "message.delta",
  "tool_call.delta",
  "tool_call",
  "tool_result",
  "usage",
  "done",
]);

/**
 * Yields the events of a Kiln stream's body whose types are in `types`, up to and including
 * its final one (`done`, unless `isFinal` says otherwise); the one reading loop under
 * {@link ChatStream}, the conversations' ReplyStream and {@link followJob}.
 * Returning early (break, throw) cancels the body, which closes the connection. `what`
 * names the stream in the error of one cut before `done`.
 */
export async function* readEvents<E extends { type: string }>(
  response: Response,
  signal: AbortSignal | undefined,
  types: ReadonlySet<string>,
  what: string,
  isFinal: (type: string) => boolean = (type) => type === "done",
): AsyncGenerator<E> {
  const reader = response.body!.getReader();
  const decoder = new SSEDecoder();
  try {
    for (;;) {
      signal?.throwIfAborted();
      const { value, done } = await reader.read();
      const events = done ? decoder.flush() : decoder.decode(value);
      for (const sse of events) {
        signal?.throwIfAborted();
        const event = decodeEvent<E>(response, sse, types);
        if (event) {
          yield event;
          if (isFinal(event.type)) {
            return;
          }
        }
      }
      if (done) {
        throw new KilnStreamError("truncated", `the ${what} stream ended before its final event`);
      }
    }
  } catch (err) {
    signal?.throwIfAborted(); // a read failed because of the abort
    throw err;
  } finally {
    reader.cancel().catch(() => {}); // closes the connection; a no-op after the end
  }
}

/**
 * Decodes one server-sent event of a Kiln stream into `{ type, id, data }`: undefined for a
 * type not in `types` (a newer event), a {@link KilnProblemError} thrown for `error`, a
 * {@link KilnStreamError} for `shutdown` and for malformed events.
 */
function decodeEvent<E>(response: Response, sse: ServerSentEvent, types: ReadonlySet<string>): E | undefined {
  let data: unknown;
  try {
    data = JSON.parse(sse.data);
  } catch (err) {
    throw new KilnStreamError("invalid", `the ${sse.event} event's data is not JSON`, { cause: err });
  }
  if (sse.event === "error") {
    throw new KilnProblemError(response, data);
  }
  if (sse.event === "shutdown") {
    const reason = (data as { reason?: unknown } | null)?.reason;
    throw new KilnStreamError("shutdown", typeof reason === "string" ? reason : "the server shut the stream down");
  }
  if (!types.has(sse.event)) {
    return undefined; // a newer event type
  }
  const id = Number(sse.id);
  if (!Number.isSafeInteger(id) || id < 1) {
    throw new KilnStreamError("invalid", `the ${sse.event} event has the id ${JSON.stringify(sse.id)}`);
  }
  if (typeof data !== "object" || data === null) {
    throw new KilnStreamError("invalid", `the ${sse.event} event's data is not an object`);
  }
  return { type: sse.event, id, data } as E;
}

/**
 * The events of one streamed reply. Iterate it once with `for await`; the iteration ends
 * after the `done` event, or throws: a {@link KilnProblemError} for an `error` event, a
 * {@link KilnStreamError} for a `shutdown`, a cut stream or a malformed event, and the
 * signal's reason once it aborts. Leaving the loop early (break, throw) closes the
 * connection, which cancels the reply on the server. Heartbeats and event types this SDK
 * does not know are skipped.
 */
export class ChatStream implements AsyncIterable<ChatEvent> {
  /** The HTTP response; `Kiln-Provider` and `Kiln-Provider-Model` name the target that serves the reply. */
  readonly response: Response;
  readonly #signal: AbortSignal | undefined;
  #used = false;

  constructor(response: Response, signal?: AbortSignal) {
    this.response = response;
    this.#signal = signal;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<ChatEvent> {
    if (this.#used || !this.response.body) {
      throw new Error("a ChatStream can be iterated once only");
    }
    this.#used = true;
    yield* readEvents<ChatEvent>(this.response, this.#signal, chatEventTypes, "chat");
  }

  /** Reads the whole stream and returns what its events add up to. */
  async collect(): Promise<ChatResult> {
    const result = new ChatResult();
    for await (const event of this) {
      result.add(event);
    }
    return result;
  }

  /** Reads the whole stream and returns the reply as the assistant message to append to the conversation. */
  async finalMessage(): Promise<ChatMessage> {
    return (await this.collect()).message();
  }

}

/** What a chat stream's events add up to; {@link ChatStream.collect} builds one, or feed events to {@link ChatResult.add}. */
export class ChatResult {
  /** The `citations` event's sources, by number: undefined unless the request named `knowledge_bases` (empty when none was retrieved). */
  citations: Citation[] | undefined = undefined;
  /** The text of every `message.delta` event, joined. */
  text = "";
  /**
   * The `tool_call` events, in order: the server's (`executor: "server"`), answered by
   * `toolResults`, and the client's, which end the reply with `finish_reason: "tool_calls"`.
   */
  toolCalls: ToolCallEvent[] = [];
  /** The results of the server's tool calls. */
  toolResults: ToolResultEvent[] = [];
  /** The usage of the whole reply. */
  usage: ChatUsage | undefined = undefined;
  /** The `done` event: the reply's id, the target that served it and the finish reason; undefined until the stream completed. */
  done: ChatDoneEvent | undefined = undefined;

  /** Adds one event. */
  add(event: ChatEvent): this {
    switch (event.type) {
      case "citations":
        this.citations = event.data.citations;
        break;
      case "message.delta":
        this.text += event.data.text;
        break;
      case "tool_call":
        this.toolCalls.push(event.data);
        break;
      case "tool_result":
        this.toolResults.push(event.data);
        break;
      case "usage":
        this.usage = event.data;
        break;
      case "done":
        this.done = event.data;
        break;
    }
    return this;
  }

  /** The reply as the assistant message to append to the conversation: its text and the client's tool calls. */
  message(): ChatMessage {
    const message: ChatMessage = { role: "assistant" };
    if (this.text) {
      message.content = this.text;
    }
    const calls: ToolCall[] = this.toolCalls
      .filter((call) => call.executor === "client")
      .map(({ id, name, arguments: args }) => ({ id, name, arguments: args }));
    if (calls.length > 0) {
      message.tool_calls = calls;
    }
    return message;
  }
}
