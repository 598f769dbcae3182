// The studio's show controls while the host is live: the lineup with pin / unpin, a flash sale (price,
// quantity, duration), chat with moderation (delete, mute, ban), the viewer count and a sales ticker.
// Requests go over the live-room channel and are acknowledged with success or an error code.

import { el, h } from "./dom.js";
import { countdown, money } from "./format.js";
import { requestJson } from "./net.js";
import { studioEvents } from "./studio.js";

const $ = (id) => document.getElementById(id);
// `socket` is the studio's own live-room socket (the one the show is published on), given with each phase.
const state = { room: null, socket: null, showId: null, lineup: [], pinned: [], sale: null, maxPinned: 3 };

function build() {
  const panel = h("div", { id: "show-controls", class: "card stack", hidden: "" },
    el("h2", "Show controls"),
    h("p", { class: "row" }, el("span", "", { id: "host-viewers", class: "muted" })),
    el("p", "", { id: "controls-error", class: "error", role: "alert" }),
    el("h3", "Lineup"),
    el("ol", "", { id: "lineup", class: "lineup" }),
    el("button", "Reload the lineup", { id: "lineup-reload", type: "button" }),
    el("h3", "Flash sale"),
    h("form", { id: "sale-form", class: "stack" },
      h("label", {}, "Product ", el("select", "", { id: "sale-product", required: "" })),
      h("div", { class: "row" },
        h("label", {}, "Price (minor units) ", el("input", "", { id: "sale-price", type: "number", min: "0",
          required: "" })),
        h("label", {}, "Quantity ", el("input", "", { id: "sale-quantity", type: "number", min: "1" })),
        h("label", {}, "Seconds ", el("input", "", { id: "sale-duration", type: "number", min: "1", value: "60",
          required: "" }))),
      h("div", { class: "row" },
        el("button", "Start flash sale", { id: "sale-start", class: "primary", type: "submit" }),
        el("button", "Stop sale", { id: "sale-stop", type: "button" })),
      el("p", "", { id: "sale-status", class: "muted", role: "status" })),
    el("h3", "Sales"),
    el("ol", "", { id: "ticker", class: "ticker" }),
    el("h3", "Chat"),
    el("ol", "", { id: "host-chat", class: "chat-log" }),
    h("form", { id: "host-chat-form", class: "row" },
      el("input", "", { id: "host-chat-text", maxlength: "500", autocomplete: "off", placeholder: "Say something",
        required: "" }),
      el("button", "Send", { type: "submit" })));
  document.querySelector(".controls").prepend(panel);
  $("sale-form").addEventListener("submit", startSale);
  $("lineup-reload").addEventListener("click", () => loadLineup().catch((error) => {
    $("controls-error").textContent = error.message;
  }));
  $("sale-stop").addEventListener("click", () => control("stop_sale", {}));
  $("host-chat-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (await control("chat", { text: $("host-chat-text").value })) $("host-chat-text").value = "";
  });
  setInterval(tick, 250);
}

async function control(event, data) {
  $("controls-error").textContent = "";
  try {
    return await state.socket.call(event, { room: state.room, ...data });
  } catch (error) {
    $("controls-error").textContent = `${error.message} (${error.code || "error"})`;
    return null;
  }
}

// Follow the room on the socket the show is published on (joining it; never reconnecting it, which would
// end the show's media session).
async function start(room, socket) {
  state.room = room;
  if (state.socket !== socket) {
    state.socket = socket;
    socket.addEventListener("snapshot", (event) => applySnapshot(event.detail));
    socket.addEventListener("room-event", (event) => applyEvent(event.detail.event, event.detail.payload));
    socket.addEventListener("private", (event) => applyPrivate(event.detail.event, event.detail.payload));
  }
  $("show-controls").hidden = false;
  await socket.join(room);
}

function stop() {
  $("show-controls").hidden = true;
}

