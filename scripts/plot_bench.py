#!/usr/bin/env python3
"""Plot `ipamctl bench --json` results as an SVG, with no dependency beyond
the standard library.

Usage: scripts/plot_bench.py OUT.svg RESULT.json...

Each RESULT.json is one bench report. Drawn: allocations/s against
concurrency (log-log), one line per chunk size k for this allocator (runs
without prefill and with one node seed per client), the raw
compare-and-swap limit and the naive one-key-per-IP baseline (from the runs
that measured them), and the half-full runs as separate markers.
"""

import json
import math
import sys

W, H = 760, 460
LEFT, RIGHT, TOP, BOTTOM = 80, 200, 40, 60
COLORS = {8: "#1f77b4", 10: "#2ca02c", 12: "#9467bd"}


def load(paths):
    out = []
    for p in paths:
        with open(p) as f:
            out.append(json.load(f))
    return out


def series(reports):
    lines = {}
    raw, naive, half = {}, {}, []
    for r in reports:
        c = r["concurrency"] * r["processes"]
        if r["prefilled"] == 0 and not r["same_node"] and not r["release"]:
            lines.setdefault(("ours k=%d" % r["chunk_bits"], r["chunk_bits"]), {})[c] = (
                r["ours"]["allocations_per_sec"])
            if r.get("raw"):
                raw[c] = r["raw"]["txns_per_sec"]
            if r.get("naive"):
                naive[c] = r["naive"]["allocations_per_sec"]
        elif r["prefilled"] > 0 and not r["release"]:
            half.append((c, r["ours"]["allocations_per_sec"], "ours, half-full"))
            if r.get("naive"):
                half.append((c, r["naive"]["allocations_per_sec"], "naive, half-full"))
    return lines, raw, naive, half


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    reports = load(sys.argv[2:])
    lines, raw, naive, half = series(reports)
    values = [v for s in lines.values() for v in s.values()]
    values += list(raw.values()) + list(naive.values()) + [v for _, v, _ in half]
    values = [v for v in values if v > 0]
    xs = sorted({c for s in lines.values() for c in s} | set(raw) | {c for c, _, _ in half})
    if not values or not xs:
        sys.exit("no data")
    ylo = 10 ** math.floor(math.log10(min(values)))
    yhi = 10 ** math.ceil(math.log10(max(values)))
    xlo, xhi = math.log2(min(xs)), math.log2(max(xs))
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def px(c):
        if xhi == xlo:
            return LEFT + pw / 2
        return LEFT + (math.log2(c) - xlo) / (xhi - xlo) * pw

    def py(v):
        v = max(v, ylo)
        return TOP + ph - (math.log10(v) - math.log10(ylo)) / (math.log10(yhi) - math.log10(ylo)) * ph

    svg = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
           'font-family="sans-serif" font-size="12">' % (W, H),
           '<rect width="100%" height="100%" fill="white"/>',
           '<text x="%d" y="22" font-size="15">ipamctl bench: allocations/s vs concurrent '
           'clients (etcd, /16)</text>' % LEFT]
    d = 0
    while 10 ** d * ylo <= yhi:
        v = 10 ** d * ylo
        y = py(v)
        svg.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>' % (LEFT, y, LEFT + pw, y))
        svg.append('<text x="%d" y="%.1f" text-anchor="end">%g</text>' % (LEFT - 6, y + 4, v))
        d += 1
    for c in xs:
        x = px(c)
        svg.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>' % (x, TOP, x, TOP + ph))
        svg.append('<text x="%.1f" y="%d" text-anchor="middle">%d</text>' % (x, TOP + ph + 18, c))
    svg.append('<text x="%d" y="%d" text-anchor="middle">concurrent clients</text>'
               % (LEFT + pw / 2, H - 15))
    svg.append('<text x="18" y="%d" transform="rotate(-90 18 %d)" text-anchor="middle">'
               'operations per second (log)</text>' % (TOP + ph / 2, TOP + ph / 2))
    svg.append('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#444"/>'
               % (LEFT, TOP, pw, ph))

    legend = []

    def polyline(points, color, label, dash=""):
        pts = sorted(points.items())
        svg.append('<polyline fill="none" stroke="%s" stroke-width="2" %s points="%s"/>' % (
            color, 'stroke-dasharray="%s"' % dash if dash else "",
            " ".join("%.1f,%.1f" % (px(c), py(v)) for c, v in pts)))
        for c, v in pts:
            svg.append('<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"/>' % (px(c), py(v), color))
        legend.append((color, label, dash))

    for (label, k), pts in sorted(lines.items(), key=lambda x: x[0][1]):
        polyline(pts, COLORS.get(k, "#333"), label)
    if raw:
        polyline(raw, "#d62728", "raw etcd CAS", "6,4")
    if naive:
        polyline(naive, "#7f7f7f", "naive (empty /16)", "2,3")
    for c, v, label in half:
        color = "#ff7f0e" if label.startswith("ours") else "#000"
        shape = "rect" if label.startswith("ours") else "diamond"
        if shape == "rect":
            svg.append('<rect x="%.1f" y="%.1f" width="8" height="8" fill="%s"/>'
                       % (px(c) - 4, py(v) - 4, color))
        else:
            svg.append('<path d="M %.1f %.1f l 5 5 l -5 5 l -5 -5 z" fill="%s"/>'
                       % (px(c), py(v) - 5, color))
        if (color, label, "") not in legend:
            legend.append((color, label, ""))
    for i, (color, label, dash) in enumerate(legend):
        y = TOP + 10 + i * 20
        x = LEFT + pw + 15
        svg.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2" %s/>'
                   % (x, y, x + 25, y, color, 'stroke-dasharray="%s"' % dash if dash else ""))
        svg.append('<text x="%d" y="%d">%s</text>' % (x + 32, y + 4, label))
    svg.append("</svg>")
    with open(sys.argv[1], "w") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
