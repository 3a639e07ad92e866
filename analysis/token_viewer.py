"""One self-contained static HTML file per run: targets as token strips coloured by A_t.

No server and no network: the data sits in the page as JSON and a small script draws it. Per
problem, every target is a strip of its tokens, blue where the chosen condition's context raised
the teacher's log-prob of the sampled token over the question-only teacher (A_t > 0), red where
it lowered it; success or failure is marked, the divergence tokens (the first token where the
target parts from a rollout of the other class) are boxed, the final answer underlined, and the
peers the teacher saw for that target are listed under it. Keys: left/right (or j/k) move
between problems, up/down (or [ and ]) between conditions; the state is kept in the URL hash
(``viewer.html#p=3&c=2s1f``), so a link opens the same view. ``screenshot`` renders it in
headless Chromium.
"""

from __future__ import annotations

import html
import json
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from analysis.scores import BASE_CONDITION
from analysis.token_logprobs import TokenLogprobs
from analysis.tokens import Target, advantage
from mopd_eval.contexts import Condition, TemplateSet, build_context
from mopd_eval.jsonl import write_text_atomic
from mopd_eval.records import Rollout, group_rollouts

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-quic",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars")


def _round(a: np.ndarray | None) -> list[float] | None:
    return None if a is None else [round(float(x), 3) for x in a]


def _peers(group: Sequence[Rollout], i: int, cond: Condition, meta: dict) -> dict:
    ctx = build_context(group, i, cond, TemplateSet(**meta["templates"]), order=meta["order"], seed=meta["seed"])
    return {"effective": ctx.effective,
            "blocks": [{"role": b.role, "rid": b.rollout_id} if b.rollout_id is not None else
                       {"role": b.role, "rid": None, "text": b.text} for b in ctx.blocks]}


def _target(store: TokenLogprobs, t: Target, group: Sequence[Rollout], i: int, conditions: Sequence[Condition],
            reference: TokenLogprobs | None) -> dict:
    r = group[i]
    base = (reference or store).logprobs(BASE_CONDITION, t.problem_id, t.rollout_id)
    return {
        "rid": t.rollout_id, "success": t.success, "reward": r.reward, "pieces": t.pieces,
        "span": list(t.span) if t.span else None, "div": [[rid, d] for rid, d in t.pairs],
        "base": _round(base),
        "adv": {c.name: _round(advantage(store, c.name, t.problem_id, t.rollout_id, reference)) for c in conditions},
        "peers": {c.name: _peers(group, i, c, store.meta) for c in conditions},
    }


def viewer_data(store: TokenLogprobs, targets: dict[str, list[Target]], rollouts: Sequence[Rollout],
                conditions: Sequence[Condition], *, reference: TokenLogprobs | None = None,
                title: str = "") -> dict:
    """The JSON the page draws: problems, targets, A_t per condition, peers, colour scale."""
    problems = []
    for pid, group in group_rollouts(rollouts).items():
        ts = targets[pid]
        problems.append({"id": pid, "prompt": group[0].prompt_text,
                         "targets": [_target(store, t, group, i, conditions, reference) for i, t in enumerate(ts)]})
    values = np.abs([x for p in problems for t in p["targets"] for a in t["adv"].values() if a for x in a])
    scale = float(np.percentile(values, 98)) if values.size and values.max() > 0 else 1.0
    return {"title": title, "scale": round(max(scale, 1e-3), 3), "problems": problems,
            "conditions": [{"name": c.name, "label": c.label} for c in conditions],
            "start": next((c.name for c in conditions if c.name != BASE_CONDITION), conditions[0].name)}


def render(data: dict) -> str:
    """The page: template, style and script with ``data`` embedded."""
    # "<" only occurs inside JSON strings; as \u003c no response text can close the script or open a comment.
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    return (_PAGE.replace("__TITLE__", html.escape(data["title"] or "Token-level teacher signal"))
            .replace("__DATA__", payload))


