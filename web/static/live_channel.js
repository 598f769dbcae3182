// The live page's one live-room socket, shared by the player (live.js) and the shopping overlay: one
// connection, one join, one viewer in the count. The player connects and joins; the overlay listens.

import { LiveSocket } from "./live_socket.js";

let token = null;

export const channel = new LiveSocket({ token: () => token });

// Sign in (or out): the socket reconnects with the new token and rejoins the room by itself; the player
// resubscribes from the snapshot that follows.
export async function useToken(value) {
  token = value;
  channel.close();
  await channel.connect();
}
