// The live-room channel: a small Socket.IO v4 client (Engine.IO v4 over WebSocket only, as docs/events.md
// asks) with the room protocol on top: join with a snapshot, apply room events in sequence, rejoin on a gap,
// a `resync` or a reconnect, and estimate the offset of the server's clock from the acks' round trips.

const NAMESPACE = "/live";
const RECONNECT_MS = [500, 1000, 2000, 4000, 8000];
const CALL_TIMEOUT_MS = 15000;

export class LiveSocket {
  // `token` is a function returning an access or guest token (or null for an anonymous viewer), asked
  // again on every (re)connect so a refreshed token is used.
  constructor({ token = () => null, onSnapshot, onEvent, onPrivate, onState = () => {} }) {
    this.token = token;
    this.onSnapshot = onSnapshot;
    this.onEvent = onEvent;
    this.onPrivate = onPrivate;
    this.onState = onState;
    this.ws = null;
    this.room = null;
    this.seq = null;
    this.pending = [];
    this.acks = new Map();
    this.nextId = 1;
    this.failures = 0;
    this.closed = false;
    this.connected = null;
    // Server time minus local time, from the ack with the shortest round trip seen so far.
    this.offsetMs = 0;
    this.bestRtt = Infinity;
  }

  serverNow() {
    return Date.now() + this.offsetMs;
  }

  // Milliseconds left until a server deadline, by the server's clock.
  remaining(deadline) {
    return Math.max(0, deadline - this.serverNow());
  }

  connect() {
    this.closed = false;
    this.connected = new Promise((resolve) => {
      this._resolveConnected = resolve;
    });
    this._open();
    return this.connected;
  }

  close() {
    this.closed = true;
    if (this.ws) this.ws.close();
  }

  async _open() {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${window.location.host}/socket.io/?EIO=4&transport=websocket`);
    this.ws = ws;
    ws.addEventListener("message", (event) => this._frame(ws, event.data));
    ws.addEventListener("close", () => this._closed(ws));
  }

  _closed(ws) {
    if (this.ws !== ws) return;
    this.ws = null;
    for (const { reject } of this.acks.values()) reject(new Error("disconnected"));
    this.acks.clear();
    this.onState("disconnected");
    if (this.closed) return;
    const wait = RECONNECT_MS[Math.min(this.failures++, RECONNECT_MS.length - 1)];
    setTimeout(() => {
      if (!this.closed) this._open();
    }, wait);
  }

  _frame(ws, data) {
    if (typeof data !== "string") return;
    const type = data[0];
    if (type === "0") {
      // Engine.IO open: connect to the namespace with the token.
      const token = this.token();
      ws.send(`40${NAMESPACE},${JSON.stringify(token ? { token } : {})}`);
    } else if (type === "2") {
      ws.send("3"); // pong
    } else if (type === "4") {
      this._packet(data.slice(1));
    }
  }

  _packet(text) {
    const kind = text[0];
    let rest = text.slice(1);
    if (!rest.startsWith(NAMESPACE)) return;
    rest = rest.slice(NAMESPACE.length);
    if (rest.startsWith(",")) rest = rest.slice(1);
    const digits = /^\d*/.exec(rest)[0];
    const id = digits ? Number(digits) : null;
    const body = rest.slice(digits.length);
    if (kind === "0") {
      this.failures = 0;
      this.onState("connected");
      this._resolveConnected();
      if (this.room) this.join(this.room).catch(() => {});
    } else if (kind === "4") {
      const error = body ? JSON.parse(body) : {};
      this.onState("refused", error.data || error);
    } else if (kind === "3" && id !== null) {
      const waiting = this.acks.get(id);
      this.acks.delete(id);
      if (waiting) waiting.resolve(JSON.parse(body)[0]);
    } else if (kind === "2") {
      const [event, payload] = JSON.parse(body);
      this._event(event, payload || {});
    }
  }

  // A request with an ack; resolves with the ack ({ok: true, ...}) or throws the ack's error.
  call(event, data) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return Promise.reject(new Error("not connected"));
    const id = this.nextId++;
    const sentAt = Date.now();
    ws.send(`42${NAMESPACE},${id}${JSON.stringify([event, data])}`);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.acks.delete(id);
        reject(new Error("no answer from the server"));
      }, CALL_TIMEOUT_MS);
      this.acks.set(id, {
        resolve: (ack) => {
          clearTimeout(timer);
          const receivedAt = Date.now();
          const serverTime = ack && (ack.server_time_ms ?? ack.snapshot?.server_time_ms);
          if (typeof serverTime === "number" && receivedAt - sentAt < this.bestRtt) {
            this.bestRtt = receivedAt - sentAt;
            this.offsetMs = serverTime - (sentAt + receivedAt) / 2;
          }
          if (ack && ack.ok) resolve(ack);
          else reject(Object.assign(new Error(ack?.error?.message || "refused"), { code: ack?.error?.code }));
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
    });
  }

  // Join (or rejoin) a room: events that arrive before the snapshot are kept and applied after it.
  async join(room) {
    this.room = room;
    this.seq = null;
    this.pending = [];
    const ack = await this.call("join", { room });
    const snapshot = ack.snapshot;
    this.seq = snapshot.seq;
    this.onSnapshot(snapshot);
    const kept = this.pending;
    this.pending = [];
    for (const [event, payload] of kept) this._room(event, payload);
    return snapshot;
  }

  _event(event, payload) {
    if (event === "resync") {
      if (this.room && payload.room === this.room) this.join(this.room).catch(() => {});
      return;
    }
    if (payload.room !== this.room || !("seq" in payload)) return;
    if (isPrivate(event)) {
      this.onPrivate(event, payload);
      return;
    }
    if (this.seq === null) {
      this.pending.push([event, payload]);
      return;
    }
    this._room(event, payload);
  }

  _room(event, payload) {
    if (payload.seq <= this.seq) return; // already part of the snapshot
    if (payload.seq !== this.seq + 1) {
      this.join(this.room).catch(() => {}); // a gap: start over from a new snapshot
      return;
    }
    this.seq = payload.seq;
    this.onEvent(event, payload);
  }
}

const PRIVATE = ["checkout.", "sales.ticker", "banned", "session.closed"];

function isPrivate(event) {
  return PRIVATE.some((prefix) => event.startsWith(prefix));
}

// Money in minor units as the viewer's locale writes it.
export function money(minor, currency) {
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency }).format(minor / 100);
  } catch {
    return `${(minor / 100).toFixed(2)} ${currency}`;
  }
}

export function countdown(ms) {
  const seconds = Math.ceil(ms / 1000);
  const minutes = Math.floor(seconds / 60);
  return `${minutes}:${String(seconds % 60).padStart(2, "0")}`;
}

// An element with text content (never HTML) and optional attributes.
export function el(tag, text = "", attributes = {}) {
  const node = document.createElement(tag);
  if (text) node.textContent = text;
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

// An element with attributes and children (elements or strings, which become text): markup built from
// nodes, never parsed from strings.
export function h(tag, attributes = {}, ...children) {
  const node = el(tag, "", attributes);
  node.append(...children);
  return node;
}
