/**
 * Jobs: {@link followJob} follows a job's events (`GET /v1/jobs/{id}/events`) to its end,
 * resuming a lost connection after the last event received.
 */
import type { components } from "./schema.js";
import { KilnProblemError, type KilnClient } from "./index.js";
import { KilnStreamError, readEvents } from "./stream.js";

type Schemas = components["schemas"];
export type Job = Schemas["Job"];
export type JobProgressEvent = Schemas["JobProgressEvent"];
export type JobEndEvent = Schemas["JobEndEvent"];

/** One event of a job's stream: progress, then one final event. `id` is its `id:`. */
export type JobEvent =
  | { type: "job.progress"; id: number; data: JobProgressEvent }
  | { type: "job.succeeded" | "job.failed" | "job.cancelled"; id: number; data: JobEndEvent };

const jobEventTypes: ReadonlySet<string> = new Set(["job.progress", "job.succeeded", "job.failed", "job.cancelled"]);
const isFinal = (type: string) => type !== "job.progress";

/** How many reconnections in a row that deliver no event {@link followJob} makes. */
const maxIdleResumes = 5;

/** Options of {@link followJob}. */
export interface FollowJobOptions {
  /** Called with every event, in order, once each. */
  onEvent?: ((event: JobEvent) => void | Promise<void>) | undefined;
  /** Aborts the request or the stream; the job goes on (cancel it with `POST /v1/jobs/{id}/cancel`). */
  signal?: AbortSignal | undefined;
  /** The org a user token acts for (the `Kiln-Org` header; default its personal org). */
  org?: string | undefined;
  /** More request headers. */
  headers?: Record<string, string> | undefined;
}

/**
 * Follows job `jobId` to its end and resolves to its final event (`data.state` says how it
 * ended: a failed job resolves too). A connection lost or shut down before the end is
 * resumed with `Last-Event-ID`, so `onEvent` sees each event once. A refused request
 * (an unknown job: 404) rejects with a {@link KilnProblemError}.
 */
export async function followJob(client: KilnClient, jobId: string, options: FollowJobOptions = {}): Promise<JobEndEvent> {
  const { onEvent, signal, org, headers } = options;
  let last = 0;
  let idle = 0;
  for (;;) {
    const header: { "Kiln-Org"?: string; "Last-Event-ID"?: string } = {};
    if (org !== undefined) {
      header["Kiln-Org"] = org;
    }
    if (last > 0) {
      header["Last-Event-ID"] = String(last);
    }
    const before = last;
    try {
      const result = await client.GET("/v1/jobs/{id}/events", {
        params: { path: { id: jobId }, header },
        parseAs: "stream",
        headers: { Accept: "text/event-stream", ...headers },
        ...(signal ? { signal } : {}),
      });
      const { response } = result;
      if (!response.ok) {
        throw new KilnProblemError(response, result.error);
      }
      if (!response.body) {
        throw new KilnStreamError("invalid", "the job's events came without a body");
      }
      for await (const event of readEvents<JobEvent>(response, signal, jobEventTypes, "job", isFinal)) {
        last = Math.max(last, event.id);
        await onEvent?.(event);
        if (isFinal(event.type)) {
          return event.data as JobEndEvent;
        }
      }
    } catch (err) {
      signal?.throwIfAborted();
      const resumable =
        (err instanceof KilnStreamError && (err.kind === "truncated" || err.kind === "shutdown")) || err instanceof TypeError;
      if (!resumable) {
        throw err;
      }
      idle = last === before ? idle + 1 : 0;
      if (idle >= maxIdleResumes) {
        throw err;
      }
    }
  }
}
