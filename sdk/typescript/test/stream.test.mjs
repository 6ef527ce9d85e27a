// streamChatCompletion: SSEDecoder on chunks split anywhere, ChatStream on canned
// streams, and end-to-end against the real server's offline dev provider.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import {
  ChatResult,
  createKilnClient,
  KilnProblemError,
  KilnStreamError,
  REQUEST_ID_HEADER,
  SSEDecoder,
  streamChatCompletion,
} from "../dist/index.js";
import { newAPIKey, startKiln } from "./kiln-server.mjs";

const canned =
  "\uFEFF: heartbeat\n\n" +
  'id: 1\nevent: message.delta\ndata: {"text":"[dev] 21 °C 🔥"}\n\n' +
  ": heartbeat\n\n" +
  'id: 2\nevent: tool_call.delta\ndata: {"index":0,"id":"c1","name":"f","arguments":"{\\"a\\":"}\n\n' +
  'id: 3\nevent: tool_call\ndata: {"index":0,"id":"c1","name":"f","arguments":"{\\"a\\":1}","executor":"client"}\n\n' +
  "event: no.data\n\n" +
  'id: 4\nevent: something.new\ndata: {"x":1}\n\n' +
  'id: 5\nevent: usage\ndata: {"prompt_tokens":3,\ndata: "completion_tokens":4,"cached_tokens":0,"total_tokens":7,"cost_usd":0}\n\n' +
  'id: 6\nevent: done\ndata: {"id":"r1","model":"default","provider":"dev","provider_model":"dev-echo","finish_reason":"tool_calls","attempts":[]}\n\n';

const cannedEvents = [
  { event: "message.delta", id: "1", data: '{"text":"[dev] 21 °C 🔥"}' },
  { event: "tool_call.delta", id: "2", data: '{"index":0,"id":"c1","name":"f","arguments":"{\\"a\\":"}' },
  { event: "tool_call", id: "3", data: '{"index":0,"id":"c1","name":"f","arguments":"{\\"a\\":1}","executor":"client"}' },
  { event: "something.new", id: "4", data: '{"x":1}' },
  { event: "usage", id: "5", data: '{"prompt_tokens":3,\n"completion_tokens":4,"cached_tokens":0,"total_tokens":7,"cost_usd":0}' },
  {
    event: "done",
    id: "6",
    data: '{"id":"r1","model":"default","provider":"dev","provider_model":"dev-echo","finish_reason":"tool_calls","attempts":[]}',
  },
];

const lineEndings = { LF: "\n", CRLF: "\r\n", CR: "\r" };
const withEndings = (text, ending) => text.replaceAll("\n", ending);

/** Splits bytes at the given offsets. */
function split(bytes, offsets) {
  const chunks = [];
  let from = 0;
  for (const at of [...offsets, bytes.length]) {
    chunks.push(bytes.subarray(from, at));
    from = at;
  }
  return chunks;
}

function decodeAll(chunks) {
  const decoder = new SSEDecoder();
  const events = chunks.flatMap((chunk) => decoder.decode(chunk));
  return [...events, ...decoder.flush()];
}

