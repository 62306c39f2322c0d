// The chardev web console: xterm.js on a websocket back to the server that served the page.
//
// The wire (RFC 6455, subprotocol "binary", to ws(s)://<this host and port>/):
//  - server to page: the console's output bytes, in binary frames (text frames are shown too);
//  - page to server: keystrokes as binary frames, UTF-8;
//  - page to server: on open and whenever the terminal's size changes, one TEXT frame
//      {"type":"resize","cols":C,"rows":R}
//    (C and R the terminal's columns and rows). It is the only text frame the page sends, so
//    a server can tell it from input by the frame type (chardev_socket::web::parse_resize
//    reads it); a later chardev release turns it into a resize event for the frontend.
// The page reconnects after a close, waiting 1 s, then 2 s, then 4 s, then 5 s between tries,
// and says where it is on the status line. Tests read it through window.chardevConsole.
"use strict";
(function () {
  const statusLine = document.getElementById("status");
  const container = document.getElementById("terminal");
  const NOT_INSTALLED = "xterm.js is not installed: run scripts/setup-web";
  const FONT_FAMILY = "monospace";
  const FONT_SIZE = 15;
  const BACKOFF_MS = [1000, 2000, 4000, 5000];

  let state = "loading";
  function setStatus(newState, text) {
    state = newState;
    statusLine.dataset.state = newState;
    statusLine.textContent = text;
  }

  if (typeof Terminal === "undefined") {
    // The server puts the notice in the page when it finds no xterm.js; this covers a page
    // whose script came but whose xterm.js did not.
    if (!document.getElementById("notice")) {
      const notice = document.createElement("p");
      notice.id = "notice";
      notice.className = "notice";
      notice.textContent = NOT_INSTALLED;
      document.body.insertBefore(notice, document.body.firstChild);
    }
    setStatus("unavailable", NOT_INSTALLED);
    window.chardevConsole = { term: null, status: () => state, statusText: () => statusLine.textContent };
    return;
  }

  const term = new Terminal({
    fontFamily: FONT_FAMILY,
    fontSize: FONT_SIZE,
    scrollback: 10000,
    convertEol: false,
    cursorBlink: true,
  });
  term.open(container);

  // The size of one character cell, measured in the terminal's font (what xterm.js's fit
  // addon reads from its private render service, without depending on it).
  function measureCell() {
    const probe = document.createElement("span");
    probe.style.cssText = "position:absolute;visibility:hidden;white-space:pre;line-height:normal;" +
      "font-family:" + FONT_FAMILY + ";font-size:" + FONT_SIZE + "px";
    probe.textContent = "W".repeat(64);
    document.body.appendChild(probe);
    const box = probe.getBoundingClientRect();
    probe.remove();
    return { width: box.width / 64, height: box.height };
  }

  function wantedSize() {
    const cell = measureCell();
    const box = container.getBoundingClientRect();
    if (!(cell.width > 0 && cell.height > 0)) return { cols: term.cols, rows: term.rows };
    return {
      cols: Math.max(2, Math.floor(box.width / cell.width)),
      rows: Math.max(1, Math.floor(box.height / cell.height)),
    };
  }

  let ws = null;
  let attempt = 0;
  let everOpen = false;
  let timer = null;
  const encoder = new TextEncoder();

  // The last resize messages sent, for tests to read.
  const sentSizes = [];
  function sendSize() {
    if (ws && ws.readyState === WebSocket.OPEN) {
      const message = JSON.stringify({ type: "resize", cols: term.cols, rows: term.rows });
      ws.send(message);
      sentSizes.push(message);
      if (sentSizes.length > 16) sentSizes.shift();
    }
  }

  function fit() {
    const size = wantedSize();
    if (size.cols !== term.cols || size.rows !== term.rows) {
      term.resize(size.cols, size.rows); // onResize sends the new size
    }
  }
  term.onResize(sendSize);
  let fitPending = false;
  window.addEventListener("resize", () => {
    if (fitPending) return;
    fitPending = true;
    requestAnimationFrame(() => { fitPending = false; fit(); });
  });
  fit();

  term.onData((data) => {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(data));
  });
  // Mouse reports in X10 mode are bytes, not UTF-8 text.
  term.onBinary((data) => {
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff));
    }
  });

  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/";

  function connect() {
    timer = null;
    setStatus("connecting", "connecting to " + url);
    let socket;
    try {
      socket = new WebSocket(url, ["binary"]);
    } catch (e) {
      retry("cannot connect: " + e.message);
      return;
    }
    ws = socket;
    socket.binaryType = "arraybuffer";
    socket.onopen = () => {
      // After a reconnect the server starts again with its history: mark the seam, so that
      // what was already on the screen is not mistaken for new output.
      if (everOpen) term.write("\r\n\x1b[7m -- reconnected -- \x1b[0m\r\n");
      everOpen = true;
      attempt = 0;
      setStatus("connected", "connected to " + url);
      sendSize();
    };
    socket.onmessage = (ev) => {
      term.write(typeof ev.data === "string" ? ev.data : new Uint8Array(ev.data));
    };
    socket.onclose = (ev) => {
      if (ws !== socket) return;
      ws = null;
      const why = ev.reason ? ev.reason + " (" + ev.code + ")" : "code " + ev.code;
      retry(why);
    };
  }

  function retry(why) {
    const delay = BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)];
    attempt += 1;
    const due = Date.now() + delay;
    const tick = () => {
      const left = Math.max(0, Math.ceil((due - Date.now()) / 1000));
      setStatus("closed", "closed: " + why + "; reconnecting in " + left + " s");
      if (Date.now() >= due) connect();
      else timer = setTimeout(tick, Math.min(1000, due - Date.now()));
    };
    tick();
  }

  // Everything in the terminal's buffer (scrollback and screen), one line per line of
  // output: rows that only continue a wrapped line are joined to it.
  function text() {
    const buffer = term.buffer.active;
    const lines = [];
    for (let i = 0; i < buffer.length; i++) {
      const line = buffer.getLine(i);
      if (!line) continue;
      const row = line.translateToString(true);
      if (line.isWrapped && lines.length > 0) lines[lines.length - 1] += row;
      else lines.push(row);
    }
    return lines.join("\n");
  }

  window.chardevConsole = {
    term,
    status: () => state,
    statusText: () => statusLine.textContent,
    text,
    sentSizes: () => sentSizes.slice(),
  };
  term.focus();
  connect();
})();
