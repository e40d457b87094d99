// The playground: a customer's chat and the support group's topics, polling the control API.
"use strict";

const state = { userId: null, groupId: null, topicId: null, agentId: null, lastDraw: {} };
const $ = (id) => document.getElementById(id);

async function control(path, body) {
  const opts = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const resp = await fetch("/control/" + path, opts);
  const data = await resp.json();
  if (!resp.ok) throw new Error(data.error || resp.statusText);
  return data;
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

// Bot API entities use UTF-16 offsets, which is how JavaScript indexes strings.
const WRAP = {
  bold: "b", italic: "i", underline: "u", strikethrough: "s", code: "code", pre: "pre",
  blockquote: "blockquote", expandable_blockquote: "blockquote",
};

function renderText(text, entities) {
  const frag = document.createDocumentFragment();
  const cuts = new Set([0, text.length]);
  for (const e of entities || []) { cuts.add(e.offset); cuts.add(e.offset + e.length); }
  const points = [...cuts].filter((c) => c >= 0 && c <= text.length).sort((a, b) => a - b);
  for (let k = 0; k + 1 < points.length; k++) {
    const from = points[k], to = points[k + 1];
    let node = document.createTextNode(text.slice(from, to));
    const active = (entities || []).filter((e) => e.offset <= from && e.offset + e.length >= to);
    for (const e of active.reverse()) {
      let wrap;
      if (WRAP[e.type]) wrap = el(WRAP[e.type]);
      else if (e.type === "text_link" || e.type === "url") {
        wrap = el("a");
        const href = e.url || text.slice(e.offset, e.offset + e.length);
        if (/^(https?|tg):\/\//i.test(href)) wrap.href = href;
        wrap.target = "_blank";
        wrap.rel = "noopener";
      } else if (e.type === "spoiler") {
        wrap = el("span", "spoiler");
        wrap.onclick = () => wrap.classList.add("shown");
      } else continue;
      wrap.appendChild(node);
      node = wrap;
    }
    frag.appendChild(node);
  }
  return frag;
}

function describeService(m) {
  const msg = m.message;
  if (msg.forum_topic_created) return "Topic created: " + msg.forum_topic_created.name;
  if (msg.forum_topic_edited) return "Topic renamed" + (msg.forum_topic_edited.name ? ": " + msg.forum_topic_edited.name : "");
  if (msg.forum_topic_closed) return "Topic closed";
  if (msg.forum_topic_reopened) return "Topic reopened";
  return "service message";
}

function renderMessage(m, names, onPress) {
  if (m.kind === "service") return el("div", "msg service", describeService(m));
  const box = el("div", "msg " + (m.from_bot ? "bot" : "user") + (m.deleted ? " deleted" : ""));
  if (names) box.appendChild(el("div", "who", m.from_bot ? "bot" : (names[m.sender_id] || m.sender_id)));
  if (m.kind !== "text") {
    const file = m.message[m.kind];
    const id = Array.isArray(file) ? file[file.length - 1].file_id : file.file_id;
    box.appendChild(el("div", "media", "[" + m.kind + " " + id + "]"));
  }
  const body = m.text ?? m.caption;
  if (body) box.appendChild(renderText(body, m.entities));
  const rows = (m.reply_markup && m.reply_markup.inline_keyboard) || [];
  if (rows.length && !m.deleted) {
    const buttons = el("div", "buttons");
    for (const row of rows) {
      const line = el("div", "row");
      for (const b of row) {
        if (b.url) {
          const a = el("a", "", b.text + " ↗");
          if (/^https?:\/\//i.test(b.url)) a.href = b.url;
          a.target = "_blank";
          line.appendChild(a);
        } else {
          const btn = el("button", "", b.text);
          btn.type = "button";
          if (b.callback_data !== undefined && onPress) btn.onclick = () => onPress(m, b.callback_data);
          line.appendChild(btn);
        }
      }
      buttons.appendChild(line);
    }
    box.appendChild(buttons);
  }
  const when = new Date(m.date * 1000).toLocaleTimeString();
  box.appendChild(el("div", "meta", "#" + m.message_id + " · " + when + (m.edits.length ? " · edited" : "")));
  return box;
}

function draw(container, key, messages, names, onPress) {
  // Redraw only when something changed, so scrolling and clicks are not disturbed.
  const sig = JSON.stringify(messages.map((m) => [m.message_id, m.edit_date, m.deleted]));
  if (state.lastDraw[key] === sig) return;
  state.lastDraw[key] = sig;
  const atBottom = container.scrollHeight - container.scrollTop - container.clientHeight < 40;
  container.replaceChildren();
  if (!messages.length) container.appendChild(el("div", "empty", "No messages yet"));
  for (const m of messages) container.appendChild(renderMessage(m, names, onPress));
  if (atBottom || messages.length) container.scrollTop = container.scrollHeight;
}

function toast(text, alert) {
  const t = $("toast");
  t.textContent = text;
  t.className = "toast" + (alert ? " alert" : "");
  t.hidden = false;
  setTimeout(() => { t.hidden = true; }, alert ? 4000 : 2000);
}

async function press(m, data) {
  try {
    const q = await control("press", { chat_id: m.message.chat.id, message_id: m.message_id, data, user_id: state.userId });
    const answered = await control("callbacks/" + q.id + "?timeout=5");
    if (answered.answer && answered.answer.text) toast(answered.answer.text, answered.answer.show_alert);
  } catch (err) { toast(String(err.message || err), true); }
  refresh();
}

function fillSelect(select, items, current, label) {
  const sig = JSON.stringify(items.map((i) => [i.id, label(i)]));
  if (select.dataset.sig !== sig) {
    select.dataset.sig = sig;
    select.replaceChildren(...items.map((i) => {
      const o = el("option", "", label(i));
      o.value = i.id;
      return o;
    }));
  }
  if (current !== null) select.value = String(current);
}

async function refresh() {
  try {
    const [users, chats] = await Promise.all([control("users"), control("chats")]);
    $("status").textContent = users.length + " users · " + chats.length + " chats";
    if (state.userId === null && users.length) {
      // Open on a customer: the most recent private conversation, not a support agent.
      const agents = new Set(chats.flatMap((c) => Object.keys(c.members || {}).map(Number)));
      const talked = chats.filter((c) => c.type === "private" && c.last_message_id > 0 && !agents.has(c.id));
      const customer = users.find((u) => !agents.has(u.id));
      state.userId = talked.length ? talked[talked.length - 1].id : (customer || users[0]).id;
    }
    fillSelect($("user-select"), users, state.userId, (u) => u.first_name + " (" + u.id + ", " + (u.language_code || "-") + ")" + (u.blocked ? " blocked" : ""));
    const names = Object.fromEntries(users.map((u) => [u.id, u.first_name]));
    if (state.userId !== null) {
      const messages = await control("chats/" + state.userId + "/transcript");
      draw($("chat"), "chat" + state.userId, messages, null, press);
      drawKeyboard(messages);
    }
    const groups = chats.filter((c) => c.type === "supergroup");
    if (state.groupId === null && groups.length) state.groupId = groups[0].id;
    fillSelect($("group-select"), groups, state.groupId, (g) => g.title + " (" + g.id + ")");
    const group = groups.find((g) => g.id === state.groupId);
    if (group) {
      const members = Object.keys(group.members).map((id) => ({ id: Number(id), first_name: names[id] || id }));
      if (state.agentId === null && members.length) state.agentId = members[0].id;
      fillSelect($("agent-select"), members, state.agentId, (u) => u.first_name + " (" + group.members[u.id] + ")");
      drawTopics(group.topics);
      if (state.topicId !== null) {
        const messages = await control("chats/" + group.id + "/transcript?message_thread_id=" + state.topicId);
        draw($("topic-chat"), "topic" + group.id + ":" + state.topicId, messages, names, null);
      }
    }
  } catch (err) {
    $("status").textContent = "sandbox unreachable: " + (err.message || err);
  }
}

function drawKeyboard(messages) {
  const kb = $("reply-keyboard");
  const last = [...messages].reverse().find((m) => m.from_bot && m.keyboard);
  const rows = last && last.keyboard.keyboard ? last.keyboard.keyboard : [];
  const sig = JSON.stringify(rows);
  if (kb.dataset.sig === sig) return;
  kb.dataset.sig = sig;
  kb.replaceChildren(...rows.map((row) => {
    const line = el("div", "row");
    for (const b of row) {
      const text = typeof b === "string" ? b : b.text;
      const btn = el("button", "", text);
      btn.type = "button";
      btn.onclick = () => sendAsUser(text);
      line.appendChild(btn);
    }
    return line;
  }));
}

function drawTopics(topics) {
  const list = $("topics");
  const sig = JSON.stringify([topics, state.topicId]);
  if (list.dataset.sig === sig) return;
  list.dataset.sig = sig;
  if (state.topicId === null && topics.length) state.topicId = topics[topics.length - 1].message_thread_id;
  list.replaceChildren(...topics.map((t) => {
    const li = el("li", t.message_thread_id === state.topicId ? "active" : "");
    li.appendChild(el("span", "", t.name));
    li.appendChild(el("span", "state " + (t.closed ? "closed" : "open"), t.closed ? "closed" : "open"));
    li.onclick = () => { state.topicId = t.message_thread_id; refresh(); };
    return li;
  }));
  if (!topics.length) list.appendChild(el("li", "muted", "No topics yet"));
}

async function sendAsUser(text) {
  if (state.userId === null || !text.trim()) return;
  try { await control("messages", { user_id: state.userId, text }); } catch (err) { toast(err.message, true); }
  refresh();
}

$("send").onsubmit = (ev) => {
  ev.preventDefault();
  const text = $("text").value;
  $("text").value = "";
  sendAsUser(text);
};
$("agent-send").onsubmit = async (ev) => {
  ev.preventDefault();
  const text = $("agent-text").value;
  if (!text.trim() || state.groupId === null || state.topicId === null) return;
  $("agent-text").value = "";
  try {
    await control("messages", { user_id: state.agentId, chat_id: state.groupId, message_thread_id: state.topicId, text });
  } catch (err) { toast(err.message, true); }
  refresh();
};
$("new-user").onsubmit = async (ev) => {
  ev.preventDefault();
  try {
    const u = await control("users", { id: Number($("new-id").value), first_name: $("new-name").value, language_code: $("new-lang").value });
    state.userId = u.id;
  } catch (err) { toast(err.message, true); }
  refresh();
};
$("new-group").onclick = async () => {
  const users = await control("users");
  const agentId = 900000 + Math.floor(Math.random() * 1000);
  await control("users", { id: agentId, first_name: "Agent" });
  const g = await control("supergroups", { title: "Support", administrators: [agentId] });
  state.groupId = g.id; state.agentId = agentId; state.topicId = null;
  if (!users.length) state.userId = null;
  refresh();
};
$("user-select").onchange = (ev) => { state.userId = Number(ev.target.value); refresh(); };
$("group-select").onchange = (ev) => { state.groupId = Number(ev.target.value); state.topicId = null; refresh(); };
$("agent-select").onchange = (ev) => { state.agentId = Number(ev.target.value); };

refresh();
setInterval(refresh, 800);
