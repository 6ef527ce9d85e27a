// Compile-time checks of the streaming typings (dist/index.d.ts): `tsc -p test` fails when
// a use that should type-check does not, or an @ts-expect-error line stops being an error.
import {
  ChatResult,
  createKilnClient,
  KilnProblemError,
  KilnStreamError,
  streamChatCompletion,
  type ChatEvent,
  type ChatMessage,
  type StreamErrorKind,
} from "../dist/index.js";

const client = createKilnClient({ baseUrl: "http://127.0.0.1:8080", token: "kiln_…" });

export async function narrowing(signal: AbortSignal): Promise<string> {
  const stream = await streamChatCompletion(client, { messages: [{ role: "user", content: "Hi" }] }, { signal });
  const provider: string | null = stream.response.headers.get("Kiln-Provider");
  let text = "";
  try {
    for await (const event of stream) {
      const id: number = event.id;
      switch (event.type) {
        case "message.delta":
          text += event.data.text;
          break;
        case "tool_call": {
          const executor: "client" | "server" = event.data.executor;
          void executor;
          break;
        }
        case "tool_result": {
          const content: string = event.data.content;
          void content;
          break;
        }
        case "usage": {
          const cost: number = event.data.cost_usd;
          void cost;
          break;
        }
        case "done": {
          const finish: "stop" | "length" | "tool_calls" | "content_filter" | "cancelled" = event.data.finish_reason;
          void finish;
          break;
        }
        case "tool_call.delta":
          // @ts-expect-error a tool_call.delta has no executor
          void event.data.executor;
          break;
        // @ts-expect-error error events are thrown, not yielded
        case "error":
          break;
      }
      void id;
    }
  } catch (err) {
    if (err instanceof KilnProblemError) {
      return err.code ?? "";
    }
    if (err instanceof KilnStreamError) {
      const kind: StreamErrorKind = err.kind;
      return kind;
    }
    throw err;
  }
  return `${provider}: ${text}`;
}

export async function helpers(): Promise<ChatMessage> {
  const stream = await streamChatCompletion(client, { messages: [{ role: "user", content: "Hi" }], server_tools: ["calculator"] });
  const result: ChatResult = await stream.collect();
  const usage: number | undefined = result.usage?.total_tokens;
  void usage;
  const event: ChatEvent = { type: "message.delta", id: 1, data: { text: "x" } };
  result.add(event);
  // @ts-expect-error the data does not match the type
  result.add({ type: "usage", id: 2, data: { text: "x" } });
  // @ts-expect-error the body is a ChatRequest
  await streamChatCompletion(client, { messages: [{ role: "robot" }] });
  return (await streamChatCompletion(client, { messages: [] })).finalMessage();
}
