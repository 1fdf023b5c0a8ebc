"""Large fuzzing campaign against the .pxz decoder and header parser (the quick CI part is
tests/test_fuzz.py).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/fuzz_campaign.py --n 10000 --seed 0 \
        --json runs/fuzz-campaign.json

It builds a corpus of valid small files (every mode: L, LA, RGB, RGBA, P coded as indices and as
RGB, 1; sizes 1x1..16x16; noise, gradients, few-colour and constant content, plus a few all-zero
images) with tiny random-weight models it creates in a temporary folder (``--models pinned``: the
two pinned models in tests/expected instead), then decodes ``--n`` mutated files, each made by one
to three of: bit flips (1-8), byte overwrites, truncations, insertions, deletions, header-field
rewrites (format/mode byte, tile/flag byte, model ids, width/height incl. huge and malformed
varints, palette section, checksum), huge declared sizes, unknown/mismatched model ids, splices of
two files, random junk (half of it behind a valid magic and format byte).

Each case runs in a worker process (killed and restarted on timeout or crash) and ends as one of:

    error:<Class>     a pxzip error (PxzError subclass): fine
    ok                decoded exactly the image whose checksum the header carries (same pixels,
                      mode, size, palette): fine
    known_gap         a wrong image that is all zeros like its all-zero original (different shape
                      or mode): the CRC does not cover the header and an all-zero image has an empty
                      payload, which decodes to zeros under any shape, mode or model. A format gap,
                      reported separately (it disappears with --no-zero-images)
    WRONG_PIXELS      any other wrong output accepted silently: must be 0
    OTHER_EXCEPTION   an exception that is not a PxzError (or a multi-line/empty message): must be 0
    CRASH             the worker died (segfault, abort): must be 0
    TIMEOUT           no answer within --timeout-s

The decoder's pixel limit ($PXZIP_MAX_PIXELS) is set to --max-pixels (default 1024) so that a
mutated size field gives a bounded (legitimate) decode; cases whose declared size the library's
default limits refuse (> 2**27 pixels, a side > 2**24, one tile > 4096) run under the default limit
and must fail fast. Declared sizes that the default limit accepts decode in time proportional to
the declared size whatever the file's length (run with --max-pixels 0 to see those as timeouts).

Every case is reproducible from (--seed, case index): ``--only I`` reruns case I and prints it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import resource
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from pxzip.container import MAGIC, fields, join, varint  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MAX_PIXELS = 2**27  # pxzip.codec.max_pixels() without $PXZIP_MAX_PIXELS
INTERESTING_SIZES = [
    0, 1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 127, 128, 255, 256, 4095, 4096, 4097, 2**14, 2**21 - 1,
    2**21, 2**24 - 1, 2**24, 2**24 + 1, 2**27, 2**31, 2**31 + 1, 2**35 - 1,
]  # fmt: skip
STRATEGIES = (
    "bitflip", "overwrite", "truncate", "insert", "delete", "field", "huge", "model_id", "splice", "junk", "multi",
)  # fmt: skip
MUST_BE_ZERO = ("WRONG_PIXELS", "OTHER_EXCEPTION", "CRASH")


# ------------------------------------------------------------------------------------- corpus


def make_models(kind: str, folder: Path) -> list[Path]:
    """Paths of the model files every decode gets."""
    if kind == "pinned":
        exp = REPO / "tests" / "expected"
        return [exp / "pinned-pp-rgb.safetensors", exp / "pinned-gated-gray.safetensors"]
    import torch

    from pxzip import zoo
    from pxzip.config import ModelConfig
    from pxzip.model import PixelCNN

    torch.manual_seed(1234)
    paths = []
    for arch, short in (("pixelcnnpp", "pp"), ("gated", "gated")):
        for kind_, c in (("rgb", 3), ("gray", 1)):
            cfg = ModelConfig(arch=arch, in_channels=c, num_filters=8, num_resnet=1, num_logistic_mix=2)
            path = folder / f"tiny-{short}-{kind_}.safetensors"
            zoo.save_model(path, PixelCNN(cfg), f"tiny-{short}-{kind_}")
            _canonical_metadata(path)
            paths.append(path)
    # a class-conditional RGB model (labels 0..3), so that format-3 files with a label are in the corpus
    cfg = ModelConfig(num_filters=8, num_resnet=1, num_logistic_mix=2, num_classes=4)
    cond = PixelCNN(cfg)
    with torch.no_grad():
        for p in cond.class_bias.values():
            p.normal_(0, 1.0)
    path = folder / "tiny-cond-rgb.safetensors"
    zoo.save_model(path, cond, "tiny-cond-rgb")
    _canonical_metadata(path)
    return paths + [path]


def _canonical_metadata(path: Path) -> None:
    """Sort the safetensors metadata keys in place, so the file (and the model id, its hash) is the same
    in every run: safetensors writes the metadata in a per-process random order."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    header["__metadata__"] = dict(sorted(header.get("__metadata__", {}).items()))
    text = json.dumps(header, separators=(",", ":")).encode()
    if len(text) <= n:  # same content, so the same length; keep the original padding
        path.write_bytes(raw[:8] + text.ljust(n, b" ") + raw[8 + n :])


