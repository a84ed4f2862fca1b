// An EventSource that can send a header: the browser's EventSource sends none, so a Worker whose
// reads need `Authorization: Bearer <token>` (READ_TOKEN) is followed with fetch and a reader of the
// text/event-stream format (html.spec.whatwg.org/multipage/server-sent-events.html, §9.2.6): the same
// surface — readyState, onopen/onerror/onmessage, addEventListener, MessageEvent with lastEventId,
// `retry:`, and a reconnect with Last-Event-ID after the stream ends or the network fails. Like
// EventSource, an answer that is not 200 text/event-stream closes it for good (an "error" event).

const CONNECTING = 0;
const OPEN = 1;
const CLOSED = 2;

export class FetchEventSource extends EventTarget {
  static CONNECTING = CONNECTING;
  static OPEN = OPEN;
  static CLOSED = CLOSED;

  /** `authorization()` gives the header's value (or null) each time the stream (re)connects. */
  constructor(url, authorization) {
    super();
    this.url = new URL(url, location.href).href;
    this.readyState = CONNECTING;
    this.onopen = null;
    this.onmessage = null;
    this.onerror = null;
    this.lastEventId = "";
    this.retryMs = 3000;
    this.authorization = authorization;
    this.controller = new AbortController();
    void this.connect();
  }

  close() {
    this.readyState = CLOSED;
    this.controller.abort();
  }

  emit(event) {
    this.dispatchEvent(event);
    const handler = this[`on${event.type}`];
    if (typeof handler === "function") handler.call(this, event);
  }

  async connect() {
    const headers = { accept: "text/event-stream" };
    const auth = await this.authorization();
    if (auth) headers.authorization = auth;
    if (this.lastEventId) headers["last-event-id"] = this.lastEventId;
    let res;
    try {
      res = await fetch(this.url, { headers, cache: "no-store", signal: this.controller.signal });
    } catch {
      return this.reconnect();
    }
    if (this.readyState === CLOSED) return;
    if (res.status !== 200 || !(res.headers.get("content-type") ?? "").startsWith("text/event-stream")) {
      this.readyState = CLOSED;
      void res.body?.cancel();
      this.emit(new Event("error"));
      return;
    }
    this.readyState = OPEN;
    this.emit(new Event("open"));
    try {
      await this.read(res.body);
    } catch {
      // the network failed mid-stream: reconnect below
    }
    this.reconnect();
  }

  reconnect() {
    if (this.readyState === CLOSED) return;
    this.readyState = CONNECTING;
    this.emit(new Event("error"));
    setTimeout(() => {
      if (this.readyState !== CLOSED) void this.connect();
    }, this.retryMs);
  }

  /** Reads the stream line by line, dispatching an event at each blank line. */
  async read(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let data = [];
    let type = "";
    for (;;) {
      const { done, value } = await reader.read();
      if (done || this.readyState === CLOSED) return;
      buffer += value;
      let cut;
      while ((cut = buffer.search(/\r\n|\r|\n/)) >= 0) {
        const line = buffer.slice(0, cut);
        buffer = buffer.slice(cut + (buffer.startsWith("\r\n", cut) ? 2 : 1));
        if (line === "") {
          if (data.length > 0) this.emit(new MessageEvent(type || "message", { data: data.join("\n"), lastEventId: this.lastEventId, origin: new URL(this.url).origin }));
          data = [];
          type = "";
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") data.push(val);
        else if (field === "event") type = val;
        else if (field === "id" && !val.includes("\0")) this.lastEventId = val;
        else if (field === "retry" && /^[0-9]+$/.test(val)) this.retryMs = Number(val);
      }
    }
  }
}
