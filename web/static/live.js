// The viewer's player: join a room over the live-room socket, watch its program feed, with the host's screen
// share and every other co-host's camera beside it on the same connection, wait while it is not live, and
// reconnect when the connection drops.

import { channel } from "./live_channel.js";
import { requestJson } from "./net.js";
import { exchangeOverSocket, newPeerConnection } from "./webrtc.js";

const $ = (id) => document.getElementById(id);
const room = roomFromPath();
const ERROR_RETRY_MS = [2000, 4000, 8000, 15000];
// A room that does not exist yet (the host's first publish makes it): ask again this often.
const NO_ROOM_RETRY_MS = 3000;
// A connection that stays "disconnected" this long is given up rather than waited for.
const DISCONNECTED_GRACE_MS = 3000;
// Media that stops arriving while the connection still looks up means the stream is gone; resubscribing
// finds out at once whether the show is still on.
const STALL_MS = 3000;

function roomFromPath() {
  try {
    return decodeURIComponent(window.location.pathname.split("/")[2] || "");
  } catch {
    return ""; // Malformed escapes: treated as no room.
  }
}

const video = $("video");
const screen = $("screen");
// `sections` are our offer's media sections in order, each named by the track it receives (docs/events.md,
// "Tracks"): the program's "video" and "audio" first, then "screen" and co-hosts' "feed:{session}:video" as
// they come. A section keeps its name for the life of the connection; one no longer wanted goes inactive.
const viewer = {
  live: false, program: null, pc: null, session: null, sections: [], attempt: 0,
  retryTimer: null, joinTimer: null, failures: 0, publisherTracks: new Map(), syncing: null, resync: false,
  syncFailures: 0,
};
const stall = { bytes: -1, since: 0, checking: false };

function setState(state, title = "", detail = "") {
  $("player").dataset.state = state;
  $("overlay").hidden = state === "playing";
  $("overlay-title").textContent = title;
  $("overlay-detail").textContent = detail;
  $("live-badge").hidden = state !== "playing";
  updateUnmute();
}

function updateUnmute() {
  $("unmute").hidden = !(video.muted && $("player").dataset.state === "playing");
}

function notLive() {
  teardown();
  setState("not-live", "Not live yet", "This page starts playing by itself as soon as the show begins.");
}

function retryIn(ms) {
  clearTimeout(viewer.retryTimer);
  viewer.retryTimer = setTimeout(subscribe, ms);
}

function teardown() {
  const { pc, session } = viewer;
  clearTimeout(viewer.retryTimer);
  viewer.pc = null;
  viewer.session = null;
  viewer.sections = [];
  showScreen(null);
  $("feeds").replaceChildren();
  if (pc) pc.close();
  // Free the server's side now; it would notice the dead connection on its own, only later.
  if (session && channel.connected) channel.call("unsubscribe", { session_id: session }).catch(() => {});
}

// --- the room --------------------------------------------------------------------------------------------

function wireChannel() {
  channel.addEventListener("snapshot", (event) => onSnapshot(event.detail));
  channel.addEventListener("room-event", (event) => onRoomEvent(event.detail.event, event.detail.payload));
  channel.addEventListener("state", ({ detail: { state, data } }) => {
    if (state === "disconnected") {
      // The server closed our session with the socket; the client reconnects and rejoins by itself.
      teardown();
      setState("reconnecting", "Reconnecting…", "The connection to the server dropped.");
    } else if (state === "refused") {
      setState("error", "Cannot reach the server", data?.message || "Trying again shortly.");
    }
  });
  channel.connect().then(join, () => {}); // A refusal is shown by the state listener.
}

async function join() {
  clearTimeout(viewer.joinTimer);
  try {
    await channel.join(room); // its snapshot comes to `onSnapshot`
  } catch (error) {
    teardown();
    if (error.code === "room_not_found") {
      notLive();
      viewer.joinTimer = setTimeout(join, NO_ROOM_RETRY_MS + Math.random() * 1000);
    } else {
      setState("error", "Cannot play this show", error.message);
    }
  }
}

function onSnapshot(snapshot) {
  viewer.live = snapshot.live;
  knowPublishers(snapshot.publishers);
  if (!snapshot.live || !snapshot.program) notLive();
  else onProgram(snapshot.program);
}

