// Markup built from nodes, never parsed from strings: text (chat, product titles) can never become HTML.

// An element with text content and optional attributes.
export function el(tag, text = "", attributes = {}) {
  const node = document.createElement(tag);
  if (text) node.textContent = text;
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

// An element with attributes and children (elements or strings, which become text).
export function h(tag, attributes = {}, ...children) {
  const node = el(tag, "", attributes);
  node.append(...children);
  return node;
}
