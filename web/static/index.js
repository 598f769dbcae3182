// The landing page: the shows live right now, refreshed every so often.

import { requestJson } from "./net.js";

const REFRESH_MS = 15000;
const list = document.getElementById("shows");
const status = document.getElementById("shows-status");

function minutesSince(ms) {
  const minutes = Math.max(0, Math.round((Date.now() - ms) / 60000));
  return minutes < 1 ? "just started" : `live for ${minutes} min`;
}

function render(shows) {
  const items = shows.map((show) => {
    const link = document.createElement("a");
    link.className = "show";
    link.href = `/live/${encodeURIComponent(show.room_slug)}`;
    const title = document.createElement("strong");
    title.textContent = show.title;
    const meta = document.createElement("span");
    meta.className = "muted";
    meta.textContent = show.started_at ? `${show.room_slug} · ${minutesSince(show.started_at)}` : show.room_slug;
    link.append(title, meta);
    const item = document.createElement("li");
    item.append(link);
    return item;
  });
  list.replaceChildren(...items);
  status.textContent = shows.length ? "" : "Nobody is live right now. Check back soon.";
}

async function refresh() {
  try {
    const { shows } = await requestJson("/api/shows?status=live&limit=50");
    render(shows);
  } catch (error) {
    status.textContent = `Could not load the shows: ${error.message}`;
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
