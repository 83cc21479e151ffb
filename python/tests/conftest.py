"""Shared paths and the CLI binary the checkpoint tests compare against."""

import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
SUNSPOTS = ROOT / "examples" / "data" / "sunspots.csv"


def _binary():
    """`lstm-wgpu` as `cargo build` left it: $LSTM_WGPU_BIN, else the debug
    build under $CARGO_TARGET_DIR (or the repository's target/)."""
    if os.environ.get("LSTM_WGPU_BIN"):
        return pathlib.Path(os.environ["LSTM_WGPU_BIN"])
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "debug" / "lstm-wgpu"


@pytest.fixture(scope="session")
def cli():
    """Runs the CLI and returns its stdout; fails (does not skip) when the
    binary is missing, so CI cannot pass without comparing."""
    exe = _binary()
    if not exe.exists():
        pytest.fail(f"{exe} not found: run `cargo build` or set LSTM_WGPU_BIN")

    def run(*args):
        r = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return r.stdout

    return run


@pytest.fixture(scope="session")
def series_checkpoint(cli, tmp_path_factory):
    """A tiny sunspots forecaster trained by the CLI (a few seconds)."""
    ck = tmp_path_factory.mktemp("series") / "sun.st"
    cli("train", "--data", SUNSPOTS, "--seq-len", 12, "--horizon", 2, "--hidden", 8,
        "--steps", 40, "--val-every", 20, "--checkpoint", ck, "--no-progress")
    return ck


@pytest.fixture(scope="session")
def text_checkpoint(cli, tmp_path_factory):
    """A tiny character model trained by the CLI on its built-in text."""
    ck = tmp_path_factory.mktemp("text") / "char.st"
    cli("train", "--hidden", 16, "--embed", 8, "--steps", 20, "--checkpoint", ck,
        "--no-progress")
    return ck
