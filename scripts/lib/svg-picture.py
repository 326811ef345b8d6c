#!/usr/bin/env python3
"""Looks at a Graphviz SVG as a picture: the PNG rsvg-convert rendered from it, decoded here (zlib only,
no imaging library), checked against where the SVG says its nodes and edges are.

usage: svg-picture.py SVG PNG DPI NODES RED-EDGES
  NODES      comma-separated node names the graph must draw (exactly these)
  RED-EDGES  comma-separated "a->b" edges that must be drawn red (stale/missing highlight), or "-" for
             none: then no pixel of the whole picture may be red

Checks: the PNG's size is the SVG's (pt at DPI); the picture is not blank (several colours, some ink,
mostly background); every node has dark pixels (its border and name) inside its box; every red edge
has red pixels along its box; with no red edge, no red pixel anywhere. Prints one JSON object
{"pass", "problems", "size", "colours", "red_pixels", ...}; exits 1 when a check failed.
"""
import json
import re
import sys
import xml.etree.ElementTree as ET
import zlib

SVG_NS = "{http://www.w3.org/2000/svg}"


def decode_png(path):
    """(width, height, rows of (r, g, b) tuples composited on white) of an 8-bit RGB/RGBA PNG."""
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    width, height = int.from_bytes(header[0:4], "big"), int.from_bytes(header[4:8], "big")
    depth, colour, interlace = header[8], header[9], header[12]
    if depth != 8 or colour not in (2, 6) or interlace != 0:
        raise ValueError(f"unsupported PNG: depth {depth}, colour type {colour}, interlace {interlace}")
    bpp = 4 if colour == 6 else 3
    raw = zlib.decompress(idat)
    stride = width * bpp
    prev = bytearray(stride)
    rows = []
    for y in range(height):
        base = y * (stride + 1)
        kind, line = raw[base], bytearray(raw[base + 1:base + 1 + stride])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        prev = line
        row = []
        for x in range(width):
            r, g, bl = line[x * bpp], line[x * bpp + 1], line[x * bpp + 2]
            if bpp == 4:
                al = line[x * bpp + 3]
                r, g, bl = ((v * al + 255 * (255 - al)) // 255 for v in (r, g, bl))
            row.append((r, g, bl))
        rows.append(row)
    return width, height, rows


def is_dark(p):
    return p[0] + p[1] + p[2] < 300


def is_red(p):
    return p[0] > 180 and p[1] < 90 and p[2] < 90


def numbers(text):
    return [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", text or "")]


def shape_box(group):
    """The bounding box (x0, y0, x1, y1), in SVG user units, of a group's polygons, ellipses and paths."""
    xs, ys = [], []
    for el in group.iter():
        tag = el.tag.replace(SVG_NS, "")
        if tag in ("polygon", "polyline"):
            v = numbers(el.get("points"))
        elif tag == "path":
            v = numbers(el.get("d"))
        elif tag == "ellipse":
            cx, cy, rx, ry = (float(el.get(k)) for k in ("cx", "cy", "rx", "ry"))
            v = [cx - rx, cy - ry, cx + rx, cy + ry]
        else:
            continue
        xs += v[0::2]
        ys += v[1::2]
    return (min(xs), min(ys), max(xs), max(ys)) if xs else None


def main():
    svg_path, png_path, dpi, nodes_arg, red_arg = sys.argv[1:6]
    want_nodes = set(n for n in nodes_arg.split(",") if n)
    want_red = [e for e in red_arg.split(",") if e and e != "-"]
    problems = []
    out = {}

    root = ET.parse(svg_path).getroot()
    pt = lambda v: float(re.match(r"[\d.]+", v).group()) * (1 if v.endswith("pt") else 0.75)
    width_pt, height_pt = pt(root.get("width")), pt(root.get("height"))
    view = numbers(root.get("viewBox"))
    graph = next(g for g in root.iter(SVG_NS + "g") if g.get("class") == "graph")
    transform = graph.get("transform", "")
    scale = numbers(re.search(r"scale\(([^)]*)\)", transform).group(1)) if "scale(" in transform else [1, 1]
    if len(scale) == 1:
        scale *= 2
    translate = numbers(re.search(r"translate\(([^)]*)\)", transform).group(1)) if "translate(" in transform else [0, 0]

    width, height, rows = decode_png(png_path)
    out["size"] = [width, height]
    want_w, want_h = round(width_pt * float(dpi) / 72), round(height_pt * float(dpi) / 72)
    if abs(width - want_w) > 1 or abs(height - want_h) > 1:
        problems.append(f"PNG is {width}x{height}, the SVG's {width_pt}x{height_pt} pt at {dpi} dpi is {want_w}x{want_h}")

    # SVG user units (inside the graph group) to PNG pixels.
    kx, ky = width / view[2], height / view[3]

    def to_pixels(box, pad):
        x0, y0, x1, y1 = box
        px = sorted([(x0 * scale[0] + translate[0] - view[0]) * kx, (x1 * scale[0] + translate[0] - view[0]) * kx])
        py = sorted([(y0 * scale[1] + translate[1] - view[1]) * ky, (y1 * scale[1] + translate[1] - view[1]) * ky])
        return (max(0, int(px[0]) - pad), max(0, int(py[0]) - pad),
                min(width - 1, int(px[1]) + pad), min(height - 1, int(py[1]) + pad))

    def count(box, test):
        x0, y0, x1, y1 = box
        return sum(1 for y in range(y0, y1 + 1) for x in range(x0, x1 + 1) if test(rows[y][x]))

    # Not blank: colours, ink, background.
    colours = {}
    for row in rows:
        for p in row:
            colours[p] = colours.get(p, 0) + 1
    background, background_n = max(colours.items(), key=lambda kv: kv[1])
    total = width * height
    dark = sum(n for p, n in colours.items() if is_dark(p))
    red = sum(n for p, n in colours.items() if is_red(p))
    out.update(colours=len(colours), background=list(background), dark_pixels=dark, red_pixels=red)
    if len(colours) < 3:
        problems.append(f"only {len(colours)} colours: a blank picture")
    if background != (255, 255, 255) or background_n < total // 2:
        problems.append(f"the background is not mostly white: {background} on {background_n} of {total} pixels")
    if dark < 100:
        problems.append(f"only {dark} dark pixels: nothing drawn")

    # Nodes: exactly the expected ones, each with ink inside its box.
    seen_nodes = {}
    for g in root.iter(SVG_NS + "g"):
        if g.get("class") == "node":
            name = g.find(SVG_NS + "title").text
            box = shape_box(g)
            seen_nodes[name] = count(to_pixels(box, 0), is_dark) if box else 0
    out["node_dark_pixels"] = seen_nodes
    if set(seen_nodes) != want_nodes:
        problems.append(f"nodes drawn {sorted(seen_nodes)}, expected {sorted(want_nodes)}")
    for name, n in seen_nodes.items():
        if n < 50:
            problems.append(f"node {name}: only {n} dark pixels inside its box")

    # Edges: the highlighted ones red in the picture where the SVG draws them.
    edges = {}
    for g in root.iter(SVG_NS + "g"):
        if g.get("class") == "edge":
            name = g.find(SVG_NS + "title").text.replace("&#45;", "-")
            box = shape_box(g)
            edges[name] = count(to_pixels(box, 2), is_red) if box else 0
    out["edge_red_pixels"] = edges
    for e in want_red:
        if e not in edges:
            problems.append(f"edge {e} is not in the SVG (edges: {sorted(edges)})")
        elif edges[e] < 20:
            problems.append(f"edge {e}: only {edges[e]} red pixels along it, expected its highlight")
    if not want_red and red:
        problems.append(f"{red} red pixels in a picture that should have no highlight")

    out["problems"] = problems
    out["pass"] = not problems
    print(json.dumps(out))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
