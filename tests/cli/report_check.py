#!/usr/bin/python3
"""Helpers of test_report.sh (Python standard library only).

  report_check.py shards DIR                 token shards (llm.c .bin) of a learnable pattern
  report_check.py resumed SRC_RUN DST_RUN    a run as if restarted from a checkpoint: steps
                                             logged twice (the later line differs), peak_mem_mb,
                                             a loss range over 1 decade, an incomplete last line
  report_check.py series REPORT.html RUN...  every polyline's data-values equal the runs'
                                             metrics.jsonl (later line of a step wins), the pixels
                                             follow the data, the scales and tables are right
  report_check.py png SHOT.png COLOR...      the screenshot is not blank and shows each curve
                                             colour along many pixel columns
Each check prints "FAIL: ..." lines and exits 1 on failure.
"""
import html.parser
import json
import math
import os
import struct
import sys
import zlib

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg)


# ---------------------------------------------------------------- inputs


def write_shard(path, tokens):
    header = struct.pack("<256i", 20240520, 1, len(tokens), *([0] * 253))
    with open(path, "wb") as f:
        f.write(header)
        f.write(struct.pack("<%dH" % len(tokens), *tokens))


def cmd_shards(out_dir):
    # Sentences of a tiny grammar over 64 token ids: predictable enough that the loss falls.
    state = 12345
    tokens = []
    while len(tokens) < 6000:
        state = (state * 1103515245 + 12345) % (1 << 31)
        subject = 1 + (state >> 8) % 6
        tokens += [subject, 10 + subject, 20 + (state >> 12) % 4, 30, 40 + subject % 3, 0]
    os.makedirs(out_dir, exist_ok=True)
    write_shard(os.path.join(out_dir, "train.bin"), tokens[:5000])
    write_shard(os.path.join(out_dir, "val.bin"), tokens[5000:])


