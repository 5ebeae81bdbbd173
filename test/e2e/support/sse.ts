/** Reads a Server-Sent Events endpoint with eventsource-parser. */
import {
  EventSourceParserStream,
  type EventSourceMessage,
} from "eventsource-parser/stream";

export type SseEvent = EventSourceMessage;

/** Opens an SSE stream and yields its events until it ends or `signal` aborts. */
export async function* readEvents(
  url: string,
  apiKey: string,
  { lastEventId, signal }: { lastEventId?: number; signal?: AbortSignal } = {},
): AsyncGenerator<SseEvent> {
  const res = await fetch(url, {
    headers: {
      Authorization: `Bearer ${apiKey}`,
      Accept: "text/event-stream",
      ...(lastEventId === undefined ? {} : { "Last-Event-ID": String(lastEventId) }),
    },
    signal,
  });
  if (res.status !== 200 || !res.body) {
    throw new Error(`SSE ${url} answered ${res.status}: ${await res.text()}`);
  }
  const events = res.body
    .pipeThrough(new TextDecoderStream())
    .pipeThrough(new EventSourceParserStream());
  try {
    for await (const event of events) yield event;
  } catch (error) {
    if (!signal?.aborted) throw error;
  }
}
