// switchboard-client — a dependency-free ES module client for Switchboard's client
// protocol v1 (JSON form). Works in browsers and in Node (inject a WebSocket implementation,
// e.g. the `ws` package, through the `WebSocket` option). See README.md beside this file.
//
// Wire format (one JSON object per text message):
//   client → server  {"type":"chat.send","id":"k3-7","data":{…},"traceparent":"…"}
//   server → client  {"type":"ack","id":"k3-7"}
//                    {"type":"error","id":"k3-7","code":1002,"message":"…"}
//                    {"type":"move","data":{"delay_ms":2150,"reason":"drain"}}
//                    {"type":"welcome","data":{"conn":"…","user":"…","edge":"…"}}
//                    {"type":"<delivery type>","data":{…}}

/** Reserved server frame types and the chat / danmaku routes the client knows about.
 *  Every protocol name the client uses lives here. */
export const Types = Object.freeze({
  ack: 'ack',
  error: 'error',
  move: 'move',
  welcome: 'welcome',
  chatSend: 'chat.send', // {to | group, text, cmid}; reply chat.send {conv, seq, id, ts, dup}
  chatMsg: 'chat.msg', // delivery {conv, seq, id, from, cmid, text, ts}
  chatSync: 'chat.sync', // {conv, since?}; reply chat.sync {conv, messages, more}
  chatConvs: 'chat.convs', // {}; reply chat.convs {convs: [{conv, last, acked}]}
  chatAck: 'chat.ack', // {conv, seq}: processed up to seq (no reply)
  chatJoin: 'chat.join', // {group}; reply chat.join {conv}
  chatLeave: 'chat.leave',
  roomJoin: 'room.join', // {room}; answered with a room.join delivery carrying the id
  roomLeave: 'room.leave',
  roomOnline: 'room.online', // {room, online}: live counts
  danmakuSend: 'danmaku.send', // {room, text, paid?}
  danmaku: 'danmaku', // {room, user, text, paid?, mod?, ts}
  echo: 'echo',
});

/** WebSocket close codes sent by the edge (protocol/codes.go). */
export const CloseCodes = Object.freeze({
  Normal: 1000,
  GoingAway: 1001,
  ProtocolError: 1002,
  Unsupported: 1003,
  Abnormal: 1006, // never sent on the wire: the socket dropped without a close frame
  InvalidPayload: 1007,
  Policy: 1008,
  TooBig: 1009,
  Internal: 1011,
  Restart: 1012,
  BadFrame: 4000,
  TokenExpired: 4001,
  SlowConsumer: 4002,
  Kicked: 4003,
  RateLimited: 4004,
  IdleTimeout: 4005,
  Replaced: 4006,
});

/** Error codes carried by "error" frames (protocol/codes.go), plus the client's own codes. */
export const ErrorCodes = Object.freeze({
  Internal: 1000,
  BadFrame: 1001,
  UnknownType: 1002,
  TooLarge: 1003,
  RateLimited: 1004,
  Unavailable: 1005,
  Forbidden: 1006,
  InvalidData: 1007,
  NotFound: 1008,
  Timeout: 1009,
  // Client-side (never sent by a server):
  Closed: 'ECLOSED', // the client was closed (close()) before the frame was settled
  QueueFull: 'EQUEUE', // too many frames waiting for a connection
  AckTimeout: 'ETIMEOUT', // no ack / error within the timeout
  Dropped: 'EDROPPED', // the connection dropped and the frame was sent with {resend: false}
});

/** Close codes after which the client does not reconnect by itself. */
const TERMINAL = new Set([CloseCodes.TokenExpired, CloseCodes.Kicked, CloseCodes.Replaced]);
/** Close codes after which the client waits the maximum backoff before reconnecting. */
const SLOW = new Set([
  CloseCodes.RateLimited, CloseCodes.BadFrame, CloseCodes.Policy,
  CloseCodes.ProtocolError, CloseCodes.Unsupported, CloseCodes.InvalidPayload, CloseCodes.TooBig,
]);