def cmd_resumed(src, dst):
    os.makedirs(dst, exist_ok=True)
    lines = [json.loads(l) for l in open(os.path.join(src, "metrics.jsonl")) if l.strip()]
    train = [l for l in lines if "loss" in l]
    out = []
    cut = train[len(train) // 2]["step"]
    for l in lines:  # the first attempt, up to its last logged step
        l = dict(l, note="ignored")
        if "loss" in l:  # its curves apart from the source run's, which would hide them
            l.update(lr=l["lr"] / 2, grad_norm=l["grad_norm"] * 2,
                     tokens_per_s=l["tokens_per_s"] / 2, peak_mem_mb=100.0 + l["step"])
        out.append(l)
    for l in lines:  # restarted from step `cut`: the steps after it logged again, differently
        if l["step"] <= cut:
            continue
        l = dict(l)
        if "loss" in l:
            l["loss"] = round(l["loss"] / 40, 6)
            l["peak_mem_mb"] = 250.5
        if "val_loss" in l:
            l["val_loss"] = round(l["val_loss"] / 2, 6)
        out.append(l)
    with open(os.path.join(dst, "metrics.jsonl"), "w") as f:
        for l in out:
            f.write(json.dumps(l) + "\n")
        f.write('{"step": 99, "lo')  # being written by a live run: no newline yet
    with open(os.path.join(dst, "config.resolved.yaml"), "w") as f:
        f.write("output_dir: resumed\nnote: <b>tags & \"quotes\"</b>\n")


# ---------------------------------------------------------------- report checks


def expected_series(run_dir):
    """{key: [(step, value)]} as the report must draw it: the later line of a step wins."""
    train, evals = {}, {}
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        text = f.read()
    lines = text.split("\n")
    if not text.endswith("\n"):
        lines = lines[:-1]  # the incomplete last line is skipped
    for l in lines:
        if not l.strip():
            continue
        j = json.loads(l)
        if "loss" in j:
            train[j["step"]] = j
        elif any(k.startswith("val_") for k in j):
            evals[j["step"]] = j
    series = {}
    for key in ("loss", "lr", "grad_norm", "tokens_per_s", "peak_mem_mb"):
        pts = [(s, float(j[key])) for s, j in sorted(train.items()) if key in j]
        if pts:
            series[key] = pts
    for s, j in sorted(evals.items()):
        for k, v in j.items():
            if k.startswith("val_"):
                series.setdefault(k, []).append((s, float(v)))
    return series, train, evals


class ReportParser(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.charts = {}  # data-chart -> {"yscale", "series": [attrs]}
        self.chart = None
        self.tables = {}  # class -> rows of cell texts
        self.table = None
        self.cell = None
        self.pre = []
        self.in_pre = False
        self.tags = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "svg":
            self.chart = a.get("data-chart")
            self.charts[self.chart] = {"yscale": a.get("data-yscale"), "series": []}
        elif tag == "polyline" and "data-run" in a:
            self.charts[self.chart]["series"].append(a)
        elif tag == "table":
            self.table = self.tables.setdefault(a.get("class"), [])
        elif tag == "tr" and self.table is not None:
            self.table.append([])
        elif tag == "td" and self.table is not None:
            self.cell = ""
        elif tag == "pre":
            self.in_pre = True
            self.pre.append("")

    def handle_endtag(self, tag):
        if tag == "td" and self.cell is not None:
            self.table[-1].append(self.cell.strip())
            self.cell = None
        elif tag == "table":
            self.table = None
        elif tag == "pre":
            self.in_pre = False

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data
        if self.in_pre:
            self.pre[-1] += data


def parse_values(text):
    out = []
    for item in text.split():
        s, v = item.split(":")
        out.append((int(s), float(v)))
    return out


def check_affine(name, pairs, tol=0.11):
    """pixels = a * data + b for every (data, pixel) pair (pixels are printed to 0.1)."""
    pairs = sorted(set(pairs))
    lo, hi = pairs[0], pairs[-1]
    if hi[0] == lo[0]:
        return
    a = (hi[1] - lo[1]) / (hi[0] - lo[0])
    worst = max(abs(lo[1] + a * (d - lo[0]) - p) for d, p in pairs)
    if worst > tol:
        fail("%s: pixels are off the data by up to %.2f px" % (name, worst))


def cmd_series(report, run_dirs):
    with open(report, encoding="utf-8") as f:
        page = f.read()
    for bad in ("<script", "<link", "src=", "url(", "<iframe", "@import"):
        if bad in page:
            fail("the report is not self-contained: it has %r" % bad)
    p = ReportParser()
    p.feed(page)
    names = [os.path.basename(os.path.normpath(d)) for d in run_dirs]
    drawn = {}  # (run, key) -> polyline attrs
    for chart_id, chart in p.charts.items():
        for s in chart["series"]:
            drawn[(s["data-run"], s["data-key"])] = (chart_id, s)
    want_pairs = set()
    any_mem = False
    for name, d in zip(names, run_dirs):
        series, train, evals = expected_series(d)
        any_mem = any_mem or "peak_mem_mb" in series
        for key, pts in series.items():
            want_pairs.add((name, key))
            if (name, key) not in drawn:
                fail("%s: no polyline for %s" % (name, key))
                continue
            chart_id, s = drawn[(name, key)]
            want_chart = "loss" if key == "val_loss" else key
            if chart_id != want_chart:
                fail("%s %s drawn in chart %s, expected %s" % (name, key, chart_id, want_chart))
            got = parse_values(s["data-values"])
            if got != pts:
                fail("%s %s: data-values differ from metrics.jsonl:\n  got  %s\n  want %s"
                     % (name, key, got[:8], pts[:8]))
            npix = len(s["points"].split())
            if len(pts) <= 2400 and npix != len(pts):
                fail("%s %s: %d points drawn for %d values" % (name, key, npix, len(pts)))
        # The summary table: steps and the final loss as the report prints them.
        last = max(train)
        row = [r for r in p.tables.get("summary", []) if r and r[0].startswith(name)]
        if not row:
            fail("%s: no summary row" % name)
        elif row[0][1] != str(last) or row[0][2] != "%.4f" % train[last]["loss"]:
            fail("%s: summary row %s, expected steps %d, final loss %.4f"
                 % (name, row[0], last, train[last]["loss"]))
        if evals:
            row = [r for r in p.tables.get("eval", []) if r and r[0].startswith(name)]
            if not row or row[0][1] != str(max(evals)):
                fail("%s: eval table row %s, expected last eval step %d" % (name, row, max(evals)))
    extra = set(drawn) - want_pairs
    if extra:
        fail("polylines for series not in any metrics.jsonl: %s" % sorted(extra))
    if ("peak_mem_mb" in p.charts) != any_mem:
        fail("the memory chart is %s though peak_mem_mb is %s" %
             ("there" if "peak_mem_mb" in p.charts else "missing",
              "logged" if any_mem else "not logged"))
    # Scales: lr never log; loss log exactly when positive and spanning more than a decade.
    if p.charts.get("lr", {}).get("yscale") != "linear":
        fail("the lr chart is not linear")
    loss_values = [v for n, d in zip(names, run_dirs)
                   for k, pts in expected_series(d)[0].items() if k in ("loss", "val_loss")
                   for _, v in pts]
    want_log = min(loss_values) > 0 and max(loss_values) / min(loss_values) > 10
    if p.charts["loss"]["yscale"] != ("log" if want_log else "linear"):
        fail("the loss chart is %s, expected %s (values %.3g..%.3g)" % (
            p.charts["loss"]["yscale"], "log" if want_log else "linear",
            min(loss_values), max(loss_values)))
    # Pixels follow the data: x affine in step, y affine in the value (its log on log charts).
    for chart_id, chart in p.charts.items():
        xs, ys = [], []
        log = chart["yscale"] == "log"
        for s in chart["series"]:
            vals = parse_values(s["data-values"])
            pix = [tuple(map(float, q.split(","))) for q in s["points"].split()]
            if len(pix) != len(vals):
                continue
            for (step, v), (px, py) in zip(vals, pix):
                xs.append((step, px))
                ys.append((math.log10(v) if log else v, py))
        if xs:
            check_affine(chart_id + " x", xs)
            check_affine(chart_id + " y", ys)
    return p


def cmd_config(report, needle):
    with open(report, encoding="utf-8") as f:
        page = f.read()
    p = ReportParser()
    p.feed(page)
    if not any(needle in pre for pre in p.pre):
        fail("no <pre> holds %r" % needle)


# ---------------------------------------------------------------- PNG


def read_png(path):
    """(width, height, channels, rows of bytes) of an 8-bit RGB or RGBA PNG."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(path + ": not a PNG")
    pos, idat = 8, []
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or ctype not in (2, 6) or interlace:
                raise ValueError("%s: PNG depth %d colour type %d interlace %d not handled"
                                 % (path, depth, ctype, interlace))
            ch = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    raw = zlib.decompress(b"".join(idat))
    stride = width * ch
    rows, prev = [], bytearray(stride)
    for y in range(height):
        ftype = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if ftype == 1:  # Sub
            for i in range(ch, stride):
                line[i] = (line[i] + line[i - ch]) & 255
        elif ftype == 2:  # Up
            line = bytearray((a + b) & 255 for a, b in zip(line, prev))
        elif ftype == 3:  # Average
            for i in range(stride):
                left = line[i - ch] if i >= ch else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 255
        elif ftype == 4:  # Paeth
            for i in range(stride):
                a = line[i - ch] if i >= ch else 0
                b = prev[i]
                c = prev[i - ch] if i >= ch else 0
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 255
        elif ftype != 0:
            raise ValueError("%s: bad PNG filter %d" % (path, ftype))
        rows.append(line)
        prev = line
    return width, height, ch, rows


def cmd_png(path, colors):
    width, height, ch, rows = read_png(path)
    targets = [tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in colors]
    counts = [0] * len(targets)
    columns = [set() for _ in targets]
    background = 0
    distinct = set()
    for y, row in enumerate(rows):
        for x in range(0, width):
            r, g, b = row[x * ch], row[x * ch + 1], row[x * ch + 2]
            if r > 235 and g > 235 and b > 235:
                background += 1
                continue
            distinct.add((r >> 3, g >> 3, b >> 3))
            if abs(r - g) < 24 and abs(g - b) < 24:
                continue  # greys: text, axes, grid
            best, dist = None, 1e9
            for k, t in enumerate(targets):
                d = (r - t[0]) ** 2 + (g - t[1]) ** 2 + (b - t[2]) ** 2
                if d < dist:
                    best, dist = k, d
            if dist <= 45 ** 2:
                counts[best] += 1
                columns[best].add(x)
    total = width * height
    if background > 0.995 * total or len(distinct) < 20:
        fail("%s looks blank: %d of %d pixels background, %d colours"
             % (path, background, total, len(distinct)))
    for c, n, cols in zip(colors, counts, columns):
        # A legend swatch is 17 columns wide; curves run across the plot (hundreds of columns).
        if n < 300 or len(cols) < 150:
            fail("%s: the curve colour %s shows in %d pixels over %d columns"
                 % (path, c, n, len(cols)))
    print("png: %dx%d, %d colours; curve pixels %s" % (width, height, len(distinct),
          ", ".join("%s %d/%d cols" % (c, n, len(s)) for c, n, s in zip(colors, counts, columns))))


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "shards":
        cmd_shards(*args)
    elif cmd == "resumed":
        cmd_resumed(*args)
    elif cmd == "series":
        cmd_series(args[0], args[1:])
    elif cmd == "config":
        cmd_config(*args)
    elif cmd == "png":
        cmd_png(args[0], args[1:])
    else:
        sys.exit("unknown command " + cmd)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