function onRoomEvent(event, payload) {
  switch (event) {
    case "program.changed":
      onProgram(payload.program);
      break;
    case "publishers.changed":
      knowPublishers(payload.publishers);
      syncSections();
      break;
    case "tracks.changed":
      viewer.publisherTracks.set(payload.session_id, payload.tracks);
      syncSections();
      break;
    case "host.reconnecting":
      setState("reconnecting", "The host is reconnecting…", "The show carries on as soon as they are back.");
      break;
    case "show.ended":
      viewer.live = false;
      viewer.program = null;
      notLive();
      break;
    default:
      break;
  }
}

function knowPublishers(publishers) {
  viewer.publisherTracks = new Map(publishers.map((p) => [p.session_id, p.tracks]));
}

// A feed is on air: the first of a show (subscribe), or another one (the server switches our connection; the
// new feed may share a screen, and the previous one becomes a co-host tile).
function onProgram(program) {
  viewer.live = true;
  viewer.program = program;
  if (!viewer.pc) {
    subscribe();
    return;
  }
  syncSections();
  onPlaying();
}

// The names of the extra sections the room calls for now: the program's screen share, the other cameras.
function wantedExtras() {
  const wanted = [];
  if ((viewer.publisherTracks.get(viewer.program) || []).includes("screen")) wanted.push("screen");
  for (const [session, tracks] of viewer.publisherTracks) {
    if (session !== viewer.program && tracks.includes("video")) wanted.push(`feed:${session}:video`);
  }
  return wanted;
}

async function subscribe() {
  clearTimeout(viewer.retryTimer);
  if (!channel.connected || !viewer.live) return;
  teardown();
  const attempt = ++viewer.attempt;
  const pc = await newPeerConnection();
  if (attempt !== viewer.attempt) {
    pc.close(); // Superseded while fetching the ICE servers.
    return;
  }
  viewer.pc = pc;
  for (const name of ["video", "audio", ...wantedExtras()]) addSection(pc, name);
  const tracks = viewer.sections.map((section) => section.name);
  const stream = new MediaStream();
  pc.addEventListener("track", (event) => onTrack(pc, event, stream));
  pc.addEventListener("connectionstatechange", () => onConnectionState(pc));
  try {
    const ack = await exchangeOverSocket(pc, channel, "subscribe", { room, tracks });
    if (attempt !== viewer.attempt) {
      channel.call("unsubscribe", { session_id: ack.session_id }).catch(() => {});
      return;
    }
    viewer.session = ack.session_id;
  } catch (error) {
    if (attempt !== viewer.attempt) return;
    if (error.code === "not_live") {
      notLive(); // The show ended meanwhile; `program.changed` brings the next one.
      return;
    }
    teardown();
    const wait = ERROR_RETRY_MS[Math.min(viewer.failures++, ERROR_RETRY_MS.length - 1)];
    setState("error", "Cannot play this show right now", `${error.message} Trying again shortly.`);
    retryIn(wait);
  }
}

function addSection(pc, name) {
  const transceiver = pc.addTransceiver(name === "audio" ? "audio" : "video", { direction: "recvonly" });
  viewer.sections.push({ name, transceiver });
}

function onTrack(pc, event, stream) {
  if (viewer.pc !== pc) return;
  const section = viewer.sections.find((each) => each.transceiver === event.transceiver);
  if (!section) return;
  if (section.name === "screen") {
    showScreen(new MediaStream([event.track]));
  } else if (section.name.startsWith("feed:")) {
    let tile = [...$("feeds").children].find((each) => each.dataset.feed === section.name);
    if (!tile) {
      tile = Object.assign(document.createElement("video"), { autoplay: true, muted: true, playsInline: true });
      tile.dataset.feed = section.name;
      $("feeds").append(tile);
    }
    tile.hidden = false;
    tile.srcObject = new MediaStream([event.track]);
    play(tile);
  } else {
    stream.addTrack(event.track);
    if (video.srcObject !== stream) video.srcObject = stream;
    play(video);
  }
}

// --- the screen share and the co-hosts' cameras ------------------------------------------------------------