/** Connection states, reported by the 'state' event. */
export const States = Object.freeze({
  Idle: 'idle', // constructed, connect() not called yet
  Connecting: 'connecting', // first attempt after connect()
  Online: 'online', // welcome received
  Reconnecting: 'reconnecting', // lost the connection; waiting or dialling again
  Moving: 'moving', // told by the edge to move; reconnecting after the delay
  Offline: 'offline', // stopped: close() was called, or a terminal close code
});

/** The Error a send() rejects with. code: a numeric server error code or an ErrorCodes.* string. */
export class SwitchboardError extends Error {
  constructor(code, message, frame) {
    super(message || `switchboard: error ${code}`);
    this.name = 'SwitchboardError';
    this.code = code;
    if (frame) {
      this.id = frame.id;
      this.frame = frame;
    }
  }
}

const DEFAULTS = {
  backoff: { min: 500, max: 30000 },
  ackTimeout: 15000,
  connectTimeout: 10000,
  maxQueue: 1000,
  chatResume: true,
  maxSyncPages: 50,
  protocols: 'switchboard.v1.json',
};

function randomId(n) {
  let s = '';
  while (s.length < n) s += Math.random().toString(36).slice(2);
  return s.slice(0, n);
}

function toText(data) {
  if (typeof data === 'string') return data;
  if (data && typeof data === 'object') {
    if (typeof ArrayBuffer !== 'undefined' && data instanceof ArrayBuffer) {
      return new TextDecoder().decode(new Uint8Array(data));
    }
    if (ArrayBuffer.isView(data)) return new TextDecoder().decode(data);
    if (Array.isArray(data)) return data.map(toText).join(''); // ws fragments
  }
  return null; // Blob or unknown: the JSON form never uses binary messages
}

/**
 * A Switchboard connection that survives: it reconnects with exponential backoff and full
 * jitter, honours "move" frames, resends frames that were not acknowledged, and resumes chat
 * conversations after every reconnect.
 */
export class Switchboard {
  /**
   * @param {string} url  ws:// or wss:// URL of the edge's endpoint, e.g. wss://host/ws
   * @param {object} [opts]
   * @param {string|(() => string|Promise<string>)} [opts.token]  sent as ?token=; a function is
   *        called before every connection attempt (so it can refresh an expired token)
   * @param {string} [opts.user]  development mode only: sent as ?user=
   * @param {Function} [opts.WebSocket]  WebSocket constructor; defaults to globalThis.WebSocket
   * @param {{min:number,max:number}} [opts.backoff]  reconnect delay bounds in ms (500, 30000)
   * @param {number} [opts.ackTimeout]  ms before an unacknowledged send() rejects (15000; 0 = never)
   * @param {number} [opts.connectTimeout]  ms for the handshake and welcome (10000)
   * @param {number} [opts.maxQueue]  frames held while offline (1000)
   * @param {boolean} [opts.chatResume]  sync chat conversations after reconnects (true)
   * @param {string|string[]|null} [opts.protocols]  Sec-WebSocket-Protocol offer ('switchboard.v1.json';
   *        null offers none, which the edge also treats as JSON)
   */
  constructor(url, opts = {}) {
    if (!url) throw new TypeError('switchboard: url is required');
    this.url = String(url);
    this.opts = { ...DEFAULTS, ...opts, backoff: { ...DEFAULTS.backoff, ...(opts.backoff || {}) } };
    this._WS = opts.WebSocket || globalThis.WebSocket;
    if (typeof this._WS !== 'function') {
      throw new TypeError('switchboard: no WebSocket implementation; pass opts.WebSocket');
    }
    this._token = opts.token;
    this._handlers = new Map();
    this._ws = null;
    this._state = States.Idle;
    this._attempt = 0; // failed attempts since the last welcome
    this._timer = null; // reconnect / connect timeout timer
    this._stopped = true;
    this._idPrefix = randomId(4) + '-';
    this._seq = 0;
    this._pending = new Map(); // id → {type, text, resolve, reject, timer, sent}
    this._queue = []; // fire-and-forget frames waiting for a connection: {text, resolve}
    this.welcome = null; // data of the last welcome frame
    this.closeInfo = null; // {code, reason} of the last close
    // chat resume state
    this._lastSeq = new Map(); // conv → highest seq seen
    this._seen = new Map(); // conv → Set of seqs seen (bounded)
    this._syncing = new Map(); // conv → the running sync's Promise
    this._resumeWaiters = [];
    this._onBrowserOnline = () => {
      if (this._state === States.Reconnecting && !this._ws) this._dialNow();
    };
  }

