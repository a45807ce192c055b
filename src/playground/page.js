// The playground page: places the HTML fragments the server rendered (escaped there)
// and wires the composer and the buttons. No markup is built from message text here.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const body = document.body;
  const input = body.dataset.input === "on";
  const seen = new Map(); // ts -> element
  const replies = new Map(); // root ts -> [element]
  let name = localStorage.getItem("corral.name") || "";
  let feed = null, last = null, openThread = null;

  function status(t) { $("status").textContent = t; }

  function card(m) {
    const el = document.createElement("div");
    el.className = "msg" + (m.kind === "ephemeral" ? " ephemeral" : "");
    const me = m.author !== "corral";
    const av = document.createElement("div");
    av.className = "avatar" + (me ? " user" : "");
    av.textContent = me ? m.author.replace(/^playground:/, "").slice(0, 1).toUpperCase() : "c";
    const b = document.createElement("div");
    b.className = "body";
    const who = document.createElement("div");
    who.className = "who";
    who.textContent = me ? m.author : "corral";
    const when = document.createElement("small");
    if (m.ts) { when.textContent = new Date(parseFloat(m.ts) * 1000).toLocaleTimeString(); }
    else { when.textContent = new Date().toLocaleTimeString(); }
    who.appendChild(when);
    const content = document.createElement("div");
    content.className = "content";
    content.innerHTML = m.html; // rendered and escaped by the server
    b.append(who, content);
    el.append(av, b);
    if (m.ts) { el.dataset.ts = m.ts; }
    if (m.thread_ts) { el.dataset.thread = m.thread_ts; }
    localise(content);
    return el;
  }

  function localise(root) {
    root.querySelectorAll("time[data-unix]").forEach((t) => {
      const d = new Date(parseInt(t.dataset.unix, 10) * 1000);
      if (!isNaN(d)) { t.title = t.textContent; t.textContent = d.toLocaleString(); }
    });
  }

  function replyLink(rootTs) {
    const root = seen.get(rootTs);
    if (!root) { return; }
    let link = root.querySelector(".replies");
    if (!link) {
      link = document.createElement("button");
      link.className = "replies";
      link.type = "button";
      link.addEventListener("click", () => showThread(rootTs));
      root.querySelector(".body").appendChild(link);
    }
    const n = (replies.get(rootTs) || []).length;
    link.textContent = n + (n === 1 ? " reply" : " replies");
  }

  function showThread(rootTs) {
    openThread = rootTs;
    const pane = $("replies");
    pane.replaceChildren();
    const root = seen.get(rootTs);
    if (root) {
      const copy = root.cloneNode(true);
      copy.querySelectorAll(".replies").forEach((x) => x.remove());
      pane.appendChild(copy);
    }
    (replies.get(rootTs) || []).forEach((r) => pane.appendChild(r.cloneNode(true)));
    $("thread").hidden = false;
  }

  function place(m) {
    if (m.kind === "update") {
      const old = seen.get(m.ts);
      if (!old) { return; }
      const content = old.querySelector(".content");
      content.innerHTML = m.html;
      localise(content);
      if (old.dataset.thread) { refreshThread(old.dataset.thread); } else { refreshThread(m.ts); }
      return;
    }
    const el = card(m);
    if (m.kind === "post" && m.ts) {
      const old = seen.get(m.ts);
      if (old) { old.querySelector(".content").innerHTML = m.html; return; }
      seen.set(m.ts, el);
    }
    if (m.thread_ts) {
      const list = replies.get(m.thread_ts) || [];
      list.push(el);
      replies.set(m.thread_ts, list);
      replyLink(m.thread_ts);
      refreshThread(m.thread_ts);
      return;
    }
    const box = $("messages");
    const bottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
    box.appendChild(el);
    if (bottom || m.kind === "ephemeral") { box.scrollTop = box.scrollHeight; }
  }

  function refreshThread(rootTs) { if (openThread === rootTs) { showThread(rootTs); } }

  async function load() {
    const r = await fetch("/playground/history?user=" + encodeURIComponent(name));
    if (!r.ok) { status(await r.text()); return; }
    const h = await r.json();
    seen.clear(); replies.clear();
    $("messages").replaceChildren();
    h.messages.forEach(place);
    $("messages").scrollTop = $("messages").scrollHeight;
    $("identity").textContent = "as " + h.identity;
    last = h.last_event_id;
    connect();
  }

  function connect() {
    if (feed) { feed.close(); }
    feed = new EventSource("/playground/events?user=" + encodeURIComponent(name) + "&last=" + encodeURIComponent(last || ""));
    feed.onopen = () => status(input ? "live" : "live · read-only mirror");
    feed.onmessage = (e) => { last = e.lastEventId || last; place(JSON.parse(e.data)); };
    feed.addEventListener("reload", () => { feed.close(); load(); });
    feed.onerror = () => status("reconnecting…");
  }

  async function send(path, payload) {
    const r = await fetch(path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(Object.assign({ user: name }, payload)),
    });
    if (!r.ok) { local(await r.text()); return null; }
    return r.json();
  }

  function local(text) {
    const el = card({ kind: "ephemeral", author: "corral", html: "" });
    el.querySelector(".content").textContent = text;
    $("messages").appendChild(el);
    $("messages").scrollTop = $("messages").scrollHeight;
  }

  $("composer").addEventListener("submit", async (e) => {
    e.preventDefault();
    const t = $("text").value.trim();
    if (!t) { return; }
    $("text").value = "";
    const r = await send("/playground/command", { text: t });
    if (r && r.visibility === "ephemeral") { place({ kind: "ephemeral", author: "corral", html: r.html }); }
  });

  document.addEventListener("click", async (e) => {
    const b = e.target.closest(".b-button");
    if (!b || !input) { return; }
    const d = b.dataset;
    if (d.confirmTitle !== undefined && !(await confirmed(d))) { return; }
    const msg = b.closest(".msg");
    const actions = b.closest(".b-actions");
    b.disabled = true;
    await send("/playground/click", {
      action_id: d.actionId, value: d.value || "",
      block_id: actions ? actions.dataset.blockId : "",
      ts: msg && msg.dataset.ts ? msg.dataset.ts : null,
    });
    b.disabled = false;
  });

  function confirmed(d) {
    const dlg = $("confirm");
    $("c-title").textContent = d.confirmTitle;
    $("c-text").textContent = d.confirmText || "";
    $("c-yes").textContent = d.confirmYes || "Confirm";
    $("c-no").textContent = d.confirmNo || "Cancel";
    return new Promise((res) => {
      dlg.addEventListener("close", () => res(dlg.returnValue === "yes"), { once: true });
      dlg.showModal();
    });
  }

  $("close").addEventListener("click", () => { $("thread").hidden = true; openThread = null; });

  $("who").addEventListener("submit", (e) => {
    e.preventDefault();
    const v = $("name").value.trim().toLowerCase();
    if (!/^[a-z0-9][a-z0-9._-]{0,31}$/.test(v)) { status("a name is a-z, 0-9, . _ -"); return; }
    name = v;
    localStorage.setItem("corral.name", name);
    start();
  });

  function start() {
    $("name").value = name;
    const on = input && !!name;
    $("text").disabled = !on;
    document.querySelector("#composer button").disabled = !on;
    if (!input) { $("text").placeholder = "Read-only mirror (CORRAL_PLAYGROUND_INPUT=on to act)"; }
    if (name) { load(); } else { status("pick a name to start"); }
  }
  start();
})();