describe("SSEDecoder", () => {
  for (const [name, ending] of Object.entries(lineEndings)) {
    const bytes = new TextEncoder().encode(withEndings(canned, ending));

    test(`${name}: whole, one byte at a time, and split in two at every offset`, () => {
      assert.deepEqual(decodeAll([bytes]), cannedEvents);
      assert.deepEqual(
        decodeAll(split(bytes, Array.from({ length: bytes.length - 1 }, (_, i) => i + 1))),
        cannedEvents,
      );
      for (let at = 0; at <= bytes.length; at++) {
        assert.deepEqual(decodeAll(split(bytes, [at])), cannedEvents, `split at ${at}`);
      }
    });

    test(`${name}: as text in chunks of every size`, () => {
      const text = withEndings(canned, ending);
      for (let size = 1; size <= 17; size++) {
        const chunks = [];
        for (let i = 0; i < text.length; i += size) {
          chunks.push(text.slice(i, i + size));
        }
        assert.deepEqual(decodeAll(chunks), cannedEvents, `chunks of ${size}`);
      }
    });
  }

  test("a \\r at the end of a chunk and a \\n starting the next end one line", () => {
    const decoder = new SSEDecoder();
    assert.deepEqual(decoder.decode("data: a\r"), []);
    assert.deepEqual(decoder.decode("\n\r"), [{ event: "message", id: undefined, data: "a" }]);
    assert.deepEqual(decoder.decode("\ndata: b\r\r"), [{ event: "message", id: undefined, data: "b" }]);
  });

  test("fields: no space after the colon, no colon, unknown fields, a persisting id", () => {
    const decoder = new SSEDecoder();
    const events = decoder.decode("id: 7\ndata:x\ndata\nretry: 10\nfoo: bar\n\nevent: e\ndata:  y\n\n");
    assert.deepEqual(events, [
      { event: "message", id: "7", data: "x\n" },
      { event: "e", id: "7", data: " y" },
    ]);
  });

  test("an event no blank line ended is dropped, and pending says so", () => {
    const decoder = new SSEDecoder();
    assert.deepEqual(decoder.decode("data: a\n\ndata: b"), [{ event: "message", id: undefined, data: "a" }]);
    assert.equal(decoder.pending, true);
    assert.deepEqual(decoder.flush(), []);
  });

  test("a line or an event over the limit throws too_large", () => {
    const tooLarge = (err) => err instanceof KilnStreamError && err.kind === "too_large";
    assert.throws(() => new SSEDecoder({ maxEventLength: 16 }).decode(`data: ${"x".repeat(20)}`), tooLarge);
    const decoder = new SSEDecoder({ maxEventLength: 16 });
    assert.throws(() => decoder.decode("data: 12345\ndata: 12345\ndata: 12345\n"), tooLarge);
  });
});