// Bring our sections in line with the room: add a section for each new track, set those no longer wanted
// inactive, (re)activate wanted ones, and renegotiate once. One at a time; a change meanwhile runs again.
async function syncSections() {
  if (viewer.syncing) {
    viewer.resync = true;
    return;
  }
  const { pc, session } = viewer;
  if (!pc || !session) return;
  const wanted = new Set(wantedExtras());
  let changed = false;
  for (const section of viewer.sections.slice(2)) {
    const direction = wanted.has(section.name) ? "recvonly" : "inactive";
    if (section.transceiver.direction !== direction) {
      section.transceiver.direction = direction;
      changed = true;
    }
    wanted.delete(section.name);
  }
  for (const name of wanted) {
    addSection(pc, name);
    changed = true;
  }
  if (!changed) return;
  viewer.syncing = (async () => {
    try {
      const tracks = viewer.sections.map((section) => section.name);
      await exchangeOverSocket(pc, channel, "renegotiate", { session_id: session, tracks });
      viewer.syncFailures = 0;
      showSections();
    } catch {
      // Usually a co-host who left just before our offer arrived: the room's next event corrects the
      // sections. Should that not happen, try again, and in the end start over.
      if (viewer.pc !== pc) return;
      if (++viewer.syncFailures > 2) subscribe();
      else setTimeout(syncSections, 1000);
    }
  })();
  await viewer.syncing;
  viewer.syncing = null;
  if (viewer.resync) {
    viewer.resync = false;
    syncSections();
  }
}

// Hide what inactive sections showed.
function showSections() {
  for (const section of viewer.sections.slice(2)) {
    const active = section.transceiver.direction === "recvonly";
    if (section.name === "screen" && !active) showScreen(null);
    const tile = [...$("feeds").children].find((each) => each.dataset.feed === section.name);
    if (tile) tile.hidden = !active;
  }
}

function showScreen(stream) {
  screen.srcObject = stream;
  screen.hidden = stream === null;
  $("player").classList.toggle("sharing", stream !== null);
  if (stream) play(screen);
}

// --- connection state ----------------------------------------------------------------------------------

function reconnect(detail) {
  setState("reconnecting", "Reconnecting…", detail);
  retryIn(500);
}

function onConnectionState(pc) {
  if (viewer.pc !== pc) return;
  switch (pc.connectionState) {
    case "connected":
      viewer.failures = 0;
      if (video.videoWidth > 0) setState("playing");
      else setState("connecting", "Starting the picture…");
      break;
    case "disconnected":
      setState("reconnecting", "Connection interrupted…", "Waiting for it to recover.");
      setTimeout(() => {
        if (viewer.pc === pc && pc.connectionState === "disconnected") reconnect("");
      }, DISCONNECTED_GRACE_MS);
      break;
    case "failed":
    case "closed":
      reconnect("The connection was lost.");
      break;
    default:
      break;
  }
}

// Autoplay with sound is refused until the viewer interacts with the page: start muted then.
function play(element) {
  element.play().catch(() => {
    if (!element.muted) {
      element.muted = true;
      element.play().catch(() => {});
    }
    updateUnmute();
  });
}

function onPlaying() {
  if (viewer.pc && viewer.pc.connectionState === "connected" && video.videoWidth > 0) setState("playing");
}

// Counts received bytes rather than watching currentTime: a MediaStream's clock keeps running without frames.
async function watchForStall() {
  const pc = viewer.pc;
  if (!pc || pc.connectionState !== "connected") {
    stall.bytes = -1;
    return;
  }
  if (stall.checking) return;
  stall.checking = true;
  let bytes = 0;
  try {
    (await pc.getStats()).forEach((report) => {
      if (report.type === "inbound-rtp") bytes += report.bytesReceived || 0;
    });
  } catch {
    return; // Closed meanwhile: the connection handlers take it from here.
  } finally {
    stall.checking = false;
  }
  if (viewer.pc !== pc) return;
  const now = performance.now();
  if (bytes !== stall.bytes) {
    stall.bytes = bytes;
    stall.since = now;
  } else if (now - stall.since > STALL_MS && $("player").dataset.state === "playing") {
    stall.bytes = -1;
    reconnect("The stream stopped.");
  }
}

async function showTitle() {
  document.title = `${room} · Pinstream`;
  $("room-title").textContent = room;
  try {
    const info = await requestJson(`/api/rooms/${encodeURIComponent(room)}`);
    $("room-title").textContent = info.title;
    document.title = `${info.title} · Pinstream`;
  } catch {
    // A room made by the host's first publish may not exist yet: the slug will do as a title.
  }
}

$("unmute").addEventListener("click", () => {
  video.muted = false;
  play(video);
  updateUnmute();
});
video.addEventListener("playing", onPlaying);
video.addEventListener("resize", onPlaying);
video.addEventListener("volumechange", updateUnmute);
window.addEventListener("pagehide", () => channel.close());
setInterval(watchForStall, 1000);

if (room) {
  setState("connecting", "Connecting…");
  showTitle();
  wireChannel();
} else {
  setState("error", "No room given", "Open a show from the list of live shows.");
}
