"""Write models/NAME.md (the model card) from a model file and the `pxzip bench --json` runs on it.

    python benchmarks/model_card.py models/pxz-rgb-cifar.safetensors \
        --data "CIFAR-10 train, 49,000 images (last 1,000 held out)" \
        --bench runs/bench-cifar1000.json --hardware "2-core AMD EPYC CPU" --command "pxzip train ..."
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from pxzip import zoo


def _rates(path: str) -> str:
    r = json.loads(Path(path).read_text())
    rates, n = r["rates"], r["n"]
    base = r.get("baselines") or {}
    src = r.get("source") or {}
    subset = f" (first {n} images)" if src.get("limit") else ""
    name = r.get("dataset", path)
    if name == "files":
        name = ", ".join(Path(p).name for p in src.get("paths", [])) or "files"
    lines = [
        f"**{name}**{subset}: {n} images, {r['n_exact']}/{n} decoded bit-exact; bits/dim, mean over images:",
        "",
        "| float NLL | exact tables (ideal) | payload | whole .pxz file |" + "".join(f" {k} |" for k in base),
        "|---|---|---|---|" + "---|" * len(base),
        f"| {rates['nll']['mean']:.4f} | {rates['ideal']['mean']:.4f} | {rates['payload']['mean']:.4f} "
        f"| {rates['file']['mean']:.4f} |" + "".join(f" {v['mean']:.4f} |" for v in base.values()),
        "",
    ]
    t = r.get("timing", {})
    if t:
        lines.append(
            f"Encode {t.get('encode_ms_per_image', float('nan')):.1f} ms/image, "
            f"decode {t.get('decode_ms_per_image', float('nan')):.1f} ms/image "
            f"(batch {t.get('decode_batch')}, torch threads {r.get('machine', {}).get('torch_threads')}, "
            f"{t.get('jobs', 1)} job(s); wall {t.get('wall_s', float('nan')) / 60:.1f} min)."
        )
        lines.append("")
    lr = r.get("label_rates")
    if lr:
        lines.append(
            f"Class labels (`--label auto`): {lr['labelled_files']}/{n} files chose a label. Float NLL of the same "
            f"model without a label {lr['nll_no_label']['mean']:.4f}, given the true label "
            f"{_get(lr, 'nll_true_label')} (mean bits/dim; the float NLL row above uses the label each file chose)."
        )
        lines.append("")
    return "\n".join(lines)


def _get(lr: dict, key: str) -> str:
    return f"{lr[key]['mean']:.4f}" if lr[key]["n"] else "n/a"


def _ensemble_card(a, m, meta: dict, sha: str) -> None:
    """The card of an ensemble: its members (with --member FILE for their training records), weights, results."""
    c = m.exact.member_cfg
    prior = m.exact.prior.tolist()
    listed = json.loads(meta.get("members", "[]"))
    records = {}
    for f in a.member:
        mm = zoo.load_file(f)
        raw = Path(f).read_bytes()
        records[mm.sha256] = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")]).get("__metadata__", {})
    out = [
        f"# {m.name}",
        "",
        f"- file: `{Path(a.model).name}`, sha256 `{sha}` (id `{m.id.hex()}` in .pxz headers)",
        f"- an ensemble of {m.members} networks of one config (pixelcnnpp, {c.in_channels} channel(s), num_filters "
        f"{c.num_filters}, num_resnet {c.num_resnet}, num_logistic_mix {c.num_logistic_mix}, kernel {c.kernel_size}); "
        f"{m.float_model().num_parameters():,} parameters in all. The coder averages the members' distributions "
        f"with weights {prior} (see pxzip/ensemble.py): {m.members} networks per step, so coding takes about "
        f"{m.members}x the time of one member",
        f"- exact model: activations {c.act_bits} fractional bits, weights < 2^{c.weight_bits - 1} per output channel",
        f"- data: {a.data}",
        "",
        "## Members",
        "",
        "| member | sha256 | weight | steps | minutes | held-out NLL at the end (EMA, float) |",
        "|---|---|---|---|---|---|",
    ]
    for entry, w in zip(listed, prior):
        rec = records.get(entry["sha256"], {})
        hist = json.loads(rec.get("history", "[]"))
        last = hist[-1] if hist else {}
        steps = json.loads(rec.get("final_step", "null")) or last.get("step", "?")
        minutes = f"{float(json.loads(rec.get('train_seconds', '0'))) / 60:.0f}" if rec else "?"
        held = f"{last['eval_bpd']:.4f}" if "eval_bpd" in last else "?"
        out.append(f"| {entry['name']} | `{entry['sha256'][:12]}` | {w} | {steps} | {minutes} | {held} |")
    if a.command:
        out += ["", f"Command: `{a.command}`"]
    out += ["", "## Test results (real files)", ""]
    out += [_rates(b) for b in a.bench]
    if a.notes:
        out += ["", a.notes]
    card = Path(a.model).with_suffix(".md")
    card.write_text("\n".join(out) + "\n")
    print(card)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--data", required=True, help="what it was trained on")
    p.add_argument("--bench", action="append", default=[], help="pxzip bench --json output(s)")
    p.add_argument("--hardware", default="2-core AMD EPYC CPU (no GPU)")
    p.add_argument("--command", default="", help="the command that trained it")
    p.add_argument("--notes", default="")
    p.add_argument("--recipe", default="batch 32, EMA 0.999, bf16 autocast", help="the training settings, in words")
    p.add_argument("--member", action="append", default=[], help="ensembles: a member's own model file (its record)")
    a = p.parse_args()
    path = Path(a.model)
    m = zoo.load_file(path)
    meta_raw = path.read_bytes()
    n = int.from_bytes(meta_raw[:8], "little")
    meta = json.loads(meta_raw[8 : 8 + n]).get("__metadata__", {})
    if m.members > 1:
        return _ensemble_card(a, m, meta, hashlib.sha256(meta_raw).hexdigest())
    history = json.loads(meta.get("history", "[]"))
    seconds = float(json.loads(meta.get("train_seconds", "0")))
    fm = m.float_model()
    c = m.cfg
    last = history[-1] if history else {}
    bf16 = ", bf16" if "bf16" in a.recipe else ""
    out = [
        f"# {m.name}",
        "",
        f"- file: `{path.name}`, sha256 `{hashlib.sha256(meta_raw).hexdigest()}` (id `{m.id.hex()}` in .pxz headers)",
        f"- architecture: {c.arch}, {c.in_channels} channel(s), num_filters {c.num_filters}, "
        f"num_resnet {c.num_resnet}, "
        + (
            "Bernoulli head (one logit per pixel: bilevel planes)"
            if c.bilevel
            else f"num_logistic_mix {c.num_logistic_mix}"
        )
        + f", kernel {c.kernel_size}, dropout {c.dropout_p}"
        + (f", class-conditional ({c.num_classes} labels + 'no label')" if c.num_classes else "")
        + "; "
        f"{fm.num_parameters():,} parameters",
        f"- exact model: activations {c.act_bits} fractional bits, weights < 2^{c.weight_bits - 1} per output channel",
        f"- data: {a.data}",
        f"- training: {json.loads(meta.get('final_step', 'null')) or last.get('step', '?')} steps of Adam, "
        f"{a.recipe}, "
        f"{seconds / 60:.0f} min wall time on {a.hardware}",
        f"- held-out NLL at the last evaluation (step {last.get('step', '?')}; EMA weights, float model{bf16}): "
        f"{last.get('eval_bpd', float('nan')):.4f} bits/dim "
        f"(train running mean {last.get('train_bpd', float('nan')):.4f})",
    ]
    if not history:  # derived from another model without training of its own (e.g. gray_from_rgb)
        out[-2:] = ["- training: none of its own (derived from another model, see the notes below)"]
    if a.command:
        out.append(f"- command: `{a.command}`")
    if history:
        out += ["", "## Training curve (held-out bits/dim, EMA weights)", ""]
        out += ["| step | minutes | train | held-out | held-out, given the label |", "|---|---|---|---|---|"]
    for h in history:
        cond = f"{h['eval_cond_bpd']:.3f}" if "eval_cond_bpd" in h else "-"
        out.append(f"| {h['step']} | {h['minutes']:.0f} | {h['train_bpd']:.3f} | {h['eval_bpd']:.3f} | {cond} |")
    out += ["", "## Test results (real files)", ""]
    out += [_rates(b) for b in a.bench]
    if a.notes:
        out += ["", a.notes]
    card = path.with_suffix(".md")
    card.write_text("\n".join(out) + "\n")
    print(card)


if __name__ == "__main__":
    main()
