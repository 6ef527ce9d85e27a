// streamConversationMessage and resumeReply: ReplyStream on canned streams, and a
// conversation end-to-end against the real server's offline dev provider, with a stream
// dropped after 3 events and resumed with Last-Event-ID.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import {
  ChatResult,
  createKilnClient,
  KilnProblemError,
  KilnStreamError,
  MESSAGE_ID_HEADER,
  resumeReply,
  streamConversationMessage,
  streamToolResults,
  unwrap,
} from "../dist/index.js";
import { newAPIKey, startKiln } from "./kiln-server.mjs";

const conversationId = "0193a3c0-0000-7000-8000-000000000001";
const replyId = "0193a3c0-0000-7000-8000-000000000002";
const started =
  `id: 1\nevent: reply.started\ndata: {"conversation_id":"${conversationId}","message_id":"${replyId}",` +
  `"input_message_ids":["0193a3c0-0000-7000-8000-000000000003"]}\n\n`;
const delta = 'id: 2\nevent: message.delta\ndata: {"text":"[dev] "}\n\n';
const done = `id: 3\nevent: done\ndata: {"id":"${replyId}","model":"default","provider":"dev","provider_model":"dev-echo","finish_reason":"stop","attempts":[]}\n\n`;

/** A client whose fetch answers every request with an event stream of body, sent in chunks of 3 bytes. */
function fakeClient(body, { headers = {}, seen = [] } = {}) {
  const fetch = async (request) => {
    seen.push(request);
    const bytes = new TextEncoder().encode(body);
    let at = 0;
    const stream = new ReadableStream({
      pull(controller) {
        if (at >= bytes.length) {
          controller.close();
          return;
        }
        controller.enqueue(bytes.slice(at, at + 3));
        at += 3;
      },
    });
    return new Response(stream, { status: 200, headers: { "Content-Type": "text/event-stream", ...headers } });
  };
  return createKilnClient({ baseUrl: "http://kiln.invalid", token: "kiln_test", fetch });
}

async function drain(stream) {
  const events = [];
  for await (const event of stream) {
    events.push(event);
  }
  return events;
}

