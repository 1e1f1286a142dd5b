package admin

import "net/http"

// page serves the admin page: plain HTML and fetch over the API. It holds no secret; the
// operator types the token, which stays in sessionStorage of the tab.
func (a *API) page(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'")
	w.Header().Set("X-Frame-Options", "DENY")
	_, _ = w.Write([]byte(pageHTML))
}

const pageHTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Switchboard admin</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;max-width:60em}
fieldset{margin:1em 0}input{margin:.2em}pre{background:#f4f4f4;padding:.5em;overflow:auto}
</style></head><body>
<h1>Switchboard admin</h1>
<fieldset><legend>Token</legend>
<input id="token" type="password" placeholder="bearer token" size="40">
<button onclick="sessionStorage.setItem('sbtoken', tok().value)">Keep for this tab</button>
</fieldset>
<fieldset><legend>Online</legend>
<input id="rooms" placeholder="rooms, comma-separated"> <button onclick="online()">Refresh</button>
</fieldset>
<fieldset><legend>User</legend>
<input id="user" placeholder="user id"> <button onclick="lookup()">Connections</button>
<input id="edge" placeholder="edge (one connection)" size="12"> <input id="conn" placeholder="conn id" size="8">
<input id="code" placeholder="code (4003)" size="8"> <input id="reason" placeholder="reason">
<button onclick="kick()">Kick</button>
</fieldset>
<fieldset><legend>Broadcast (system priority)</legend>
<input id="btype" placeholder="type" value="sys.notice"> <input id="bdata" placeholder='data (JSON)' value='{"text":"hello"}' size="30">
<input id="broom" placeholder="room (empty: everyone)"> <button onclick="broadcast()">Send</button>
</fieldset>
<pre id="out">-</pre>
<script>
const tok = () => document.getElementById('token');
const val = id => document.getElementById(id).value.trim();
tok().value = sessionStorage.getItem('sbtoken') || '';
async function call(method, path, body) {
  const h = {'Authorization': 'Bearer ' + tok().value};
  if (body !== undefined) h['Content-Type'] = 'application/json';
  const out = document.getElementById('out');
  try {
    const r = await fetch(path, {method, headers: h, body: body === undefined ? undefined : JSON.stringify(body)});
    out.textContent = r.status + ' ' + r.statusText + '\n' + JSON.stringify(await r.json(), null, 2);
  } catch (e) { out.textContent = String(e); }
}
function online() {
  const q = val('rooms') ? '?room=' + encodeURIComponent(val('rooms')) : '';
  call('GET', 'online' + q);
}
function lookup() { call('GET', 'users/' + encodeURIComponent(val('user'))); }
function kick() {
  const b = {user: val('user')};
  if (val('edge')) { b.edge = val('edge'); b.conn = Number(val('conn')); }
  if (val('code')) b.code = Number(val('code'));
  if (val('reason')) b.reason = val('reason');
  call('POST', 'kick', b);
}
function broadcast() {
  let data;
  try { data = val('bdata') ? JSON.parse(val('bdata')) : undefined; }
  catch (e) { document.getElementById('out').textContent = 'data is not JSON: ' + e; return; }
  const b = {type: val('btype'), data};
  if (val('broom')) b.room = val('broom');
  call('POST', 'broadcast', b);
}
online();
</script></body></html>
`
