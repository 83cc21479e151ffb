"""`lstm_wgpu.train` against `lstm-wgpu train` with the same settings: the
same loss and validation loss at every step (the CLI's --metrics file), and
the same weights (the CLI's checkpoint), for data given as a path, as rows
in memory and as token ids; plus the callback and the errors."""

import json

import numpy as np
import pytest

import lstm_wgpu
from conftest import ROOT, SUNSPOTS

# The settings both sides get: as keyword arguments and as the CLI's flags.
SERIES = dict(seq_len=12, horizon=2, hidden=8, steps=14, val_every=5, seed=3, clip_norm=1.0,
              schedule="cosine", warmup=2)
TEXT = dict(hidden=16, embed=8, steps=8, val_every=4, batch=4, seq_len=16, optimizer="adamw")


def flags(settings):
    out = []
    for k, v in settings.items():
        out += ["--" + k.replace("_", "-"), v]
    return out


def cli_run(cli, tmp_path, data, settings):
    """Trains with the CLI; its (step, loss) and (step, val_loss) lines and
    its final checkpoint."""
    ck, m = tmp_path / "cli.st", tmp_path / "cli.jsonl"
    cli("train", "--data", data, *flags(settings), "--checkpoint", ck, "--metrics", m,
        "--no-progress")
    lines = [json.loads(l) for l in m.read_text().splitlines()]
    train = [(l["step"], l["loss"]) for l in lines if "loss" in l]
    val = [(l["step"], l["val_loss"]) for l in lines if "val_loss" in l]
    return train, val, ck


def losses(history):
    return ([(h["step"], h["loss"]) for h in history],
            [(h["step"], h["val_loss"]) for h in history if "val_loss" in h])


def assert_same_weights(model, ck):
    got, want = model.state_dict(), lstm_wgpu.Model.load(ck).state_dict()
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_series_path_equals_cli(cli, tmp_path):
    train, val, ck = cli_run(cli, tmp_path, SUNSPOTS, SERIES)
    model, history = lstm_wgpu.train(SUNSPOTS, **SERIES)
    assert losses(history) == (train, val)
    assert len(history) == 14 and len(val) == 3
    assert_same_weights(model, ck)
    h = history[-1]
    assert h["step"] == 14 and {"val_mae", "naive_val_loss", "lr", "grad_norm"} <= h.keys()
    # The model predicts as the checkpoint does.
    rows = model.csv_rows(SUNSPOTS)
    np.testing.assert_array_equal(model.predict(rows),
                                  lstm_wgpu.Model.load(ck).predict(rows))


def test_series_rows_in_memory_equal_cli(cli, tmp_path):
    train, val, ck = cli_run(cli, tmp_path, SUNSPOTS, SERIES)
    # Both columns as the CSV holds them (float64, so the values are the
    # file's exactly): YEAR is a time index, no feature, as in the file.
    rows = np.loadtxt(SUNSPOTS, delimiter=",", skiprows=1)
    model, history = lstm_wgpu.train(rows, columns=["YEAR", "SUNACTIVITY"], **SERIES)
    assert losses(history) == (train, val)
    assert_same_weights(model, ck)
    assert model.config["normalizer"] == lstm_wgpu.Model.load(ck).config["normalizer"]


def test_tokens_in_memory_equal_cli(cli, tmp_path):
    path = ROOT / "README.md"
    train, val, ck = cli_run(cli, tmp_path, path, TEXT)
    text = path.read_text(encoding="utf-8")
    vocab = "".join(sorted(set(text)))
    ids = np.array([vocab.index(c) for c in text], dtype=np.int64)
    model, history = lstm_wgpu.train(ids, vocab=vocab, **TEXT)
    assert losses(history) == (train, val)
    assert_same_weights(model, ck)
    # And the same file through its path.
    model2, history2 = lstm_wgpu.train(path, **TEXT)
    assert losses(history2) == (train, val)
    assert_same_weights(model2, ck)
    want = lstm_wgpu.Model.load(ck).generate("The ", 30, seed=1)
    assert model.generate("The ", 30, seed=1) == want


def test_callback_checkpoint_and_resume(tmp_path):
    seen = []
    ck = tmp_path / "part.st"
    _, history = lstm_wgpu.train(SUNSPOTS, callback=seen.append, checkpoint=ck, stop_after=6,
                                 **SERIES)
    assert [h["step"] for h in seen] == list(range(1, 7)) and seen == history
    assert ck.exists() and (tmp_path / "part.st.best").exists()
    # Resumed to the end, as one uninterrupted run.
    _, rest = lstm_wgpu.train(SUNSPOTS, resume=ck, checkpoint=ck)
    _, whole = lstm_wgpu.train(SUNSPOTS, **SERIES)
    assert [h["loss"] for h in history + rest] == [h["loss"] for h in whole]

    class Stop(Exception):
        pass

    def stop(h):
        if h["step"] == 2:
            raise Stop("enough")

    with pytest.raises(Stop, match="enough"):
        lstm_wgpu.train(SUNSPOTS, callback=stop, **SERIES)


def test_bad_settings_raise_the_cli_message(tmp_path):
    with pytest.raises(ValueError, match=r"^--norm group: expected none, layer, layer-cell"):
        lstm_wgpu.train(norm="group", steps=1)
    with pytest.raises(ValueError, match=r"^--seq-len must be at least 1$"):
        lstm_wgpu.train(seq_len=0, steps=1)
    with pytest.raises(ValueError, match=r"^--dropout 1.5: expected a probability in \[0, 1\)$"):
        lstm_wgpu.train(dropout=1.5, steps=1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'hiden'"):
        lstm_wgpu.train(hiden=8)
    with pytest.raises(ValueError, match="hidden"):
        lstm_wgpu.train(hidden="eight")
    with pytest.raises(ValueError, match="missing.csv"):
        lstm_wgpu.train(tmp_path / "missing.csv", steps=1)
    with pytest.raises(ValueError, match="vocab="):
        lstm_wgpu.train(np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="token id 7 at position 1"):
        lstm_wgpu.train(np.array([0, 7]), vocab="ab")
    with pytest.raises(ValueError, match="the data is given in memory"):
        lstm_wgpu.train(np.zeros((50, 1)), dataset="sine")
    with pytest.raises(ValueError, match="columns: 1 names for 2 columns"):
        lstm_wgpu.train(np.zeros((50, 2)), columns=["y"])
