// The shopping overlay of the live page: pinned product cards over the video with live stock, price and the
// flash sale's countdown; reserve, check out and pay with the hold's deadline counting down; chat; viewers.
// Everything arrives over the page's live-room channel, which the player (live.js) connects and joins;
// buying goes through the REST API.

import { el, h } from "./dom.js";
import { countdown, money } from "./format.js";
import { channel as socket, useToken } from "./live_channel.js";
import { requestJson } from "./net.js";

const $ = (id) => document.getElementById(id);
const room = decodeURIComponent(window.location.pathname.split("/")[2] || "");
const TEST_CARD = "4242 4242 4242 4242";

const state = { token: null, user: null, snapshot: null, cards: [], sale: null, hold: null, order: null };

function listen() {
  socket.addEventListener("snapshot", (event) => applySnapshot(event.detail));
  socket.addEventListener("room-event", (event) => applyEvent(event.detail.event, event.detail.payload));
  socket.addEventListener("private", (event) => applyPrivate(event.detail.event, event.detail.payload));
  socket.addEventListener("state", (event) => {
    $("shop-connection").textContent = event.detail.state === "connected" ? "" : "Reconnecting…";
  });
}

function build() {
  const player = $("player");
  const cards = el("div", "", { id: "cards", class: "cards", "aria-live": "polite" });
  player.append(cards);
  const shop = h("section", { id: "shop", class: "shop" },
    h("div", { class: "card stack" },
      h("p", { class: "row" }, el("span", "", { id: "viewers", class: "muted" }),
        el("span", "", { id: "shop-connection", class: "muted" })),
      h("form", { id: "viewer-sign-in", class: "row" },
        el("input", "", { id: "viewer-email", type: "email", placeholder: "Email", autocomplete: "username",
          required: "" }),
        el("input", "", { id: "viewer-password", type: "password", placeholder: "Password",
          autocomplete: "current-password", required: "" }),
        el("button", "Sign in to buy and chat", { id: "viewer-sign-in-button", type: "submit" })),
      el("p", "", { id: "viewer-account", class: "muted", hidden: "" }),
      el("p", "", { id: "shop-error", class: "error", role: "alert" }),
      h("div", { id: "checkout", class: "stack", hidden: "" },
        el("h2", "Your hold"),
        el("p", "", { id: "hold-summary" }),
        h("p", {}, "Held for ", el("strong", "", { id: "hold-countdown" })),
        h("label", {}, "Card ", el("input", "", { id: "card-number", placeholder: TEST_CARD,
          autocomplete: "cc-number" })),
        el("button", "Check out and pay", { id: "pay", class: "primary", type: "button" })),
      el("p", "", { id: "order-status", class: "status", role: "status" })),
    h("div", { class: "card stack chat" },
      el("h2", "Chat"),
      el("ol", "", { id: "chat-log", class: "chat-log" }),
      h("form", { id: "chat-form", class: "row" },
        el("input", "", { id: "chat-text", maxlength: "500", autocomplete: "off", placeholder: "Say something",
          required: "" }),
        el("button", "Send", { type: "submit" })),
      el("p", "", { id: "chat-error", class: "error", role: "alert" })));
  player.after(shop);
  $("viewer-sign-in").addEventListener("submit", signIn);
  $("pay").addEventListener("click", pay);
  $("chat-form").addEventListener("submit", sendChat);
}

async function signIn(event) {
  event.preventDefault();
  try {
    const tokens = await requestJson("/api/auth/login", {
      method: "POST",
      body: { email: $("viewer-email").value.trim(), password: $("viewer-password").value },
    });
    adoptTokens(tokens);
    await useToken(tokens.access_token); // reconnects as the viewer; the room is rejoined by itself
  } catch (error) {
    $("shop-error").textContent = error.status === 401 ? "Wrong email or password." : error.message;
  }
}

function adoptTokens(tokens) {
  state.token = tokens.access_token;
  state.user = tokens.user;
  $("viewer-sign-in").hidden = true;
  $("viewer-account").hidden = false;
  $("viewer-account").textContent = `Signed in as ${tokens.user.display_name}`;
  $("shop-error").textContent = "";
}

function applySnapshot(snapshot) {
  state.snapshot = snapshot;
  state.cards = snapshot.pinned || [];
  state.sale = snapshot.sale;
  $("viewers").textContent = viewersText(snapshot.viewers);
  const log = $("chat-log");
  log.replaceChildren(...(snapshot.chat || []).map(chatLine));
  renderCards();
}

function viewersText(count) {
  return `${count} watching`;
}

function applyEvent(event, payload) {
  switch (event) {
    case "pins.changed":
      state.cards = payload.pinned;
      renderCards();
      break;
    case "sale.started":
      state.sale = payload.sale;
      renderCards();
      break;
    case "sale.ended":
      state.sale = null;
      renderCards();
      break;
    case "stock.changed":
      for (const card of state.cards) {
        if (card.product_id === payload.product_id) Object.assign(card, payload);
      }
      renderCards();
      break;
    case "chat.message":
      $("chat-log").append(chatLine(payload));
      trimChat();
      break;
    case "chat.deleted":
      document.querySelector(`[data-message="${Number(payload.message_id)}"]`)?.remove();
      break;
    case "viewers.changed":
      $("viewers").textContent = viewersText(payload.count);
      break;
    case "show.ended":
      state.cards = [];
      state.sale = null;
      renderCards();
      break;
    default:
      break;
  }
}

