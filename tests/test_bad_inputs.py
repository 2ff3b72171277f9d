"""The battery of bad inputs, run against every command of the CLI.

The commands come from the CLI's own group (``convlens.cli.main``, sub-groups included), and the bad values from
each command's *declared* parameter types: below an ``IntRange``'s minimum, ``nan`` / ``inf`` for every float,
an unknown ``Choice``, a missing path, a missing / undecodable / decompression-bomb image for every positional
argument, ``--out`` under a regular file and on an unwritable path. So a command added later is covered without
touching this file. Every case must end with exit status 2, exactly one line on stderr (``convlens: error: ...``),
no traceback, and nothing written that looks like a result.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import click
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from convlens import Model
from convlens.cli import main, run
from convlens.cli.common import FiniteFloat, Fraction
from convlens.models import imagenet_labels, zoo

RESULT_SUFFIXES = {".json", ".png", ".npy", ".pt", ".gif", ".md", ".html", ".npz", ".jpg"}


def _commands(group: click.Group = main, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...],
                                                                                          click.Command]]:
    for name, cmd in sorted(group.commands.items()):
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, prefix + (name,))
        else:
            yield prefix + (name,), cmd


COMMANDS = dict(_commands())


def _bad_values(p: click.Parameter) -> list[tuple[str, str]]:
    """(label, value) pairs that the parameter's own declared type must refuse."""
    t = p.type
    out: list[tuple[str, str]] = []
    if isinstance(t, click.IntRange):
        if t.min is not None:
            out.append(("below-min", str(int(t.min) - 1)))
            if t.min >= 1:
                out.append(("negative", "-3"))
        if t.max is not None:
            out.append(("above-max", str(int(t.max) + 1)))
        out.append(("not-int", "1.5x"))
    elif isinstance(t, click.types.IntParamType):
        out.append(("not-int", "abc"))
    elif isinstance(t, (FiniteFloat, click.types.FloatParamType)):
        out += [("nan", "nan"), ("inf", "inf"), ("not-float", "abc")]
        if isinstance(t, Fraction):
            out.append(("div-zero", "1/0"))
        low = getattr(t, "min", None)
        if low is not None:
            out.append(("below-min", repr(float(low) - 1.0) if not getattr(t, "min_open", False) else repr(float(low))))
    elif isinstance(t, click.Choice):
        out.append(("bad-choice", "no-such-choice"))
    elif isinstance(t, click.Path) and t.exists:
        out.append(("missing-path", "/nonexistent/convlens/x"))
    return out


def _option_name(p: click.Option) -> str:
    return max(p.opts, key=len)


def _cases() -> list[tuple[str, tuple[str, ...], str, str, str]]:
    """(id, command path, parameter name, what, value); value may be a placeholder resolved in the test."""
    cases = []
    for path, cmd in COMMANDS.items():
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.is_flag and p.nargs == 1:
                for what, value in _bad_values(p):
                    cases.append((p.name or "", what, value))
            elif isinstance(p, click.Option) and p.nargs > 1:
                for what, value in _bad_values(p):
                    cases.append((p.name or "", what, " ".join([value] * p.nargs)))
            elif isinstance(p, click.Argument):
                for what in ("missing-file", "undecodable", "bomb"):
                    cases.append((p.name or "", what, f"<{what}>"))
        if any(isinstance(p, click.Option) and p.name == "out" for p in cmd.params):
            cases += [("out", "out-under-file", "<under-file>"), ("out", "out-unwritable", "<unwritable>")]
        for name, what, value in cases:
            yield_id = f"{' '.join(path)}|{name}|{what}"
            yield (yield_id, path, name, what, value)  # type: ignore[misc]
        cases = []


CASES = list(_cases())  # type: ignore[arg-type]
PARAMS = [pytest.param(c, id=c[0]) for c in CASES]

# The battery's model: a tiny network that hooks work on (a TorchScript file would stop every command that reads
# layers before it looks at its inputs), registered under a name as any model is.
TINY = "battery-tiny"


def _tiny_model(weights: str | None) -> Model:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1000)).eval()
    return Model.wrap(net, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), size=32, labels=imagenet_labels(), name=TINY)


if TINY not in zoo._REGISTRY:
    zoo.register(TINY)(_tiny_model)


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that claims width x height (a decompression bomb) but holds almost nothing."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad-inputs")
    good = d / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(good)
    bomb = d / "bomb.png"
    _png_header_only(bomb, 20000, 20000)
    broken = d / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    blocker = d / "a-file"
    blocker.write_text("not a folder")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 1000)).eval()
    ts = d / "tiny.ts"
    torch.jit.script(net).save(str(ts))
    return {"good": good, "bomb": bomb, "broken": broken, "blocker": blocker, "model": ts, "root": d}


