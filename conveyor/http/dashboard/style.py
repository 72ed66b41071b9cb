"""The dashboard's one stylesheet and the headers every page carries.

The pages run no script and load nothing: the stylesheet is inline, allowed by its hash, the
charts are inline SVG, forms post only to this server, and no other site may frame a page
(clickjacking a purge button). Narrow screens (a phone, 390 px) get one column: tables turn into
one card per row, labelled by each cell's `data-label`.
"""

from __future__ import annotations

import base64
import hashlib

from conveyor.http.dashboard.charts import COLOURS

# Below this width, tables become cards and grids one column.
NARROW_PX = 760

STYLESHEET = (
    """
:root { --ink: #1f2937; --muted: #6b7280; --line: #e5e7eb; --bg: #f5f6fa; --accent: #4f46e5;
        --ok: #059669; --warn: #d97706; --bad: #dc2626; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
header.top { background: #1e1b4b; color: #fff; padding: 10px 16px; display: flex; flex-wrap: wrap;
             gap: 2px 16px; align-items: baseline; }
header.top a.brand { color: #fff; font-weight: 700; font-size: 17px; }
header.top nav a { color: #e0e7ff; margin-right: 12px; }
header.top .meta { color: #a5b4fc; font-size: 12px; overflow-wrap: anywhere; margin-left: auto; }
main { max-width: 1360px; margin: 0 auto; padding: 16px; }
h1 { font-size: 20px; margin: 4px 0 12px; overflow-wrap: anywhere; }
h2 { font-size: 15px; margin: 0 0 8px; }
.card { background: #fff; border-radius: 10px; padding: 14px 16px; margin-bottom: 16px; min-width: 0;
        box-shadow: 0 1px 2px rgba(15,23,42,.06), 0 3px 10px rgba(15,23,42,.04); }
.tiles { display: grid; grid-template-columns: repeat(auto-fit, minmax(140px, 1fr)); gap: 10px;
         margin-bottom: 16px; }
.tile { background: #fff; border-radius: 10px; padding: 10px 12px; border-top: 3px solid var(--accent);
        box-shadow: 0 1px 2px rgba(15,23,42,.06); min-width: 0; }
.tile .label { color: var(--muted); font-size: 11px; text-transform: uppercase; letter-spacing: .05em; }
.tile .value { font-size: 20px; font-weight: 700; overflow-wrap: anywhere; }
.tile.bad { border-top-color: var(--bad); } .tile.warn { border-top-color: var(--warn); }
.tile.ok { border-top-color: var(--ok); }
table { width: 100%; border-collapse: collapse; }
th, td { padding: 6px 8px; border-bottom: 1px solid var(--line); text-align: right; vertical-align: middle; }
th { color: var(--muted); font-weight: 600; font-size: 12px; white-space: nowrap; }
th.text, td.text { text-align: left; }
td.name { font-weight: 600; overflow-wrap: anywhere; text-align: left; }
td.top { vertical-align: top; }
.sub { display: block; color: var(--muted); font-size: 12px; font-weight: 400; }
.badge { display: inline-block; padding: 0 7px; border-radius: 9px; font-size: 11px; font-weight: 600;
         vertical-align: middle; }
.badge.paused { background: #fef3c7; color: #92400e; }
.badge.delivering { background: #d1fae5; color: #065f46; }
.badge.dead { background: #fee2e2; color: #991b1b; }
.dead { color: var(--bad); font-weight: 600; }
.muted { color: var(--muted); }
svg.spark { width: 110px; height: 26px; vertical-align: middle; display: inline-block; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); gap: 16px;
          margin-bottom: 16px; }
.charts .card { margin-bottom: 0; }
svg.chart { width: 100%; height: auto; display: block; }
.note { color: var(--muted); font-size: 12px; margin: 6px 0 0; }
.legend { font-size: 12px; color: var(--muted); }
.legend span { margin-right: 10px; white-space: nowrap; }
.legend i { display: inline-block; width: 12px; height: 3px; margin-right: 4px; vertical-align: middle; }
.actions { display: flex; flex-wrap: wrap; gap: 10px; align-items: center; }
.actions form { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; }
form { margin: 0; }
button { font: inherit; padding: 5px 12px; border-radius: 6px; border: 1px solid #c7d2fe;
         background: #eef2ff; color: #3730a3; cursor: pointer; }
button.danger { border-color: #fecaca; background: #fef2f2; color: #991b1b; }
input[type=number], select { font: inherit; padding: 4px 6px; border: 1px solid #d1d5db; border-radius: 6px;
                             max-width: 100%; background: #fff; }
input[type=number] { width: 7em; }
.notice { background: #ecfdf5; border: 1px solid #a7f3d0; padding: 8px 12px; border-radius: 8px;
          margin-bottom: 12px; overflow-wrap: anywhere; }
.problem { background: #fef2f2; border: 1px solid #fecaca; padding: 8px 12px; border-radius: 8px;
           margin-bottom: 12px; overflow-wrap: anywhere; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; background: #f8fafc; padding: 8px; border-radius: 6px;
      margin: 6px 0; max-height: 320px; overflow: auto; font-size: 12px; text-align: left; }
code { font-size: 12px; overflow-wrap: anywhere; }
.preview { color: #334155; }
.error-text { color: #991b1b; overflow-wrap: anywhere; }
details summary { cursor: pointer; }
dl.headers { display: grid; grid-template-columns: max-content 1fr; gap: 2px 10px; margin: 6px 0 0; }
dl.headers dt, dl.headers dd { margin: 0; overflow-wrap: anywhere; min-width: 0; }
.choices a { margin-right: 8px; }
.choices a.current { font-weight: 700; color: var(--ink); }
footer { color: var(--muted); font-size: 12px; text-align: center; margin: 8px 0 24px; padding: 0 16px; }
"""
    + "".join(f".legend .s{i} i {{ background: {colour}; }}\n" for i, colour in enumerate(COLOURS))
    + f"""
@media (max-width: {NARROW_PX}px) {{
  main {{ padding: 10px; }}
  header.top .meta {{ margin-left: 0; }}
  table.stack thead {{ display: none; }}
  table.stack tr {{ display: grid; grid-template-columns: 1fr 1fr; column-gap: 18px;
                   border-bottom: 1px solid var(--line); padding: 8px 0; }}
  table.stack td {{ display: flex; justify-content: space-between; align-items: center; gap: 12px;
                   border: 0; padding: 2px 0; text-align: right; }}
  table.stack td::before {{ content: attr(data-label); color: var(--muted); font-size: 12px;
                           text-align: left; flex: none; }}
  table.stack td.name::before, table.stack td.wide::before {{ content: none; }}
  table.stack td.name, table.stack td.wide {{ display: block; text-align: left; grid-column: 1 / -1; }}
  table.stack td.full {{ grid-column: 1 / -1; }}
  .charts {{ grid-template-columns: 1fr; }}
}}
"""
)

STYLE_HASH = base64.b64encode(hashlib.sha256(STYLESHEET.encode()).digest()).decode()
PAGE_HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; style-src 'sha256-{STYLE_HASH}'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
