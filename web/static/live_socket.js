// The page's one connection to the live-room namespace (docs/events.md): media signalling for our own pages
// and the room's events share it. WebSocket only, so several server nodes need no sticky sessions.

import { io } from "./vendor/socket.io.esm.min.js";

const REQUEST_TIMEOUT_MS = 15000;

// `token()` is asked on every (re)connection, so a long show outlives any one access token; it may return
// null for an anonymous viewer.
export function connectLive(token = async () => null) {
  return io("/live", {
    transports: ["websocket"],
    auth: (send) => {
      token().then((value) => send(value ? { token: value } : {}), () => send({}));
    },
  });
}

// A request and its ack: resolves with the ack of a success, rejects with an Error carrying the server's
// `code` and `field` (or code "timeout" when no ack came).
export async function request(socket, event, payload) {
  let ack;
  try {
    ack = await socket.timeout(REQUEST_TIMEOUT_MS).emitWithAck(event, payload);
  } catch {
    throw Object.assign(new Error("The server did not answer in time."), { code: "timeout", field: null });
  }
  if (!ack.ok) throw Object.assign(new Error(ack.error.message), { code: ack.error.code, field: ack.error.field });
  return ack;
}