def _placeholder(p: click.Parameter, inputs: dict[str, Path]) -> list[str]:
    """A harmless value for a required parameter, so that only the bad one is wrong."""
    if isinstance(p.type, (click.IntRange, click.types.IntParamType)):
        return ["1"] * max(1, p.nargs)
    if isinstance(p.type, (FiniteFloat, click.types.FloatParamType)):
        return ["1"] * max(1, p.nargs)
    if isinstance(p.type, click.Choice):
        return [str(p.type.choices[0])]
    if isinstance(p.type, click.Path) and p.type.dir_okay and not p.type.file_okay:
        return [str(inputs["root"])]
    return [str(inputs["good"])]


def _argv(path: tuple[str, ...], cmd: click.Command, name: str, what: str, value: str,
          inputs: dict[str, Path], out: Path) -> list[str]:
    subst = {"<missing-file>": str(inputs["root"] / "no-such-photo.jpg"), "<undecodable>": str(inputs["broken"]),
             "<bomb>": str(inputs["bomb"]), "<under-file>": str(inputs["blocker"] / "out"),
             "<unwritable>": "/proc/convlens-unwritable/out"}
    value = subst.get(value, value)
    bad: list[str] = []
    head: list[str] = []
    tail: list[str] = []
    given = {name}
    for p in cmd.params:
        if isinstance(p, click.Argument):
            if p.name == name:
                head.append(value)
            elif p.required or p.name == "model":
                head += _placeholder(p, inputs) if p.name != "model" else [TINY]
        elif isinstance(p, click.Option):
            if p.name == name:
                bad += [_option_name(p), *value.split(" ")]
            elif p.required and p.name not in given:
                tail += [_option_name(p), *_placeholder(p, inputs)]
    names = {p.name for p in cmd.params}
    if "model" in names and any(isinstance(p, click.Option) and p.name == "model" for p in cmd.params) \
            and name != "model":
        tail += ["--model", TINY]
    if "model_spec" in names and name != "model_spec":
        tail += ["--model", TINY]
    if "out" in names and name != "out" and not any(p.name == "out" and p.required for p in cmd.params):
        tail += ["--out", str(out)]
    return [*path, *bad, *head, *tail]  # the bad option first: it is the first one click converts


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def _visible_lines(err: str) -> list[str]:
    """The non-blank lines a terminal shows: a carriage return overwrites its line (an erased progress bar)."""
    return [seen for line in err.split("\n") if (seen := line.rsplit("\r", 1)[-1]).strip()]


@pytest.mark.parametrize("case", PARAMS)
def test_bad_input_gives_one_line_and_exit_2(case, inputs, tmp_path, monkeypatch, capsys) -> None:
    _, path, name, what, value = case
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    argv = _argv(path, COMMANDS[path], name, what, value, inputs, out)
    before = _files(inputs["root"])
    with pytest.raises(SystemExit) as info:
        run(argv)
    err = capsys.readouterr().err
    lines = _visible_lines(err)
    assert info.value.code == 2, f"{argv}: exit {info.value.code}\n{err}"
    assert len(lines) == 1, f"{argv}: expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("convlens: error: "), lines[0]
    assert "Traceback" not in err
    written = [p for p in _files(tmp_path) | (_files(inputs["root"]) - before) if p.suffix in RESULT_SUFFIXES]
    assert not written, f"{argv} wrote {written}"


def test_battery_covers_every_command() -> None:
    """Every command is in the battery, and every numeric option of every command is checked by its type."""
    covered = {c[1] for c in CASES}
    assert covered == set(COMMANDS) - {("models",)} or covered >= set(COMMANDS) - {("models",)}
    plain = [(" ".join(path), p.name) for path, cmd in COMMANDS.items() for p in cmd.params
             if isinstance(p, click.Option) and type(p.type) is click.types.FloatParamType]
    assert not plain, f"float options without the finite check: {plain}"
    ints = [(" ".join(path), p.name) for path, cmd in COMMANDS.items() for p in cmd.params
            if isinstance(p, click.Option) and type(p.type) is click.types.IntParamType]
    assert not ints, f"integer options without a range (COUNT, NATURAL, at_least): {ints}"
    assert len(CASES) > 200


def test_torchscript_model_on_a_layer_command_is_one_line(inputs, tmp_path, monkeypatch, capsys) -> None:
    """A TorchScript file predicts, but its layers cannot be hooked: a command that reads layers says so in a line."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        run(["embed", str(inputs["root"]), "--model", str(inputs["model"]), "--out", str(tmp_path / "out")])
    lines = _visible_lines(capsys.readouterr().err)
    assert info.value.code == 2 and len(lines) == 1 and "TorchScript" in lines[0], lines
