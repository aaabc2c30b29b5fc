// Server-Sent Events over fetch(): EventSource cannot send the Authorization header, so the stream is
// read from a ReadableStream and parsed here. A dropped stream reconnects with Last-Event-ID, so the
// server resumes after the last epoch / AI event this page saw.

import { apiFetch } from "./api.js";

/** Split an event-stream text into complete events; answers [events, leftover text]. */
export function parseEvents(buffer) {
  const events = [];
  const blocks = buffer.replace(/\r\n?/g, "\n").split("\n\n");
  const rest = blocks.pop(); // an incomplete block waits for more bytes
  for (const block of blocks) {
    const event = { event: "message", data: [], id: null };
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue; // comments keep the connection alive
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") event.event = value;
      else if (field === "data") event.data.push(value);
      else if (field === "id") event.id = value;
    }
    if (event.data.length || event.event !== "message") events.push({ ...event, data: event.data.join("\n") });
  }
  return [events, rest];
}

/**
 * Follow an event stream until `stop()` or an `end` event.
 * handlers: {onEvent(name, data), onStatus("live" | "reconnecting" | "ended" | "error", detail)}
 */
export function followStream(url, { onEvent, onStatus = () => {} }) {
  const controller = new AbortController();
  let lastEventId = null;
  let ended = false;
  let attempt = 0;

  async function connect() {
    while (!ended && !controller.signal.aborted) {
      try {
        const headers = { Accept: "text/event-stream" };
        if (lastEventId) headers["Last-Event-ID"] = lastEventId;
        const response = await apiFetch(url, { headers, signal: controller.signal, cache: "no-store" });
        if (!response.ok) {
          let message = `${response.status}`;
          try {
            message = (await response.json()).detail || message;
          } catch {
            /* not JSON */
          }
          if (response.status >= 400 && response.status < 500) {
            onStatus("error", message); // a 404 will not heal by retrying
            return;
          }
          throw new Error(message);
        }
        onStatus("live");
        attempt = 0;
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          const [events, rest] = parseEvents(buffer);
          buffer = rest;
          for (const event of events) {
            if (event.id) lastEventId = event.id;
            let data = event.data;
            try {
              data = JSON.parse(event.data);
            } catch {
              /* plain text data */
            }
            if (event.event === "end") ended = true;
            onEvent(event.event, data);
          }
          if (ended) {
            controller.abort();
            break;
          }
        }
      } catch (exc) {
        if (controller.signal.aborted) break;
        if (exc.status === 401) {
          onStatus("error", exc.message); // the person declined to give a key
          return;
        }
      }
      if (ended || controller.signal.aborted) break;
      attempt += 1;
      onStatus("reconnecting", attempt);
      await new Promise((resolve) => setTimeout(resolve, Math.min(1000 * 2 ** (attempt - 1), 10000)));
    }
    if (ended) onStatus("ended");
  }

  connect();
  return {
    stop() {
      controller.abort();
    },
  };
}