function applyPrivate(event, payload) {
  if (event === "checkout.hold_created") {
    state.hold = payload;
    showHold();
  } else if (event === "checkout.hold_expired") {
    $("order-status").textContent = "Your hold expired; the item went back on sale.";
    state.hold = null;
    $("checkout").hidden = true;
  } else if (event === "checkout.paid") {
    $("order-status").textContent = `Paid: order #${payload.order_id}, ${money(payload.total_minor, payload.currency)}.`;
    $("order-status").dataset.state = "paid";
  } else if (event === "checkout.declined") {
    $("order-status").textContent = "Your card was declined. Try another card.";
  } else if (event === "banned") {
    $("chat-error").textContent = "You were removed from this room.";
  }
}

function chatLine(message) {
  const line = el("li", "", { "data-message": String(message.id) });
  line.append(el("strong", message.name), document.createTextNode(" "), el("span", message.text));
  return line;
}

function trimChat() {
  const log = $("chat-log");
  while (log.children.length > 100) log.firstElementChild.remove();
  log.scrollTop = log.scrollHeight;
}

function stockText(card) {
  if (card.state === "sold_out") return "Sold out";
  if (card.state === "low_stock") return `Only ${card.available} left`;
  return `${card.available} left`;
}

function renderCards() {
  const cards = $("cards");
  cards.replaceChildren(...state.cards.map((card) => {
    const node = el("article", "", { class: "product-card", "data-product": String(card.product_id),
      "data-state": card.state });
    node.append(el("h3", card.title), el("p", money(card.price_minor, card.currency), { class: "price" }),
      el("p", stockText(card), { class: "stock" }));
    if (state.sale && state.sale.product_id === card.product_id) {
      node.append(el("p", "", { class: "sale-countdown", "data-ends-at": String(state.sale.ends_at) }));
    }
    const reserve = el("button", "Reserve", { type: "button", class: "primary reserve" });
    reserve.disabled = card.state === "sold_out";
    reserve.addEventListener("click", () => reserveProduct(card));
    node.append(reserve);
    return node;
  }));
  tick();
}

async function reserveProduct(card) {
  $("shop-error").textContent = "";
  if (!state.token) {
    $("shop-error").textContent = "Sign in to reserve.";
    return;
  }
  try {
    const hold = await requestJson(`/api/products/${card.product_id}/reserve`, {
      method: "POST", token: state.token, body: { quantity: 1, show_id: state.snapshot.show_id },
    });
    state.hold = { ...hold, title: card.title };
    showHold();
  } catch (error) {
    $("shop-error").textContent = error.code === "sold_out" ? "Sold out." : error.message;
  }
}

function showHold() {
  const hold = state.hold;
  const card = state.cards.find((c) => c.product_id === hold.product_id);
  $("checkout").hidden = false;
  $("hold-summary").textContent = `${card ? card.title : "Your item"} × ${hold.quantity}`;
  $("hold-countdown").dataset.deadline = String(hold.expires_at);
  tick();
}

async function pay() {
  const hold = state.hold;
  if (!hold) return;
  $("pay").disabled = true;
  $("order-status").textContent = "Paying…";
  try {
    if (!state.order) {
      state.order = await requestJson("/api/checkout", {
        method: "POST", token: state.token, body: {
          show_id: state.snapshot.show_id, hold_ids: [hold.id ?? hold.hold_id],
          shipping_address: { name: state.user.display_name, line1: "1 Main Street", city: "Springfield",
            postal_code: "12345", country: "US" },
        },
      });
    }
    const order = await requestJson(`/api/orders/${state.order.id}/pay`, {
      method: "POST", token: state.token, body: { payment_method: $("card-number").value },
    });
    $("checkout").hidden = true;
    state.hold = null;
    state.order = null;
    $("order-status").textContent = `Paid: order #${order.id}, ${money(order.total_minor, order.currency)}.`;
    $("order-status").dataset.state = "paid";
  } catch (error) {
    $("order-status").textContent = error.message;
  } finally {
    $("pay").disabled = false;
  }
}

async function sendChat(event) {
  event.preventDefault();
  $("chat-error").textContent = "";
  try {
    await socket.call("chat", { room, text: $("chat-text").value });
    $("chat-text").value = "";
  } catch (error) {
    $("chat-error").textContent = error.code === "sign_in_required" ? "Sign in to chat." : error.message;
  }
}

// Countdowns from server deadlines, by the server's clock as estimated from the channel.
function tick() {
  for (const node of document.querySelectorAll(".sale-countdown")) {
    const left = socket.remaining(Number(node.dataset.endsAt));
    node.textContent = left > 0 ? `Flash sale ends in ${countdown(left)}` : "Flash sale over";
  }
  const hold = $("hold-countdown");
  if (hold && hold.dataset.deadline) hold.textContent = countdown(socket.remaining(Number(hold.dataset.deadline)));
}

if (room) {
  build();
  listen();
  setInterval(tick, 250);
}