def write_viewer(path: Path, store: TokenLogprobs, targets: dict[str, list[Target]], rollouts: Sequence[Rollout],
                 *, reference: TokenLogprobs | None = None, title: str = "") -> int:
    """Write the viewer to ``path``; return its size in bytes."""
    conditions = [Condition(**d) for d in store.meta["conditions"].values()]
    text = render(viewer_data(store, targets, rollouts, conditions, reference=reference, title=title))
    write_text_atomic(path, text)
    return len(text.encode())


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def chromium(args: Sequence[str], *, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run headless Chromium with the flags a closed, root-run machine needs and a fresh profile."""
    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError("chromium not found (Debian: apt-get install -y chromium)")
    with tempfile.TemporaryDirectory(prefix="mopd-chromium-") as profile:
        return subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout, check=False)


def screenshot(page: Path, png: Path, *, fragment: str = "", size: tuple[int, int] = (1400, 1000)) -> Path:
    """Render ``page`` (with ``#fragment``) in headless Chromium and save a PNG."""
    png = Path(png).resolve()
    url = Path(page).resolve().as_uri() + (f"#{fragment}" if fragment else "")
    res = chromium([f"--window-size={size[0]},{size[1]}", f"--screenshot={png}", "--virtual-time-budget=5000", url])
    if not png.exists():
        raise RuntimeError(f"chromium wrote no screenshot (exit {res.returncode}): {res.stderr[-500:]}")
    return png


def dump_dom(page: Path, *, fragment: str = "") -> str:
    """The page's DOM after its script ran (headless Chromium ``--dump-dom``)."""
    url = Path(page).resolve().as_uri() + (f"#{fragment}" if fragment else "")
    return chromium(["--virtual-time-budget=5000", "--dump-dom", url]).stdout


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1b1b1b;background:#fafafa}
header{position:sticky;top:0;background:#fff;border-bottom:1px solid #ddd;padding:8px 16px;z-index:2}
h1{font-size:16px;margin:0 0 4px}
.conds button{font:inherit;font-size:12px;margin:2px;padding:2px 8px;border:1px solid #bbb;border-radius:10px;background:#fff;cursor:pointer}
.conds button.on{background:#1b1b1b;color:#fff;border-color:#1b1b1b}
.legend{display:flex;align-items:center;gap:6px;font-size:12px;color:#555;margin-top:4px;flex-wrap:wrap}
.bar{width:220px;height:12px;border:1px solid #ccc;background:linear-gradient(90deg,rgb(215,48,39),#fff,rgb(33,102,172))}
main{padding:8px 16px 40px}
.prompt{white-space:pre-wrap;background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px;margin:8px 0}
.target{background:#fff;border:1px solid #ddd;border-left:6px solid #999;border-radius:6px;padding:6px 10px;margin:8px 0}
.target.ok{border-left-color:#1a9850}.target.bad{border-left-color:#d73027}
.meta{font-size:12px;color:#555;margin-bottom:4px}
.mark{font-weight:700}.ok .mark{color:#1a9850}.bad .mark{color:#d73027}
.strip{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px;white-space:pre-wrap;word-break:break-word}
.tok{border-radius:2px;padding:1px 0}
.tok.div{outline:2px solid #000;outline-offset:-1px}
.tok.ans{text-decoration:underline 2px;text-underline-offset:3px}
details{font-size:12px;color:#333;margin-top:4px}
.peer{white-space:pre-wrap;border-left:3px solid #ccc;padding-left:6px;margin:4px 0;font-family:ui-monospace,monospace}
.peer.solution,.peer.another{border-left-color:#1a9850}.peer.failure{border-left-color:#d73027}.peer.feedback{border-left-color:#fdae61}
.keys{font-size:12px;color:#777}
</style></head><body>
<header><h1 id="title"></h1><div id="where"></div><div class="conds" id="conds"></div>
<div class="legend"><span>A_t &lt; 0: context lowered the token</span><span id="lo"></span><span class="bar"></span>
<span id="hi"></span><span>A_t &gt; 0: context raised it</span><span>· boxed token = divergence point · underline = final answer</span></div>
<div class="keys">Keys: ← → (j k) problem · ↑ ↓ ([ ]) condition · hover a token for its log-probs</div></header>
<main id="main"></main>
<script type="application/json" id="data">__DATA__</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
let P = 0, C = Math.max(0, D.conditions.findIndex(c => c.name === D.start));
const esc = s => s.replace(/[&<>"]/g, ch => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[ch]));
function colour(a) {
  const x = Math.max(-1, Math.min(1, a / D.scale));
  const [r, g, b] = x < 0 ? [215, 48, 39] : [33, 102, 172];
  const w = Math.abs(x);
  return `rgb(${Math.round(255 + (r - 255) * w)},${Math.round(255 + (g - 255) * w)},${Math.round(255 + (b - 255) * w)})`;
}
function readHash() {
  const h = new URLSearchParams(location.hash.slice(1));
  if (h.has("p")) { const p = parseInt(h.get("p"), 10); if (p >= 0 && p < D.problems.length) P = p; }
  if (h.has("c")) { const c = D.conditions.findIndex(x => x.name === h.get("c")); if (c >= 0) C = c; }
}
function strip(t, cond) {
  const adv = t.adv[cond], divs = new Map();
  t.div.forEach(([rid, d]) => divs.set(d, (divs.get(d) || []).concat(rid)));
  return t.pieces.map((s, i) => {
    const a = adv ? adv[i] : 0, base = t.base ? t.base[i] : null;
    const cls = ["tok"];
    if (divs.has(i)) cls.push("div");
    if (t.span && i >= t.span[0] && i < t.span[1]) cls.push("ans");
    const tip = `${JSON.stringify(s)}  A_t=${a.toFixed(3)}` + (base === null ? "" :
      `  log p(base)=${base.toFixed(3)}  log p(${cond})=${(base + a).toFixed(3)}`) +
      (divs.has(i) ? `  diverges from ${divs.get(i).join(", ")}` : "");
    return `<span class="${cls.join(" ")}" data-a="${a}" style="background:${colour(a)}" title="${esc(tip)}">${esc(s)}</span>`;
  }).join("");
}
function peers(t, cond, byId) {
  const p = t.peers[cond];
  if (!p.blocks.length) return `<details><summary>teacher saw no peer (${p.effective ? "effective" : "not effective"})</summary></details>`;
  const items = p.blocks.map(b => {
    const o = b.rid === null ? null : byId.get(b.rid);
    const text = b.rid === null ? b.text : o.pieces.join("");
    const who = b.rid === null ? "own verifier feedback" : `${b.rid} (${o.success ? "success" : "failure"})`;
    return `<div class="peer ${b.role}"><b>${b.role}</b> · ${esc(who)}\\n${esc(text)}</div>`;
  }).join("");
  return `<details><summary>peers the teacher saw: ${p.blocks.length} (${p.effective ? "effective" : "not effective"})</summary>${items}</details>`;
}
function draw() {
  const pr = D.problems[P], cond = D.conditions[C].name, byId = new Map(pr.targets.map(t => [t.rid, t]));
  document.getElementById("title").textContent = D.title || "Token-level teacher signal";
  document.getElementById("where").textContent = `Problem ${P + 1} / ${D.problems.length}: ${pr.id} · condition ${D.conditions[C].label} (${cond})`;
  document.getElementById("conds").innerHTML = D.conditions.map((c, i) =>
    `<button data-i="${i}" class="${i === C ? "on" : ""}">${esc(c.label)}</button>`).join("");
  document.getElementById("lo").textContent = (-D.scale).toFixed(2);
  document.getElementById("hi").textContent = "+" + D.scale.toFixed(2) + " nats";
  const ok = pr.targets.filter(t => t.success).length;
  document.getElementById("main").innerHTML =
    `<div class="prompt"><b>Prompt</b> · ${ok} of ${pr.targets.length} targets succeed\\n${esc(pr.prompt)}</div>` +
    pr.targets.map(t => {
      const adv = t.adv[cond], mean = adv && adv.length ? adv.reduce((x, y) => x + y, 0) / adv.length : 0;
      return `<div class="target ${t.success ? "ok" : "bad"}"><div class="meta"><span class="mark">${t.success ? "✓ success" : "✗ failure"}</span>
        · ${esc(t.rid)} · reward ${t.reward} · ${t.pieces.length} tokens · mean A_t ${mean.toFixed(3)}
        · ${t.div.length ? `${t.div.length} divergence pair(s)` : "no divergence token"}</div>
        <div class="strip">${strip(t, cond)}</div>${peers(t, cond, byId)}</div>`;
    }).join("");
  history.replaceState(null, "", `#p=${P}&c=${encodeURIComponent(cond)}`);
}
document.addEventListener("keydown", e => {
  const k = e.key, n = D.problems.length, m = D.conditions.length;
  if (k === "ArrowRight" || k === "j") P = (P + 1) % n;
  else if (k === "ArrowLeft" || k === "k") P = (P - 1 + n) % n;
  else if (k === "ArrowDown" || k === "]") C = (C + 1) % m;
  else if (k === "ArrowUp" || k === "[") C = (C - 1 + m) % m;
  else return;
  e.preventDefault(); draw();
});
document.getElementById("conds").addEventListener("click", e => {
  const i = e.target.dataset && e.target.dataset.i; if (i !== undefined) { C = +i; draw(); }
});
window.addEventListener("hashchange", () => { readHash(); draw(); });
readHash(); draw();
</script></body></html>
"""