  /** Current state: one of States. */
  get state() { return this._state; }
  /** Reconnect attempts since the last successful connection. */
  get attempt() { return this._attempt; }
  /** The underlying WebSocket (for diagnostics and tests), or null. */
  get socket() { return this._ws; }
  /** A snapshot of the last seq seen per conversation: {conv: seq}. */
  get chatPositions() { return Object.fromEntries(this._lastSeq); }

  /** Subscribe to an event; returns a function that unsubscribes. Events: 'open', 'close',
   *  'state', 'welcome', 'error', 'auth', 'frame' (every server frame), and every delivery type. */
  on(type, fn) {
    let set = this._handlers.get(type);
    if (!set) this._handlers.set(type, (set = new Set()));
    set.add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    const set = this._handlers.get(type);
    if (set) set.delete(fn);
  }

  once(type, fn) {
    const off = this.on(type, (...a) => { off(); fn(...a); });
    return off;
  }

  _emit(type, ...args) {
    const set = this._handlers.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(...args);
      } catch (err) {
        // A throwing handler must not break the connection; surface it asynchronously.
        setTimeout(() => { throw err; }, 0);
      }
    }
  }

  _setState(state) {
    if (this._state === state && state !== States.Reconnecting) return;
    this._state = state;
    this._emit('state', { state, attempt: this._attempt });
  }

  /** Start (or restart after close()) connecting. Resolves with the welcome data of the next
   *  successful connection. */
  connect() {
    const p = new Promise((resolve) => this.once('welcome', resolve));
    if (!this._stopped && (this._ws || this._timer)) return p;
    this._stopped = false;
    this._attempt = 0;
    if (typeof globalThis.addEventListener === 'function') {
      globalThis.addEventListener('online', this._onBrowserOnline);
    }
    this._setState(States.Connecting);
    this._dial();
    return p;
  }

  /** Replace the token; if the client stopped because the token expired (4001), reconnect. */
  setToken(token) {
    this._token = token;
    if (this._state === States.Offline && this.closeInfo && this.closeInfo.code === CloseCodes.TokenExpired) {
      this.connect();
    }
  }

  /** Close for good (until connect() is called again). Pending sends reject with ECLOSED;
   *  chat positions are kept so a later connect() resumes where this one stopped. */
  close(code = CloseCodes.Normal, reason = 'client closed') {
    this._stopped = true;
    clearTimeout(this._timer);
    this._timer = null;
    if (typeof globalThis.removeEventListener === 'function') {
      globalThis.removeEventListener('online', this._onBrowserOnline);
    }
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      this._detach(ws);
      try { ws.close(code, reason); } catch { /* already closing */ }
    }
    const err = () => new SwitchboardError(ErrorCodes.Closed, 'switchboard: client closed');
    for (const p of this._pending.values()) { clearTimeout(p.timer); p.reject(err()); }
    this._pending.clear();
    for (const q of this._queue) q.reject(err());
    this._queue = [];
    this._finishResume(true);
    this.closeInfo = { code, reason, byClient: true };
    const wasOpen = this._state === States.Online;
    this._setState(States.Offline);
    if (ws) this._emit('close', { code, reason, wasClean: true, willReconnect: false, byClient: true, wasOpen });
    return new Promise((resolve) => {
      if (!ws || ws.readyState === 3) return resolve();
      const done = () => resolve();
      if (typeof ws.addEventListener === 'function') ws.addEventListener('close', done);
      else ws.onclose = done;
      setTimeout(done, 2000);
    });
  }

  /**
   * Send a frame. With {ack: true} (the default) the frame carries an id and the Promise
   * resolves with the server frame that settled it — the "ack", or a reply delivery carrying
   * the same id — and rejects with a SwitchboardError (.code) on an "error" frame or timeout.
   * Unacknowledged frames are resent with the same id after a reconnect. With {ack: false} the
   * Promise resolves once the frame is written to a socket.
   * While offline, frames wait for the next connection (at most opts.maxQueue).
   * @param {string} type
   * @param {*} [data]
   * With {resend: false}, a frame already written when the connection drops rejects with
   * EDROPPED instead of being resent.
   * @param {{ack?: boolean, timeout?: number, traceparent?: string, id?: string, resend?: boolean}} [o]
   */
  send(type, data, o = {}) {
    return this._send(type, data, o, false);
  }

  /**
   * Request/response: send a frame and resolve with the server's reply — the first delivery
   * carrying the frame's id (e.g. chat.history for chat.sync) — or reject with the "error"
   * frame carrying it, even when that comes after the edge's "ack" (which only says the bus
   * accepted the frame: plugin errors such as ErrUnknownType follow it). A request not yet
   * acked when the connection drops is resent; one already acked rejects with EDROPPED (its
   * reply was addressed to the old connection).
   * @param {string} type
   * @param {*} [data]
   * @param {{timeout?: number, traceparent?: string, id?: string}} [o]
   */
  request(type, data, o = {}) {
    return this._send(type, data, { ...o, ack: true }, true);
  }

  _send(type, data, o, reply) {
    if (typeof type !== 'string' || type === '') {
      return Promise.reject(new TypeError('switchboard: send needs a type'));
    }
    const ack = o.ack !== false;
    if (type === Types.chatSend && data && typeof data === 'object' && !data.cmid) {
      data = { ...data, cmid: randomId(16) }; // the chat plugin dedupes resends by cmid
    }
    const frame = { type };
    const id = ack ? String(o.id || this._idPrefix + ++this._seq) : undefined;
    if (id) frame.id = id;
    if (data !== undefined) frame.data = data;
    if (o.traceparent) frame.traceparent = o.traceparent;
    const text = JSON.stringify(frame);
    if (this._stopped && this._state === States.Offline && this._explicitlyClosed()) {
      return Promise.reject(new SwitchboardError(ErrorCodes.Closed, 'switchboard: client closed'));
    }
    if (this._pending.size + this._queue.length >= this.opts.maxQueue && this._state !== States.Online) {
      return Promise.reject(new SwitchboardError(ErrorCodes.QueueFull, 'switchboard: send queue full'));
    }
    return new Promise((resolve, reject) => {
      if (!ack) {
        if (this._state === States.Online && this._write(text)) return resolve(undefined);
        this._queue.push({ text, resolve, reject });
        return;
      }
      const p = { type, text, resolve, reject, timer: null, sent: false, resend: o.resend, reply, acked: false };
      const timeout = o.timeout ?? this.opts.ackTimeout;
      if (timeout > 0) {
        p.timer = setTimeout(() => {
          this._pending.delete(id);
          reject(new SwitchboardError(ErrorCodes.AckTimeout, `switchboard: no ack for ${type} within ${timeout} ms`));
        }, timeout);
      }
      this._pending.set(id, p);
      if (this._state === States.Online) p.sent = this._write(text);
    });
  }

  _explicitlyClosed() {
    return !this.closeInfo || this.closeInfo.byClient === true;
  }

  _write(text) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) return false;
    try {
      ws.send(text);
      return true;
    } catch {
      return false;
    }
  }

  async _buildURL() {
    const u = new URL(this.url);
    let token = this._token;
    if (typeof token === 'function') token = await token();
    if (token) u.searchParams.set('token', token);
    else if (this.opts.user) u.searchParams.set('user', this.opts.user);
    return u.toString();
  }

  _dialNow() {
    clearTimeout(this._timer);
    this._timer = null;
    this._dial();
  }

  async _dial() {
    if (this._stopped) return;
    let url;
    try {
      url = await this._buildURL();
    } catch (err) {
      this._emit('error', new SwitchboardError(ErrorCodes.Internal, `switchboard: token: ${err && err.message}`));
      this._scheduleReconnect(null);
      return;
    }
    if (this._stopped || this._ws) return;
    let ws;
    try {
      ws = this.opts.protocols ? new this._WS(url, this.opts.protocols) : new this._WS(url);
    } catch (err) {
      this._emit('error', new SwitchboardError(ErrorCodes.Internal, `switchboard: dial: ${err && err.message}`));
      this._scheduleReconnect(null);
      return;
    }
    this._ws = ws;
    this._welcomed = false;
    // The handshake and the welcome frame must arrive within connectTimeout.
    clearTimeout(this._timer);
    this._timer = setTimeout(() => {
      this._timer = null;
      if (this._ws === ws && !this._welcomed) {
        try { ws.close(4000 + 999, 'connect timeout'); } catch { /* ignore */ }
        this._onClose(ws, { code: CloseCodes.Abnormal, reason: 'connect timeout', wasClean: false });
      }
    }, this.opts.connectTimeout);
    ws.onopen = () => { if (this._ws === ws) this._emit('open'); };
    ws.onmessage = (ev) => { if (this._ws === ws) this._onMessage(ev.data); };
    ws.onerror = () => { /* a close event follows */ };
    ws.onclose = (ev) => this._onClose(ws, ev);
  }

  _detach(ws) {
    // No-ops rather than null: Node's `ws` throws on an 'error' event nobody listens to.
    const noop = () => {};
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = noop;
  }

  _onClose(ws, ev) {
    if (this._ws !== ws) return;
    this._ws = null;
    this._detach(ws);
    clearTimeout(this._timer);
    this._timer = null;
    const code = (ev && ev.code) || CloseCodes.Abnormal;
    const reason = (ev && ev.reason) || '';
    const wasOpen = this._state === States.Online;
    this.closeInfo = { code, reason, byClient: false };
    for (const [id, p] of this._pending) {
      if (p.reply && p.acked) {
        this._settle(id, p).reject(new SwitchboardError(ErrorCodes.Dropped, `switchboard: connection dropped before the reply to ${p.type}`));
      } else if (p.resend === false && p.sent) {
        this._settle(id, p).reject(new SwitchboardError(ErrorCodes.Dropped, `switchboard: connection dropped before ${p.type} was acknowledged`));
      } else {
        p.sent = false; // resend after reconnect, same id
      }
    }
    this._finishResume(true);
    if (this._moveDelay != null) {
      const delay = this._moveDelay;
      this._moveDelay = null;
      this._setState(States.Moving);
      this._emit('close', { code, reason, wasClean: true, willReconnect: true, delay, moved: true, wasOpen });
      this._schedule(delay);
      return;
    }
    if (TERMINAL.has(code)) {
      const refreshable = code === CloseCodes.TokenExpired && typeof this._token === 'function';
      if (!refreshable) {
        this._stopped = true;
        this._setState(States.Offline);
      }
      this._emit('close', { code, reason, wasClean: !!(ev && ev.wasClean), willReconnect: refreshable, terminal: !refreshable, wasOpen });
      if (code === CloseCodes.TokenExpired) this._emit('auth', { code, reason });
      if (refreshable) this._scheduleReconnect(code);
      return;
    }
    this._scheduleReconnect(code, { code, reason, wasClean: !!(ev && ev.wasClean), wasOpen });
  }

  _scheduleReconnect(code, closeEvent) {
    if (this._stopped) return;
    const { min, max } = this.opts.backoff;
    const cap = SLOW.has(code) ? max : Math.min(max, min * 2 ** this._attempt);
    const delay = Math.floor(Math.random() * cap); // full jitter
    this._attempt++;
    this._setState(States.Reconnecting);
    if (closeEvent) this._emit('close', { ...closeEvent, willReconnect: true, delay });
    this._schedule(delay);
  }

  _schedule(delay) {
    clearTimeout(this._timer);
    this._timer = setTimeout(() => {
      this._timer = null;
      this._dial();
    }, delay);
  }

  _onMessage(raw) {
    const text = toText(raw);
    if (text == null) return;
    let f;
    try {
      f = JSON.parse(text);
    } catch {
      return; // not ours
    }
    if (!f || typeof f.type !== 'string') return;
    if (f.id != null) f.id = String(f.id);
    this._emit('frame', f);
    switch (f.type) {
      case Types.welcome:
        this._onWelcome(f);
        return;
      case Types.ack: {
        const p = f.id && this._pending.get(f.id);
        if (p && p.reply) p.acked = true; // accepted by the bus; the reply or error follows
        else if (p) this._settle(f.id, p).resolve(f);
        return;
      }
      case Types.error: {
        const err = new SwitchboardError(f.code ?? ErrorCodes.Internal, f.message || `switchboard: error ${f.code}`, f);
        const p = f.id && this._pending.get(f.id);
        if (p) {
          err.type = p.type;
          this._settle(f.id, p).reject(err);
        } else {
          this._emit('error', err);
        }
        return;
      }
      case Types.move: {
        const d = f.data || {};
        const base = Math.max(0, Number(d.delay_ms ?? d.delayMs ?? 0) || 0);
        // Add our own jitter on top of the server's pacing so a wave does not land at once.
        this._moveDelay = base + Math.floor(Math.random() * Math.min(this.opts.backoff.min, 1000));
        this._emit('move', d);
        const ws = this._ws;
        if (ws) {
          try { ws.close(CloseCodes.Normal, 'move'); } catch { /* ignore */ }
          // Do not wait for the server's close frame: act now.
          this._onClose(ws, { code: CloseCodes.Normal, reason: 'move', wasClean: true });
        }
        return;
      }
      default:
        break;
    }
    // A delivery. A reply carrying the id of a pending frame settles it.
    if (f.id) {
      const p = this._pending.get(f.id);
      if (p) this._settle(f.id, p).resolve(f);
    }
    if (this._chatFilter(f)) this._emit(f.type, f.data, f);
  }

  _settle(id, p) {
    clearTimeout(p.timer);
    this._pending.delete(id);
    return p;
  }

  _onWelcome(f) {
    const ws = this._ws;
    this._welcomed = true;
    clearTimeout(this._timer);
    this._timer = null;
    this.welcome = f.data || {};
    const reconnect = this._everOnline === true;
    this._everOnline = true;
    this._attempt = 0;
    this._setState(States.Online);
    this._emit('welcome', this.welcome);
    if (this._ws !== ws) return; // a handler closed it
    // Resend what was not acknowledged, in the original order, then the queued frames.
    for (const p of this._pending.values()) {
      if (!p.sent) p.sent = this._write(p.text);
    }
    const q = this._queue;
    this._queue = [];
    for (const item of q) {
      if (this._write(item.text)) item.resolve(undefined);
      else this._queue.push(item);
    }
    if (this.opts.chatResume) this._startResume(reconnect);
    else this._finishResume();
  }

  // ---- chat resume ------------------------------------------------------------------------
  //
  // The chat plugin numbers each conversation's messages (seq, from 1, no gaps) and gives each
  // a unique id. The client remembers the highest seq it saw per conversation, drops duplicates
  // (at-least-once delivery), acknowledges what it delivered with chat.ack, and after every
  // (re)connection asks chat.convs for the conversations' last seq and fetches what it missed
  // with chat.sync, emitting those as chat.msg with replayed: true. A gap in live seqs (a
  // message lost on the way) triggers a sync too.

  /** Resolves when the chat resume started by the latest welcome has finished (conversations
   *  listed and every sync answered), or at once if none is running. */
  synced() {
    if (!this._resuming) return Promise.resolve();
    return new Promise((resolve) => this._resumeWaiters.push(resolve));
  }

  async _startResume() {
    const gen = (this._resumeGen = (this._resumeGen || 0) + 1);
    this._resuming = true;
    try {
      let convs = null;
      try {
        const r = await this.request(Types.chatConvs, {});
        convs = (r.data && r.data.convs) || [];
      } catch {
        convs = null; // no chat plugin, or it failed: sync what we know
      }
      if (gen !== this._resumeGen) return;
      const jobs = [];
      if (convs) {
        for (const c of convs) {
          if (!c || c.conv == null) continue;
          const conv = String(c.conv);
          const have = this._lastSeq.get(conv);
          const last = Number(c.last ?? c.seq ?? 0);
          // Known conversation: from our position. New to this client: from the user's
          // last acknowledgement (since omitted), i.e. what no device of theirs processed.
          if (have == null ? last > Number(c.acked || 0) : last > have) jobs.push(this._sync(conv, have));
        }
      } else {
        for (const [conv, have] of this._lastSeq) jobs.push(this._sync(conv, have));
      }
      await Promise.allSettled(jobs);
    } finally {
      if (gen === this._resumeGen) this._finishResume();
    }
  }

  /** Fetches conv's messages after since (undefined: after the user's last ack), page by page. */
  async _sync(conv, since) {
    if (this._syncing.has(conv)) return this._syncing.get(conv);
    const job = (async () => {
      for (let page = 0; page < this.opts.maxSyncPages; page++) {
        const r = await this.request(Types.chatSync, since == null ? { conv } : { conv, since });
        const d = (r && r.data) || {};
        const msgs = Array.isArray(d.messages) ? d.messages : [];
        for (const m of msgs) {
          if (!m || typeof m !== 'object') continue;
          const msg = m.conv == null ? { ...m, conv } : m;
          if (Number(msg.seq) > (since || 0)) since = Number(msg.seq);
          if (this._markSeen(msg.conv, msg.seq)) {
            this._emit(Types.chatMsg, { ...msg, replayed: true }, { type: Types.chatMsg, data: msg });
          }
        }
        if (!d.more || msgs.length === 0) break;
      }
    })().finally(() => this._syncing.delete(conv));
    this._syncing.set(conv, job);
    return job;
  }

  _finishResume() {
    this._resuming = false;
    const w = this._resumeWaiters;
    this._resumeWaiters = [];
    for (const fn of w) fn();
  }

  /** Marks (conv, seq) seen; returns false if it was seen before. */
  _markSeen(conv, seq) {
    if (conv == null || seq == null || !Number.isFinite(Number(seq))) return true;
    conv = String(conv);
    seq = Number(seq);
    let set = this._seen.get(conv);
    if (!set) this._seen.set(conv, (set = new Set()));
    if (set.has(seq)) return false;
    set.add(seq);
    const last = this._lastSeq.get(conv) || 0;
    if (seq > last) this._lastSeq.set(conv, seq);
    if (set.size > 2048) {
      const floor = Math.max(seq, last) - 1024;
      for (const x of set) if (x < floor) set.delete(x);
    }
    this._scheduleAck(conv);
    return true;
  }

  /** Acknowledges conv's highest seq to the server, at most every 250 ms per conversation. */
  _scheduleAck(conv) {
    if (!this.opts.chatResume) return;
    this._ackTimers = this._ackTimers || new Map();
    if (this._ackTimers.has(conv)) return;
    this._ackTimers.set(conv, setTimeout(() => {
      this._ackTimers.delete(conv);
      const seq = this._lastSeq.get(conv);
      if (seq && this._state === States.Online) {
        this.send(Types.chatAck, { conv, seq }, { ack: false }).catch(() => {});
      }
    }, 250));
  }

  /** Chat bookkeeping on deliveries; returns false to swallow a duplicate chat.msg. */
  _chatFilter(f) {
    const d = f.data;
    if (!d || typeof d !== 'object') return true;
    if (f.type === Types.chatMsg) {
      const conv = d.conv == null ? null : String(d.conv);
      const before = conv == null ? 0 : this._lastSeq.get(conv) || 0;
      if (!this._markSeen(conv, d.seq)) return false;
      // A gap: something between our last and this one was lost on the way; fetch it.
      if (conv != null && before > 0 && Number(d.seq) > before + 1 && this.opts.chatResume) {
        this._sync(conv, before).catch(() => {});
      }
      return true;
    }
    if (f.type === Types.chatSend && d.conv != null && d.seq != null) {
      this._markSeen(d.conv, d.seq); // the reply to our own message: not news on resume
    }
    return true;
  }
}

export default Switchboard;