describe("ReplyStream on canned streams", () => {
  test("reply.started, typed events, the message id from the header; the request asks for a stream", async () => {
    const seen = [];
    const stream = await streamConversationMessage(
      fakeClient(started + delta + done, { headers: { [MESSAGE_ID_HEADER]: replyId }, seen }),
      conversationId,
      { content: "hi" },
      { org: "0193a000-0000-7000-8000-000000000000", idempotencyKey: "k1" },
    );
    assert.equal(stream.messageId, replyId);
    assert.equal(stream.lastEventId, 0);
    const events = await drain(stream);
    assert.deepEqual(
      events.map((e) => [e.id, e.type]),
      [
        [1, "reply.started"],
        [2, "message.delta"],
        [3, "done"],
      ],
    );
    assert.equal(events[0].data.message_id, replyId);
    assert.equal(stream.lastEventId, 3);

    const [request] = seen;
    assert.equal(request.method, "POST");
    assert.equal(new URL(request.url).pathname, `/v1/conversations/${conversationId}/messages`);
    assert.equal(request.headers.get("Accept"), "text/event-stream");
    assert.equal(request.headers.get("Kiln-Org"), "0193a000-0000-7000-8000-000000000000");
    assert.equal(request.headers.get("Idempotency-Key"), "k1");
    assert.deepEqual(JSON.parse(await request.text()), { content: "hi", stream: true });
  });

  test("without the header, the message id comes from reply.started", async () => {
    const stream = await streamConversationMessage(fakeClient(started + delta + done), conversationId, { content: "hi" });
    assert.equal(stream.messageId, undefined);
    const result = await stream.collect();
    assert.equal(stream.messageId, replyId);
    assert.equal(result.text, "[dev] ");
    assert.equal(result.done?.id, replyId);
  });

  test("resumeReply sends Last-Event-ID; lastEventId stays at the last whole event of a cut stream", async () => {
    const seen = [];
    const cut = `${delta}id: 3\nevent: message.delta\ndata: {"te`;
    const stream = await resumeReply(fakeClient(cut, { seen }), conversationId, replyId, { lastEventId: 1 });
    assert.equal(stream.messageId, replyId);
    assert.equal(stream.lastEventId, 1);
    const events = [];
    await assert.rejects(
      async () => {
        for await (const event of stream) {
          events.push(event);
        }
      },
      (err) => err instanceof KilnStreamError && err.kind === "truncated",
    );
    assert.deepEqual(events, [{ type: "message.delta", id: 2, data: { text: "[dev] " } }]);
    assert.equal(stream.lastEventId, 2, "event 3 never arrived whole");

    const [request] = seen;
    assert.equal(request.method, "GET");
    assert.equal(new URL(request.url).pathname, `/v1/conversations/${conversationId}/messages/${replyId}/events`);
    assert.equal(request.headers.get("Last-Event-ID"), "1");
    assert.equal(request.headers.get("Accept"), "text/event-stream");

    const fromStart = [];
    await resumeReply(fakeClient(done, { seen: fromStart }), conversationId, replyId);
    assert.equal(fromStart[0].headers.get("Last-Event-ID"), null);
    await assert.rejects(resumeReply(fakeClient(done), conversationId, replyId, { lastEventId: -1 }), RangeError);
  });

  test("an error event throws KilnProblemError", async () => {
    const problem = {
      type: "urn:kiln:problem:upstream_error",
      title: "Upstream error",
      status: 502,
      code: "upstream_error",
      detail: "boom",
      request_id: "req-9",
    };
    const stream = await resumeReply(
      fakeClient(`${started}id: 2\nevent: error\ndata: ${JSON.stringify(problem)}\n\n`),
      conversationId,
      replyId,
    );
    await assert.rejects(drain(stream), (err) => err instanceof KilnProblemError && err.code === "upstream_error");
    assert.equal(stream.lastEventId, 1);
  });
});