async function applySnapshot(snapshot) {
  state.showId = snapshot.show_id;
  state.pinned = (snapshot.pinned || []).map((card) => card.product_id);
  state.sale = snapshot.sale;
  state.maxPinned = snapshot.max_pinned;
  $("host-viewers").textContent = `${snapshot.viewers} watching`;
  $("host-chat").replaceChildren(...(snapshot.chat || []).map(chatLine));
  await loadLineup();
}

async function loadLineup() {
  if (state.showId) state.lineup = (await requestJson(`/api/shows/${state.showId}/lineup`)).items;
  renderLineup();
}

function applyEvent(event, payload) {
  if (event === "pins.changed") {
    state.pinned = payload.pinned.map((card) => card.product_id);
    renderLineup();
  } else if (event === "sale.started") {
    state.sale = payload.sale;
  } else if (event === "sale.ended") {
    state.sale = null;
  } else if (event === "viewers.changed") {
    $("host-viewers").textContent = `${payload.count} watching`;
  } else if (event === "chat.message") {
    $("host-chat").append(chatLine(payload));
  } else if (event === "chat.deleted") {
    document.querySelector(`#host-chat [data-message="${Number(payload.message_id)}"]`)?.remove();
  } else if (event === "stock.changed") {
    const entry = state.lineup.find((item) => productOf(item).id === payload.product_id);
    if (entry) entry.available = payload.available;
    renderLineup();
  }
}

function applyPrivate(event, payload) {
  if (event === "sales.ticker") {
    const titles = payload.items.map((item) => `${item.quantity} × ${item.title}`).join(", ");
    $("ticker").prepend(el("li", `Order #${payload.order_id}: ${titles} — ${money(payload.total_minor,
      payload.currency)}`));
  }
}

function productOf(item) {
  return item.product || item;
}

function renderLineup() {
  const options = [];
  $("lineup").replaceChildren(...state.lineup.map((item) => {
    const product = productOf(item);
    const available = item.available ?? product.available;
    const pinned = state.pinned.includes(product.id);
    const row = el("li", "", { "data-product": String(product.id) });
    row.append(el("span", `${product.title} · ${available} left`));
    const button = el("button", pinned ? "Unpin" : "Pin", { type: "button", class: pinned ? "pinned" : "" });
    button.disabled = !pinned && state.pinned.length >= state.maxPinned;
    button.addEventListener("click", () => control(pinned ? "unpin" : "pin", { product_id: product.id }));
    row.append(button);
    options.push(el("option", product.title, { value: String(product.id) }));
    return row;
  }));
  const select = $("sale-product");
  const chosen = select.value;
  select.replaceChildren(...options);
  if (chosen) select.value = chosen;
}

async function startSale(event) {
  event.preventDefault();
  const quantity = $("sale-quantity").value;
  await control("start_sale", {
    product_id: Number($("sale-product").value), price_minor: Number($("sale-price").value),
    duration_seconds: Number($("sale-duration").value), ...(quantity ? { quantity: Number(quantity) } : {}),
  });
}

function chatLine(message) {
  const line = el("li", "", { "data-message": String(message.id) });
  line.append(el("strong", message.name), document.createTextNode(" "), el("span", message.text));
  for (const [label, action, data] of [
    ["Delete", "delete_message", { message_id: message.id }],
    ["Mute 5 min", "mute", { author: message.author, seconds: 300 }],
    ["Ban", "ban", { author: message.author }],
  ]) {
    const button = el("button", label, { type: "button", class: "link" });
    button.addEventListener("click", () => control(action, data));
    line.append(document.createTextNode(" "), button);
  }
  return line;
}

function tick() {
  const status = $("sale-status");
  if (!status) return;
  const left = state.sale && state.socket ? state.socket.remaining(state.sale.ends_at) : 0;
  status.textContent = left > 0 ? `Sale running: ends in ${countdown(left)}` : "No sale running.";
}

build();
studioEvents.addEventListener("phase", (event) => {
  const { phase, room, socket } = event.detail;
  if (phase === "live" && room && socket && (room !== state.room || socket !== state.socket)) {
    start(room, socket).catch((error) => {
      $("controls-error").textContent = error.message;
    });
  } else if (phase === "ended" || phase === "idle") {
    state.room = null;
    stop();
  }
});