/** A client whose fetch answers every request with status, contentType and body, sent in chunks of 3 bytes. */
function fakeClient(status, contentType, body, seen = []) {
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
    return new Response(stream, { status, headers: { "Content-Type": contentType, [REQUEST_ID_HEADER]: "req-7" } });
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

describe("ChatStream on canned streams", () => {
  const first = 'id: 1\nevent: message.delta\ndata: {"text":"a"}\n\n';

  test("typed events with their ids; unknown types skipped; the request asks for a stream", async () => {
    const seen = [];
    const stream = await streamChatCompletion(
      fakeClient(200, "text/event-stream; charset=utf-8", withEndings(canned, "\r\n"), seen),
      { messages: [{ role: "user", content: "hi" }] },
      { org: "0193a000-0000-7000-8000-000000000000" },
    );
    const events = await drain(stream);
    assert.deepEqual(
      events.map((e) => [e.id, e.type]),
      [
        [1, "message.delta"],
        [2, "tool_call.delta"],
        [3, "tool_call"],
        [5, "usage"],
        [6, "done"],
      ],
    );
    const result = events.reduce((r, e) => r.add(e), new ChatResult());
    assert.equal(result.text, "[dev] 21 °C 🔥");
    assert.equal(result.usage?.total_tokens, 7);
    assert.equal(result.done?.finish_reason, "tool_calls");
    assert.deepEqual(result.message(), {
      role: "assistant",
      content: "[dev] 21 °C 🔥",
      tool_calls: [{ id: "c1", name: "f", arguments: '{"a":1}' }],
    });

    const [request] = seen;
    assert.equal(request.headers.get("Accept"), "text/event-stream");
    assert.equal(request.headers.get("Authorization"), "Bearer kiln_test");
    assert.equal(request.headers.get("Kiln-Org"), "0193a000-0000-7000-8000-000000000000");
    assert.deepEqual(JSON.parse(await request.text()), { messages: [{ role: "user", content: "hi" }], stream: true });
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
    const stream = await streamChatCompletion(
      fakeClient(200, "text/event-stream", `${first}id: 2\nevent: error\ndata: ${JSON.stringify(problem)}\n\n`),
      { messages: [{ role: "user", content: "hi" }] },
    );
    const events = [];
    await assert.rejects(
      async () => {
        for await (const event of stream) {
          events.push(event);
        }
      },
      (err) => err instanceof KilnProblemError && err.code === "upstream_error" && err.status === 502 && err.requestId === "req-9",
    );
    assert.deepEqual(events, [{ type: "message.delta", id: 1, data: { text: "a" } }]);
  });

  for (const [name, tail, kind] of [
    ["a shutdown event", 'id: 2\nevent: shutdown\ndata: {"reason":"bye"}\n\n', "shutdown"],
    ["a stream cut inside an event", 'id: 2\nevent: message.delta\ndata: {"te', "truncated"],
    ["a stream cut between events", "", "truncated"],
    ["data that is not JSON", "id: 2\nevent: usage\ndata: {\n\n", "invalid"],
    ["an event whose id is not a number", 'id: x\nevent: usage\ndata: {"x":1}\n\n', "invalid"],
  ]) {
    test(`${name} throws KilnStreamError ${kind}`, async () => {
      const stream = await streamChatCompletion(fakeClient(200, "text/event-stream", first + tail), {
        messages: [{ role: "user", content: "hi" }],
      });
      await assert.rejects(drain(stream), (err) => err instanceof KilnStreamError && err.kind === kind);
    });
  }

  test("a refusal rejects with KilnProblemError; a JSON answer with KilnStreamError", async () => {
    const forbidden = JSON.stringify({
      type: "urn:kiln:problem:permission_denied",
      title: "Forbidden",
      status: 403,
      code: "permission_denied",
      request_id: "req-7",
    });
    await assert.rejects(
      streamChatCompletion(fakeClient(403, "application/problem+json", forbidden), { messages: [] }),
      (err) => err instanceof KilnProblemError && err.code === "permission_denied" && err.status === 403,
    );
    await assert.rejects(
      streamChatCompletion(fakeClient(200, "application/json", "{}"), { messages: [] }),
      (err) => err instanceof KilnStreamError && err.kind === "invalid" && /text\/event-stream/.test(err.message),
    );
  });

  test("a stream is iterated once", async () => {
    const stream = await streamChatCompletion(fakeClient(200, "text/event-stream", canned), { messages: [] });
    await drain(stream);
    await assert.rejects(drain(stream), /once/);
  });
});

describe("streamChatCompletion against kiln serve (dev provider)", () => {
  /** @type {Awaited<ReturnType<typeof startKiln>>} */
  let kiln;
  /** @type {import("../dist/index.js").KilnClient} */
  let client;
  const user = (content) => [{ role: "user", content }];

  before(async () => {
    kiln = await startKiln();
    client = createKilnClient({ baseUrl: kiln.baseUrl, token: await newAPIKey(kiln.baseUrl) });
  });

  after(async () => {
    if (kiln) {
      const { code, signal } = await kiln.stop();
      assert.equal(code, 0, `kiln serve exited with ${code ?? signal} after SIGTERM, want 0\n${kiln.logs()}`);
    }
  });

  test("a plain reply: the dev echo, ids 1, 2, …, usage then done", async () => {
    const stream = await streamChatCompletion(client, { messages: user("hello from the TypeScript SDK") });
    assert.equal(stream.response.headers.get("Kiln-Provider"), "dev");
    const events = await drain(stream);
    assert.deepEqual(
      events.map((e) => e.id),
      events.map((_, i) => i + 1),
    );
    const types = events.map((e) => e.type);
    assert.equal(types[0], "message.delta", types.join());
    assert.deepEqual(types.slice(-2), ["usage", "done"]);
    const result = events.reduce((r, e) => r.add(e), new ChatResult());
    assert.equal(result.text, "[dev] You said: hello from the TypeScript SDK");
    assert.ok(result.usage && result.usage.prompt_tokens > 0 && result.usage.completion_tokens > 0, JSON.stringify(result.usage));
    assert.equal(result.usage.total_tokens, result.usage.prompt_tokens + result.usage.completion_tokens);
    assert.equal(result.done?.finish_reason, "stop");
    assert.equal(result.done?.provider, "dev");
    assert.equal(result.done?.model, "default");
  });

  test("the server-side calculator: a server tool call, its result 14, then the answer", async () => {
    const stream = await streamChatCompletion(client, { messages: user("use calculator 2+3*4"), server_tools: ["calculator"] });
    const result = await stream.collect();
    assert.equal(result.toolCalls.length, 1, JSON.stringify(result.toolCalls));
    const [call] = result.toolCalls;
    assert.equal(call?.name, "calculator");
    assert.equal(call?.executor, "server");
    assert.deepEqual(result.toolResults, [{ tool_call_id: call?.id, name: "calculator", content: "14", is_error: false }]);
    assert.equal(result.done?.finish_reason, "stop");
    assert.match(result.text, /14/);
    assert.equal(result.message().tool_calls, undefined);
  });

  test("a client tool: finish_reason tool_calls, then the answer to its result", async () => {
    const tools = [
      {
        name: "get_weather",
        parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
      },
    ];
    const messages = user("Please call get_weather: Paris");
    const stream = await streamChatCompletion(client, { messages, tools });
    const events = await drain(stream);
    assert.ok(events.some((e) => e.type === "tool_call.delta"), "no tool_call.delta event");
    const result = events.reduce((r, e) => r.add(e), new ChatResult());
    assert.equal(result.done?.finish_reason, "tool_calls");
    assert.deepEqual(
      result.toolCalls.map(({ name, arguments: args, executor }) => ({ name, args, executor })),
      [{ name: "get_weather", args: '{"city":"Paris"}', executor: "client" }],
    );

    const reply = result.message();
    const call = reply.tool_calls?.[0];
    assert.ok(call, JSON.stringify(reply));
    const next = [...messages, reply, { role: "tool", tool_call_id: call.id, name: call.name, content: "sunny, 21 °C" }];
    const answer = await (await streamChatCompletion(client, { messages: next, tools })).finalMessage();
    assert.deepEqual(answer, { role: "assistant", content: "[dev] The tool get_weather returned: sunny, 21 °C" });
  });

  test("an unknown model rejects with KilnProblemError not_found before any event", async () => {
    await assert.rejects(
      streamChatCompletion(client, { model: "no-such-model", messages: user("hi") }),
      (err) => {
        assert.ok(err instanceof KilnProblemError, String(err));
        assert.equal(err.code, "not_found");
        assert.equal(err.status, 404);
        assert.ok(err.requestId);
        assert.equal(err.requestId, err.response?.headers.get(REQUEST_ID_HEADER));
        return true;
      },
    );
  });

  test("aborting mid-stream ends the iteration with the AbortError", async () => {
    const controller = new AbortController();
    const stream = await streamChatCompletion(
      client,
      { messages: user("one two three four five six seven") },
      { signal: controller.signal },
    );
    const seen = [];
    await assert.rejects(
      async () => {
        for await (const event of stream) {
          seen.push(event.type);
          controller.abort();
        }
      },
      (err) => err.name === "AbortError",
    );
    assert.deepEqual(seen, ["message.delta"]);
  });

  test("breaking out of the loop closes the stream", async () => {
    const stream = await streamChatCompletion(client, { messages: user("one two three") });
    for await (const event of stream) {
      assert.equal(event.type, "message.delta");
      break;
    }
    assert.equal(stream.response.bodyUsed, true);
    await assert.rejects(drain(stream), /once/);
  });
});