describe("conversations against kiln serve (dev provider)", () => {
  /** @type {Awaited<ReturnType<typeof startKiln>>} */
  let kiln;
  /** @type {import("../dist/index.js").KilnClient} */
  let client;
  let conversation;
  let replyMessageId;
  const streamed = "one two three four five six seven eight nine ten";

  before(async () => {
    kiln = await startKiln();
    client = createKilnClient({ baseUrl: kiln.baseUrl, token: await newAPIKey(kiln.baseUrl) });
    conversation = await unwrap(client.POST("/v1/conversations", { body: { title: "SDK TS conversation" } }));
  });

  after(async () => {
    if (kiln) {
      const { code, signal } = await kiln.stop();
      assert.equal(code, 0, `kiln serve exited with ${code ?? signal} after SIGTERM, want 0\n${kiln.logs()}`);
    }
  });

  const path = () => ({ id: conversation.id });

  test("a blocking message adds the user's message and the reply", async () => {
    const text = "hello from the TypeScript SDK";
    const { data, response } = await client.POST("/v1/conversations/{id}/messages", { params: { path: path() }, body: { content: text } });
    assert.equal(response.status, 200);
    const [user, reply, ...rest] = data.messages;
    assert.equal(rest.length, 0);
    assert.equal(user.role, "user");
    assert.equal(user.content, text);
    assert.equal(reply.role, "assistant");
    assert.equal(reply.status, "completed");
    assert.equal(reply.content, `[dev] You said: ${text}`);
    assert.equal(response.headers.get(MESSAGE_ID_HEADER), reply.id);
  });

  test("a stream dropped after 3 events, resumed with Last-Event-ID, equals the full replay", async () => {
    const stream = await streamConversationMessage(client, conversation.id, { content: streamed });
    assert.ok(stream.messageId, "no Kiln-Message-Id header");
    replyMessageId = stream.messageId;
    const before = [];
    for await (const event of stream) {
      before.push(event);
      if (before.length === 3) {
        break; // drops the connection; the reply goes on
      }
    }
    assert.equal(before.length, 3);
    assert.equal(before[0].type, "reply.started");
    assert.equal(before[0].data.message_id, replyMessageId);
    assert.equal(before[0].data.conversation_id, conversation.id);
    assert.equal(stream.lastEventId, before[2].id);
    assert.equal(stream.response.bodyUsed, true);

    const resumed = await resumeReply(client, conversation.id, replyMessageId, { lastEventId: stream.lastEventId });
    const rest = await drain(resumed);
    assert.equal(resumed.lastEventId, rest.at(-1)?.id);
    const full = await drain(await resumeReply(client, conversation.id, replyMessageId));

    assert.deepEqual([...before, ...rest], full);
    assert.deepEqual(
      full.map((e) => e.id),
      full.map((_, i) => i + 1),
    );
    assert.equal(full.at(-1)?.type, "done");
    const result = full.reduce((r, e) => (e.type === "reply.started" ? r : r.add(e)), new ChatResult());
    assert.equal(result.text, `[dev] You said: ${streamed}`);
    assert.equal(result.done?.id, replyMessageId);
    assert.equal(result.done?.finish_reason, "stop");
  });

  test("the messages, the Markdown export, feedback and cancelling a finished reply", async () => {
    assert.ok(replyMessageId, "the streamed reply did not run");
    const messages = await unwrap(client.GET("/v1/conversations/{id}/messages", { params: { path: path() } }));
    assert.deepEqual(
      messages.data.map((m) => m.role),
      ["user", "assistant", "user", "assistant"],
    );
    const last = messages.data[3];
    assert.equal(last.id, replyMessageId);
    assert.equal(last.status, "completed");
    assert.equal(last.content, `[dev] You said: ${streamed}`);

    const { data: markdown, response } = await client.GET("/v1/conversations/{id}/export", {
      params: { path: path(), query: { format: "markdown" } },
      parseAs: "text",
    });
    assert.equal(response.status, 200);
    assert.match(response.headers.get("Content-Type") ?? "", /^text\/markdown/);
    assert.ok(markdown.includes(streamed) && markdown.includes("hello from the TypeScript SDK"), markdown);

    const feedback = await unwrap(
      client.POST("/v1/messages/{id}/feedback", { params: { path: { id: replyMessageId } }, body: { rating: "up" } }),
    );
    assert.equal(feedback.rating, "up");
    assert.equal(feedback.message_id, replyMessageId);

    const cancelled = await client.POST("/v1/conversations/{id}/messages/{message_id}/cancel", {
      params: { path: { id: conversation.id, message_id: replyMessageId } },
    });
    assert.equal(cancelled.response.status, 202);
    assert.equal(cancelled.data?.status, "completed");
  });

  test("a client tool, answered with streamToolResults", async () => {
    const tools = [
      { name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] } },
    ];
    const asked = await streamConversationMessage(client, conversation.id, {
      content: "Please call get_weather: Paris",
      options: { tools },
    });
    const call = await asked.collect();
    assert.equal(call.done?.finish_reason, "tool_calls");
    assert.equal(call.toolCalls.length, 1);
    const [toolCall] = call.toolCalls;
    const answer = await streamToolResults(client, conversation.id, {
      results: [{ tool_call_id: toolCall.id, content: "sunny, 21 °C" }],
      options: { tools },
    });
    assert.ok(answer.messageId && answer.messageId !== asked.messageId);
    const result = await answer.collect();
    assert.equal(result.text, "[dev] The tool get_weather returned: sunny, 21 °C");
    assert.equal(result.done?.id, answer.messageId);
  });

  test("resuming an unknown reply rejects with KilnProblemError not_found", async () => {
    await assert.rejects(
      resumeReply(client, conversation.id, conversation.id),
      (err) => err instanceof KilnProblemError && err.code === "not_found" && err.status === 404,
    );
  });
});