def _content(rng: np.random.Generator, h: int, w: int, c: int, style: str) -> np.ndarray:
    if style == "noise":
        return rng.integers(0, 256, (h, w, c), dtype=np.uint8)
    if style == "gradient":
        y, x = np.mgrid[0:h, 0:w]
        base = (x * 255 // max(w - 1, 1) + y * 7)[:, :, None] + np.arange(c) * 40
        return (base % 256).astype(np.uint8)
    if style == "few":
        return rng.choice(np.array([0, 17, 128, 255], np.uint8), (h, w, c))
    if style == "constant":
        return np.full((h, w, c), rng.integers(1, 256), np.uint8)
    return np.zeros((h, w, c), np.uint8)  # "zero"


def make_corpus(model_paths: list[Path], zero_images: bool, seed: int = 0) -> list[dict]:
    from PIL import Image

    import pxzip
    from pxzip import container, planes, zoo

    models = [zoo.load_file(p) for p in model_paths]
    rgb = [m for m in models if m.kind == "rgb"]
    gray = [m for m in models if m.kind == "gray"]
    rng = np.random.default_rng(seed)
    styles = ["noise", "gradient", "few", "constant", "noise", "gradient"]
    sizes = [(1, 1), (1, 16), (16, 1), (3, 5), (8, 8), (7, 12), (16, 16), (11, 4)]
    specs = []
    for mode in ("L", "LA", "RGB", "RGBA", "P-gray", "P-rgb", "1"):
        for k, (h, w) in enumerate(sizes):
            specs.append((mode, h, w, styles[k % len(styles)]))
    if zero_images:
        specs += [("L", 4, 8, "zero"), ("1", 8, 4, "zero"), ("RGB", 6, 6, "zero"), ("LA", 2, 8, "zero")]
    corpus = []
    for n, (mode, h, w, style) in enumerate(specs):
        if mode == "1":
            img = Image.fromarray(_content(rng, h, w, 1, style)[:, :, 0] > 127).convert("1")
        elif mode.startswith("P"):
            idx = _content(rng, h, w, 1, style)[:, :, 0] % 6
            img = Image.fromarray(idx, "L").convert("P")
            if mode == "P-gray":  # duplicate colours: indices coded as a gray plane
                img.putpalette([1, 2, 3] * 3 + [200, 100, 0] * 3)
                img.info["transparency"] = int(rng.integers(0, 6))
            else:  # distinct colours: coded as RGB through the palette
                img.putpalette([int(v) for v in rng.permutation(256)[:18]])
                if n % 2:
                    img.info["transparency"] = bytes(rng.integers(0, 256, 3, dtype=np.uint8))
        else:
            c = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}[mode]
            arr = _content(rng, h, w, c, style)
            img = Image.fromarray(arr[:, :, 0] if c == 1 else arr, mode)
        if n % 3 == 0:  # a third of the corpus carries metadata (format 2 headers)
            img.info["icc_profile"] = rng.integers(0, 256, int(rng.integers(1, 200)), dtype=np.uint8).tobytes()
            img.info["exif"] = b"Exif\x00\x00" + rng.integers(0, 256, 12, dtype=np.uint8).tobytes()
            img.text = {"Source": f"fuzz {n}"}
        use = [rgb[n % len(rgb)], gray[(n // 2) % len(gray)]]
        # half of the files coded with the conditional model store a label (modes with an RGB plane)
        label = n % 4 if use[0].cfg.num_classes and n % 2 and mode in ("RGB", "RGBA", "P-rgb") else None
        data = pxzip.compress(img, use, label=label)
        pixels = planes.split(img).pixels
        h_ = container.unpack(data)[0]
        corpus.append(
            {
                "name": f"{mode}-{style}-{h}x{w}",
                "data": data,
                "pixels": pixels,
                "zero": not pixels.any(),
                "crc": h_.crc32,
                "meta": (h_.mode, h_.width, h_.height, h_.palette, h_.transparency),
            }
        )
    return corpus


# ------------------------------------------------------------------------------------- mutations


def _size(r: random.Random) -> int:
    x = r.random()
    if x < 0.4:
        return r.choice(INTERESTING_SIZES)
    if x < 0.7:
        return r.randint(1, 40)
    return r.randint(0, 2**35 - 1)


def _varint_field(r: random.Random) -> bytes:
    x = r.random()
    if x < 0.75:
        return varint(_size(r))
    if x < 0.9:  # malformed: unterminated, over-long, anything
        return r.randbytes(r.randint(1, 7))
    v = varint(_size(r))  # non-minimal encoding
    return v[:-1] + bytes([v[-1] | 0x80, 0])


class Mutator:
    def __init__(self, corpus: list[dict], model_ids: list[bytes]):
        self.corpus = corpus
        self.ids = model_ids
        self.hlen = [len(c["data"]) - len(_payload(c["data"])) for c in corpus]

    def _pos(self, r: random.Random, size: int, hlen: int) -> int:
        return r.randrange(max(1, min(hlen, size))) if r.random() < 0.5 else r.randrange(max(1, size))

    def case(self, seed: int, i: int) -> dict:
        """The i-th case: mutated bytes plus how it was made (deterministic in seed, i)."""
        r = random.Random(seed * 1_000_003 + i)
        strategy = r.choice(STRATEGIES)
        k = r.randrange(len(self.corpus))
        data = self.corpus[k]["data"]
        default_limit = False
        steps = [strategy] if strategy != "multi" else [r.choice(STRATEGIES[:-2]) for _ in range(r.randint(2, 3))]
        desc = []
        for step in steps:
            data, d, dl = self._apply(r, step, k, data)
            desc.append(d)
            default_limit |= dl
        if len(steps) > 1:
            default_limit = False  # a later step may have changed the size again: use the campaign limit
        batch = r.random() < 0.1
        return {
            "i": i,
            "strategy": strategy,
            "source": self.corpus[k]["name"],
            "desc": "; ".join(desc),
            "data": bytes(data),
            "default_limit": default_limit,
            "batch_with": r.randrange(len(self.corpus)) if batch else None,
            "as_image": (not batch) and r.random() < 0.1,
        }

    def _apply(self, r: random.Random, step: str, k: int, data: bytes) -> tuple[bytes, str, bool]:
        buf = bytearray(data)
        n, hl = len(buf), self.hlen[k]
        if step == "bitflip" and n:
            bits = [(self._pos(r, n, hl), r.randrange(8)) for _ in range(r.randint(1, 8))]
            for p, b in bits:
                buf[p] ^= 1 << b
            return bytes(buf), f"flip bits {bits}", False
        if step == "overwrite" and n:
            vals = [
                (self._pos(r, n, hl), r.choice([0, 0x7F, 0x80, 0xFF, r.randrange(256)])) for _ in range(r.randint(1, 4))
            ]
            for p, v in vals:
                buf[p] = v
            return bytes(buf), f"overwrite {vals}", False
        if step == "truncate":
            cut = self._pos(r, n, hl)
            return bytes(buf[:cut]), f"truncate to {cut}", False
        if step == "insert":
            p, ins = self._pos(r, n + 1, hl), r.randbytes(r.randint(1, 16))
            buf[p:p] = ins
            return bytes(buf), f"insert {ins.hex()} at {p}", False
        if step == "delete" and n:
            p, m = self._pos(r, n, hl), r.randint(1, 16)
            del buf[p : p + m]
            return bytes(buf), f"delete {m} at {p}", False
        if step == "splice":
            other = self.corpus[r.randrange(len(self.corpus))]["data"]
            a, b = r.randrange(n + 1), r.randrange(len(other) + 1)
            return bytes(buf[:a]) + other[b:], f"splice [:{a}] + other[{b}:]", False
        if step == "junk":
            junk = r.randbytes(r.randint(0, 300))
            if r.random() < 0.5:
                junk = MAGIC + bytes([r.choice([0x10, 0x11, 0x12, 0x13, 0x14, 0x15, r.randrange(256)])]) + junk
            return junk, "junk", False
        if step in ("field", "huge", "model_id"):
            try:
                f = fields(bytes(buf))
            except Exception:  # an earlier step broke the header: fall back to a bit flip
                return self._apply(r, "bitflip", k, data)
            return self._field(r, step, f)
        return bytes(buf), f"{step} (no-op on empty input)", False

    def _field(self, r: random.Random, step: str, f: dict[str, bytes]) -> tuple[bytes, str, bool]:
        if step == "huge":
            w, h = r.choice(INTERESTING_SIZES[-12:] + [_size(r)]), r.choice(INTERESTING_SIZES + [_size(r)])
            if r.random() < 0.5:
                w, h = h, w
            tile = r.choice([0, 4, 6, 12])
            f["width"], f["height"] = varint(w), varint(h)
            f["tf"] = bytes([tile << 4 | (f["tf"][0] & 0x0F)])
            refused = (
                not (1 <= w <= 2**24 and 1 <= h <= 2**24)
                or w * h > DEFAULT_MAX_PIXELS
                or (tile == 0 and max(w, h) > 4096)
            )
            return join(f), f"size {w}x{h} tile_log2 {tile}", refused
        if step == "model_id":
            n_ids = len(f["ids"]) // 2
            if r.random() < 0.8:
                f["ids"] = b"".join(r.choice(self.ids + [r.randbytes(2)]) for _ in range(n_ids))
            else:
                f["ids"] = b"".join(r.choice(self.ids + [r.randbytes(2)]) for _ in range(r.randint(0, 3)))
            return join(f), f"model ids {f['ids'].hex()}", False
        field = r.choice(["vm", "tf", "ids", "label", "width", "height", "swap", "pal", "meta", "crc"])
        if field == "vm":
            f["vm"] = bytes([r.choice([r.randrange(0x10, 0x30), r.randrange(256)])])
        elif field == "tf":
            f["tf"] = bytes([r.choice([0x00, 0x01, 0x40, 0x41, 0xC0, 0xD0, 0xF0, r.randrange(256)])])
        elif field == "ids":
            f["ids"] = r.randbytes(r.choice([0, 1, 2, 3, 4, 6]))
        elif field in ("width", "height"):
            f[field] = _varint_field(r)
        elif field == "label":  # none, a known label, "no label" (4), anything, two bytes
            f["label"] = r.choice([b"", bytes([r.randrange(4)]), b"\x04", bytes([r.randrange(256)]), r.randbytes(2)])
        elif field == "swap":
            f["width"], f["height"] = f["height"], f["width"]
        elif field == "pal":
            n, t = r.choice([0, 1, 3, 256, 257, r.randrange(300)]), r.choice([0, 1, 3, 256, 257, r.randrange(300)])
            pal = r.randbytes(max(0, min(770, 3 * n + r.randint(-2, 2))))
            f["pal"] = varint(n) + pal + varint(t) + r.randbytes(max(0, min(258, t + r.randint(-1, 1))))
        elif field == "meta":  # entries with right or wrong counts, codes, sizes and order, or junk
            k = r.randint(0, 5)
            entries = [bytes([r.randrange(7)]) + _varint_field(r) + r.randbytes(r.randrange(40)) for _ in range(k)]
            count = varint(r.choice([k, r.randrange(10)]))
            f["meta"] = count + b"".join(entries) if r.random() < 0.8 else r.randbytes(r.randrange(24))
        else:
            f["crc"] = r.randbytes(4)
        return join(f), f"field {field} -> {f.get(field, b'').hex() if field != 'swap' else 'swap'}", False


def _payload(data: bytes) -> bytes:
    from pxzip import container

    return container.unpack(data)[1]


# ------------------------------------------------------------------------------------- worker


def _classify(case: dict, corpus: list[dict], models: list) -> tuple[str, str]:
    import pxzip
    from pxzip import container, planes

    data = case["data"]
    try:
        if case["batch_with"] is not None:
            partner = corpus[case["batch_with"]]
            outs = pxzip.decompress_many([data, partner["data"]], models)
            if not np.array_equal(outs[1], partner["pixels"]):
                return "WRONG_PIXELS", "the valid partner in the batch decoded wrong"
            out = outs[0]
        elif case["as_image"]:
            out = planes.split(pxzip.decompress_image(data, models)).pixels
        else:
            out = pxzip.decompress(data, models)
    except pxzip.PxzError as e:
        msg = str(e)
        if not msg or "\n" in msg:
            return "OTHER_EXCEPTION", f"{type(e).__name__} with an empty or multi-line message: {msg!r}"
        return f"error:{type(e).__name__}", msg
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # noqa: B036  (pyo3's PanicException is a BaseException)
        tb = traceback.format_exc(limit=-4)
        return "OTHER_EXCEPTION", f"{type(e).__module__}.{type(e).__name__}: {e}\n{tb}"
    h = container.unpack(data)[0]
    meta = (h.mode, h.width, h.height, h.palette, h.transparency)
    for c in corpus:  # the image whose checksum the header carries
        if c["crc"] == h.crc32 and c["meta"] == meta and out.dtype == c["pixels"].dtype:
            if out.shape == c["pixels"].shape and np.array_equal(out, c["pixels"]):
                return "ok", c["name"]
    claimed = [c for c in corpus if c["crc"] == h.crc32]
    if claimed and all(c["zero"] for c in claimed) and not out.any():
        return "known_gap", f"all-zero {claimed[0]['name']} decoded as {h.mode} {out.shape}"
    return "WRONG_PIXELS", f"decoded {h.mode} {out.dtype}{out.shape} matching no corpus image (crc {h.crc32:08x})"


def worker(conn, model_paths: list[str], corpus: list[dict], max_pixels: int) -> None:
    import torch

    torch.set_num_threads(1)
    from pxzip import zoo

    models = [zoo.load_file(p) for p in model_paths]
    limit = str(max_pixels) if max_pixels else None
    conn.send(("ready", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
    while True:
        case = conn.recv()
        if case is None:
            return
        env = None if case["default_limit"] else limit
        if env is None:
            os.environ.pop("PXZIP_MAX_PIXELS", None)
        else:
            os.environ["PXZIP_MAX_PIXELS"] = env
        t0 = time.perf_counter()
        outcome, detail = _classify(case, corpus, models)
        dt = time.perf_counter() - t0
        conn.send((outcome, detail, dt, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


class Worker:
    def __init__(self, model_paths, corpus, max_pixels):
        self.args = ([str(p) for p in model_paths], corpus, max_pixels)
        self.ctx = mp.get_context("spawn")
        self.proc = None
        self.restarts = 0
        self.base_rss = 0.0
        self.start()

    def start(self):
        self.conn, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=worker, args=(child, *self.args), daemon=True)
        self.proc.start()
        child.close()
        tag, rss = self.conn.recv()
        assert tag == "ready"
        self.base_rss = self.base_rss or rss

    def kill(self):
        if self.proc is not None and self.proc.is_alive():
            self.proc.kill()  # our own child, by its pid
        if self.proc is not None:
            self.proc.join()
        self.conn.close()

    def run(self, case: dict, timeout_s: float):
        """(outcome, detail, seconds, peak_rss_mb or None)."""
        t0 = time.perf_counter()
        try:
            self.conn.send(case)
            if self.conn.poll(timeout_s):
                return self.conn.recv()
            outcome, detail = "TIMEOUT", f"no answer in {timeout_s} s"
        except (EOFError, BrokenPipeError, ConnectionResetError):
            outcome, detail = "CRASH", ""
        dt = time.perf_counter() - t0
        self.kill()
        if outcome == "CRASH":
            detail = f"worker died with exit code {self.proc.exitcode}"
        self.restarts += 1
        self.start()
        return outcome, detail, dt, None

    def close(self):
        try:
            self.conn.send(None)
            self.proc.join(5)
        except (BrokenPipeError, OSError):
            pass
        self.kill()


# ------------------------------------------------------------------------------------- campaign


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=10_000, help="mutated files to decode (default 10000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout-s", type=float, default=10.0, help="per case (default 10)")
    p.add_argument("--max-pixels", type=int, default=1024, help="$PXZIP_MAX_PIXELS for the decoder; 0: library default")
    p.add_argument("--models", choices=["tiny", "pinned"], default="tiny")
    p.add_argument("--no-zero-images", action="store_true", help="leave the all-zero images out of the corpus")
    p.add_argument("--time-budget-s", type=float, default=0, help="stop early after this long (0: no limit)")
    p.add_argument("--json", help="write the full results here")
    p.add_argument("--keep", type=int, default=20, help="example cases kept per noteworthy outcome (default 20)")
    p.add_argument("--only", type=int, help="run just case I and print it")
    a = p.parse_args(argv)

    t_start = time.time()
    with tempfile.TemporaryDirectory(prefix="pxz-fuzz-") as tmp:
        model_paths = make_models(a.models, Path(tmp))
        corpus = make_corpus(model_paths, zero_images=not a.no_zero_images)
        from pxzip import zoo

        ids = [zoo.load_file(m).id for m in model_paths]
        mut = Mutator(corpus, ids)
        print(
            f"corpus: {len(corpus)} valid files ({sum(len(c['data']) for c in corpus)} bytes), "
            f"models: {a.models} {[i.hex() for i in ids]}, setup {time.time() - t_start:.1f} s",
            file=sys.stderr,
        )
        w = Worker(model_paths, corpus, a.max_pixels)
        if a.only is not None:
            case = mut.case(a.seed, a.only)
            res = w.run(case, a.timeout_s)
            w.close()
            print(
                json.dumps(
                    {**case, "data": case["data"].hex(), "outcome": res[0], "detail": res[1], "seconds": res[2]},
                    indent=2,
                )
            )
            return 0
        counts: Counter = Counter()
        by_strategy: dict[str, Counter] = defaultdict(Counter)
        examples: dict[str, list] = defaultdict(list)
        times, rss, slowest = [], [w.base_rss], None
        t0 = time.time()
        done = 0
        for i in range(a.n):
            if a.time_budget_s and time.time() - t0 > a.time_budget_s:
                break
            case = mut.case(a.seed, i)
            outcome, detail, dt, peak = w.run(case, a.timeout_s)
            done += 1
            counts[outcome] += 1
            by_strategy[case["strategy"]][outcome] += 1
            times.append(dt)
            if peak is not None:
                rss.append(peak)
            if slowest is None or dt > slowest[0]:
                slowest = (dt, i, case["strategy"], case["source"], case["desc"][:200], outcome)
            if outcome in MUST_BE_ZERO + ("TIMEOUT", "known_gap", "ok") and len(examples[outcome]) < a.keep:
                examples[outcome].append(
                    {
                        "i": i,
                        "strategy": case["strategy"],
                        "source": case["source"],
                        "desc": case["desc"][:500],
                        "detail": detail[:2000],
                        "seconds": round(dt, 3),
                        "data": case["data"].hex(),
                    }
                )
            if (i + 1) % 500 == 0:
                el = time.time() - t0
                bad = sum(counts[k] for k in MUST_BE_ZERO)
                print(
                    f"  {i + 1}/{a.n} cases, {el:.0f} s ({(i + 1) / el:.1f}/s), must-be-zero so far: {bad}",
                    file=sys.stderr,
                )
        elapsed = time.time() - t0
        w.close()
    t = np.array(times) if times else np.zeros(1)
    result = {
        "config": {k: getattr(a, k) for k in ("n", "seed", "timeout_s", "max_pixels", "models")}
        | {
            "zero_images": not a.no_zero_images,
            "corpus_files": len(corpus),
            "cases_run": done,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        },
        "counts": dict(counts.most_common()),
        "by_strategy": {s: dict(c.most_common()) for s, c in sorted(by_strategy.items())},
        "must_be_zero": {k: counts[k] for k in MUST_BE_ZERO},
        "time": {
            "total_s": round(elapsed, 1),
            "cases_per_s": round(done / max(elapsed, 1e-9), 2),
            "mean_s": round(float(t.mean()), 4),
            "p50_s": round(float(np.percentile(t, 50)), 4),
            "p99_s": round(float(np.percentile(t, 99)), 4),
            "max_s": round(float(t.max()), 3),
            "slowest_case": dict(zip(("seconds", "i", "strategy", "source", "desc", "outcome"), slowest))
            if slowest
            else None,
        },
        "memory": {
            "worker_rss_after_setup_mb": round(w.base_rss, 1),
            "worker_peak_rss_mb": round(max(rss), 1),
            "worker_restarts": w.restarts,
        },
        "examples": examples,
    }
    _print_summary(result)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(result, indent=1))
        print(f"wrote {a.json}", file=sys.stderr)
    return 1 if any(result["must_be_zero"].values()) else 0


def _print_summary(r: dict) -> None:
    c, n = r["counts"], r["config"]["cases_run"]
    print(
        f"\npxz fuzz campaign: {n} cases, seed {r['config']['seed']}, {r['config']['corpus_files']} corpus files, "
        f"models {r['config']['models']}, max_pixels {r['config']['max_pixels']}"
    )
    print(f"{'outcome':<28}{'count':>8}{'share':>9}")
    for k, v in c.items():
        flag = "   <-- must be 0" if k in MUST_BE_ZERO else ""
        print(f"{k:<28}{v:>8}{v / max(n, 1):>9.1%}{flag}")
    for k in MUST_BE_ZERO:
        if k not in c:
            print(f"{k:<28}{0:>8}{0:>9.1%}")
    strategies = sorted(r["by_strategy"])
    cols = sorted({o for s in strategies for o in r["by_strategy"][s]})
    short = {o: o.replace("error:", "").replace("Error", "")[:9] for o in cols}
    print(f"\n{'strategy':<10}" + "".join(f"{short[o]:>10}" for o in cols))
    for s in strategies:
        print(f"{s:<10}" + "".join(f"{r['by_strategy'][s].get(o, 0):>10}" for o in cols))
    t, m = r["time"], r["memory"]
    print(
        f"\ntime: {t['total_s']} s ({t['cases_per_s']} cases/s), per case mean {t['mean_s']} s, "
        f"p50 {t['p50_s']} s, p99 {t['p99_s']} s, max {t['max_s']} s"
    )
    if t["slowest_case"]:
        print(f"slowest: {t['slowest_case']}")
    print(
        f"memory: worker peak RSS {m['worker_peak_rss_mb']} MB (after setup {m['worker_rss_after_setup_mb']} MB), "
        f"worker restarts {m['worker_restarts']}"
    )


if __name__ == "__main__":
    sys.exit(main())
