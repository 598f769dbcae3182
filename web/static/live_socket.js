// The page's one connection to the live-room namespace (docs/events.md), over socket.io-client on the WebSocket
// transport (several server nodes need no sticky sessions). Media signalling and the room's events share it.
// On top of Socket.IO, the room protocol: join with a snapshot, apply room events in sequence, rejoin on a gap,
// a `resync` or a reconnect, and estimate the server clock's offset from the acks' round trips.
//
// Listeners: the constructor's callbacks, or `addEventListener` for "snapshot" (detail: the snapshot),
// "room-event" and "private" (detail: {event, payload}) and "state" (detail: {state, data}), so that the
// player and the shopping overlay of one page can both follow one socket.

import { io } from "./vendor/socket.io.esm.min.js";

const NAMESPACE = "/live";
const CALL_TIMEOUT_MS = 15000;
// Events for this socket alone: numbered in the socket's own sequence, never part of the room's.
const PRIVATE = ["checkout.", "sales.ticker", "banned", "session.closed"];

export class LiveSocket extends EventTarget {
  // `token` returns (or resolves to) an access or guest token, or null for an anonymous viewer; it is asked
  // again on every (re)connection, so a refreshed token is used.
  constructor({ token = () => null, onSnapshot, onEvent, onPrivate, onState } = {}) {
    super();
    this.token = token;
    this.room = null;
    this.seq = null;
    this.pending = [];
    // Server time minus local time, from the ack with the shortest round trip seen so far.
    this.offsetMs = 0;
    this.bestRtt = Infinity;
    this.socket = null;
    const relay = (type, callback, unpack) => {
      if (callback) this.addEventListener(type, (event) => callback(...unpack(event.detail)));
    };
    relay("snapshot", onSnapshot, (snapshot) => [snapshot]);
    relay("room-event", onEvent, ({ event, payload }) => [event, payload]);
    relay("private", onPrivate, ({ event, payload }) => [event, payload]);
    relay("state", onState, ({ state, data }) => [state, data]);
  }

  get connected() {
    return this.socket?.connected ?? false;
  }

  serverNow() {
    return Date.now() + this.offsetMs;
  }

  // Milliseconds left until a server deadline, by the server's clock.
  remaining(deadline) {
    return Math.max(0, deadline - this.serverNow());
  }

  // Resolves once connected; rejects if the server refuses the connection (a bad or expired token).
  connect() {
    if (!this.socket) {
      this.socket = io(NAMESPACE, {
        transports: ["websocket"],
        auth: (send) => {
          Promise.resolve()
            .then(() => this.token())
            .then((token) => send(token ? { token } : {}), () => send({}));
        },
      });
      this.socket.on("connect", () => {
        this._state("connected");
        if (this.room) this.join(this.room).catch(() => {});
      });
      this.socket.on("disconnect", (reason) => this._state("disconnected", reason));
      this.socket.on("connect_error", (error) => this._state("refused", error.data || { message: error.message }));
      this.socket.onAny((event, payload) => this._event(event, payload || {}));
    } else if (!this.socket.connected) {
      this.socket.connect();
    }
    return new Promise((resolve, reject) => {
      if (this.socket.connected) {
        resolve();
        return;
      }
      const settle = (error) => {
        this.socket.off("connect", settle);
        this.socket.off("connect_error", settle);
        if (error) reject(Object.assign(new Error(error.data?.message || error.message), { code: error.data?.code }));
        else resolve();
      };
      this.socket.once("connect", () => settle(null));
      this.socket.once("connect_error", settle);
    });
  }

  // Disconnect for good (until `connect` again): the server closes the media sessions this socket opened.
  close() {
    this.socket?.disconnect();
  }

  // A request and its ack: resolves with the ack of a success, rejects with an Error carrying the server's
  // `code` and `field` (code "timeout" when no ack came).
  async call(event, data) {
    if (!this.socket?.connected) throw Object.assign(new Error("not connected"), { code: "disconnected" });
    const sentAt = Date.now();
    let ack;
    try {
      ack = await this.socket.timeout(CALL_TIMEOUT_MS).emitWithAck(event, data);
    } catch {
      throw Object.assign(new Error("The server did not answer in time."), { code: "timeout", field: null });
    }
    const receivedAt = Date.now();
    const serverTime = ack && (ack.server_time_ms ?? ack.snapshot?.server_time_ms);
    if (typeof serverTime === "number" && receivedAt - sentAt < this.bestRtt) {
      this.bestRtt = receivedAt - sentAt;
      this.offsetMs = serverTime - (sentAt + receivedAt) / 2;
    }
    if (ack?.ok) return ack;
    throw Object.assign(new Error(ack?.error?.message || "refused"), { code: ack?.error?.code,
      field: ack?.error?.field });
  }

  // Join (or rejoin) a room: events that arrive before the snapshot are kept and applied after it.
  async join(room) {
    this.room = room;
    this.seq = null;
    this.pending = [];
    const { snapshot } = await this.call("join", { room });
    this.seq = snapshot.seq;
    this._dispatch("snapshot", snapshot);
    const kept = this.pending;
    this.pending = [];
    for (const [event, payload] of kept) this._room(event, payload);
    return snapshot;
  }

  _state(state, data = null) {
    this._dispatch("state", { state, data });
  }

  _dispatch(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _event(event, payload) {
    if (event === "resync") {
      if (this.room && payload.room === this.room) this.join(this.room).catch(() => {});
      return;
    }
    if (PRIVATE.some((prefix) => event.startsWith(prefix))) {
      this._dispatch("private", { event, payload });
      return;
    }
    if (payload.room !== this.room || !("seq" in payload)) return;
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
    this._dispatch("room-event", { event, payload });
  }
}
